"""The local server given hostile and malformed requests (issue 13): never a 5xx, always OpenAI's error shape.

The session's server (conftest: tiny-gpt2, an API key) serves the module. A table of requests across
every endpoint, then focused tests: web pages (Host, Origin), values that underflow or are not
text, HEAD, and a client that disconnects while its completion is computed.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import anyio
import httpx
import pytest
from conftest import KEY, MODEL, wait_for

from gptnb.serve.app import Settings
from gptnb.serve.security.guard import Guard
from gptnb.serve.security.keys import Keys, Usage

AUTH = {"Authorization": f"Bearer {KEY}"}
NO_KEYS = Keys.load(None, None)  # a server that needs no key
JSON = {"Content-Type": "application/json"}
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base_url.removesuffix("/v1"), headers=AUTH, timeout=60) as client:
        yield client


def completion(**fields) -> bytes:
    """A /v1/completions body: a good one, changed by `fields` (None drops a field)."""
    return _body({"model": MODEL, "prompt": "x", "max_tokens": 1}, fields)


def chat(**fields) -> bytes:
    """A /v1/chat/completions body: a good one, changed by `fields` (None drops a field)."""
    return _body({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}, fields)


def job(**fields) -> bytes:
    """A /v1/fine_tuning/jobs body naming a file that does not exist, changed by `fields`."""
    return _body({"model": MODEL, "training_file": "file-none"}, fields)


def _body(good: dict, fields: dict) -> bytes:
    merged = {key: value for key, value in {**good, **fields}.items() if value is not None}
    return json.dumps(merged).encode()  # NaN, Infinity and lone surrogates as Python's json writes them


def multipart(fields: dict[str, str], file: bytes | None, name: str = "train.jsonl") -> tuple[bytes, dict]:
    """A multipart/form-data body and its Content-Type, as a browser form or the openai SDK sends it."""
    boundary = "hostile-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    data = "".join(parts).encode()
    if file is not None:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'
        data += head.encode() + file + b"\r\n"
    return data + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


C, CHAT, FILES, JOBS = "/v1/completions", "/v1/chat/completions", "/v1/files", "/v1/fine_tuning/jobs"
DEEP = b'{"model": "tiny-gpt2", "prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}"
UPLOAD = json.dumps({"prompt": "a", "completion": " b"}).encode()
FORM, FORM_HEADERS = multipart({"purpose": "fine-tune"}, UPLOAD)

# (method, path, body, extra headers, the status expected (None: any below 500), the error's param expected)
CASES = [
    # /v1/completions: not an object, wrong types, extremes, NaN/inf/underflow, surrogates, unknown fields
    ("POST", C, b"{not json", JSON, 400, None),
    ("POST", C, b"[]", JSON, 400, None),
    ("POST", C, b'"text"', JSON, 400, None),
    ("POST", C, b"null", JSON, 400, None),
    ("POST", C, b"", JSON, 400, None),
    ("POST", C, b'{"model": "tiny-gpt2", "prompt": "\xff\xfe"}', JSON, 400, None),
    ("POST", C, completion(model=None), JSON, 400, "model"),
    ("POST", C, completion(model=5), JSON, 400, "model"),
    ("POST", C, completion(model=""), JSON, 400, "model"),
    ("POST", C, completion(model="text-davinci-003"), JSON, 404, "model"),
    ("POST", C, completion(prompt=None), JSON, 400, "prompt"),
    ("POST", C, completion(prompt=5), JSON, 400, "prompt"),
    ("POST", C, completion(prompt={"a": 1}), JSON, 400, "prompt"),
    ("POST", C, completion(prompt=[]), JSON, 400, "prompt"),
    ("POST", C, completion(prompt=[-1]), JSON, 400, "prompt"),
    ("POST", C, completion(prompt=[[]]), JSON, 400, "prompt"),
    ("POST", C, completion(prompt=[1, "a"]), JSON, 400, "prompt"),
    ("POST", C, completion(prompt=[True]), JSON, 400, "prompt"),
    ("POST", C, completion(prompt=[99999999999]), JSON, 400, "prompt"),
    ("POST", C, completion(prompt=["x"] * 65), JSON, 400, "prompt"),
    ("POST", C, completion(prompt="\ud800x"), JSON, 400, "prompt"),
    ("POST", C, completion(prompt=["ok", "\udfff"]), JSON, 400, "prompt.1"),
    ("POST", C, completion(stop="\ud800"), JSON, 400, "stop"),
    ("POST", C, completion(model="\udc80"), JSON, 400, "model"),
    ("POST", C, completion(user="\ud800"), JSON, 400, "user"),
    ("POST", C, completion(**{"\ud800": 1}), JSON, 400, None),
    ("POST", C, completion(temperature=1e-45), JSON, 400, "temperature"),
    ("POST", C, completion(temperature=1e-45, stream=True), JSON, 400, "temperature"),
    ("POST", C, completion(top_p=1e-46), JSON, 400, "top_p"),
    ("POST", C, completion(top_p=1e-46, stream=True), JSON, 400, "top_p"),
    ("POST", C, completion(temperature=-1), JSON, 400, "temperature"),
    ("POST", C, completion(temperature="hot"), JSON, 400, "temperature"),
    ("POST", C, completion(temperature=float("nan")), JSON, 400, "temperature"),
    ("POST", C, completion(temperature=float("inf")), JSON, 400, "temperature"),
    ("POST", C, b'{"model": "tiny-gpt2", "prompt": "x", "temperature": 1e999}', JSON, 400, "temperature"),
    ("POST", C, completion(top_p=0), JSON, 400, "top_p"),
    ("POST", C, completion(top_p=1.5), JSON, 400, "top_p"),
    ("POST", C, completion(top_p=float("nan")), JSON, 400, "top_p"),
    ("POST", C, completion(max_tokens=1e30), JSON, 400, "max_tokens"),
    ("POST", C, completion(max_tokens=-1), JSON, 400, "max_tokens"),
    ("POST", C, completion(max_tokens=10**12), JSON, 400, "max_tokens"),
    ("POST", C, completion(max_tokens=10**40), JSON, 400, "max_tokens"),
    ("POST", C, completion(max_tokens="many"), JSON, 400, "max_tokens"),
    ("POST", C, completion(n=0), JSON, 400, "n"),
    ("POST", C, completion(n=-3), JSON, 400, "n"),
    ("POST", C, completion(n=99999), JSON, 400, "n"),
    ("POST", C, b'{"model": "tiny-gpt2", "prompt": "x", "n": 1e999}', JSON, 400, "n"),
    ("POST", C, completion(prompt=["x"] * 8, n=16), JSON, 400, "prompt"),
    ("POST", C, completion(logprobs=99), JSON, 400, "logprobs"),
    ("POST", C, completion(logprobs=-1), JSON, 400, "logprobs"),
    ("POST", C, completion(seed=1e400), JSON, 400, "seed"),
    ("POST", C, completion(seed=2**70), JSON, 400, "seed"),
    ("POST", C, completion(stop=[""]), JSON, 400, "stop"),
    ("POST", C, completion(stop=list("abcde")), JSON, 400, "stop"),
    ("POST", C, completion(stop=5), JSON, 400, "stop"),
    ("POST", C, completion(echo=[1]), JSON, 400, "echo"),
    ("POST", C, completion(stream={"on": True}), JSON, 400, "stream"),
    ("POST", C, completion(stream_options={"include_usage": "often"}), JSON, 400, "stream_options.include_usage"),
    ("POST", C, completion(best_of=3), JSON, 400, "best_of"),
    ("POST", C, completion(suffix="x"), JSON, 400, "suffix"),
    ("POST", C, completion(presence_penalty=1), JSON, 400, "presence_penalty"),
    ("POST", C, completion(logit_bias={"50256": -100}), JSON, 400, "logit_bias"),
    ("POST", C, completion(best_effort=True), JSON, 400, "best_effort"),
    ("POST", C, DEEP, JSON, 400, None),
    # wrong content types
    ("POST", C, completion(), {"Content-Type": "text/plain"}, 400, None),
    ("POST", C, b"model=tiny-gpt2&prompt=x", {"Content-Type": "application/x-www-form-urlencoded"}, 400, None),
    ("POST", C, *multipart({"model": MODEL, "prompt": "x"}, None), 400, None),
    # /v1/chat/completions
    ("POST", CHAT, chat(messages=[]), JSON, 400, "messages"),
    ("POST", CHAT, chat(messages="hi"), JSON, 400, "messages"),
    ("POST", CHAT, chat(messages=[{"role": "robot", "content": "x"}]), JSON, 400, "messages.0.role"),
    ("POST", CHAT, chat(messages=[{"role": "user"}]), JSON, 400, "messages.0.content"),
    ("POST", CHAT, chat(messages=[{"role": "user", "content": 5}]), JSON, 400, "messages.0.content"),
    ("POST", CHAT, chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), JSON, 400, None),
    ("POST", CHAT, chat(messages=[{"role": "user", "content": "\ud800x"}]), JSON, 400, "messages.0.content"),
    (
        "POST",
        CHAT,
        chat(messages=[{"role": "user", "content": [{"type": "text", "text": "\udbff"}]}]),
        JSON,
        400,
        "messages.0.content.0.text",
    ),
    ("POST", CHAT, chat(messages=[{"role": "user", "content": "x", "name": "\udc00"}]), JSON, 400, "messages.0.name"),
    ("POST", CHAT, chat(temperature=1e-45, stream=True), JSON, 400, "temperature"),
    ("POST", CHAT, chat(top_p=1e-46), JSON, 400, "top_p"),
    ("POST", CHAT, chat(max_tokens=0), JSON, 400, "max_tokens"),
    ("POST", CHAT, chat(max_tokens=None, max_completion_tokens=10**9), JSON, 400, "messages"),
    ("POST", CHAT, chat(messages=[{"role": "user", "content": "hello " * 20000}]), JSON, 400, "messages"),
    ("POST", CHAT, chat(top_logprobs=5), JSON, 400, "top_logprobs"),
    ("POST", CHAT, chat(logprobs=True, top_logprobs=21), JSON, 400, "top_logprobs"),
    ("POST", CHAT, chat(metadata={"a": 1}), JSON, 400, "metadata.a"),
    ("POST", CHAT, chat(n=1e999), JSON, 400, "n"),
    ("GET", CHAT, None, {}, 405, None),
    # /v1/models
    ("GET", "/v1/models/davinci", None, {}, 404, "model"),
    ("GET", "/v1/models/%ED%A0%80", None, {}, 404, "model"),
    ("POST", "/v1/models", b"{}", JSON, 405, None),
    ("DELETE", "/v1/models/tiny-gpt2", None, {}, 405, None),
    ("HEAD", "/v1/models/davinci", None, {}, 404, None),
    # /v1/files
    ("POST", FILES, b'{"purpose": "fine-tune"}', JSON, None, None),
    ("POST", FILES, *multipart({"purpose": "fine-tune"}, None), None, None),
    ("POST", FILES, *multipart({"purpose": "bogus"}, UPLOAD), None, None),
    ("POST", FILES, *multipart({"purpose": "fine-tune"}, b""), None, None),
    ("POST", FILES, *multipart({"purpose": "fine-tune"}, b"\xff\xfe not text\n"), None, None),
    ("POST", FILES, *multipart({"purpose": "fine-tune"}, b'{"prompt": "\\ud800", "completion": "b"}'), None, None),
    ("POST", FILES, *multipart({"purpose": "fine-tune"}, UPLOAD, name="../../etc/passwd"), None, None),
    ("POST", FILES, FORM, FORM_HEADERS, None, None),
    ("GET", FILES + "?limit=-1", None, {}, 400, "limit"),
    ("GET", FILES + "?order=sideways", None, {}, 400, "order"),
    ("GET", FILES + "/file-nope", None, {}, 404, None),
    ("GET", FILES + "/file-nope/content", None, {}, 404, None),
    ("GET", FILES + "/../../etc/passwd", None, {}, 404, None),
    ("GET", FILES + "/%ED%A0%80", None, {}, 404, None),
    ("DELETE", FILES + "/file-nope", None, {}, 404, None),
    ("PUT", FILES, b"", {}, 405, None),
    # /v1/fine_tuning/jobs
    ("POST", JOBS, b"{}", JSON, 400, None),
    ("POST", JOBS, job(), JSON, None, None),
    ("POST", JOBS, job(hyperparameters={"n_epochs": 1e999}), JSON, 400, "hyperparameters.n_epochs"),
    ("POST", JOBS, job(hyperparameters={"n_epochs": 10**400}), JSON, 400, "hyperparameters.n_epochs"),
    ("POST", JOBS, job(hyperparameters={"batch_size": 1e999}), JSON, 400, "hyperparameters.batch_size"),
    ("POST", JOBS, job(hyperparameters={"batch_size": float("nan")}), JSON, 400, "hyperparameters.batch_size"),
    ("POST", JOBS, job(hyperparameters={"learning_rate_multiplier": float("nan")}), JSON, 400, None),
    ("POST", JOBS, job(hyperparameters={"learning_rate_multiplier": float("-inf")}), JSON, 400, None),
    ("POST", JOBS, job(hyperparameters={"learning_rate_multiplier": 1e999}), JSON, 400, None),
    ("POST", JOBS, job(hyperparameters={"learning_rate_multiplier": -1}), JSON, 400, None),
    ("POST", JOBS, job(hyperparameters={"n_epochs": 0}), JSON, 400, "hyperparameters.n_epochs"),
    ("POST", JOBS, job(hyperparameters={"n_epochs": 2.5}), JSON, 400, "hyperparameters.n_epochs"),
    ("POST", JOBS, job(hyperparameters={"n_epochs": "many"}), JSON, 400, "hyperparameters.n_epochs"),
    (
        "POST",
        JOBS,
        job(method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1e999}}}),
        JSON,
        400,
        "method.supervised.hyperparameters.n_epochs",
    ),
    ("POST", JOBS, job(suffix="../../x"), JSON, 400, "suffix"),
    ("POST", JOBS, job(seed=-1), JSON, 400, "seed"),
    ("POST", JOBS, job(integrations=[{}]), JSON, 400, "integrations"),
    ("POST", JOBS, job(training_file="\ud800"), JSON, 400, "training_file"),
    ("GET", JOBS + "?limit=abc", None, {}, 400, "limit"),
    ("GET", JOBS + "/ftjob-nope", None, {}, 404, None),
    ("POST", JOBS + "/ftjob-nope/cancel", None, {}, 404, None),
    ("GET", JOBS + "/x/events?limit=-3", None, {}, None, None),
    ("HEAD", JOBS + "/ftjob-nope", None, {}, 404, None),
    # web pages, names, paths, keys and sizes
    ("POST", C, completion(), {**JSON, "Origin": "https://evil.example"}, 403, None),
    ("POST", FILES, FORM, {**FORM_HEADERS, "Origin": "http://evil.example"}, 403, None),
    ("GET", "/v1/models", None, {"Origin": "null"}, 403, None),
    ("GET", "/v1/models", None, {"Host": "evil.example"}, 403, None),
    ("GET", "/v1/models", None, {"Host": "evil.example:8000"}, 403, None),
    ("GET", "/v1/models", None, {"Host": "bad host"}, 400, None),
    ("GET", "/v1/models", None, {"Host": "[::1"}, 400, None),
    ("GET", "/v1/nope", None, {}, 404, None),
    ("GET", "/v2/models", None, {}, 404, None),
    ("GET", "/v1/models", None, {"Authorization": "Bearer wrong"}, 401, None),
    ("POST", C, b"x" * (5 * 2**20), JSON, 413, None),
]


def test_the_table_has_at_least_60_requests():
    assert len(CASES) >= 60


@pytest.mark.parametrize("method, path, body, headers, expected, param", CASES)
def test_a_hostile_request_gets_an_openai_shaped_4xx(http, method, path, body, headers, expected, param):
    answer = http.request(method, path, content=body, headers=headers)
    assert answer.status_code < 500, answer.text[:300]
    if expected is not None:
        assert answer.status_code == expected, answer.text[:300]
    if method == "HEAD":
        assert answer.content == b""
    elif answer.status_code >= 400:
        error = answer.json()["error"]
        assert set(error) == ERROR_KEYS and error["message"] and error["type"] == "invalid_request_error"
        if param is not None:
            assert error["param"] == param, error


def test_the_server_still_answers_after_the_table(server):
    client = server.client(max_retries=0, timeout=60)
    assert client.completions.create(model=MODEL, prompt="still here", max_tokens=2).usage.completion_tokens == 2
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert reply.choices[0].finish_reason in ("stop", "length")


# --- item 1: web pages ------------------------------------------------------------------------------


def test_loopback_names_and_clients_without_origin_are_served(server, http):
    port = http.base_url.port
    for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", "[::1]", f"[::1]:{port}", "LOCALHOST"):
        assert http.get("/v1/models", headers={"Host": host}).status_code == 200, host
    for origin in (f"http://localhost:{port}", "http://127.0.0.1:8888", "http://[::1]:8888"):
        assert http.get("/v1/models", headers={"Origin": origin}).status_code == 200, origin
    assert MODEL in [model.id for model in server.client(max_retries=0).models.list()]


def test_a_web_page_cannot_upload_or_rebind(server, http):
    before = http.get("/v1/files").json()["data"]
    for origin in ("https://evil.example", "null", "http://localhost.evil.example", "file://"):
        answer = http.post("/v1/files", content=FORM, headers={**FORM_HEADERS, "Origin": origin})
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden_origin", origin
    rebound = http.get("/v1/models", headers={"Host": f"attacker.example:{http.base_url.port}"})
    assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "forbidden_host"
    assert http.get("/v1/files").json()["data"] == before, "nothing was uploaded"


def guard_status(bound: str, headers: dict[str, str]) -> int:
    """The status the Guard of a server listening on `bound` gives a GET /v1/models with `headers`."""

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    scope = {"type": "http", "method": "GET", "path": "/v1/models", "headers": raw}
    guard = Guard(app, Settings(models=(), data_dir=Path("unused"), host=bound), keys=NO_KEYS, usage=Usage(()))
    anyio.run(guard, scope, receive, send)
    return sent[0]["status"]


@pytest.mark.parametrize("bound", ["0.0.0.0", "192.168.1.20", "::"])
def test_a_server_bound_beyond_loopback_takes_any_host_but_no_foreign_origin(bound):
    assert guard_status(bound, {"Host": "teacher-laptop.local:8000"}) == 200
    assert guard_status(bound, {"Host": "192.168.1.20:8000"}) == 200
    assert guard_status(bound, {"Host": "192.168.1.20:8000", "Origin": "https://evil.example"}) == 403
    assert guard_status(bound, {"Host": "192.168.1.20:8000", "Origin": "http://192.168.1.20:8000"}) == 403


@pytest.mark.parametrize("bound", ["127.0.0.1", "::1", "localhost"])
def test_a_loopback_server_takes_only_loopback_hosts(bound):
    assert guard_status(bound, {"Host": "localhost:8000"}) == 200
    assert guard_status(bound, {"Host": "teacher-laptop.local:8000"}) == 403
    assert guard_status(bound, {}) == 400


# --- item 4: values that underflow or are not text ---------------------------------------------------


@pytest.mark.parametrize(
    "path, body, param",
    [
        (C, completion(temperature=1e-45), "temperature"),
        (C, completion(top_p=1e-46), "top_p"),
        (C, completion(prompt="\ud800x"), "prompt"),
        (C, completion(stop=["\ud800x"]), "stop.0"),
        (CHAT, chat(messages=[{"role": "user", "content": "\ud800x"}]), "messages.0.content"),
        (C, completion(temperature=1e-45, stream=True), "temperature"),
        (CHAT, chat(top_p=1e-46, stream=True), "top_p"),
        (JOBS, job(hyperparameters={"n_epochs": 1e999}), "hyperparameters.n_epochs"),
        (JOBS, job(hyperparameters={"batch_size": 1e999}), "hyperparameters.batch_size"),
        (JOBS, job(hyperparameters={"learning_rate_multiplier": 1e999}), "hyperparameters.learning_rate_multiplier"),
    ],
)
def test_schema_valid_looking_values_that_broke_generation_are_400_with_param(http, path, body, param):
    answer = http.post(path, content=body, headers=JSON)
    assert answer.status_code == 400, answer.text[:300]
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"]["param"] == param


def test_tiny_but_representable_sampling_values_still_sample(server):
    client = server.client(max_retries=0, timeout=60)
    for options in ({"temperature": 1e-6}, {"top_p": 1e-6}, {"temperature": 2, "top_p": 1}):
        assert client.completions.create(model=MODEL, prompt="x", max_tokens=3, **options).usage.completion_tokens


# --- item 10: HEAD and a client that disconnects ----------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/models", f"/v1/models/{MODEL}", FILES, JOBS, JOBS + "?limit=1"])
def test_head_answers_like_get_without_a_body(http, path):
    got, head = http.get(path), http.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"]


def raw_request(server, path: str, body: dict) -> socket.socket:
    """A POST sent over a socket of our own, so that the test can close it mid-request."""
    url = httpx.URL(server.base_url)
    host, port = url.host, url.port
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def passes_after_disconnect(server, body: dict, read_first: bool) -> int:
    """Forward passes the model makes for a 400-token request whose client disconnects at the third pass
    (after reading the first bytes of the answer when `read_first`)."""
    loaded = server._background.app.state.pool.get(MODEL)
    model, passes, third = loaded.model, [], threading.Event()

    def count(module, args, output):
        passes.append(1)
        if len(passes) == 3:
            third.set()
        time.sleep(0.01)  # 400 tokens take seconds: a generation not stopped is seen going on

    hook = model.register_forward_hook(count)
    try:
        sock = raw_request(server, "/v1/completions", body)
        assert third.wait(60), "generation never started"
        if read_first:
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
        sock.close()
        wait_for(lambda: loaded.batcher.running == 0)  # its row let go: stopped, or all 400 tokens done
        return len(passes)
    finally:
        hook.remove()


DISCONNECTED = {"model": MODEL, "prompt": "The tweet was", "max_tokens": 400, "temperature": 0}


def test_a_whole_completion_would_run_all_its_tokens(server):
    """The control for the two tests below: undisturbed, this request generates all 400 tokens."""
    whole = server.client(max_retries=0, timeout=120).completions.create(**DISCONNECTED)
    assert whole.usage.completion_tokens == 400 and whole.choices[0].finish_reason == "length"


def test_a_whole_completion_stops_when_its_client_disconnects(server):
    assert passes_after_disconnect(server, DISCONNECTED, read_first=False) < 50


def test_a_streamed_completion_stops_when_its_client_disconnects(server):
    assert passes_after_disconnect(server, {**DISCONNECTED, "stream": True}, read_first=True) < 50
