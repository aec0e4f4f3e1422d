"""What the local server keeps on disk: corrupt files, torn event lines, streamed uploads, permissions.

Store tests use a `Store` on a temporary folder; the others drive a real server over loopback
(tiny-gpt2), started on a data folder that already holds corrupt files.
"""

import contextlib
import io
import json
import os
import stat
import threading
import time

import httpx
import psutil
import pytest
from conftest import KEY, MODEL, wait_for

from gptnb.datacheck.formats import training_file_examples, training_file_problem
from gptnb.files import write_atomically
from gptnb.serve import local_server
from gptnb.serve.jobs.store import Store

PAIR = json.dumps({"prompt": "Tweet: a fine day\nSentiment:", "completion": " positive"})
BOUNDARY = "gptnb-test-boundary"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def record(record_id: str, **fields) -> str:
    return json.dumps({"id": record_id, "created_at": 1, **fields})


def seed_corrupt_files(root):
    """A data folder as a crash or a stray edit can leave it: one good file, one good job, four bad files."""
    (root / "files").mkdir(parents=True)
    (root / "files" / "file-good.json").write_text(
        record("file-good", object="file", bytes=len(PAIR), filename="t.jsonl", purpose="fine-tune")
    )
    (root / "files" / "file-good.data").write_text(PAIR)
    (root / "files" / "file-empty.json").write_text("")
    (root / "files" / "file-torn.json").write_text('{"id": "file-torn", "crea')
    (root / "files" / "file-list.json").write_text("[]")
    done = root / "jobs" / "ftjob-done"
    done.mkdir(parents=True)
    (done / "job.json").write_text(
        record("ftjob-done", status="succeeded", model=MODEL, fine_tuned_model="ft:tiny-gpt2::done", finished_at=2)
    )
    (done / "checkpoints.json").write_bytes(b"\xff\xfe not json")
    (root / "jobs" / "ftjob-torn").mkdir()
    (root / "jobs" / "ftjob-torn" / "job.json").write_text('{"id": "ftjob-to')
    return ["file-empty.json", "file-torn.json", "file-list.json", "checkpoints.json", "job.json"]


# --- Store: corrupt JSON, torn events, atomic writes, permissions ---------------------------------


def test_corrupt_json_files_are_moved_aside_with_one_warning_each(tmp_path, capsys):
    bad = seed_corrupt_files(tmp_path)
    store = Store(tmp_path)
    assert [f["id"] for f in store.files()] == ["file-good"] and [j["id"] for j in store.jobs()] == ["ftjob-done"]
    assert store.checkpoints("ftjob-done") == []
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == len(bad), warnings
    for name in bad:
        assert sum(f"/{name} (" in line for line in warnings) == 1, (name, warnings)
    assert all(line.startswith("gptnb serve: WARNING: skipped ") and "moved it to" in line for line in warnings)
    assert (tmp_path / "files" / "file-empty.json.corrupt").exists()
    assert (tmp_path / "jobs" / "ftjob-done" / "checkpoints.json.corrupt").exists()
    assert not (tmp_path / "jobs" / "ftjob-torn" / "job.json").exists()
    moved = sorted(tmp_path.rglob("*.corrupt"))
    assert len(moved) == len(bad) and {stat.S_IMODE(path.stat().st_mode) for path in moved} == {0o600}, "private"
    Store(tmp_path)
    assert capsys.readouterr().err == "", "a file moved aside is not reported again"


def test_a_torn_event_line_does_not_swallow_the_next_event(tmp_path):
    store = Store(tmp_path)
    store.add_job({"id": "ftjob-x", "created_at": 1, "status": "running"})
    store.add_event("ftjob-x", "Step 1/9")
    with open(tmp_path / "jobs" / "ftjob-x" / "events.jsonl", "a") as log:
        log.write('{"id": "ftevent-cut", "object": "fine_tun')  # the crash
    store.add_event("ftjob-x", "Job failed: the server stopped")
    assert [e["message"] for e in store.events("ftjob-x")] == ["Step 1/9", "Job failed: the server stopped"]


def test_write_atomically_flushes_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old")
    flushed = []

    def fsync(handle):
        info = os.fstat(handle)
        flushed.append((stat.S_ISDIR(info.st_mode), info.st_ino, target.read_text()))

    monkeypatch.setattr(os, "fsync", fsync)
    write_atomically(target, "new")
    assert target.read_text() == "new"
    assert flushed == [(False, target.stat().st_ino, "old"), (True, tmp_path.stat().st_ino, "new")]


def test_what_the_store_writes_only_the_user_can_read(tmp_path):
    root = tmp_path / "data"
    store = Store(root)
    kept = store.add_file("t.jsonl", "fine-tune", PAIR.encode())
    with store.receiving() as tmp:
        tmp.write_text(PAIR)
        streamed = store.add_file("s.jsonl", "fine-tune", tmp)
    store.add_job({"id": "ftjob-x", "created_at": 1, "status": "queued"})
    store.add_event("ftjob-x", "queued")
    store.set_checkpoints("ftjob-x", [])
    folders = [root, root / "files", root / "jobs", root / "jobs" / "ftjob-x"]
    assert {str(p): mode(p) for p in folders} == {str(p): 0o700 for p in folders}
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) == 7 and {str(p): mode(p) for p in files} == {str(p): 0o600 for p in files}
    assert store.content_path(streamed["id"]).read_text() == PAIR and kept["bytes"] == streamed["bytes"]
    assert sorted(p.name for p in (root / "files").iterdir()) == sorted(
        f"{f['id']}.{kind}" for f in (kept, streamed) for kind in ("json", "data")
    ), "no temporary file left"


def test_a_data_folder_the_user_already_had_keeps_its_permissions(tmp_path):
    tmp_path.chmod(0o755)
    (tmp_path / "files").mkdir(mode=0o755)
    Store(tmp_path)
    assert (mode(tmp_path), mode(tmp_path / "files"), mode(tmp_path / "jobs")) == (0o755, 0o700, 0o700)


def test_lone_surrogates_are_a_problem_for_training_with_their_line():
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok \ud800"}]}
    text = "\n".join([PAIR, '{"prompt": "x \\udc00 y", "completion": " z"}', json.dumps(chat)])
    examples, wrong = training_file_examples(text)
    assert len(examples) == 1 and wrong.startswith("invalid_unicode on lines 2, 3 (")
    assert training_file_problem(text.split("\n")) == wrong


# --- the server ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-storage") / "data"
    seed_corrupt_files(root)
    return root


@pytest.fixture(scope="module")
def started(data_dir):
    """(server, what it printed on stderr while starting) for a server on the corrupt data folder."""
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        patch.setenv("GPTNB_PROFILE", "tiny")
        running = local_server(MODEL, data_dir=data_dir, api_key=KEY)
    yield running, stderr.getvalue()
    running.stop()


@pytest.fixture(scope="module")
def server(started):
    return started[0]


def multipart_head(filename="train.jsonl", purpose="fine-tune") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()


MULTIPART_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def post_upload(server, body) -> httpx.Response:
    """POST /v1/files with `body` (bytes, or an iterator of chunks sent as they come)."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return httpx.post(f"{server.base_url}/files", content=body, headers=headers, timeout=120)


def assert_openai_error(answer: httpx.Response, status: int, **expected) -> dict:
    assert answer.status_code == status, answer.text[:300]
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and "\n" not in error["message"]
    assert {key: error[key] for key in expected} == expected, error
    return error


def uploads_in_progress(data_dir) -> list:
    return list((data_dir / "files").glob(".upload-*"))


def test_a_corrupt_data_folder_starts_the_server_and_it_answers(started, data_dir):
    server, stderr = started
    warnings = [line for line in stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 5 and all(str(data_dir) in line for line in warnings), stderr
    client = server.client(max_retries=0, timeout=60)
    assert [f.id for f in client.files.list()] == ["file-good"]
    assert "ft:tiny-gpt2::done" in [m.id for m in client.models.list()]
    assert (data_dir / "jobs" / "ftjob-done" / "checkpoints.json.corrupt").exists()
    assert client.fine_tuning.jobs.list_events("ftjob-done").data == []


def test_an_upload_streams_to_the_data_folder_and_a_refused_one_leaves_nothing(server, data_dir):
    before = sorted((data_dir / "files").iterdir())
    arrived = []

    def body():
        yield multipart_head()
        for _ in range(64):
            yield (PAIR + "\n").encode() * 256  # 16 KiB
        # The body is not over: the server has part of it.
        wait_for(lambda: any(path.stat().st_size for path in uploads_in_progress(data_dir)), 30)
        arrived.append(True)
        yield b"{oops" + MULTIPART_TAIL

    error = assert_openai_error(post_upload(server, body()), 400, param="file", code="invalid_file_format")
    assert arrived, "the file reached the data folder while it was being sent"
    assert "invalid_json on lines 16385 " in error["message"]
    assert sorted((data_dir / "files").iterdir()) == before


def test_an_upload_is_not_held_in_memory(server, data_dir):
    line = (PAIR + "\n").encode()
    chunk = line * (2**16 // len(line))
    chunks = 32 * 2**20 // len(chunk)
    size = chunks * len(chunk)
    process, peak, sending = psutil.Process(), [0], threading.Event()

    def sample():
        while not sending.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    def body():
        yield multipart_head()
        for _ in range(chunks):
            yield chunk
        yield MULTIPART_TAIL

    base = process.memory_info().rss
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        answer = post_upload(server, body())
    finally:
        sending.set()
        sampler.join()
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["bytes"] == size
    assert peak[0] - base < size / 2, f"RSS grew by {(peak[0] - base) / 2**20:.0f} MiB for a {size >> 20} MiB upload"
    assert not uploads_in_progress(data_dir)


def test_more_than_two_uploads_at_once_get_429(server, data_dir):
    release, answers = threading.Event(), {}

    def slow(name):
        def body():
            yield multipart_head(name)
            yield (PAIR + "\n").encode()
            release.wait(60)
            yield MULTIPART_TAIL

        answers[name] = post_upload(server, body())

    holding = [threading.Thread(target=slow, args=(f"slow-{i}.jsonl",)) for i in range(2)]
    for thread in holding:
        thread.start()
    wait_for(lambda: len(uploads_in_progress(data_dir)) == 2, 30)  # both are being received
    try:
        third = post_upload(server, multipart_head() + PAIR.encode() + MULTIPART_TAIL)
    finally:
        release.set()
        for thread in holding:
            thread.join()
    assert_openai_error(third, 429, code="rate_limit_exceeded")
    assert [answers[f"slow-{i}.jsonl"].status_code for i in range(2)] == [200, 200]
    assert post_upload(server, multipart_head() + PAIR.encode() + MULTIPART_TAIL).status_code == 200


def test_an_upload_training_would_reject_is_refused_with_its_line(server):
    surrogate = '{"messages": [{"role": "user", "content": "hi \\ud800"}, {"role": "assistant", "content": "ok"}]}'
    answer = post_upload(server, multipart_head() + f"{PAIR}\n{surrogate}\n".encode() + MULTIPART_TAIL)
    error = assert_openai_error(answer, 400, param="file", code="invalid_file_format")
    assert "invalid_unicode on lines 2 " in error["message"]


PURPOSE_ONLY = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'.encode()
FILE_ONLY = multipart_head()[len(PURPOSE_ONLY) :] + PAIR.encode() + MULTIPART_TAIL
MALFORMED = {
    "json": (b'{"purpose": "fine-tune"}', "application/json", "file"),
    "no boundary": (FILE_ONLY, "multipart/form-data", "file"),
    "not multipart": (b"garbage", None, "file"),
    "no file": (PURPOSE_ONLY + f"--{BOUNDARY}--\r\n".encode(), None, "file"),
    "no purpose": (FILE_ONLY, None, "purpose"),
    "long purpose": (multipart_head(purpose="x" * 2000) + PAIR.encode() + MULTIPART_TAIL, None, "purpose"),
    "other purpose": (multipart_head(purpose="assistants") + PAIR.encode() + MULTIPART_TAIL, None, "purpose"),
    "not UTF-8": (multipart_head() + PAIR.encode() + b"\n\xff\xfe\n" + MULTIPART_TAIL, None, "file"),
    "two files": (multipart_head() + PAIR.encode() + b"\r\n" + FILE_ONLY, None, "file"),
}


@pytest.mark.parametrize("body, content_type, param", MALFORMED.values(), ids=MALFORMED)
def test_malformed_uploads_get_openai_shaped_400s(server, data_dir, body, content_type, param):
    headers = {"Authorization": f"Bearer {KEY}"}
    headers["Content-Type"] = content_type or f"multipart/form-data; boundary={BOUNDARY}"
    answer = httpx.post(f"{server.base_url}/files", content=body, headers=headers, timeout=60)
    assert_openai_error(answer, 400, param=param)
    assert not uploads_in_progress(data_dir)


def test_uploads_over_the_server_are_private(server, data_dir):
    uploaded = post_upload(server, multipart_head() + PAIR.encode() + MULTIPART_TAIL).json()
    assert mode(data_dir / "files") == 0o700
    assert mode(data_dir / "files" / f"{uploaded['id']}.data") == mode(data_dir / "files" / f"{uploaded['id']}.json")
    assert mode(data_dir / "files" / f"{uploaded['id']}.data") == 0o600
    content = httpx.get(f"{server.base_url}/files/{uploaded['id']}/content", headers={"Authorization": f"Bearer {KEY}"})
    assert content.content == PAIR.encode()
