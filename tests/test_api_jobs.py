"""Fine-tuning jobs under stops, cancels, crashes and deleted files; `gptnb serve`'s access log and argument errors.

Signals go to a real `gptnb serve` process; what a job left behind is read from the data folder on disk.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from urllib.parse import quote

import httpx
import pytest
from conftest import DONE, KEY, MODEL, PAIRS, free_port, serve, upload, wait, wait_for

from gptnb import cli
from gptnb.profiles import get_profile
from gptnb.serve import local_server
from gptnb.serve.jobs.runner import JobRunner, new_job
from gptnb.serve.jobs.store import Store
from gptnb.serve.protocol import JobRequest

# Thousands of one-example steps: the job is still training when a test stops or cancels it.
LONG = {"n_epochs": 50, "batch_size": 1}
MANY = [json.dumps({"prompt": f"Tweet: example {i}\nSentiment:", "completion": " positive"}) for i in range(80)]


def on_disk(data_dir, job_id) -> tuple[dict, list[str], set[str]]:
    """A job as its folder holds it: job.json, its event messages (oldest first), and the names in the folder."""
    folder = data_dir / "jobs" / job_id
    events = [json.loads(line)["message"] for line in (folder / "events.jsonl").read_text().splitlines()]
    return json.loads((folder / "job.json").read_text()), events, {path.name for path in folder.iterdir()}


def trained_outputs(names: set[str]) -> set[str]:
    """What a job folder holds beyond its records: the trainer's scratch folder, the adapter, checkpoints."""
    return {name for name in names if name in ("trainer", "model") or name.startswith("step-")}


def until_training(client, job_id, timeout=120) -> None:
    """Wait for the job's first metrics event: it is then inside the training loop."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(event.type == "metrics" for event in client.fine_tuning.jobs.list_events(job_id, limit=100)):
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} logged no metrics in {timeout} s")


def long_job(client):
    train = upload(client, MANY)
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=train.id, hyperparameters=LONG)
    until_training(client, job.id)
    return job


# --- stopping the server mid-job ----------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_fails_the_running_job_on_disk_and_exits_cleanly(tmp_path, stop):
    data, log_path = tmp_path / "data", tmp_path / "serve.log"
    with open(log_path, "w") as log:
        process, client = serve(data, free_port(), log)
        try:
            job = long_job(client)
            assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
            process.send_signal(stop)
            code = process.wait(timeout=60)
        finally:
            process.kill()
    output = log_path.read_text()
    assert code == 128 + stop, (code, output[-3000:])  # ended by the signal, after a clean shutdown
    assert "terminate called" not in output and "Traceback" not in output, output[-3000:]
    stored, events, names = on_disk(data, job.id)
    assert stored["status"] == "failed" and stored["error"]["code"] == "server_stopped", stored
    assert "stopped" in stored["error"]["message"] and stored["finished_at"]
    assert events[-1].startswith("Job failed: the server was stopped"), events[-3:]
    assert not trained_outputs(names), names


def test_a_kill_mid_job_leaves_no_partial_outputs_after_the_next_start(tmp_path):
    data, port = tmp_path / "data", free_port()
    with open(tmp_path / "serve.log", "w") as log:
        process, client = serve(data, port, log)
        try:
            job = long_job(client)
            assert "trainer" in on_disk(data, job.id)[2], "the trainer's scratch folder exists while it trains"
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        process, client = serve(data, port, log)
        try:
            assert client.fine_tuning.jobs.retrieve(job.id).status == "failed"
        finally:
            process.terminate()
            process.wait(timeout=60)
    assert not trained_outputs(on_disk(data, job.id)[2])


# --- cancelling ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("api-jobs")


@pytest.fixture(scope="module")
def client(data_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GPTNB_PROFILE", "tiny")
        with local_server(MODEL, data_dir=data_dir, api_key=KEY) as running:
            yield running.client(max_retries=0, timeout=60)


def test_a_cancelled_job_saves_nothing_and_logs_nothing_after_its_cancel(client, data_dir):
    first = long_job(client)
    queued = client.fine_tuning.jobs.create(model=MODEL, training_file=upload(client, PAIRS).id)
    assert client.fine_tuning.jobs.cancel(queued.id).status == "cancelled"
    assert client.fine_tuning.jobs.cancel(first.id).status == "cancelled"
    # Jobs train one at a time: once the next one trains, the cancelled ones have wound down.
    after = long_job(client)
    client.fine_tuning.jobs.cancel(after.id)
    stored, events, names = on_disk(data_dir, first.id)
    assert stored["status"] == "cancelled" and events[-1] == "Job cancelled", events[-3:]
    assert not trained_outputs(names), names
    stored, events, names = on_disk(data_dir, queued.id)
    assert "Fine-tuning job started" not in events and events[-1] == "Job cancelled", events
    assert not trained_outputs(names), names


def test_a_cancel_as_the_job_starts_comes_after_its_start_and_saves_nothing(tmp_path, monkeypatch):
    """A cancel that arrives while the trainer takes the job waits for the start to be recorded (it did not:
    'Job cancelled' came before 'Fine-tuning job started', and the job then trained a step and saved)."""
    monkeypatch.setenv("GPTNB_PROFILE", "tiny")
    cancels: list[threading.Thread] = []

    class CancelOnStart(Store):
        def add_event(self, job_id, message, **fields):
            if message == "Fine-tuning job started":
                cancels.append(threading.Thread(target=runner.cancel, args=(job_id,)))
                cancels[0].start()
                cancels[0].join(timeout=2)  # returns at once unless the trainer holds the runner's lock
            return super().add_event(job_id, message, **fields)

    store = CancelOnStart(tmp_path)
    runner = JobRunner(store, get_profile())
    train = store.add_file("train.jsonl", "fine-tune", "\n".join(PAIRS).encode())
    job = runner.submit(new_job(JobRequest(model=MODEL, training_file=train["id"]), {}))
    deadline = time.time() + 120
    while not cancels or cancels[0].is_alive() or "trainer" in on_disk(tmp_path, job["id"])[2]:
        assert time.time() < deadline, "the cancelled job did not wind down"
        time.sleep(0.1)
    runner.close()
    stored, events, names = on_disk(tmp_path, job["id"])
    assert stored["status"] == "cancelled"
    assert events[-2:] == ["Fine-tuning job started", "Job cancelled"], events
    assert not trained_outputs(names), names


# --- the training file is pinned when the job is created ---------------------------------------


def test_deleting_the_training_file_after_creating_the_job_does_not_fail_it(client, data_dir):
    blocker = long_job(client)  # keeps the next job queued while its file is deleted
    train = upload(client, PAIRS)
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=train.id, hyperparameters={"n_epochs": 1})
    assert client.files.delete(train.id).deleted
    client.fine_tuning.jobs.cancel(blocker.id)
    done = wait(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.trained_tokens > 0


# --- the access log, and the command line --------------------------------------------------------


def test_an_api_key_in_the_query_string_never_reaches_the_access_log(tmp_path):
    port, log_path = free_port(), tmp_path / "serve.log"
    others = ("sk-other-secret-1", "tok-other-secret-2", "k-other-secret-3")
    paths = [
        f"/v1/models?api_key={KEY}",
        f"/v1/models?limit=3&API_KEY={quote(KEY)}&after=x",
        f"/v1/models?anything={KEY}",
        f"/v1/models?q={quote(KEY, safe='')}%20",
        f"/v1/models?key={others[0]}",
        f"/v1/models?token={others[1]}&api_key={others[2]}",
        f"/v1/files/{KEY}",
    ]
    with open(log_path, "w") as log:
        process, _ = serve(tmp_path / "data", port, log)
        try:
            for path in paths:
                assert httpx.get(f"http://127.0.0.1:{port}{path}").status_code == 401
        finally:
            process.terminate()
            process.wait(timeout=60)
    output = log_path.read_text()
    access = [line for line in output.splitlines() if '"GET /v1/' in line and "401" in line]
    assert len(access) == len(paths), output[-3000:]
    for secret in (KEY, quote(KEY, safe=""), *others):
        assert secret not in output, secret
    assert "limit=3&API_KEY=***&after=x" in output, access


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--port", "abc"], "argument --port: invalid port 'abc': give a number from 1 to 65535"),
        (["--port", "70000"], "argument --port: invalid port '70000': give a number from 1 to 65535"),
        (["--port", "-1"], "argument --port: invalid port '-1': give a number from 1 to 65535"),
        (["--port"], "argument --port: expected one argument"),
        (["--host"], "argument --host: expected one argument"),
    ],
)
def test_gptnb_serve_reports_a_bad_argument_in_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", *argv])
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and not out
    assert err.splitlines() == [f"gptnb serve: error: {message} (see gptnb serve --help)"], err


# --- a job's seed decides its trained weights ----------------------------------------------------


def test_the_same_seed_trains_the_same_adapter_and_another_seed_a_different_one(tmp_path, monkeypatch):
    """Jobs of one server share its random state: the second seed-0 job runs after a seed-1 job and after other
    random draws, and still trains the first one's weights (LoRA's random start came from whatever ran before)."""
    import torch
    from safetensors.torch import load_file

    monkeypatch.setenv("GPTNB_PROFILE", "tiny")
    store = Store(tmp_path)
    runner = JobRunner(store, get_profile())
    train = store.add_file("train.jsonl", "fine-tune", "\n".join(PAIRS).encode())

    def adapter(seed: int) -> dict:
        request = JobRequest(model=MODEL, training_file=train["id"], seed=seed)
        job = runner.submit(new_job(request, {"n_epochs": 2}))
        wait_for(lambda: store.job(job["id"])["status"] in DONE, 600)
        assert store.job(job["id"])["status"] == "succeeded", store.job(job["id"])["error"]
        return load_file(store.job_dir(job["id"]) / "model" / "adapter_model.safetensors")

    try:
        first, other = adapter(0), adapter(1)
        torch.rand(1000)  # anything else drawing from torch's global generator meanwhile
        again = adapter(0)
    finally:
        runner.close()
    assert first.keys() == again.keys() == other.keys() and first
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)
