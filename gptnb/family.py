"""The GPT family for notebook 01: sizes as reported (``data/gpt_family.csv``) beside
counts computed from each architecture, and the architecture knobs read from the configs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .files import DataError, csv_rows
from .models import MODELS, count_parameters, model_config
from .paths import data_dir

COLUMNS = [
    "model",
    "gptnb_name",
    "org",
    "year",
    "open_weights",
    "reported_size",
    "reported_params",
    "architecture",
    "context_length",
    "training_data",
    "source",
]
NUMERIC = ["year", "reported_params", "context_length"]
GATED_MLP = {"llama"}  # model types whose MLP is gated: act(x W_gate) * (x W_up), then W_down


def family_csv() -> Path:
    """Where the family table lives: ``data/gpt_family.csv``."""
    return data_dir() / "gpt_family.csv"


def load_family_table(path: str | Path | None = None, computed: bool = True) -> pd.DataFrame:
    """The family table, checked; with `computed`, plus ``computed_params`` (built on the meta
    device by `count_parameters`) and ``difference`` (computed / reported - 1).

    Raises `DataError` naming the file, line and field of anything unusable.
    """
    path = Path(path or family_csv())
    if not path.is_file():
        raise DataError(f"{path}: no such file; pass the path of the family CSV (columns: {', '.join(COLUMNS)})")
    rows = csv_rows(path, path.read_text(encoding="utf-8-sig"), "check its quoting")
    header = [cell.strip() for cell in rows[0][1]] if rows else []
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        raise DataError(f"{path}:1: header lacks {', '.join(missing)}; the columns are {', '.join(COLUMNS)}")
    for line, cells in rows[1:]:
        if len(cells) != len(header):
            raise DataError(
                f"{path}:{line}: {len(cells)} fields, the header has {len(header)}; quote fields with commas"
            )
        row = dict(zip(header, cells))
        if row["gptnb_name"] not in MODELS:
            raise DataError(
                f"{path}:{line}: field 'gptnb_name': {row['gptnb_name']!r} is not in gptnb.models.MODELS; "
                "use one of its names or add the model there"
            )
        for column in NUMERIC:
            if not row[column].strip().isdigit():
                raise DataError(f"{path}:{line}: field {column!r}: {row[column]!r} is not a whole number")
        if row["open_weights"] not in {"yes", "no"}:
            raise DataError(f"{path}:{line}: field 'open_weights': {row['open_weights']!r}; write yes or no")
    table = pd.DataFrame([cells for _, cells in rows[1:]], columns=header)
    table[NUMERIC] = table[NUMERIC].astype("int64")
    table["open_weights"] = table["open_weights"] == "yes"
    if computed:
        table["computed_params"] = [count_parameters(name) for name in table["gptnb_name"]]
        table["difference"] = table["computed_params"] / table["reported_params"] - 1
    return table


def architecture(name: str) -> dict:
    """The knobs that differ across the family, read from `name`'s config."""
    config = model_config(name)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None)
    rotary_dim = getattr(config, "rotary_dim", None)
    if rope:
        positions = f"rotary (theta {rope['rope_theta']:g})"
    elif rotary_dim:
        positions = f"rotary on {rotary_dim} of {head_dim} dims per head"
    else:
        positions = "learned table"
    if getattr(config, "attention_layers", None):
        kinds = config.attention_layers
        attention = f"{'/'.join(dict.fromkeys(kinds))} alternating, local window {config.window_size}"
    elif kv_heads < heads:
        attention = f"grouped-query: {kv_heads} key/value heads for {heads} query heads"
    else:
        attention = "dense causal (every earlier token)"
    activation = getattr(config, "hidden_act", None) or getattr(config, "activation_function", None) or config.afn
    return {
        "model_type": config.model_type,
        "layers": config.num_hidden_layers,
        "width": config.hidden_size,
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "mlp_width": getattr(config, "intermediate_size", None)
        or getattr(config, "n_inner", None)
        or 4 * config.hidden_size,
        "mlp": _mlp(config.model_type, activation),
        "positions": positions,
        "norm": "RMSNorm" if hasattr(config, "rms_norm_eps") else "LayerNorm",
        "attention": attention,
        "context": config.max_position_embeddings,
        "vocab": config.vocab_size,
        "tied_embeddings": bool(config.tie_word_embeddings),
    }


def _mlp(model_type: str, activation: str) -> str:
    if model_type not in GATED_MLP:
        return activation
    return f"gated {activation}" + (" (SwiGLU)" if activation == "silu" else "")


def architecture_table(names) -> pd.DataFrame:
    """`architecture` for each name, one column per model."""
    return pd.DataFrame({name: architecture(name) for name in names})
