"""Continuous batching (`gptnb.serve.engine.batcher`): requests decoded together give what each gives alone."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from gptnb.serve.engine.batcher import Batcher, QueueFull
from gptnb.serve.engine.decode import Cancelled, Loaded, prefill_together
from gptnb.serve.engine.reference import batched, generate

PROMPTS = [
    "Hello there",
    "The quick brown fox jumps over the lazy dog and then, tired, lies down in the sun for",
    "A",
    "Once upon a time, in a land far away,",
]
MAX_TOKENS = [40, 12, 25, 18]  # the first runs long so that the others join it mid-way
CHAT_START = "System: you are a helpful assistant; answer in one sentence.\nUser: "  # as a chat template begins


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-llama"])
def loaded(request, tiny_gpt2, make_tiny_llama):
    """A tiny GPT-2 (absolute positions) or a tiny random Llama, SmolLM2's shape (rotary positions, grouped heads)."""
    model, tokenizer = tiny_gpt2
    if request.param == "tiny-llama":
        model = make_tiny_llama(tokenizer)
    return Loaded(model, tokenizer)


def _settings(i: int, sampled: bool) -> dict:
    if not sampled:
        return {"temperature": 0, "k": 3}
    return {"temperature": 0.9, "top_p": 0.95, "k": 3, "generator": torch.Generator().manual_seed(100 + i)}


def _alone(loaded: Loaded, sampled: bool, start: str = "") -> list[list]:
    return [
        list(generate(loaded, loaded.tokenizer(start + p).input_ids, max_tokens=m, **_settings(i, sampled)))
        for i, (p, m) in enumerate(zip(PROMPTS, MAX_TOKENS))
    ]


def _wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


class _PauseAt:
    """Hold the model's `at`-th forward pass (counted from entering the block) until the block ends:
    the decode thread stops there, mid-request, while the test sends more requests."""

    def __init__(self, model, at: int):
        self.model, self.at, self.calls, self.reached, self.resume = model, at, 0, threading.Event(), threading.Event()

    def _hook(self, module, args):
        self.calls += 1
        if self.calls == self.at:
            self.reached.set()
            self.resume.wait(60)

    def __enter__(self):
        self.handle = self.model.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.resume.set()
        self.handle.remove()


def _consume(
    batcher: Batcher, loaded: Loaded, i: int, sampled: bool, results: list, start: str = "", **extra
) -> threading.Thread:
    """Start a thread that runs request `i` (its prompt after `start`) through `batcher` into ``results[i]``."""

    def run():
        ids, results[i] = loaded.tokenizer(start + PROMPTS[i]).input_ids, []
        try:
            for token in batched(batcher, ids, max_tokens=MAX_TOKENS[i], **_settings(i, sampled), **extra):
                results[i].append(token)
        except Cancelled:
            results[i].append("cancelled")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _assert_same(batched: list, alone: list) -> None:
    assert [t.id for t in batched] == [t.id for t in alone]
    for b, a in zip(batched, alone):
        assert b.logprob == pytest.approx(a.logprob, abs=1e-4)
        assert [text for text, _ in b.top] == [text for text, _ in a.top]
        assert [v for _, v in b.top] == pytest.approx([v for _, v in a.top], abs=1e-4)


def _check_joining_midway(loaded: Loaded, sampled: bool, start: str = "") -> None:
    """The first request runs alone for a few steps, the others join it: each gives what it gives alone. With a
    shared `start` the three joining prompts are prefilled in one pass, padded between the start and their own
    tokens; without one, one by one."""
    alone = _alone(loaded, sampled, start)
    batcher, results = Batcher(loaded), [None] * len(PROMPTS)
    try:
        with _PauseAt(loaded.model, at=5) as pause:  # the first request's prefill and 3 decode steps, then hold
            threads = [_consume(batcher, loaded, 0, sampled, results, start)]
            pause.reached.wait(60)
            threads += [_consume(batcher, loaded, i, sampled, results, start) for i in range(1, len(PROMPTS))]
            _wait_for(lambda: batcher.waiting == len(PROMPTS) - 1)
        for thread in threads:
            thread.join(120)
    finally:
        batcher.close()
    assert batcher.largest_batch == len(PROMPTS)  # the three joined the first mid-way
    for together, single in zip(results, alone):
        _assert_same(together, single)


@pytest.mark.parametrize("start", ["", CHAT_START], ids=["own-prompts", "shared-start"])
@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "seeded"])
def test_concurrent_requests_match_the_same_requests_alone(loaded, sampled, start):
    _check_joining_midway(loaded, sampled, start)


def test_prompts_with_a_shared_start_are_prefilled_in_one_pass(loaded, monkeypatch):
    from gptnb.serve.engine import batcher as module

    together = []
    monkeypatch.setattr(module, "prefill_together", lambda *a: together.append(len(a[1])) or prefill_together(*a))
    _check_joining_midway(loaded, sampled=False, start=CHAT_START)
    assert together == [len(PROMPTS) - 1], together


@pytest.mark.slow
@pytest.mark.parametrize("start", ["", CHAT_START], ids=["own-prompts", "shared-start"])
def test_smollm2_requests_batched_match_the_same_requests_alone(start):
    import gptnb

    _check_joining_midway(Loaded(*gptnb.load_model("smollm2-135m", device="cpu")), sampled=False, start=start)


def test_cancelled_requests_free_their_rows_and_the_others_are_unchanged(loaded):
    alone = _alone(loaded, sampled=False)
    batcher, results = Batcher(loaded, max_rows=1), [None] * len(PROMPTS)
    cancel_running, cancel_waiting = threading.Event(), threading.Event()
    try:
        with _PauseAt(loaded.model, at=5) as pause:
            threads = [_consume(batcher, loaded, 0, False, results, cancel=cancel_running)]
            pause.reached.wait(60)
            threads.append(_consume(batcher, loaded, 1, False, results))
            _wait_for(lambda: batcher.waiting == 1)  # the only row is the first's
            threads.append(_consume(batcher, loaded, 2, False, results, cancel=cancel_waiting))
            _wait_for(lambda: batcher.waiting == 2)
            cancel_running.set()
            cancel_waiting.set()
        for thread in threads:
            thread.join(60)
    finally:
        batcher.close()
    *tokens, end = results[0]  # its prefill and 3 steps before the held pass, which makes the 5th and last
    assert end == "cancelled"
    _assert_same(tokens, alone[0][:5])
    _assert_same(results[1], alone[1])
    assert results[2] == ["cancelled"]  # left the line before its turn came


def test_a_consumer_that_stops_iterating_frees_its_row(loaded):
    alone = _alone(loaded, sampled=False)
    batcher = Batcher(loaded, max_rows=1)
    try:
        stream = batched(batcher, loaded.tokenizer(PROMPTS[0]).input_ids, max_tokens=400, **_settings(0, False))
        first = [next(stream) for _ in range(3)]
        stream.close()
        ids = loaded.tokenizer(PROMPTS[1]).input_ids
        second = list(batched(batcher, ids, max_tokens=MAX_TOKENS[1], **_settings(1, False)))
    finally:
        batcher.close()
    _assert_same(first, alone[0][:3])
    _assert_same(second, alone[1])
    assert batcher.steps < 400 - 3  # the closed request did not run on to its 400 tokens


def test_full_when_the_waiting_line_is_at_its_limit(tiny_gpt2):
    loaded = Loaded(*tiny_gpt2)
    batcher, results = Batcher(loaded, max_rows=1, max_waiting=1), [None] * len(PROMPTS)
    try:
        with _PauseAt(loaded.model, at=2) as pause:
            threads = [_consume(batcher, loaded, 0, False, results)]
            pause.reached.wait(60)
            assert not batcher.full()
            threads.append(_consume(batcher, loaded, 1, False, results))
            _wait_for(lambda: batcher.waiting == 1)
            assert batcher.full()
        for thread in threads:
            thread.join(60)
    finally:
        batcher.close()
    assert not batcher.full()
    assert [len(tokens) for tokens in results[:2]] == MAX_TOKENS[:2]


def test_a_many_row_request_takes_half_the_rows_and_the_others_join_before_it_ends(tiny_gpt2):
    """An n=8 request on 4 rows runs 2 at a time; a one-row request sent after it joins at once, round-robin,
    and ends long before it."""
    loaded = Loaded(*tiny_gpt2)
    ids = loaded.tokenizer(PROMPTS[0]).input_ids
    batcher, ended = Batcher(loaded, max_rows=4), {}

    def run(name: str, rows: int) -> None:
        with batcher.submit([ids] * rows, max_tokens=30, temperature=0) as generation:
            for _ in generation:
                pass
        ended[name] = batcher.steps

    try:
        with _PauseAt(loaded.model, at=1) as pause:
            big = threading.Thread(target=run, args=("big", 8))
            big.start()
            pause.reached.wait(60)
            small = threading.Thread(target=run, args=("small", 1))
            small.start()
            _wait_for(lambda: batcher.waiting == 2)
        big.join(120)
        small.join(120)
    finally:
        batcher.close()
    assert batcher.largest_batch == 3  # the big request's 2 rows and the small one's
    assert ended["small"] <= 30 < ended["big"]


def test_a_request_holds_at_most_half_the_tokens_in_flight(tiny_gpt2):
    loaded = Loaded(*tiny_gpt2)
    ids = loaded.tokenizer(PROMPTS[2]).input_ids
    batcher = Batcher(loaded, max_rows=8, max_tokens_in_flight=4 * (len(ids) + 10))
    try:
        with batcher.submit([ids] * 4, max_tokens=10, temperature=0) as generation:
            assert sum(token is None for _, token in generation) == 4
    finally:
        batcher.close()
    assert batcher.largest_batch == 2


def test_a_full_waiting_line_refuses_with_a_time_to_retry(tiny_gpt2):
    loaded = Loaded(*tiny_gpt2)
    ids = loaded.tokenizer(PROMPTS[2]).input_ids
    batcher = Batcher(loaded, max_rows=1, max_waiting=1)
    try:
        with _PauseAt(loaded.model, at=1) as pause:
            first = batcher.submit([ids], max_tokens=3, temperature=0)
            pause.reached.wait(60)
            second = batcher.submit([ids], max_tokens=3, temperature=0)
            with pytest.raises(QueueFull) as refused:
                batcher.submit([ids], max_tokens=3, temperature=0)
        assert [len(list(first)), len(list(second))] == [4, 4]  # 3 tokens and the end of each
    finally:
        batcher.close()
    assert refused.value.retry_after >= 1 and refused.value.waiting == 1
