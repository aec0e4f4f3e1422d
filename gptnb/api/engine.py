"""What the server runs on a model: token-by-token generation with logprobs and stop strings.

`prefill` runs a prompt (reusing the keys/values of the last prompt's shared start);
`generate` is the plain autoregressive loop after it for one sequence (one forward pass
per new token, the past keys/values cached), yielding each token with its log-probability
and the k most likely alternatives: the reference that `batching.Batcher`, which the server
decodes with, is tested and benchmarked against. `ChoiceText` turns a choice's tokens into
text that is released only once no stop string can still begin in it; `choice_pieces` does
that for one `generate`. `ModelPool` loads base and fine-tuned models on first use, each
with its `Batcher`.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch
from transformers import DynamicCache

from ..kvcache import cache_argument, prefix_copy, shared_length

if TYPE_CHECKING:
    from .batching import Batcher


@dataclass(frozen=True)
class Token:
    """A token with its log-probability under the model and the top-k alternatives there."""

    id: int
    text: str
    logprob: float | None  # None for a prompt's first token: nothing comes before it
    top: tuple[tuple[str, float], ...] = ()


class Cancelled(Exception):
    """A `batching.Batcher` request stopped because its ``cancel`` event was set (the client disconnected)."""


@dataclass
class Loaded:
    """A model ready to serve: one forward pass at a time (`lock`).

    `prefix` keeps the last prompt's token ids and its key/value cache, so a prompt that
    starts the same way (the same few-shot examples, the same system message) computes
    only its new tokens: the prompt caching OpenAI bills at a discount. `batcher` (set by
    `ModelPool`) decodes the server's concurrent requests together.
    """

    model: object
    tokenizer: object
    lock: threading.Lock = field(default_factory=threading.Lock)
    prefix: tuple[tuple[int, ...], DynamicCache | None] = ((), None)
    batcher: Batcher | None = field(default=None, repr=False)

    @property
    def context_length(self) -> int:
        config = self.model.config
        return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 2048

    @property
    def eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id if self.model.generation_config else None
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        return ids | {self.tokenizer.eos_token_id}


def scored_token(loaded: Loaded, token_id: int, logprobs: torch.Tensor | None, k: int) -> Token:
    """The `Token` `token_id`, with its log-probability and the `k` most likely alternatives under `logprobs`
    (the log-softmax of the logits it was picked from; None for a prompt's first token)."""
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
    return [scored_token(loaded, ids[0], None, 0)] + [
        scored_token(loaded, t, logprobs[i], k) for i, t in enumerate(ids[1:])
    ]


def _cached_prefix(loaded: Loaded, ids: list[int]) -> tuple[DynamicCache, int]:
    """A copy of the previous prompt's cache cut to the tokens `ids` starts with (never all of them), and how many."""
    previous, cache = loaded.prefix
    shared = shared_length([previous, ids], min(len(previous), len(ids) - 1))
    if cache is None or shared == 0:
        return DynamicCache(), 0
    return prefix_copy(cache, drop_last=len(previous) - shared), shared


def prefill(loaded: Loaded, ids: list[int]) -> tuple[DynamicCache, torch.Tensor]:
    """Run the prompt `ids` alone: its key/value cache and the logits after its last token.

    The tokens it starts with in common with the last prompt are not run again (their keys/values are
    copied from `loaded.prefix`), and it becomes the prompt kept there."""
    model = loaded.model
    with loaded.lock, torch.no_grad():
        cache, cached = _cached_prefix(loaded, ids)
        inputs = torch.tensor([ids[cached:]], device=model.device)
        out = model(input_ids=inputs, use_cache=True, logits_to_keep=1, **{cache_argument(model): cache})
        loaded.prefix = (tuple(ids), copy.deepcopy(cache))
    return cache, out.logits[0, -1].float()


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


@dataclass
class Piece:
    """Text released by `ChoiceText`, the tokens generated since the last piece, and, last, why it ended."""

    text: str
    tokens: list[Token]
    finish_reason: str | None = None


class ChoiceText:
    """One choice's text, built from its tokens as they come (`add`) and handed out in pieces.

    The text ends before any stop string, which is never shown, or at the end-of-sequence token (finish
    reason ``stop``), else where the tokens run out (`end`: ``length``). Text that could still be the start of
    a stop string, or that ends inside a multi-byte character, is held back until the next tokens decide it.
    """

    def __init__(self, loaded: Loaded, stops: tuple[str, ...]):
        self.decode, self.eos, self.stops = loaded.tokenizer.decode, loaded.eos_ids, stops
        self.holdback = max((len(stop) for stop in stops), default=1) - 1
        self.generated: list[int] = []
        self.tokens: list[Token] = []  # since the last piece
        self.released = 0  # characters handed out
        self.finished = False

    def add(self, token: Token) -> Piece | None:
        """Take the next token: a piece when text can be released (the last one, `finished`, at a stop string
        or the end-of-sequence token), else None."""
        self.tokens.append(token)  # an end-of-sequence token shows in the logprobs, not in the text
        if token.id in self.eos:
            return self.end("stop")
        self.generated.append(token.id)
        text = self.decode(self.generated)
        hits = [at for at in (text.find(stop, max(self.released - self.holdback, 0)) for stop in self.stops) if at >= 0]
        if hits:
            self.finished = True
            return Piece(text[self.released : min(hits)], self.tokens, "stop")
        safe = len(text) - self.holdback - text.endswith("\ufffd")
        if safe <= self.released:
            return None
        piece = Piece(text[self.released : safe], self.tokens)
        self.released, self.tokens = safe, []
        return piece

    def end(self, finish_reason: str = "length") -> Piece:
        """The last piece: the text held back so far."""
        self.finished = True
        return Piece(self.decode(self.generated)[self.released :], self.tokens, finish_reason)


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


class ModelPool:
    """Models by name, loaded on first use and kept (the `capacity` most recently used), each with its `Batcher`.

    `resolve(name)` maps a served name to ``(base, adapter folder or None)``: base names
    load with `gptnb.load_model`, fine-tuned ones add their LoRA adapter to a fresh base.
    `limits` are the `Batcher`'s (None: its defaults for the model's device). An evicted model's
    batcher finishes the requests it holds, then its thread ends (it runs only while it has work).
    """

    def __init__(self, resolve, capacity: int = 3, limits: dict | None = None):
        self.resolve, self.capacity, self.limits = resolve, capacity, limits or {}
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> Loaded:
        """The loaded model served as `name` (raises `KeyError` for a name `resolve` does not know)."""
        from .batching import Batcher

        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
            base, adapter = self.resolve(name)
            loaded = Loaded(*_load(base, adapter))
            loaded.batcher = Batcher(loaded, **self.limits)
            self._loaded[name] = loaded
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
            return loaded

    def close(self) -> None:
        """Stop every batcher (the server is stopping): requests not finished end with an error."""
        with self._lock:
            for loaded in self._loaded.values():
                loaded.batcher.close()


def _load(base: str, adapter: Path | None):
    from ..models import load_model

    model, tokenizer = load_model(base)
    if adapter is None:
        return model, tokenizer
    from peft import PeftModel

    # Merging the adapter into the weights makes each token as fast as the base model's.
    return PeftModel.from_pretrained(model, adapter).merge_and_unload().eval(), tokenizer
