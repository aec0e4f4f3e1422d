"""What the server runs on a model: token-by-token generation with logprobs and stop strings.

`generate` is the plain autoregressive loop (one forward pass per new token, the
past keys/values cached), yielding each token with its log-probability and the
k most likely alternatives; `choice_pieces` turns those tokens into text that is
released only once no stop string can still begin in it. A `threading.Event` passed
as ``cancel`` (set when the client has gone) stops the loop before its next forward
pass. `ModelPool` loads base and fine-tuned models on first use.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from transformers import DynamicCache

from ..kvcache import cache_argument, prefix_copy, shared_length


@dataclass(frozen=True)
class Token:
    """A token with its log-probability under the model and the top-k alternatives there."""

    id: int
    text: str
    logprob: float | None  # None for a prompt's first token: nothing comes before it
    top: tuple[tuple[str, float], ...] = ()


class Cancelled(Exception):
    """Generation stopped because its ``cancel`` event was set (the client disconnected)."""


@dataclass
class Loaded:
    """A model ready to serve: one forward pass at a time (`lock`).

    `prefix` keeps the last prompt's token ids and its key/value cache, so a prompt that
    starts the same way (the same few-shot examples, the same system message) computes
    only its new tokens: the prompt caching OpenAI bills at a discount.
    """

    model: object
    tokenizer: object
    lock: threading.Lock = field(default_factory=threading.Lock)
    prefix: tuple[tuple[int, ...], DynamicCache | None] = ((), None)

    @property
    def context_length(self) -> int:
        config = self.model.config
        return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 2048

    @property
    def eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id if self.model.generation_config else None
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        return ids | {self.tokenizer.eos_token_id}


def _token(loaded: Loaded, token_id: int, logprobs: torch.Tensor | None, k: int) -> Token:
    decode = loaded.tokenizer.decode
    if logprobs is None:
        return Token(token_id, decode([token_id]), None)
    top = ()
    if k:
        values, ids = logprobs.topk(k)
        top = tuple((decode([i]), float(v)) for v, i in zip(values.tolist(), ids.tolist()))
    return Token(token_id, decode([token_id]), float(logprobs[token_id]), top)


def pick_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """Greedy at temperature 0; else sample from softmax(logits / T), keeping the smallest set of tokens
    whose probability adds up to `top_p` (nucleus sampling)."""
    if temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # tokens after the nucleus is full
        probs = probs.scatter(0, order, sorted_probs.masked_fill(outside, 0))
    return int(torch.multinomial(probs, 1, generator=generator))


def prompt_tokens(loaded: Loaded, ids: list[int], k: int) -> list[Token]:
    """Each prompt token with its log-probability given the tokens before it (``echo`` with ``logprobs``)."""
    with loaded.lock, torch.no_grad():
        logits = loaded.model(torch.tensor([ids], device=loaded.model.device)).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [_token(loaded, ids[0], None, 0)] + [_token(loaded, t, logprobs[i], k) for i, t in enumerate(ids[1:])]


def _cached_prefix(loaded: Loaded, ids: list[int]) -> tuple[DynamicCache, int]:
    """A copy of the previous prompt's cache cut to the tokens `ids` starts with (never all of them), and how many."""
    previous, cache = loaded.prefix
    shared = shared_length([previous, ids], min(len(previous), len(ids) - 1))
    if cache is None or shared == 0:
        return DynamicCache(), 0
    return prefix_copy(cache, drop_last=len(previous) - shared), shared


def generate(
    loaded: Loaded,
    ids: list[int],
    *,
    max_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    k: int = 0,
    generator: torch.Generator | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[Token]:
    """Yield up to `max_tokens` new tokens after `ids`; the last is an end-of-sequence token if the model chose one.

    Raises `Cancelled` before a forward pass once `cancel` is set."""
    model, eos = loaded.model, loaded.eos_ids
    with loaded.lock:
        cache, cached = _cached_prefix(loaded, ids)
    argument = cache_argument(model)  # the keys/values of every token so far, filled in place
    inputs = torch.tensor([ids[cached:]], device=model.device)
    for step in range(max_tokens):
        if cancel is not None and cancel.is_set():
            raise Cancelled
        with loaded.lock, torch.no_grad():
            out = model(input_ids=inputs, use_cache=True, logits_to_keep=1, **{argument: cache})
            logits = out.logits[0, -1].float()
            if step == 0:
                loaded.prefix = (tuple(ids), copy.deepcopy(cache))
        token_id = pick_token(logits, temperature, top_p, generator)
        yield _token(loaded, token_id, torch.log_softmax(logits, dim=-1), k)
        if token_id in eos:
            return
        inputs = torch.tensor([[token_id]], device=model.device)


@dataclass
class Piece:
    """Text released by `choice_pieces`, the tokens generated since the last piece, and, last, why it ended."""

    text: str
    tokens: list[Token]
    finish_reason: str | None = None


def choice_pieces(
    loaded: Loaded, ids: list[int], stops: tuple[str, ...], max_tokens: int, **sampling
) -> Iterator[Piece]:
    """Generate one choice as text pieces; the text ends before any stop string, which is never shown,
    or at the end-of-sequence token (finish reason ``stop``), else after `max_tokens` (``length``).

    Text that could still be the start of a stop string, or that ends inside a multi-byte
    character, is held back until the next tokens decide it.
    """
    generated, tokens, released, finish_reason = [], [], 0, "length"
    holdback = max((len(stop) for stop in stops), default=1) - 1
    for token in generate(loaded, ids, max_tokens=max_tokens, **sampling):
        tokens.append(token)  # an end-of-sequence token shows in the logprobs, not in the text
        if token.id in loaded.eos_ids:
            finish_reason = "stop"
            break
        generated.append(token.id)
        text = loaded.tokenizer.decode(generated)
        hits = [at for at in (text.find(stop, max(released - holdback, 0)) for stop in stops) if at >= 0]
        if hits:
            yield Piece(text[released : min(hits)], tokens, "stop")
            return
        safe = len(text) - holdback - text.endswith("\ufffd")
        if safe > released:
            yield Piece(text[released:safe], tokens)
            released, tokens = safe, []
    text = loaded.tokenizer.decode(generated)
    yield Piece(text[released:], tokens, finish_reason)


class ModelPool:
    """Models by name, loaded on first use and kept (the `capacity` most recently used).

    `resolve(name)` maps a served name to ``(base, adapter folder or None)``: base names
    load with `gptnb.load_model`, fine-tuned ones add their LoRA adapter to a fresh base.
    """

    def __init__(self, resolve, capacity: int = 3):
        self.resolve, self.capacity = resolve, capacity
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> Loaded:
        """The loaded model served as `name` (raises `KeyError` for a name `resolve` does not know)."""
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
            base, adapter = self.resolve(name)
            loaded = Loaded(*_load(base, adapter))
            self._loaded[name] = loaded
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
            return loaded


def _load(base: str, adapter: Path | None):
    from ..models import load_model

    model, tokenizer = load_model(base)
    if adapter is None:
        return model, tokenizer
    from peft import PeftModel

    # Merging the adapter into the weights makes each token as fast as the base model's.
    return PeftModel.from_pretrained(model, adapter).merge_and_unload().eval(), tokenizer
