"""What the first GPU run (H200, bf16) found in the server's store: NaN in metrics made list_events answer 500.

The GPU-side findings have tests beside their code: no fully masked attention rows (gptnb.attention) and
padding-safe attention in test_device.py, the NaN guard of `finetune` in test_finetune.py, offline mode in
test_hub.py, the bundle for a GPU machine without internet in test_prepare_gpu.py.
"""

import json
import math
import time

import httpx
import pytest

from gptnb.serve import local_server
from gptnb.serve.jobs.store import Store

NAN, INF = float("nan"), float("inf")


def _job(store: Store, job_id: str = "ftjob-nan", **fields) -> dict:
    return store.add_job({"id": job_id, "created_at": 1, "object": "fine_tuning.job", "status": "running", **fields})


def test_non_finite_metrics_are_kept_as_null(tmp_path):
    store = Store(tmp_path)
    _job(store)
    event = store.add_event("ftjob-nan", "Step 3/12: training loss=nan", data={"step": 3, "train_loss": NAN})
    store.add_event("ftjob-nan", "Step 4/12: validation loss=inf", data={"step": 4, "full_valid_loss": INF})
    store.set_checkpoints("ftjob-nan", [{"id": "ftckpt-1", "metrics": {"train_loss": -INF, "full_valid_loss": 0.5}}])
    store.update_job("ftjob-nan", trained_tokens=None, estimated_finish=NAN)
    assert event["data"] == {"step": 3, "train_loss": None}
    assert [e["data"] for e in store.events("ftjob-nan")] == [
        {"step": 3, "train_loss": None},
        {"step": 4, "full_valid_loss": None},
    ]
    assert store.checkpoints("ftjob-nan")[0]["metrics"] == {"train_loss": None, "full_valid_loss": 0.5}
    assert store.job("ftjob-nan")["estimated_finish"] is None
    for path in (tmp_path / "jobs" / "ftjob-nan").iterdir():
        text = path.read_text()
        assert "NaN" not in text and "Infinity" not in text, path.name


def _old_job_with_nan(root) -> None:
    """A job folder as a version before this fix left it: Python's json wrote NaN and Infinity literally."""
    folder = root / "jobs" / "ftjob-old"
    folder.mkdir(parents=True)
    job = {"id": "ftjob-old", "object": "fine_tuning.job", "created_at": 1, "status": "failed", "model": "tiny-gpt2"}
    (folder / "job.json").write_text(json.dumps({**job, "estimated_finish": NAN}))
    event = {"id": "ftevent-1", "object": "fine_tuning.job.event", "created_at": 2, "level": "info"}
    event |= {"message": "Step 3/12: training loss=nan", "data": {"step": 3, "train_loss": NAN}, "type": "metrics"}
    (folder / "events.jsonl").write_text(json.dumps(event) + "\n")
    (folder / "checkpoints.json").write_text(json.dumps([{"id": "ftckpt-1", "metrics": {"train_loss": INF}}]))
    assert "NaN" in (folder / "events.jsonl").read_text()


def test_an_old_events_file_with_nan_reads_as_null(tmp_path):
    _old_job_with_nan(tmp_path)
    store = Store(tmp_path)
    assert store.events("ftjob-old")[0]["data"] == {"step": 3, "train_loss": None}
    assert store.checkpoints("ftjob-old")[0]["metrics"] == {"train_loss": None}
    assert store.job("ftjob-old")["estimated_finish"] is None
    json.dumps(store.events("ftjob-old"), allow_nan=False)  # what the server's answer needs


def test_failing_unfinished_jobs_clears_their_estimated_finish(tmp_path):
    store = Store(tmp_path)
    _job(store, estimated_finish=2_000_000_000)
    assert store.fail_unfinished("the server stopped") == ["ftjob-nan"]
    assert store.job("ftjob-nan")["estimated_finish"] is None
    assert Store(tmp_path).job("ftjob-nan")["estimated_finish"] is None


@pytest.fixture
def server_with_old_nan_job(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTNB_PROFILE", "tiny")
    _old_job_with_nan(tmp_path)
    with local_server("tiny-gpt2", data_dir=tmp_path, api_key="test-key-not-secret") as server:
        yield server


def test_the_server_lists_events_and_checkpoints_holding_nan(server_with_old_nan_job):
    server = server_with_old_nan_job
    headers = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as http:
        events = http.get("/fine_tuning/jobs/ftjob-old/events")
        checkpoints = http.get("/fine_tuning/jobs/ftjob-old/checkpoints")
        job = http.get("/fine_tuning/jobs/ftjob-old")
    assert events.status_code == 200, events.text
    assert events.json()["data"][0]["data"] == {"step": 3, "train_loss": None}
    assert checkpoints.status_code == 200 and checkpoints.json()["data"][0]["metrics"] == {"train_loss": None}
    assert job.status_code == 200 and job.json()["estimated_finish"] is None


def test_a_diverging_job_fails_with_the_one_line_reason(tmp_path, monkeypatch):
    """The GPU run's LoRA job produced NaN metrics and a model; now it fails, saying why and what to try."""
    import io

    from gptnb import finetune as ft

    real = ft.finetune

    def diverging(model, *args, **kwargs):  # as bf16 on the H200 did: every logit NaN
        model.get_output_embeddings().register_forward_hook(lambda module, inputs, output: output * math.nan)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(ft, "finetune", diverging)
    monkeypatch.setenv("GPTNB_PROFILE", "tiny")
    pairs = [json.dumps({"prompt": f"Tweet: example {i}\nSentiment:", "completion": " positive"}) for i in range(12)]
    with local_server("tiny-gpt2", data_dir=tmp_path, api_key="test-key-not-secret") as server:
        client = server.client(max_retries=0, timeout=60)
        upload = client.files.create(file=("t.jsonl", io.BytesIO("\n".join(pairs).encode())), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model="tiny-gpt2", training_file=upload.id, hyperparameters={"n_epochs": 3, "batch_size": 4}
        )
        for _ in range(600):
            job = client.fine_tuning.jobs.retrieve(job.id)
            if job.status in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.2)
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert job.status == "failed" and job.fine_tuned_model is None and job.estimated_finish is None
    assert job.error.code == "training_failed"
    assert job.error.message == (
        "training diverged: the training loss is nan at step 1 of 9, so training stopped; "
        "try a lower learning_rate_multiplier (it was 1.0)"
    )
    assert events[0].level == "error" and events[0].message == f"Job failed: {job.error.message}"
