"""Notebook 05's plumbing: which server answers (OpenAI or the local ``gptnb serve``), creating a fine-tuning job
with one clear line when OpenAI refuses it, the base model's predictions to compare with, and the comparison.

The lesson itself (the requests, label scoring, the job's hyperparameters) stays in the notebook's cells.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

import pandas as pd

from .results import format_interval, paired_difference, score_with_interval, verdict

# OpenAI's deprecations page on self-serve fine-tuning, as checked for this course.
WIND_DOWN_SOURCE = "https://platform.openai.com/docs/deprecations"
WIND_DOWN_CHECKED = "2026-12-02"
WIND_DOWN = (
    "no new fine-tuning jobs for organisations that had never fine-tuned since 2026-05-07, for organisations "
    "without inference on a fine-tuned model in the previous 60 days since 2026-07-02, and for anyone after "
    "2027-01-06 (inference on existing fine-tuned models continues until their base models retire)"
)


class FineTuningRefused(RuntimeError):
    """OpenAI would not create the fine-tuning job; the message says why and what to do."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this one line instead of a traceback
        return [f"{type(self).__name__}: {self}"]


@dataclass
class Connection:
    """Who answers notebook 05's requests: `client` for inference, `tuner` for fine-tuning, and the models chosen."""

    client: object
    tuner: object
    server: object | None  # the local server (a `gptnb.serve.LocalServer`), when one was started
    use_openai: bool
    tune_on_openai: bool
    chat_model: str
    completion_model: str
    tune_model: str

    @property
    def tunes_locally(self) -> bool:
        """True when fine-tuning goes to the local server (no key, or `TUNE_ON_OPENAI` off)."""
        return not self.tune_on_openai

    def stop(self) -> None:
        """Stop the local server, if one was started; its files, jobs and models stay on disk."""
        if self.server is not None:
            self.server.stop()
            print("local server stopped; its files, jobs and models stay in", self.server.store.root)


def connect(ask_for_key: bool = False, tune_on_openai: bool = False, *, start_server=None, environ=None) -> Connection:
    """OpenAI when ``OPENAI_API_KEY`` is set (or typed, hidden, with `ask_for_key`), else the local server; fine-tuning
    at OpenAI only with a key and `tune_on_openai`. Chooses the models from the dated list and prints every choice.

    `start_server` (default `gptnb.serve.local_server`) and `environ` (default ``os.environ``) are for tests.
    """
    import openai

    from .openai_models import choose_model

    environ = os.environ if environ is None else environ
    if ask_for_key and not environ.get("OPENAI_API_KEY"):
        environ["OPENAI_API_KEY"] = getpass.getpass("OpenAI API key (Enter to skip): ")
    use_openai = bool(environ.get("OPENAI_API_KEY"))
    if tune_on_openai and not use_openai:
        print("TUNE_ON_OPENAI = True needs an OpenAI key: fine-tuning uses the local server.")
    tune_on_openai = tune_on_openai and use_openai
    server = None
    if not tune_on_openai:
        if start_server is None:
            from .serve import local_server as start_server
        server = start_server()  # `gptnb serve` in a background thread, stopped at the end (or when Python exits)
        print(f"local server {server.base_url}: {server.model!r} = {server.describe()}")
    client = openai.OpenAI(api_key=environ["OPENAI_API_KEY"]) if use_openai else server.client()
    tuner = client if tune_on_openai else server.client()
    print("inference: " + ("OpenAI's API (your key, not shown)" if use_openai else "the local server (no key)"))
    if tune_on_openai:
        print(
            f"fine-tuning: OpenAI, which bills your account; per {WIND_DOWN_SOURCE} (checked {WIND_DOWN_CHECKED}): "
            f"{WIND_DOWN}"
        )
    chosen = [choose_model(client, "chat"), choose_model(client, "completion"), choose_model(tuner, "fine-tune")]
    for choice in chosen:
        print(choice)
    print(f"openai SDK {openai.__version__} | inference at {client.base_url} | fine-tuning at {tuner.base_url}")
    return Connection(client, tuner, server, use_openai, tune_on_openai, *(choice.model for choice in chosen))


def create_job(tuner, **arguments):
    """``tuner.fine_tuning.jobs.create(**arguments)``; OpenAI's refusal becomes `FineTuningRefused`, one line
    saying why (the fine-tuning wind-down when it is a permission error) and what to do."""
    import openai

    try:
        return tuner.fine_tuning.jobs.create(**arguments)
    except openai.APIStatusError as error:
        if tuner.base_url.host in ("127.0.0.1", "localhost"):  # the local server's errors are its own lines
            raise
        said = str(error.message).strip().splitlines()[0] if str(error.message).strip() else "no message"
        if isinstance(error, openai.PermissionDeniedError) or "fine-tun" in said.lower():
            why = (
                f"OpenAI is winding down self-serve fine-tuning (per {WIND_DOWN_SOURCE}, checked "
                f"{WIND_DOWN_CHECKED}: {WIND_DOWN}); set TUNE_ON_OPENAI = False to fine-tune on the local server"
            )
        else:
            why = "fix what OpenAI names, or set TUNE_ON_OPENAI = False to fine-tune on the local server"
        raise FineTuningRefused(
            f"OpenAI refused to create a fine-tuning job of {arguments.get('model')!r} "
            f"({error.status_code}: {said}): {why}"
        ) from None


def base_predictions(api: Connection, splits, profile, predict, few_shot, k_shots: int) -> tuple[dict, str]:
    """The base model's test predictions to compare the fine-tuned one with, and where they come from.

    Local server: notebook 02's zero-shot and best few-shot predictions (`prompting_baselines`: read from
    the results table, or computed in this process as notebook 02 does). OpenAI: `k_shots`-shot through the API,
    with the notebook's `predict(model, make_messages, texts)`.
    """
    if not api.tunes_locally:
        return {f"base, {k_shots}-shot via the API": predict(api.tune_model, few_shot, list(splits.test.text))}, "API"
    from .baselines import BASELINES, BEST_PROMPT, prompting_baselines, setup
    from .models import load_model
    from .results import recorded_predictions

    name = api.server.loaded
    same = setup(splits, profile=profile, model_name=name)
    if all(recorded_predictions("02", method, **same) for method in BASELINES):
        model = tokenizer = None  # read from the table: no model needed
    else:
        model, tokenizer = load_model(api.server.model)
    found = prompting_baselines(model, tokenizer, splits, profile=profile, model_name=name)
    k = int(found.rows.set_index("method").loc[BEST_PROMPT, "shots"])
    return {
        "base, zero-shot (notebook 02)": found.predictions["zero-shot"],
        f"base, best few-shot (notebook 02, k={k})": found.predictions[BEST_PROMPT],
    }, (f"notebook 02's baselines: {found.source} (k chosen on {profile.n_sweep} validation tweets)")


def compare(y_true, predictions: dict[str, list[int]], tuned: str) -> dict:
    """Score every model on the same tweets (bootstrap 95 % intervals) and print `tuned` minus each other model,
    with a paired bootstrap interval of the difference, saying plainly whether it includes 0.

    Returns ``{"scores": {name: metrics}, "differences": {name: paired_difference of macro-F1}, "table": DataFrame}``.
    """
    if tuned not in predictions:
        raise KeyError(f"{tuned!r} is not among the models compared: {', '.join(predictions)}")
    y_true = list(y_true)
    scores = {name: score_with_interval(y_true, predicted) for name, predicted in predictions.items()}
    differences = {}
    for other in (name for name in predictions if name != tuned):
        differences[other] = paired_difference(y_true, predictions[tuned], predictions[other])
        print(verdict(differences[other], tuned, other) + " (paired: both scored on the same resampled tweets)")
    table = pd.DataFrame(
        {
            name: {
                "accuracy [95 % interval]": format_interval(s, "accuracy"),
                "macro-F1 [95 % interval]": format_interval(s, "macro_f1"),
                "no label in top 20": list(predictions[name]).count(-1),
            }
            for name, s in scores.items()
        }
    ).T
    return {"scores": scores, "differences": differences, "table": table}
