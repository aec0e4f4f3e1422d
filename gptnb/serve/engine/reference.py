"""Reference decoding loops for the tests and benchmarks: the server itself never runs them.

`generate` is the plain autoregressive loop for one sequence (one forward pass per new token, the past keys/values
cached), the reference the `batcher.Batcher` is tested and benchmarked against; `batched` is one row through a
`Batcher` with `generate`'s contract; `choice_pieces` is one `generate` as `decode.ChoiceText` pieces.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ...kvcache import cache_argument
from .batcher import Batcher
from .decode import ChoiceText, Loaded, Piece, Token, pick_token, prefill, scored_token


def generate(
    loaded: Loaded,
    ids: list[int],
    *,
    max_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    k: int = 0,
    generator: torch.Generator | None = None,
) -> Iterator[Token]:
    """Yield up to `max_tokens` new tokens after `ids`; the last is an end-of-sequence token if the model chose one."""
    if max_tokens <= 0:
        return
    cache, logits = prefill(loaded, ids)
    model, argument = loaded.model, cache_argument(loaded.model)
    for step in range(max_tokens):
        token_id = pick_token(logits, temperature, top_p, generator)
        yield scored_token(loaded, token_id, torch.log_softmax(logits, dim=-1), k)
        if token_id in loaded.eos_ids or step == max_tokens - 1:
            return
        with loaded.lock, torch.no_grad():
            inputs = torch.tensor([[token_id]], device=model.device)
            out = model(input_ids=inputs, use_cache=True, logits_to_keep=1, **{argument: cache})  # fills `cache`
        logits = out.logits[0, -1].float()


def batched(batcher: Batcher, ids: list[int], *, max_tokens: int, cancel=None, generator=None, **sampling):
    """One row, with `generate`'s contract (the same `sampling`: temperature, top_p, k): up to `max_tokens` tokens
    after `ids`, decoded in `batcher`'s batch. Closing the iterator frees its row; setting `cancel` does too, and
    raises `decode.Cancelled` here."""
    sampling = {"temperature": 1.0, "top_p": 1.0, "k": 0, **sampling, "generators": [generator]}
    with batcher.submit([ids], max_tokens=max_tokens, cancel=cancel, **sampling) as generation:
        for _, token in generation:
            if token is not None:
                yield token


def choice_pieces(
    loaded: Loaded, ids: list[int], stops: tuple[str, ...], max_tokens: int, **sampling
) -> Iterator[Piece]:
    """One choice generated alone (`generate`) as text pieces (`ChoiceText`); the last has its finish reason."""
    text = ChoiceText(loaded, stops)
    for token in generate(loaded, ids, max_tokens=max_tokens, **sampling):
        piece = text.add(token)
        if piece is not None:
            yield piece
        if text.finished:
            return
    yield text.end()
