"""The old name of the engine, now `gptnb.serve.engine` in three layers (decode, pool; reference for the tests),
kept until nothing uses it (issue 24)."""

from gptnb.serve.engine.decode import (
    Cancelled,
    ChoiceText,
    Loaded,
    Piece,
    Token,
    pick_token,
    prefill,
    prompt_tokens,
    scored_token,
)
from gptnb.serve.engine.pool import ModelPool
from gptnb.serve.engine.reference import choice_pieces, generate

__all__ = [
    "Cancelled", "ChoiceText", "Loaded", "ModelPool", "Piece", "Token", "choice_pieces", "generate", "pick_token",
    "prefill", "prompt_tokens", "scored_token",
]  # fmt: skip
