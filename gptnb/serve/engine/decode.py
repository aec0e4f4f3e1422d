"""The decode primitives the server runs on a model, the engine's first layer (`batcher` and `pool` build on it).

`Loaded` is a model ready to serve; `prefill` runs a prompt (reusing the keys/values of the last prompt's shared
start); `pick_token` chooses a token (greedy, or sampled with temperature and top-p) and `scored_token` reports
it with its log-probability and the k most likely alternatives; `prompt_tokens` scores a prompt (``echo``).
`ChoiceText` turns a choice's tokens into text released only once no stop string can still begin in it.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from ...kvcache import cache_argument, prefix_copy, shared_length


@dataclass(frozen=True)
class Token:
    """A token with its log-probability under the model and the top-k alternatives there."""

    id: int
    text: str
    logprob: float | None  # None for a prompt's first token: nothing comes before it
    top: tuple[tuple[str, float], ...] = ()


class Cancelled(Exception):
    """A `engine.batcher.Batcher` request stopped because its ``cancel`` event was set (the client disconnected)."""


@dataclass
class Loaded:
    """A model ready to serve: one forward pass at a time (`lock`).

    `prefix` keeps the last prompt's token ids and its key/value cache, so a prompt that
    starts the same way (the same few-shot examples, the same system message) computes
    only its new tokens: the prompt caching OpenAI bills at a discount. `batcher` (set by
    `pool.ModelPool`) decodes the server's concurrent requests together.
    """

    model: object
    tokenizer: object
    lock: threading.Lock = field(default_factory=threading.Lock)
    prefix: tuple[tuple[int, ...], DynamicCache | None] = ((), None)
    batcher: Any = field(default=None, repr=False)  # its `batcher.Batcher`, set by `pool.ModelPool`

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


def prefill_together(
    loaded: Loaded, prompts: list[list[int]], shared: int
) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
    """Run prompts that start with the same `shared` tokens (at least one, and fewer than any prompt has) in one
    forward pass: their cache, its attention mask (rows x cache columns) and the logits after each prompt's last
    token (rows x vocabulary).

    The shared start is run once (`prefill`: it reuses the last prompt's start, and is kept as the last prompt) and
    repeated for every row; each prompt's own tokens follow, left-padded to the longest, so that a row's padding
    sits between the shared start and its own tokens (hidden by the mask; every padded query still sees the shared
    start, so no query is fully masked). One pass over all the new tokens multiplies larger matrices than one pass
    per prompt: on one CPU thread, 91 instead of 59 GFLOP/s for SmolLM2's MLP at 16 prompts."""
    model = loaded.model
    cache, _ = prefill(loaded, list(prompts[0][:shared]))
    cache.batch_repeat_interleave(len(prompts))
    own = [ids[shared:] for ids in prompts]
    width = max(len(ids) for ids in own)
    inputs = torch.tensor([[ids[0]] * (width - len(ids)) + ids for ids in own], device=model.device)
    own_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in own], device=model.device)
    mask = torch.cat([torch.ones(len(own), shared, dtype=torch.long, device=model.device), own_mask], dim=1)
    positions = shared + (own_mask.cumsum(-1) - 1).clamp(min=0)
    with loaded.lock, torch.no_grad():
        out = model(
            input_ids=inputs,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{cache_argument(model): cache},
        )
    return cache, mask, out.logits[:, -1].float()


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
