"""Fine-tuning jobs: checked when created, then trained one at a time in a background thread.

A job goes ``validating_files → queued → running → succeeded | failed | cancelled``.
Training is `gptnb.finetune.finetune` on the job's examples (LoRA, sizes from the
profile); every log entry becomes a ``metrics`` event, and the LoRA adapter is
saved under the job's folder, where the server finds it to serve ``ft:`` models.
"""

from __future__ import annotations

import queue
import secrets
import shutil
import threading
import time
import traceback

from ..profiles import Profile
from .formats import training_file_examples, training_pair
from .store import ACTIVE, Store, new_id


class JobError(ValueError):
    """A job that cannot run; ``param`` names the request field at fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def model_name(job: dict) -> str:
    """``ft:{base}:{suffix}:{id}``, the name the completion endpoints serve a job's trained model as."""
    return f"ft:{job['model']}:{job.get('user_provided_suffix') or ''}:{job['id'].removeprefix('ftjob-')[:8]}"


def default_epochs(n_examples: int) -> int:
    """OpenAI's rule for ``n_epochs="auto"``: 3 epochs, more for tiny sets (≥100 examples seen), fewer for huge ones."""
    if n_examples * 3 < 100:
        return min(25, max(1, 100 // max(n_examples, 1)))
    if n_examples * 3 > 25_000:
        return max(1, 25_000 // n_examples)
    return 3


def resolve_hyperparameters(requested: dict, n_examples: int, profile: Profile) -> dict:
    """Replace each ``"auto"`` (or missing) hyperparameter by its value: OpenAI's epoch rule,
    the profile's batch size (at most the number of examples), a learning-rate multiplier of 1."""
    auto = {
        "n_epochs": default_epochs(n_examples),
        "batch_size": min(profile.batch_size, n_examples),
        "learning_rate_multiplier": 1.0,
    }
    return {
        name: default if requested.get(name) in (None, "auto") else requested[name] for name, default in auto.items()
    }


def file_examples(store: Store, file_id: str, param: str):
    """The examples of an uploaded file, or a `JobError` naming each problem with its lines."""
    if store.file(file_id) is None:
        raise JobError(f"{param} {file_id!r} was not found; upload it first with purpose 'fine-tune'", param)
    examples, wrong = training_file_examples(store.content_path(file_id).read_text(encoding="utf-8"))
    if wrong:
        raise JobError(f"{param} {file_id}: {wrong}", param)
    return examples


def new_job(request, hyperparameters: dict) -> dict:
    """The public shape of a new fine-tuning job (OpenAI's ``fine_tuning.job``) for a checked `JobRequest`."""
    return {
        "id": new_id("ftjob"),
        "object": "fine_tuning.job",
        "model": request.model,
        "created_at": int(time.time()),
        "finished_at": None,
        "fine_tuned_model": None,
        "organization_id": "org-gptnb-local",
        "result_files": [],
        "status": "validating_files",
        "training_file": request.training_file,
        "validation_file": request.validation_file,
        "hyperparameters": hyperparameters,
        "trained_tokens": None,
        "error": None,
        "user_provided_suffix": request.suffix,
        "seed": request.seed if request.seed is not None else secrets.randbelow(2**31),
        "estimated_finish": None,
        "integrations": [],
        "metadata": request.metadata,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
    }


class JobRunner:
    """Trains queued jobs one after another in a daemon thread."""

    def __init__(self, store: Store, profile: Profile):
        self.store, self.profile = store, profile
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()  # status changes: cancel vs. the trainer finishing
        self._thread = threading.Thread(target=self._work, name="gptnb-fine-tuning", daemon=True)
        self._thread.start()

    def submit(self, job: dict) -> dict:
        """Store a new job, check its files (a failed check fails the job) and queue it; return it."""
        store, job_id = self.store, job["id"]
        store.add_job(job)
        store.add_event(job_id, f"Validating training file: {job['training_file']}")
        try:
            examples = file_examples(store, job["training_file"], "training_file")
            if job["validation_file"]:
                file_examples(store, job["validation_file"], "validation_file")
        except JobError as error:
            return self._finish(
                job_id,
                "failed",
                f"Job failed: {error}",
                error={"code": "invalid_file", "message": str(error), "param": error.param},
            )
        hyper = resolve_hyperparameters(job["hyperparameters"], len(examples), self.profile)
        store.add_event(job_id, f"Files validated ({len(examples)} training examples), moving job to queued state")
        method = {"type": "supervised", "supervised": {"hyperparameters": hyper}}
        job = store.update_job(job_id, status="queued", hyperparameters=hyper, method=method)
        self._queue.put(job_id)
        return job

    def cancel(self, job_id: str) -> dict:
        """Cancel a queued or running job (training stops after its current step); return the job."""
        with self._lock:
            job = self.store.job(job_id)
            if job["status"] not in ACTIVE:
                raise JobError(f"job {job_id} is already {job['status']}; only unfinished jobs can be cancelled")
            return self._finish(job_id, "cancelled", "Job cancelled")

    def close(self) -> None:
        """Fail the unfinished jobs (training stops after its current step) and end the worker thread."""
        with self._lock:
            self.store.fail_unfinished("the server was stopped before this job finished; create a new job")
        self._queue.put(None)

    def _finish(self, job_id: str, status: str, message: str, **changes) -> dict:
        self.store.add_event(job_id, message, level="error" if status == "failed" else "info")
        return self.store.update_job(
            job_id, status=status, finished_at=int(time.time()), estimated_finish=None, **changes
        )

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:  # closed
                return
            with self._lock:
                if self.store.job(job_id)["status"] != "queued":  # cancelled while waiting
                    continue
                self.store.update_job(job_id, status="running")
            try:
                self._train(job_id)
            except Exception as error:  # a training crash fails this job, never the server
                traceback.print_exc()
                with self._lock:
                    if self.store.job(job_id)["status"] == "running":
                        self._finish(
                            job_id,
                            "failed",
                            f"Job failed: {type(error).__name__}: {error}",
                            error={
                                "code": "training_failed",
                                "message": f"{type(error).__name__}: {error}",
                                "param": None,
                            },
                        )
            finally:
                shutil.rmtree(self.store.job_dir(job_id) / "trainer", ignore_errors=True)

    def _train(self, job_id: str) -> None:
        from ..finetune import finetune
        from ..lora import save_finetuned
        from ..models import load_model

        store, profile, job = self.store, self.profile, self.store.job(job_id)
        store.add_event(job_id, "Fine-tuning job started")
        started = time.time()
        hyper, folder = job["hyperparameters"], store.job_dir(job_id)
        model, tokenizer = load_model(job["model"], training=True)
        train = [training_pair(e, tokenizer) for e in file_examples(store, job["training_file"], "training_file")]
        val = None
        if job["validation_file"]:
            val = [training_pair(e, tokenizer) for e in file_examples(store, job["validation_file"], "validation_file")]

        def on_step(log: dict) -> None:
            data = {"step": log["step"], "total_steps": log["total_steps"], "epoch": round(log.get("epoch") or 0, 3)}
            if log["step"] and store.job(job_id)["status"] == "running":
                per_step = (time.time() - started) / log["step"]
                store.update_job(
                    job_id, estimated_finish=int(time.time() + per_step * (log["total_steps"] - log["step"]))
                )
            if "loss" in log:
                store.add_event(
                    job_id,
                    f"Step {log['step']}/{log['total_steps']}: training loss={log['loss']:.4f}",
                    data={**data, "train_loss": log["loss"]},
                )
            elif "eval_loss" in log:
                store.add_event(
                    job_id,
                    f"Step {log['step']}/{log['total_steps']}: validation loss={log['eval_loss']:.4f}",
                    data={**data, "full_valid_loss": log["eval_loss"]},
                )

        result = finetune(
            model,
            tokenizer,
            train,
            val,
            epochs=hyper["n_epochs"],
            batch_size=hyper["batch_size"],
            learning_rate=profile.learning_rate * hyper["learning_rate_multiplier"],
            lora_rank=profile.lora_rank,
            max_length=profile.max_length,
            seed=job["seed"],
            output_dir=folder / "trainer",
            on_step=on_step,
            should_stop=lambda: store.job(job_id)["status"] != "running",
            progress=False,
        )
        save_finetuned(result.model, tokenizer, folder / "model", merge=False)
        checkpoints = self._keep_checkpoints(job, result.log_history)
        with self._lock:
            if store.job(job_id)["status"] != "running":  # cancelled during training
                return
            store.set_checkpoints(job_id, checkpoints)
            for checkpoint in checkpoints:
                store.add_event(job_id, f"Checkpoint created at step {checkpoint['step_number']}")
            results = store.add_file(f"{job_id}-results.csv", "fine-tune-results", _results_csv(result.log_history))
            store.add_event(job_id, f"New fine-tuned model created: {model_name(job)}")
            self._finish(
                job_id,
                "succeeded",
                "The job has successfully completed",
                fine_tuned_model=model_name(job),
                result_files=[results["id"]],
                trained_tokens=round(result.tokens_per_second * result.train_seconds),
            )

    def _keep_checkpoints(self, job: dict, history: list[dict]) -> list[dict]:
        """The Trainer's epoch checkpoints (best and last, with a validation file), or else the final model,
        moved to ``step-N`` folders and described as the API's checkpoint objects, newest first."""
        folder, name = self.store.job_dir(job["id"]), model_name(job)
        steps = sorted(int(path.name.split("-")[1]) for path in (folder / "trainer").glob("checkpoint-*"))
        for step in steps:
            (folder / "trainer" / f"checkpoint-{step}").rename(folder / f"step-{step}")
        if not steps:
            steps = [max((entry.get("step", 0) for entry in history), default=0)]
            shutil.copytree(folder / "model", folder / f"step-{steps[0]}")
        checkpoints = []
        for step in reversed(steps):
            losses = [e["loss"] for e in history if "loss" in e and e.get("step", 0) <= step]
            valid = [e["eval_loss"] for e in history if "eval_loss" in e and e.get("step") == step]
            checkpoints.append(
                {
                    "id": f"ftckpt-{job['id'].removeprefix('ftjob-')[:16]}-{step}",
                    "object": "fine_tuning.job.checkpoint",
                    "created_at": int(time.time()),
                    "fine_tuning_job_id": job["id"],
                    "step_number": step,
                    "fine_tuned_model_checkpoint": f"{name}:ckpt-step-{step}",
                    "metrics": {
                        "step": step,
                        "train_loss": losses[-1] if losses else None,
                        "full_valid_loss": valid[0] if valid else None,
                    },
                }
            )
        return checkpoints


def _results_csv(history: list[dict]) -> bytes:
    """The job's results file: one row per logged step (step, train_loss, valid_loss)."""
    rows = ["step,train_loss,valid_loss"]
    for entry in history:
        if "loss" in entry or "eval_loss" in entry:
            rows.append(f"{entry.get('step', '')},{entry.get('loss', '')},{entry.get('eval_loss', '')}")
    return ("\n".join(rows) + "\n").encode()
