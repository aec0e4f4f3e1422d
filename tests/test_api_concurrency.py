"""Concurrent requests to the local server (issue 14): decoded together, each answered as if it were alone.

Real servers on loopback (tiny-gpt2). To make requests really arrive together, the model's forward passes are
held while they are sent (`held`): the first request's prompt waits in the model, the others in the batcher's
line, and all are released at once.
"""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import openai
import pytest
from conftest import KEY, MODEL, wait_for

from gptnb.serve.app import Settings
from gptnb.serve.running import Background

AUTH = {"Authorization": f"Bearer {KEY}"}
PROMPT = "The weather today is"
CHAT = [{"role": "user", "content": "Tell me about the sea."}]

# (path, body): greedy and seeded sampling, logprobs, n > 1, stop, echo, several prompts, chat.
REQUESTS = [
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "logprobs": 3}),
    ("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 20, "temperature": 0.9, "top_p": 0.95, "seed": 5}),
    ("/v1/completions", {"prompt": "A", "max_tokens": 9, "temperature": 1.0, "n": 2, "seed": 11, "logprobs": 2}),
    (
        "/v1/completions",
        {"prompt": ["good", "bad day"], "max_tokens": 6, "temperature": 0, "echo": True, "logprobs": 1},
    ),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": 30, "temperature": 0}),  # a stop string is added below
    (
        "/v1/chat/completions",
        {"messages": CHAT, "max_tokens": 15, "temperature": 0, "logprobs": True, "top_logprobs": 2},
    ),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 10, "temperature": 0.8, "seed": 3, "n": 2}),
]


def start(tmp_path_factory, **limits) -> Background:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GPTNB_PROFILE", "tiny")
        data = tmp_path_factory.mktemp("api-concurrency")
        server = Background(Settings(models=(MODEL,), data_dir=data, api_key=KEY, **limits))
    server.app.state.pool.get(MODEL)
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start(tmp_path_factory)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    """A server that decodes one row at a time and lets one request wait."""
    running = start(tmp_path_factory, max_batch=1, max_waiting=1)
    yield running
    running.stop()


def batcher_of(server: Background):
    return server.app.state.pool.get(MODEL).batcher


def post(server: Background, path: str, body: dict, **options) -> httpx.Response:
    return httpx.post(
        server.base_url.removesuffix("/v1") + path, json={"model": MODEL, **body}, headers=AUTH, timeout=120, **options
    )


@contextmanager
def held(server: Background):
    """Within the block the model's forward passes wait (the first one blocks the model): requests sent meanwhile
    pile up in the batcher's line, and join the batch together when the block ends."""
    model, release, reached = server.app.state.pool.get(MODEL).model, threading.Event(), threading.Event()

    def hold(module, args):
        reached.set()
        release.wait(60)

    handle = model.register_forward_pre_hook(hold)
    try:
        yield reached
    finally:
        release.set()
        handle.remove()


def together(server: Background, send, count: int) -> list:
    """`send(i)` for i in range(count) in threads, arriving together: the first is held in the model while the
    others queue; returns their results in order."""
    batcher = batcher_of(server)
    with ThreadPoolExecutor(count) as pool:
        with held(server) as reached:
            futures = [pool.submit(send, 0)]
            assert reached.wait(60), "the first request never reached the model"
            futures += [pool.submit(send, i) for i in range(1, count)]
            wait_for(lambda: batcher.waiting >= count - 1)
        return [future.result() for future in futures]


def comparable(answer: dict) -> dict:
    return {key: value for key, value in answer.items() if key not in ("id", "created")}


def assert_same(batched, alone, where="") -> None:
    """Equal JSON data, floats (log-probabilities) within 1e-4."""
    if isinstance(alone, float):
        assert batched == pytest.approx(alone, abs=1e-4), where
    elif isinstance(alone, dict):
        assert batched.keys() == alone.keys(), where
        for key in alone:
            assert_same(batched[key], alone[key], f"{where}.{key}")
    elif isinstance(alone, list):
        assert len(batched) == len(alone), where
        for i, (b, a) in enumerate(zip(batched, alone)):
            assert_same(b, a, f"{where}[{i}]")
    else:
        assert batched == alone, where


def with_a_stop_string(server: Background) -> list[tuple[str, dict]]:
    """REQUESTS, the fifth given a stop string that its greedy text reaches half-way (the tiny model's text
    depends on the transformers version that built it)."""
    path, body = REQUESTS[4]
    text = post(server, path, body).json()["choices"][0]["text"]
    assert len(text) > 8, text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    return [*REQUESTS[:4], (path, {**body, "stop": [stop, "zz"]}), *REQUESTS[5:]]


def test_concurrent_requests_answer_as_the_same_requests_sent_one_at_a_time(server):
    requests = with_a_stop_string(server)
    alone = [comparable(post(server, path, body).json()) for path, body in requests]
    batcher = batcher_of(server)
    batcher.largest_batch = 0

    def send(i: int) -> dict:
        path, body = requests[i]
        return comparable(post(server, path, body).json())

    batched = together(server, send, len(requests))
    assert batcher.largest_batch > 1, "the requests were not decoded together"
    for i, (b, a) in enumerate(zip(batched, alone)):
        assert_same(b, a, f"request {i} {requests[i][1]}")
    assert alone[1]["choices"][0]["text"] != alone[2]["choices"][0]["text"]  # seeded sampling did sample
    assert alone[4]["choices"][0]["finish_reason"] == "stop"  # a stop string ended one while others ran on


def stream(server: Background, path: str, body: dict) -> list[dict]:
    """The data events of a streamed answer, in order, up to [DONE]."""
    url = server.base_url.removesuffix("/v1") + path
    with httpx.stream("POST", url, json={"model": MODEL, "stream": True, **body}, headers=AUTH, timeout=120) as reply:
        assert reply.status_code == 200, reply.read()
        data = [line.removeprefix("data: ") for line in reply.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(event) for event in data[:-1]]


def joined(events: list[dict], chat: bool) -> dict[int, dict]:
    """Each choice's text, tokens and finish reason from its stream events, checking they come in order."""
    choices: dict[int, dict] = {}
    for event in events:
        for choice in event["choices"]:
            seen = choices.setdefault(choice["index"], {"text": "", "tokens": [], "finish_reason": None})
            assert seen["finish_reason"] is None, "an event came after its choice's last"
            if chat:
                seen["text"] += choice["delta"].get("content", "")
                seen["tokens"] += [entry["token"] for entry in (choice["logprobs"] or {}).get("content", [])]
            else:
                logprobs = choice["logprobs"] or {"tokens": [], "text_offset": []}
                start = seen.setdefault("start", logprobs["text_offset"][0] if logprobs["tokens"] else 0)
                assert logprobs["text_offset"][:1] in ([], [start + len(seen["text"])]), "a piece out of place"
                seen["text"] += choice["text"]
                seen["tokens"] += logprobs["tokens"]
            seen["finish_reason"] = choice["finish_reason"]
    return choices


def test_streams_under_concurrency_deliver_every_requests_tokens_in_order(server):
    streamed = [(path, body) for path, body in REQUESTS if "echo" not in body]
    whole = [post(server, path, body).json() for path, body in streamed]

    def send(i: int) -> list[dict]:
        return stream(server, *streamed[i])

    events = together(server, send, len(streamed))
    for (path, body), answer, request_events in zip(streamed, whole, events):
        chat = path.endswith("chat/completions")
        choices = joined(request_events, chat)
        assert sorted(choices) == list(range(len(answer["choices"])))
        for choice in answer["choices"]:
            got = choices[choice["index"]]
            text = choice["message"]["content"] if chat else choice["text"]
            assert (got["text"], got["finish_reason"]) == (text, choice["finish_reason"]), body
            if chat and choice["logprobs"]:
                assert got["tokens"] == [entry["token"] for entry in choice["logprobs"]["content"]]
            elif choice["logprobs"]:
                assert got["tokens"] == choice["logprobs"]["tokens"]


def test_a_full_waiting_line_gets_429_with_retry_after(narrow):
    slow = {"prompt": PROMPT, "max_tokens": 5, "temperature": 0}
    batcher = batcher_of(narrow)
    with ThreadPoolExecutor(2) as pool:
        with held(narrow) as reached:
            first = pool.submit(post, narrow, "/v1/completions", slow)
            assert reached.wait(60)
            second = pool.submit(post, narrow, "/v1/chat/completions", {"messages": CHAT, "max_tokens": 3})
            wait_for(lambda: batcher.waiting == 1)
            refused = post(narrow, "/v1/completions", slow)
            client = openai.OpenAI(base_url=narrow.base_url, api_key=KEY, max_retries=0)
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2)
        assert first.result().status_code == second.result().status_code == 200
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("requests", "rate_limit_exceeded", None)
    assert "Please try again in" in error["message"] and "\n" not in error["message"]
    assert post(narrow, "/v1/completions", slow).status_code == 200  # the line has emptied


@contextmanager
def slowed(server: Background):
    """Each forward pass takes 10 ms more: a generation not stopped is seen going on."""
    handle = server.app.state.pool.get(MODEL).model.register_forward_hook(lambda *args: time.sleep(0.01))
    try:
        yield
    finally:
        handle.remove()


def test_a_client_that_disconnects_mid_stream_frees_its_row(narrow):
    batcher = batcher_of(narrow)
    gc.disable()  # the stream must be closed when its client leaves, not whenever the garbage collector runs
    try:
        with slowed(narrow):
            steps = disconnect_mid_stream(narrow)
    finally:
        gc.enable()
    assert steps < 50, "the row ran on after its client left"
    # The only row is free again: the next request is answered and leaves no row behind.
    assert post(narrow, "/v1/completions", {"prompt": "x", "max_tokens": 2}).status_code == 200
    wait_for(lambda: batcher.running == 0)  # the decode thread lets the answered row go after its last step


def disconnect_mid_stream(server: Background) -> int:
    """Decode steps a 480-token stream runs after its client reads its first bytes and disconnects."""
    batcher = batcher_of(server)
    url = httpx.URL(server.base_url)
    data = json.dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": 480, "temperature": 0, "stream": True})
    sock = socket.create_connection((url.host, url.port))
    sock.sendall(
        (
            f"POST /v1/completions HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n{data}"
        ).encode()
    )
    assert sock.recv(100).startswith(b"HTTP/1.1 200")
    wait_for(lambda: batcher.running == 1)
    steps = batcher.steps
    sock.close()
    wait_for(lambda: batcher.running == 0, seconds=30)
    return batcher.steps - steps


def test_usage_is_left_for_the_guard_once_an_answer_ends(server):
    seen = []

    async def spy(scope, receive, send):
        await server.app(scope, receive, send)
        seen.append(scope.get("state", {}).get("usage"))

    from fastapi.testclient import TestClient

    with TestClient(spy, base_url="http://127.0.0.1", headers=AUTH) as client:
        whole = client.post("/v1/completions", json={"model": MODEL, "prompt": PROMPT, "max_tokens": 4})
        client.post("/v1/chat/completions", json={"model": MODEL, "messages": CHAT, "max_tokens": 3, "stream": True})
    usage = whole.json()["usage"]
    assert seen[0] == {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": 4}
    assert seen[1]["completion_tokens"] <= 3 and seen[1]["prompt_tokens"] > 0


def test_every_429_says_when_to_retry():
    """The server's error handler keeps an error's headers, and gives a 429 without Retry-After one (the upload
    slots' 429)."""
    from gptnb.serve.app import _http_error
    from gptnb.serve.protocol import APIError

    uploads = _http_error(None, APIError(429, "2 uploads are already being received", code="rate_limit_exceeded"))
    told = _http_error(None, APIError(429, "busy", headers={"Retry-After": "7"}))
    assert (uploads.headers["Retry-After"], told.headers["Retry-After"]) == ("1", "7")
    assert json.loads(uploads.body)["error"]["type"] == "requests"
    assert "Retry-After" not in _http_error(None, APIError(400, "bad")).headers
