"""Continuous (iteration-level) batching: concurrent requests to one model decoded together, one token per step.

A `Batcher` runs a decode thread while it has work. `Batcher.submit` hands it one request's rows (its prompts times
its choices, each with its own sampling generator) and returns a `Generation`, which yields every row's tokens as
(row index, `Token`) as they are made, and (row index, None) when a row ends (after an end-of-sequence token or
`max_tokens`). Between two decode steps waiting rows join the batch: prompts that start alike (a chat template's
system message) are prefilled in one pass (`decode.prefill_together`), any other one alone (`decode.prefill`, with
the engine's prompt cache); each row's first token is picked, and its keys/values merged into the batch's cache.
Finished rows, rows their consumer stopped (`Generation.stop`, at a stop string), and whole requests that were
closed or whose `cancel` event is set leave it, freeing their rows.

Why our own loop rather than transformers' `ContinuousBatchingManager` (``model.generate_batch``, what
``transformers serve --continuous-batching`` runs): in transformers 5.24 it samples every request from one
global random generator (no per-request seed, so seeded requests are not repeatable), returns only the chosen
token's log-probability, taken after temperature/top-p warping (no top-k alternatives, not the model's own),
and decides greedy versus sampling once per manager. The server promises all three per request, so here each
row is picked with `decode.pick_token` and its own generator and reported with `decode.scored_token`.

The batch's cache is a `DynamicCache` whose rows are padded to a common length (on the left, or between a shared
start and a row's own tokens): the batch keeps its attention mask, and each step passes it with each row's own
position ids, which is right for absolute positions (GPT-2, GPT-Neo) and rotary ones (Llama, SmolLM2). Forward
passes hold `loaded.lock`, so prompt scoring (``echo``) and `engine.reference.generate` can still use the model
between steps.

Limits and fairness. At most `max_rows` rows decode at once and `max_tokens_in_flight` prompt-plus-completion
tokens (counted at each row's `max_tokens`) are held; a row that would pass that waits, and the rows behind it
too, so a long request is delayed but never skipped forever (a lone row always runs). One request holds at most
half the rows and half the tokens in flight (its first row always may join), so an ``n=16`` or 4k-token request
leaves room for the others. Rows join round-robin by request: the next row comes from the waiting request with
the fewest rows running, the earliest first. At most `max_waiting` requests wait beyond the rows free; past
that `submit` raises `QueueFull` (the server's 429) with an estimate of when to retry.

Over 300 lines: the decode loop, its admission (limits, fairness) and the cache merging share one lock
and the decode thread's state; split, each part would reach into the others'.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from ...kvcache import cache_argument, shared_length
from .decode import Cancelled, Loaded, Token, pick_token, prefill, prefill_together, scored_token

# Defaults by device: a small CPU server (2 cores: past 16 rows a step costs about as much as the rows it adds)
# and a GPU (a batch of 64 costs little more than one row for the course's models).
LIMITS = {
    "cpu": {"max_rows": 16, "max_waiting": 64, "max_tokens_in_flight": 16384},
    "gpu": {"max_rows": 64, "max_waiting": 256, "max_tokens_in_flight": 65536},
}


class QueueFull(Exception):
    """The waiting line is full: try again in `retry_after` seconds."""

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(f"{waiting} requests are already waiting for this model")
        self.waiting, self.retry_after = waiting, retry_after


@dataclass(eq=False)
class _Request:
    """One `submit`: where its rows' tokens go, as (row index, item), and whether its consumer has gone."""

    cancel: threading.Event | None
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    closed: threading.Event = field(default_factory=threading.Event)
    running: int = 0  # its rows in the batch
    in_flight: int = 0  # their tokens (`_Row.cost`)

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def count(self, row: _Row, sign: int) -> None:
        """Count `row` into (+1) or out of (-1) this request's rows running and tokens in flight."""
        self.running, self.in_flight = self.running + sign, self.in_flight + sign * row.cost


@dataclass(eq=False)
class _Row:
    """One sequence to generate: its prompt and sampling settings, and its state once in the batch."""

    request: _Request
    index: int
    ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    k: int
    generator: torch.Generator | None
    closed: threading.Event = field(default_factory=threading.Event)  # its consumer needs no more tokens
    generated: int = 0
    position: int = 0  # the row's tokens in the cache (its padding not counted)
    last: int = 0  # the last token picked, the next step's input
    joined: float = 0.0  # when it was admitted (time.monotonic)

    @property
    def stopped(self) -> bool:
        return self.closed.is_set() or self.request.closed.is_set() or self.request.cancelled

    @property
    def cost(self) -> int:
        """Tokens this row can hold in the cache at most: its prompt and all it may generate."""
        return len(self.ids) + self.max_tokens


class Generation:
    """The rows of one submitted request, iterated as (row index, `Token`) and (row index, None) at a row's end.

    Raises `engine.decode.Cancelled` once the request's `cancel` is set. Use it in a ``with`` block: leaving the block
    (`close`) ends every row that is still running or waiting; so does dropping it unused (a stream whose client
    left before it began)."""

    def __init__(self, request: _Request, rows: list[_Row]):
        self._request, self._rows = request, rows
        self._open = {row.index for row in rows}

    def __iter__(self) -> Iterator[tuple[int, Token | None]]:
        return self

    def __next__(self) -> tuple[int, Token | None]:
        while self._open:
            index, item = self._request.out.get()
            if index not in self._open:
                continue  # a row stopped here: what it made since is not wanted
            if isinstance(item, BaseException):
                self._open.clear()
                raise item
            if item is None:
                self._open.discard(index)
            return index, item
        raise StopIteration

    def stop(self, index: int) -> None:
        """End row `index` (its text is complete): it leaves the batch before the next step."""
        self._open.discard(index)
        self._rows[index].closed.set()

    def close(self) -> None:
        """End every row."""
        self._open.clear()
        self._request.closed.set()

    def __enter__(self) -> Generation:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    __del__ = close


class Batcher:
    """Decodes the requests given to `submit` together, within `max_rows`, `max_tokens_in_flight` and
    `max_waiting` (see the module's opening comment; None: the `LIMITS` of the model's device)."""

    def __init__(
        self,
        loaded: Loaded,
        max_rows: int | None = None,
        max_waiting: int | None = None,
        max_tokens_in_flight: int | None = None,
    ):
        defaults = LIMITS["cpu" if loaded.model.device.type == "cpu" else "gpu"]
        self.loaded = loaded
        self.max_rows = max_rows or defaults["max_rows"]
        self.max_waiting = defaults["max_waiting"] if max_waiting is None else max_waiting
        self.max_tokens_in_flight = max_tokens_in_flight or defaults["max_tokens_in_flight"]
        self.largest_batch = 0  # the most rows one decode step has run
        self.steps = 0  # decode steps run
        self._argument = cache_argument(loaded.model)
        self._waiting: deque[_Row] = deque()
        self._lock = threading.RLock()  # guards `_waiting`, `_thread` and `_closed`
        self._closed = False
        self._thread: threading.Thread | None = None
        self._rows: list[_Row] = []  # the batch, in the order of the cache's rows; only the decode thread changes it
        self._cache = None
        self._mask = None  # the cache's attention mask (rows x columns): 0 where a row is padded
        self._joining = 0  # rows being prefilled: no longer waiting, not yet in `_rows`
        self._row_seconds = 0.0  # a running average of the time a row spends in the batch

    # --- what the server calls ---------------------------------------------------------

    def submit(
        self,
        prompts: Sequence[list[int]],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        k: int = 0,
        generators: Sequence[torch.Generator | None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Queue one request: a row per prompt (its tokens picked with the matching one of `generators`), each
        generating up to `max_tokens` tokens. Raises `QueueFull` when `full()`."""
        request = _Request(cancel)
        generators = generators or [None] * len(prompts)
        rows = [
            _Row(request, i, list(ids), max_tokens, temperature, top_p, k, generator)
            for i, (ids, generator) in enumerate(zip(prompts, generators, strict=True))
        ]
        if max_tokens <= 0:
            for row in rows:
                request.out.put((row.index, None))
            return Generation(request, rows)
        with self._lock:
            if self._closed:
                raise RuntimeError("this Batcher is closed: make a new one to generate")
            if self.full():
                raise QueueFull(self.waiting, self.retry_after())
            self._waiting.extend(rows)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="gptnb-batcher", daemon=True)
                self._thread.start()
        return Generation(request, rows)

    @property
    def waiting(self) -> int:
        """How many requests have rows waiting to join the batch."""
        with self._lock:
            return len({row.request for row in self._waiting})

    @property
    def running(self) -> int:
        """How many rows are being decoded (or prefilled to join the batch)."""
        return len(self._rows) + self._joining

    def full(self) -> bool:
        """True when `max_waiting` requests wait beyond the rows free: a server should answer 429, not queue more."""
        return self.waiting >= self.max_waiting + max(0, self.max_rows - self.running)

    def retry_after(self) -> int:
        """Seconds after which a request turned away might find room: the rows waiting, over the rows decoded at
        once, times the time a row takes (at least 1)."""
        return max(1, math.ceil(self._row_seconds * len(self._waiting) / self.max_rows))

    def close(self) -> None:
        """Refuse new requests and stop decoding; rows not finished end with an error."""
        with self._lock:
            self._closed, thread = True, self._thread
        if thread is not None:
            thread.join()

    # --- the decode thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    _fail(self._rows + list(self._waiting), RuntimeError("the server stopped mid-generation"))
                    self._waiting.clear()
                    self._rows, self._cache, self._mask = [], None, None
                if not self._waiting and not self._rows:
                    self._thread = None  # the next `submit` starts another
                    return
            self._drop_stopped()
            self._admit()
            if self._rows:
                try:
                    self._step()
                except Exception as error:  # every row's consumer sees it; the thread serves the next ones
                    _fail(self._rows, error)
                    self._left(self._rows)
                    self._keep([])

    def _drop_stopped(self) -> None:
        """End the rows, waiting or running, whose consumer stopped them or whose request is closed or cancelled."""
        with self._lock:
            gone = [row for row in self._waiting if row.stopped]
            self._waiting = deque(row for row in self._waiting if row not in gone)
        running = [row for row in self._rows if row.stopped]
        for row in gone + running:
            row.request.out.put((row.index, Cancelled() if row.request.cancelled else None))
        self._left(running)
        self._keep([row for row in self._rows if row not in running])

    def _admit(self) -> None:
        """Move waiting rows into the batch while rows and tokens in flight allow (`_next_row`): prompts with a
        shared start are prefilled together (`decode.prefill_together`), any other one alone."""
        chosen: list[_Row] = []
        while len(self._rows) + len(chosen) < self.max_rows:
            with self._lock:
                row = self._next_row(chosen)
                if row is None:
                    break
                self._waiting.remove(row)
                self._joining = len(chosen) + 1
            row.request.count(row, +1)
            chosen.append(row)
        if not chosen:
            return
        prompts = [row.ids for row in chosen]
        shared = shared_length(prompts, min(map(len, prompts)) - 1) if len(chosen) > 1 else 0
        for group in [chosen] if shared else [[row] for row in chosen]:
            try:
                self._joined(group, *self._prefill(group, shared))
            except Exception as error:  # these rows' consumers see it; the others go on
                failed = [row for row in group if not row.joined]
                for row in failed:
                    row.request.count(row, -1)
                _fail(failed, error)
        self._joining = 0

    def _prefill(self, rows: list[_Row], shared: int) -> tuple[object, torch.Tensor, torch.Tensor]:
        """The cache, attention mask and last logits of `rows`' prompts: one pass for several that share `shared`
        tokens, `decode.prefill` for one."""
        if len(rows) > 1:
            return prefill_together(self.loaded, [row.ids for row in rows], shared)
        cache, logits = prefill(self.loaded, rows[0].ids)
        return cache, torch.ones(1, len(rows[0].ids), dtype=torch.long), logits[None]

    def _joined(self, rows: list[_Row], cache, mask: torch.Tensor, logits: torch.Tensor) -> None:
        """Prefilled `rows`: each one's first token out; those that go on join the batch with their cache rows."""
        logprobs, now = torch.log_softmax(logits, dim=-1), time.monotonic()
        going_on = []
        for i, row in enumerate(rows):
            row.position, row.joined = len(row.ids), now
            if self._emit(row, logits[i], logprobs[i]):
                self._left([row])
            else:
                going_on.append(i)
        if going_on:
            if len(going_on) < len(rows):
                cache.batch_select_indices(torch.tensor(going_on))
            self._join([rows[i] for i in going_on], cache, mask[going_on].to(self.loaded.model.device))

    def _next_row(self, chosen: list[_Row]) -> _Row | None:
        """The row to admit next, after the `chosen` ones: the first waiting row of the request with the fewest rows
        running (the earliest among equals) that is within its share; None when there is none, or it does not fit
        the tokens in flight."""
        firsts: dict[_Request, _Row] = {}
        for row in self._waiting:
            firsts.setdefault(row.request, row)
        candidates = [row for row in firsts.values() if self._within_share(row)]
        if not candidates:
            return None
        row = min(candidates, key=lambda row: row.request.running)
        in_flight = sum(running.cost for running in self._rows + chosen)
        if (self._rows or chosen) and in_flight + row.cost > self.max_tokens_in_flight:
            return None
        return row

    def _within_share(self, row: _Row) -> bool:
        """Whether `row`'s request may have one more row: at most half the rows and tokens in flight each."""
        request = row.request
        return request.running == 0 or (
            request.running < max(1, self.max_rows // 2)
            and request.in_flight + row.cost <= self.max_tokens_in_flight // 2
        )

    def _step(self) -> None:
        """One decode step: every row's last token in, every row's next token out; finished rows leave."""
        model, rows = self.loaded.model, self._rows
        positions = torch.tensor([row.position for row in rows], device=model.device)
        self._mask = F.pad(self._mask, (0, 1), value=1)
        mask = None if bool(self._mask.all()) else self._mask  # None: no row is padded
        inputs = torch.tensor([[row.last] for row in rows], device=model.device)
        with self.loaded.lock, torch.no_grad():
            out = model(
                input_ids=inputs,
                attention_mask=mask,
                position_ids=positions[:, None],
                use_cache=True,
                logits_to_keep=1,
                **{self._argument: self._cache},
            )
        self.largest_batch, self.steps = max(self.largest_batch, len(rows)), self.steps + 1
        logits = out.logits[:, -1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        for row in rows:
            row.position += 1
        finished = [row for i, row in enumerate(rows) if self._emit(row, logits[i], logprobs[i])]
        self._left(finished)
        self._keep([row for row in rows if row not in finished])

    def _emit(self, row: _Row, logits: torch.Tensor, logprobs: torch.Tensor) -> bool:
        """Pick the row's next token from `logits` and hand it over; True when that was its last."""
        token_id = pick_token(logits, row.temperature, row.top_p, row.generator)
        row.request.out.put((row.index, scored_token(self.loaded, token_id, logprobs, row.k)))
        row.generated, row.last = row.generated + 1, token_id
        if token_id in self.loaded.eos_ids or row.generated >= row.max_tokens:
            row.request.out.put((row.index, None))
            return True
        return False

    def _left(self, rows: list[_Row]) -> None:
        """Count rows leaving the batch out of their requests, and into the average time a row takes."""
        now = time.monotonic()
        for row in rows:
            row.request.count(row, -1)
            self._row_seconds += 0.2 * (now - row.joined - self._row_seconds)

    def _join(self, rows: list[_Row], cache, mask: torch.Tensor) -> None:
        """Add prefilled rows, their cache and its mask, to the batch's, left-padding whichever is shorter."""
        if not self._rows:
            self._rows, self._cache, self._mask = list(rows), cache, mask
            return
        length, new = self._cache.get_seq_length(), cache.get_seq_length()
        width = max(length, new)
        for batch, joining in zip(self._cache.layers, cache.layers):
            batch.keys = torch.cat([_pad_left(batch.keys, width - length), _pad_left(joining.keys, width - new)])
            batch.values = torch.cat([_pad_left(batch.values, width - length), _pad_left(joining.values, width - new)])
        self._mask = torch.cat([F.pad(self._mask, (width - length, 0)), F.pad(mask, (width - new, 0))])
        self._rows += rows

    def _keep(self, rows: list[_Row]) -> None:
        """Keep only `rows` in the batch, and drop the cache's columns that are now padding in every row."""
        if len(rows) == len(self._rows):
            return
        if not rows:
            self._rows, self._cache, self._mask = [], None, None
            return
        kept = torch.tensor([self._rows.index(row) for row in rows])
        self._cache.batch_select_indices(kept)
        self._mask = self._mask[kept.to(self._mask.device)]
        unused = int(self._mask.any(0).int().argmax())  # the first column some row uses
        for layer in self._cache.layers:
            layer.keys, layer.values = layer.keys[..., unused:, :], layer.values[..., unused:, :]
        self._mask = self._mask[:, unused:]
        self._rows = rows


def _fail(rows: list[_Row], error: Exception) -> None:
    """End each row with `error`, raised to its consumer."""
    for row in rows:
        row.request.out.put((row.index, error))


def _pad_left(states: torch.Tensor, count: int) -> torch.Tensor:
    """Keys or values (batch, heads, tokens, head size) with `count` zero tokens before the first."""
    return F.pad(states, (0, 0, count, 0)) if count > 0 else states
