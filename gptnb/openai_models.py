"""Which model to call: a dated preference list in ``data/openai_models.csv``, matched against ``models.list()``.

OpenAI retires models every few months, so a notebook never hard-codes a model name. The CSV lists,
per purpose (``chat``, ``completion``, ``fine-tune``), the models to try in order of preference, each
with the date it was listed and a note. `choose_model` asks the server which models it offers (OpenAI
or the local ``gptnb serve``, whose list holds the profile's model) and takes the first listed one
it offers; when none is offered it says which file to edit, instead of a 404 at the first request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .paths import data_dir

MODELS_CSV = "openai_models.csv"
COLUMNS = ("purpose", "model", "provider", "listed_on", "note")
PURPOSES = ("chat", "completion", "fine-tune")


class NoModelAvailable(LookupError):
    """None of the listed models is offered; the message names the file to edit."""

    def _render_traceback_(self):  # IPython shows this instead of a traceback: the message is the whole story
        return [f"{type(self).__name__}: {self}"]


@dataclass(frozen=True)
class ModelChoice:
    """The model picked for a purpose, where it stood in the preference list and what the list says of it."""

    purpose: str
    model: str
    rank: int  # 1 = the first preference
    listed_on: str
    note: str

    def __str__(self) -> str:
        return f"{self.purpose}: {self.model} (preference {self.rank}, listed on {self.listed_on}: {self.note})"


def models_csv() -> Path:
    """Where the preference list lives (``data/openai_models.csv`` under `gptnb.paths.data_dir`)."""
    return data_dir() / MODELS_CSV


def load_preferences(path: str | Path | None = None) -> pd.DataFrame:
    """The preference list, rows in order of preference within each purpose; a malformed file is a one-line error."""
    path = Path(path) if path else models_csv()
    if not path.exists():
        raise NoModelAvailable(f"{path} is missing: it lists the models to use, columns {', '.join(COLUMNS)}")
    table = pd.read_csv(path, dtype=str).fillna("")
    missing = [column for column in COLUMNS if column not in table]
    if missing:
        raise NoModelAvailable(f"{path} lacks the column(s) {', '.join(missing)}; it needs {', '.join(COLUMNS)}")
    unknown = sorted(set(table["purpose"]) - set(PURPOSES))
    if unknown:
        raise NoModelAvailable(f"{path}: unknown purpose(s) {', '.join(unknown)}; use {', '.join(PURPOSES)}")
    return table


def preferred(purpose: str, provider: str | None = None, table: pd.DataFrame | None = None) -> list[str]:
    """The listed models for `purpose` (of one `provider`, e.g. ``"openai"``, if given), most preferred first."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose {purpose!r}: use one of {', '.join(PURPOSES)}")
    table = load_preferences() if table is None else table
    rows = table[table["purpose"] == purpose]
    if provider is not None:
        rows = rows[rows["provider"] == provider]
    return list(rows["model"])


def choose_model(client, purpose: str, path: str | Path | None = None) -> ModelChoice:
    """The first model listed for `purpose` (in `path`, default `models_csv`) that `client.models.list()` offers.

    `client` is an ``openai.OpenAI`` client (OpenAI or `gptnb serve`). Raises `NoModelAvailable`,
    one line naming the CSV to edit and a few of the models the server does offer, when none matches.
    """
    path = Path(path) if path else models_csv()
    table = load_preferences(path)
    candidates = preferred(purpose, table=table)
    offered = {model.id for model in client.models.list()}
    for rank, model in enumerate(candidates, start=1):
        if model in offered:
            row = table[(table["purpose"] == purpose) & (table["model"] == model)].iloc[0]
            return ModelChoice(purpose, model, rank, row["listed_on"], row["note"])
    sample = ", ".join(sorted(offered)[:8]) + (", ..." if len(offered) > 8 else "")
    raise NoModelAvailable(
        f"none of the {len(candidates)} {purpose} models listed in {path} is offered by {client.base_url} "
        f"(it offers {len(offered)}: {sample or 'none'}); add a row for one it offers, with purpose {purpose!r} "
        f"and today's date"
    )
