"""The key/value cache: reusing a shared prefix's, so that tokens several inputs start with run once, and timing it.

`prompts.label_logprobs` runs the tokens all its prompts share (a few-shot prompt's instruction and
examples) once; the API server's engine keeps the last prompt's cache for the next one that starts
the same way; notebook 03 times one new token with and without a cache (`seconds`).
"""

from __future__ import annotations

import copy
import inspect
from time import perf_counter
from typing import Callable, Sequence

import torch
from transformers import DynamicCache


def cache_argument(model) -> str:
    """The forward argument that takes a key/value cache: ``cache`` in newer transformers, else ``past_key_values``."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model wraps it
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def shared_length(sequences: Sequence[Sequence[int]], limit: int) -> int:
    """How many leading tokens all `sequences` share, at most `limit`."""
    n = 0
    while n < limit and all(sequence[n] == sequences[0][n] for sequence in sequences):
        n += 1
    return n


def prefix_copy(cache: DynamicCache, drop_last: int = 0, batch: int = 1) -> DynamicCache:
    """A copy of `cache` without its last `drop_last` tokens, repeated for a batch of `batch` rows."""
    cache = copy.deepcopy(cache)
    if drop_last:
        cache.crop(-drop_last)  # transformers 5: a negative count of tokens to remove from the end
    if batch > 1:
        cache.batch_repeat_interleave(batch)
    return cache


def seconds(step: Callable[[], object], repeats: int = 3, reset: Callable[[], object] | None = None) -> float:
    """The fastest of `repeats` timed runs of `step()`, after one untimed warm-up run; `reset()` runs untimed after
    each (to crop a cache back, say). Waits for a GPU to finish, so the time is the work's, not its launch's."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    best = float("inf")
    for run in range(repeats + 1):
        sync()
        start = perf_counter()
        step()
        sync()
        if run:  # the first run pays for one-time setup
            best = min(best, perf_counter() - start)
        if reset is not None:
            reset()
    return best
