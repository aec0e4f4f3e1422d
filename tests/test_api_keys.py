"""API keys by name from a keys file, usage per key (log line and ``GET /v1/usage``), and the job files' privacy.

The guard and the usage route are tested on a small app whose completion routes are stubs that report
their tokens in ``request.state.usage`` as the real routes do; `test_real_requests_count_their_tokens`
drives the real server's routes with tiny-gpt2.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import sys
import threading

import pytest
from conftest import wait_for
from fastapi import FastAPI, Request
from fastapi.middleware import Middleware
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient

from gptnb import cli
from gptnb.datacheck.formats import training_file_examples
from gptnb.profiles import get_profile
from gptnb.serve.app import Settings, create_app
from gptnb.serve.jobs.runner import JobRunner, new_job, pinned_examples
from gptnb.serve.jobs.store import Store
from gptnb.serve.protocol import JobRequest
from gptnb.serve.routes import usage as usage_routes
from gptnb.serve.security.guard import Guard
from gptnb.serve.security.keys import LOG, MIN_KEY_LENGTH, Keys, KeysFileError, Usage, read_keys_file

INSTRUCTOR_KEY = "instr-0123456789abcdef"
ALICE_KEY = "alice-0123456789abcdef"
BOB_KEY = "bob-0123456789abcdefgh"
KEYS_FILE = f"""# the class of Monday
instructor  {INSTRUCTOR_KEY}
alice\t{ALICE_KEY}   # Alice's own

bob {BOB_KEY}
"""
ALL_KEYS = (INSTRUCTOR_KEY, ALICE_KEY, BOB_KEY)


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "class.keys"
    path.write_text(KEYS_FILE)
    return path


@pytest.fixture
def usage_log():
    """The usage lines logged meanwhile."""
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    level = LOG.level
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    yield lines
    LOG.removeHandler(handler)
    LOG.setLevel(level)


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# --- the keys file -----------------------------------------------------------------------------------


def test_a_keys_file_gives_names_to_keys(keys_file):
    assert read_keys_file(keys_file) == {"instructor": INSTRUCTOR_KEY, "alice": ALICE_KEY, "bob": BOB_KEY}
    keys = Keys.load("server-key-0123456789", keys_file)
    assert keys.names == ("default", "instructor", "alice", "bob")
    assert keys.name_of(b"Bearer " + ALICE_KEY.encode()) == "alice"
    assert keys.name_of(b"Bearer server-key-0123456789") == "default"
    for wrong in (None, b"", b"Bearer", b"Bearer " + ALICE_KEY[:-1].encode(), ALICE_KEY.encode(), b"Basic " + b"x"):
        assert keys.name_of(wrong) is None
    assert Keys.load(None, None).name_of(None) == "anonymous"  # no key: open to all, as before
    assert Keys.load("short", None).name_of(b"Bearer short") == "default"  # --api-key has no length rule


SHORT = "a" * (MIN_KEY_LENGTH - 1)


@pytest.mark.parametrize(
    "text, line, says",
    [
        (f"alice {ALICE_KEY} extra\n", 1, "a line holds two words, a name and its key; this one holds 3"),
        ("\n\nalice\n", 3, "this one holds 1"),
        (f"al/ice {ALICE_KEY}\n", 1, "'al/ice' is not a name"),
        (f"alice {ALICE_KEY[:-1]}é\n", 1, "the key of 'alice' holds characters other than"),
        (f"alice {SHORT}\n", 1, f"has {MIN_KEY_LENGTH - 1} characters, too short"),
        (f"alice {ALICE_KEY}\n# bob\nalice {BOB_KEY}\n", 3, "the name 'alice' is already used (on line 1)"),
        (f"alice {ALICE_KEY}\nbob {ALICE_KEY}\n", 2, "the key of 'bob' is also the key of 'alice' (on line 1)"),
        (f"default {BOB_KEY}\n", 1, "the name 'default' is already used (--api-key)"),
        ("teacher server-key-0123456789\n", 1, "the key of 'teacher' is also the key of 'default' (--api-key)"),
    ],
)
def test_a_bad_line_is_one_error_naming_file_and_line_never_the_key(tmp_path, text, line, says):
    path = tmp_path / "class.keys"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(KeysFileError) as error:
        Keys.load("server-key-0123456789", path)
    message = str(error.value)
    assert message.startswith(f"{path}, line {line}: ") and says in message and "\n" not in message
    assert not any(key in message for key in (ALICE_KEY, BOB_KEY, ALICE_KEY[:-1], SHORT, "server-key-0123456789"))


def test_a_missing_empty_or_binary_keys_file_is_one_clear_error(tmp_path):
    with pytest.raises(KeysFileError, match=r"the keys file .*nowhere\.keys does not exist"):
        Keys.load(None, tmp_path / "nowhere.keys")
    (tmp_path / "empty.keys").write_text("# nobody yet\n\n")
    with pytest.raises(KeysFileError, match=r"empty\.keys holds no keys"):
        Keys.load("server-key-0123456789", tmp_path / "empty.keys")
    (tmp_path / "latin.keys").write_bytes(f"alice {ALICE_KEY}\nj\xf6rg {BOB_KEY}\n".encode("latin-1"))
    with pytest.raises(KeysFileError, match=r"latin\.keys, line 2: not UTF-8 text"):
        Keys.load(None, tmp_path / "latin.keys")
    with pytest.raises(KeysFileError, match="cannot read the keys file"):
        Keys.load(None, tmp_path)


# --- keys and usage on an app with stub completion routes -------------------------------------------


def stub_app(tmp_path, keys: Keys) -> FastAPI:
    """An app behind the Guard with `keys`, ``/v1/usage`` and stub completion routes: each reports the
    ``prompt_tokens`` and ``completion_tokens`` its body asks for in ``request.state.usage``, once it has
    answered (a stream: at its end); a body with ``"fail": true`` gets 400 and no usage."""
    settings = Settings(models=(), data_dir=tmp_path)
    usage = Usage(keys.names)
    app = FastAPI(middleware=[Middleware(Guard, settings=settings, keys=keys, usage=usage)])
    app.state.keys, app.state.usage = keys, usage
    app.include_router(usage_routes.router)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        if body.get("fail"):
            return JSONResponse({"error": {"message": "no"}}, status_code=400)
        tokens = {"prompt_tokens": body["prompt_tokens"], "completion_tokens": body["completion_tokens"]}
        if not body.get("stream"):
            request.state.usage = tokens
            return {"object": "chat.completion", "model": body["model"]}

        def chunks():
            for _ in range(tokens["completion_tokens"]):
                yield "data: {}\n\n"
            request.state.usage = tokens

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return app


def chat(client, key, prompt_tokens=3, completion_tokens=5, **more):
    body = {"model": "tiny-gpt2", "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, **more}
    return client.post("/v1/chat/completions", json=body, headers=bearer(key))


def usage_of(client, key) -> dict:
    answer = client.get("/v1/usage", headers=bearer(key))
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert page["object"] == "page" and page["data"][0]["object"] == "bucket"
    return {result["api_key_id"]: result for result in page["data"][0]["results"]}


def test_an_unknown_key_gets_401_and_is_not_counted(tmp_path, keys_file, usage_log):
    client = TestClient(stub_app(tmp_path, Keys.load(None, keys_file)), base_url="http://localhost")
    for headers in ({}, bearer("not-a-key-of-this-class"), bearer(ALICE_KEY + "x"), {"Authorization": ALICE_KEY}):
        answer = client.post("/v1/chat/completions", json={"model": "m"}, headers=headers)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/v1/usage", headers=headers).status_code == 401
    assert chat(client, ALICE_KEY).status_code == 200
    assert usage_log == [
        'usage key=alice model="tiny-gpt2" status=200 prompt_tokens=3 completion_tokens=5 latency_ms='
        + usage_log[0].rsplit("=", 1)[1]
    ]


def test_each_key_sees_its_own_usage_and_the_instructor_all(tmp_path, keys_file, usage_log):
    client = TestClient(stub_app(tmp_path, Keys.load(None, keys_file)), base_url="http://localhost")
    chat(client, ALICE_KEY, 10, 20)
    chat(client, ALICE_KEY, 1, 2, stream=True)
    chat(client, ALICE_KEY, fail=True)
    chat(client, BOB_KEY, 7, 8)
    alice, bob = usage_of(client, ALICE_KEY), usage_of(client, BOB_KEY)
    assert list(alice) == ["alice"] and list(bob) == ["bob"]
    assert {k: alice["alice"][k] for k in ("num_model_requests", "num_errors", "input_tokens", "output_tokens")} == {
        "num_model_requests": 3,
        "num_errors": 1,
        "input_tokens": 11,
        "output_tokens": 22,
    }
    everyone = usage_of(client, INSTRUCTOR_KEY)
    assert list(everyone) == ["instructor", "alice", "bob"]  # every key, those not used yet too
    assert everyone["alice"] == alice["alice"] and everyone["bob"]["output_tokens"] == 8
    assert everyone["instructor"]["num_model_requests"] == 0
    assert [line.split()[1:4] for line in usage_log] == [
        ["key=alice", 'model="tiny-gpt2"', "status=200"],
        ["key=alice", 'model="tiny-gpt2"', "status=200"],
        ["key=alice", 'model="tiny-gpt2"', "status=400"],
        ["key=bob", 'model="tiny-gpt2"', "status=200"],
    ]
    assert "prompt_tokens=1 completion_tokens=2" in usage_log[1]  # the stream's, read when it ended
    shown = "\n".join(usage_log) + json.dumps([usage_of(client, key) for key in ALL_KEYS])
    assert not any(key in shown for key in ALL_KEYS)


def test_the_api_key_alone_sees_all_and_a_server_without_keys_counts_anonymous(tmp_path, usage_log):
    client = TestClient(stub_app(tmp_path, Keys.load("server-key-0123456789", None)), base_url="http://localhost")
    chat(client, "server-key-0123456789")
    assert usage_of(client, "server-key-0123456789")["default"]["num_model_requests"] == 1
    client = TestClient(stub_app(tmp_path, Keys.load(None, None)), base_url="http://localhost")
    chat(client, "anything")
    assert usage_of(client, "whatever")["anonymous"]["output_tokens"] == 5
    assert "server-key-0123456789" not in "\n".join(usage_log)


def test_a_model_name_cannot_break_the_log_line(tmp_path, keys_file, usage_log):
    client = TestClient(stub_app(tmp_path, Keys.load(None, keys_file)), base_url="http://localhost")
    chat(client, BOB_KEY, model="evil\nusage key=instructor " + "x" * 500)
    assert len(usage_log) == 1 and "\n" not in usage_log[0] and usage_log[0].count("key=") == 2
    assert len(usage_log[0]) < 300


# --- the real server ---------------------------------------------------------------------------------


@pytest.fixture
def real_server(tmp_path, keys_file, monkeypatch):
    """`gptnb serve`'s app (tiny-gpt2) with the keys file."""
    monkeypatch.setenv("GPTNB_PROFILE", "tiny")
    app = create_app(Settings(models=("tiny-gpt2",), data_dir=tmp_path / "data", keys_file=keys_file))
    yield TestClient(app, base_url="http://localhost")
    app.state.runner.close()


def test_real_requests_count_their_tokens(real_server, usage_log):
    answer = real_server.post(
        "/v1/completions",
        json={"model": "tiny-gpt2", "prompt": "Hello there", "max_tokens": 4, "temperature": 0},
        headers=bearer(ALICE_KEY),
    )
    assert answer.status_code == 200, answer.text
    tokens = answer.json()["usage"]
    stream = real_server.post(
        "/v1/chat/completions",
        json={"model": "tiny-gpt2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": True},
        headers=bearer(ALICE_KEY),
    )
    assert stream.status_code == 200 and stream.text.rstrip().endswith("data: [DONE]")
    alice = usage_of(real_server, ALICE_KEY)["alice"]
    assert alice["num_model_requests"] == 2 and alice["num_errors"] == 0
    assert alice["input_tokens"] > tokens["prompt_tokens"] > 0
    assert alice["output_tokens"] == tokens["completion_tokens"] + 3
    assert usage_log[0].startswith(
        f'usage key=alice model="tiny-gpt2" status=200 prompt_tokens={tokens["prompt_tokens"]} completion_tokens=4 '
    )


# --- jobs: the pinned copies ---------------------------------------------------------------------------


def test_a_jobs_copy_of_its_file_is_private_and_read_line_by_line(tmp_path):
    lines = [
        json.dumps({"prompt": "a\u2028b", "completion": " yes"}, ensure_ascii=False),  # U+2028 splits no line
        '{"prompt": "c",\r "completion": " no"}',  # \r is JSON whitespace, not a line end
        json.dumps({"prompt": "a\u2028b", "completion": " yes"}, ensure_ascii=False),  # a duplicate
    ]
    text = "\n".join(lines) + "\n"
    store = Store(tmp_path / "data")
    uploaded = store.add_file("train.jsonl", "fine-tune", text.encode())
    runner = JobRunner(store, get_profile("tiny"))
    runner.close()  # no training: the job stays queued, its copy in place
    job = runner.submit(new_job(JobRequest(model="tiny-gpt2", training_file=uploaded["id"]), {}))
    assert job["status"] == "queued"
    folder = store.job_dir(job["id"])
    assert stat.S_IMODE((folder / "training_file.jsonl").stat().st_mode) == 0o600
    assert pinned_examples(folder, "training_file") == training_file_examples(text)[0]
    assert len(pinned_examples(folder, "training_file")) == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a niceness per thread is Linux's")
def test_jobs_train_in_a_thread_of_the_lowest_cpu_priority(tmp_path):
    runner = JobRunner(Store(tmp_path / "data"), get_profile("tiny"))
    try:
        wait_for(lambda: os.getpriority(os.PRIO_PROCESS, runner._thread.native_id) == 19, 10)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0  # the server's own threads: unchanged
    finally:
        runner.close()


def test_gptnb_serve_refuses_a_bad_keys_file_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GPTNB_PROFILE", "tiny")
    bad = tmp_path / "keys.txt"
    bad.write_text("alice Zq9x\n")  # a key too short
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["serve", "--model", "tiny-gpt2", "--port", str(port), "--data-dir", str(tmp_path / "d"), "--keys-file"]
    assert cli.main([*argv, str(bad)]) == 1
    out = capsys.readouterr().out.strip()
    assert out.startswith("gptnb serve: ") and f"{bad}, line 1" in out and "Zq9x" not in out, out
    assert len(out.splitlines()) == 1
