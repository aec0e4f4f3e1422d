"""Continuous (iteration-level) batching: concurrent requests to one model decoded together, one token per step.

A `Batcher` owns a decode thread. `Batcher.generate` has `engine.generate`'s contract (it yields `Token`s and
ends after an end-of-sequence token or `max_tokens`), so a server swaps it in under `choice_pieces`. Between two
decode steps waiting requests join the batch: each prompt is prefilled alone (with the engine's prompt cache),
its first token picked, and its keys/values merged into the batch's cache. Finished requests, and those whose
consumer stopped iterating or whose `cancel` event is set, leave it, freeing their row.

Why our own loop rather than transformers' `ContinuousBatchingManager` (``model.generate_batch``, what
``transformers serve --continuous-batching`` runs): in transformers 5.24 it samples every request from one
global random generator (no per-request seed, so seeded requests are not repeatable), returns only the chosen
token's log-probability, taken after temperature/top-p warping (no top-k alternatives, not the model's own),
and decides greedy versus sampling once per manager. The server promises all three per request, so here each
row is picked with `engine.pick_token` and its own generator and reported with the engine's `_token`.

The batch's cache is a `DynamicCache` whose rows are left-padded to a common length: each step passes an
attention mask hiding the padding and each row's own position ids, which is right for absolute positions
(GPT-2, GPT-Neo) and rotary ones (Llama, SmolLM2). Forward passes hold `loaded.lock`, so prompt scoring and
`engine.generate` can still use the model between steps.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F

from ..kvcache import cache_argument
from .engine import Cancelled, Loaded, Token, _cached_prefix, _token, pick_token

_END = object()  # put in a request's token queue after its last token


@dataclass(eq=False)
class _Request:
    """One generation: its prompt and sampling settings, where its tokens go, and its row's state once admitted."""

    ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    k: int
    generator: torch.Generator | None
    cancel: threading.Event | None
    tokens: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    closed: threading.Event = field(default_factory=threading.Event)  # the consumer stopped iterating
    generated: int = 0
    position: int = 0  # the row's tokens in the cache (its padding not counted)
    last: int = 0  # the last token picked, the next step's input

    @property
    def stopped(self) -> bool:
        return self.closed.is_set() or (self.cancel is not None and self.cancel.is_set())

    @property
    def cost(self) -> int:
        """Tokens this request can hold in the cache at most: its prompt and all it may generate."""
        return len(self.ids) + self.max_tokens


class Batcher:
    """Decodes the requests given to `generate` together, at most `max_rows` at once and `max_tokens_in_flight`
    prompt-plus-completion tokens in all (a lone request is always admitted); the others wait their turn in
    order of arrival, at most `max_waiting` of them before `full()` says to turn new ones away."""

    def __init__(self, loaded: Loaded, max_rows: int = 16, max_tokens_in_flight: int = 8192, max_waiting: int = 64):
        self.loaded, self.max_rows = loaded, max_rows
        self.max_tokens_in_flight, self.max_waiting = max_tokens_in_flight, max_waiting
        self.largest_batch = 0  # the most rows one decode step has run
        self.steps = 0  # decode steps run
        self._argument = cache_argument(loaded.model)
        self._waiting: deque[_Request] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._rows: list[_Request] = []  # the batch, in the order of the cache's rows; only the decode thread
        self._cache = None
        self._thread = threading.Thread(target=self._run, name="gptnb-batcher", daemon=True)
        self._thread.start()

    # --- what the server calls ---------------------------------------------------------

    def generate(
        self,
        ids: list[int],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        k: int = 0,
        generator: torch.Generator | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Token]:
        """Yield up to `max_tokens` new tokens after `ids`, as `engine.generate` does, decoded in the shared batch.
        Closing the iterator ends the request and frees its row; so does setting `cancel`, which raises
        `engine.Cancelled` here."""
        if max_tokens <= 0:
            return
        request = _Request(list(ids), max_tokens, temperature, top_p, k, generator, cancel)
        with self._wake:
            if self._closing:
                raise RuntimeError("this Batcher is closed: make a new one to generate")
            self._waiting.append(request)
            self._wake.notify()
        try:
            while (item := request.tokens.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.closed.set()
            with self._wake:
                self._wake.notify()

    @property
    def waiting(self) -> int:
        """How many requests wait for a row."""
        return len(self._waiting)

    @property
    def running(self) -> int:
        """How many requests are being decoded."""
        return len(self._rows)

    def full(self) -> bool:
        """True when the waiting line is at `max_waiting`: a server should answer 429 rather than queue more."""
        return self.waiting >= self.max_waiting

    def close(self) -> None:
        """Stop the decode thread; requests not finished end with an error."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()

    # --- the decode thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closing and not self._waiting and not self._rows:
                    self._wake.wait()
                if self._closing:
                    break
            self._drop_stopped()
            self._admit()
            if self._rows:
                try:
                    self._step()
                except Exception as error:  # every row's consumer sees it; the thread serves the next ones
                    _fail(self._rows, error)
                    self._keep([])
        with self._wake:
            _fail(self._rows + list(self._waiting), RuntimeError("the Batcher was closed mid-generation"))
            self._waiting.clear()

    def _drop_stopped(self) -> None:
        """End the requests, waiting or running, whose consumer has gone or whose `cancel` is set."""
        with self._wake:
            waiting = [request for request in self._waiting if request.stopped]
            for request in waiting:
                self._waiting.remove(request)
        running = [row for row in self._rows if row.stopped]
        _cancel(waiting + running)
        self._keep([row for row in self._rows if row not in running])

    def _admit(self) -> None:
        """Move waiting requests into the batch, in order, while rows and tokens in flight allow."""
        while len(self._rows) < self.max_rows:
            with self._wake:
                if not self._waiting:
                    return
                request = self._waiting[0]
                in_flight = sum(row.cost for row in self._rows)
                if self._rows and in_flight + request.cost > self.max_tokens_in_flight:
                    return
                self._waiting.popleft()
            try:
                cache, logits = self._prefill(request.ids)
            except Exception as error:
                _fail([request], error)
                continue
            request.position = len(request.ids)
            if not self._emit(request, logits):
                self._join(request, cache)

    def _prefill(self, ids: list[int]):
        """The cache of a prompt run alone (its shared start taken from the engine's prompt cache) and the logits
        after it."""
        model = self.loaded.model
        with self.loaded.lock, torch.no_grad():
            cache, cached = _cached_prefix(self.loaded, ids)
            inputs = torch.tensor([ids[cached:]], device=model.device)
            out = model(input_ids=inputs, use_cache=True, logits_to_keep=1, **{self._argument: cache})
            self.loaded.prefix = (tuple(ids), copy.deepcopy(cache))
        return cache, out.logits[0, -1].float()

    def _step(self) -> None:
        """One decode step: every row's last token in, every row's next token out; finished rows leave."""
        model, rows = self.loaded.model, self._rows
        length = self._cache.get_seq_length()
        positions = torch.tensor([row.position for row in rows], device=model.device)
        mask = torch.arange(length + 1, device=model.device) >= (length - positions)[:, None]
        inputs = torch.tensor([[row.last] for row in rows], device=model.device)
        with self.loaded.lock, torch.no_grad():
            out = model(
                input_ids=inputs,
                attention_mask=mask.long(),
                position_ids=positions[:, None],
                use_cache=True,
                logits_to_keep=1,
                **{self._argument: self._cache},
            )
        self.largest_batch, self.steps = max(self.largest_batch, len(rows)), self.steps + 1
        logits = out.logits[:, -1].float()
        for row in rows:
            row.position += 1
        finished = [self._emit(row, logits[i]) for i, row in enumerate(rows)]
        self._keep([row for row, done in zip(rows, finished) if not done])

    def _emit(self, request: _Request, logits: torch.Tensor) -> bool:
        """Pick the request's next token from `logits` and hand it over; True when that was its last."""
        token_id = pick_token(logits, request.temperature, request.top_p, request.generator)
        request.tokens.put(_token(self.loaded, token_id, torch.log_softmax(logits, dim=-1), request.k))
        request.generated, request.last = request.generated + 1, token_id
        if token_id in self.loaded.eos_ids or request.generated >= request.max_tokens:
            _end([request])
            return True
        return False

    def _join(self, request: _Request, cache) -> None:
        """Add a prefilled request's cache to the batch's, left-padding whichever is shorter."""
        if not self._rows:
            self._rows, self._cache = [request], cache
            return
        length = self._cache.get_seq_length()
        width = max(length, request.position)
        for batch, new in zip(self._cache.layers, cache.layers):
            batch.keys = torch.cat(
                [_pad_left(batch.keys, width - length), _pad_left(new.keys, width - request.position)]
            )
            batch.values = torch.cat(
                [_pad_left(batch.values, width - length), _pad_left(new.values, width - request.position)]
            )
        self._rows.append(request)

    def _keep(self, rows: list[_Request]) -> None:
        """Keep only `rows` in the batch, and drop the cache's columns that are now padding in every row."""
        if len(rows) == len(self._rows):
            return
        if not rows:
            self._rows, self._cache = [], None
            return
        self._cache.batch_select_indices(torch.tensor([self._rows.index(row) for row in rows]))
        unused = self._cache.get_seq_length() - max(row.position for row in rows)
        for layer in self._cache.layers:
            layer.keys, layer.values = layer.keys[..., unused:, :], layer.values[..., unused:, :]
        self._rows = rows


def _end(requests: list[_Request]) -> None:
    """Tell each request's consumer that it has all its tokens."""
    for request in requests:
        request.tokens.put(_END)


def _cancel(requests: list[_Request]) -> None:
    """End each request with `engine.Cancelled`, as `engine.generate` does when its `cancel` is set."""
    for request in requests:
        request.tokens.put(Cancelled())


def _fail(requests: list[_Request], error: Exception) -> None:
    """End each request with `error`, raised to its consumer."""
    for request in requests:
        request.tokens.put(error)


def _pad_left(states: torch.Tensor, count: int) -> torch.Tensor:
    """Keys or values (batch, heads, tokens, head size) with `count` zero tokens before the first."""
    return F.pad(states, (0, 0, count, 0)) if count > 0 else states
