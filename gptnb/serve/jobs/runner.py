"""Fine-tuning jobs: checked when created, then trained one at a time in a background thread of low CPU
priority, so that requests are answered first (`_yield_to_inference`).

A job goes ``validating_files → queued → running → succeeded | failed | cancelled``; its events
follow these steps, and none is logged after the job ends. Its training (and validation) file is
copied into its folder when it is created, so deleting the uploaded file does not affect it.
Training is `gptnb.finetune.finetune` on the job's examples (LoRA; its settings from
`gptnb.training_settings`, as for ``gptnb finetune``); every log entry becomes a ``metrics`` event.
The LoRA adapter and checkpoints are written into the trainer's scratch folder and moved into the
job's folder only when the job succeeds, where the server finds them to serve ``ft:`` models: a cancelled, failed or
interrupted job leaves no adapter behind.

Over 300 lines: a job's whole life (checks, queue, training, checkpoints, cancellation), whose steps
share one lock over the store.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import threading
import time
import traceback
from pathlib import Path

from ...datacheck.formats import Example, collect, jsonl_rows, parse_trainable, training_file_examples, training_pair
from ...files import write_atomically
from ...profiles import Profile
from ...training_settings import AUTO, TrainingSettings, training_settings
from .store import ACTIVE, PRIVATE_FILE, Store, new_id

FILES = ("training_file", "validation_file")  # a job's copies of them: <job folder>/<name>.jsonl
STOPPED = "the server was stopped before this job finished; create a new job"
CRASHED = "the server stopped (a crash or restart) before this job finished; create a new job"


class JobError(ValueError):
    """A job that cannot run; ``param`` names the request field at fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def model_name(job: dict) -> str:
    """``ft:{base}:{suffix}:{id}``, the name the completion endpoints serve a job's trained model as."""
    return f"ft:{job['model']}:{job.get('user_provided_suffix') or ''}:{job['id'].removeprefix('ftjob-')[:8]}"


def job_settings(hyperparameters: dict, n_examples: int, profile: Profile) -> TrainingSettings:
    """A job's training settings (`gptnb.training_settings`): LoRA at the profile's rank, and each ``"auto"``
    (or missing) hyperparameter as `training_settings` decides it."""

    def given(name: str):
        return AUTO if hyperparameters.get(name) is None else hyperparameters[name]

    return training_settings(
        profile,
        n_examples,
        epochs=given("n_epochs"),
        batch_size=given("batch_size"),
        learning_rate_multiplier=given("learning_rate_multiplier"),
        lora=True,
    )


def resolve_hyperparameters(requested: dict, n_examples: int, profile: Profile) -> dict:
    """The job's hyperparameters as the API shows them, each ``"auto"`` (or missing) replaced by its value."""
    settings = job_settings(requested, n_examples, profile)
    multiplier = requested.get("learning_rate_multiplier")
    return {
        "n_epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "learning_rate_multiplier": 1.0 if multiplier in (None, AUTO) else multiplier,
    }


def checked_file(store: Store, file_id: str, param: str) -> tuple[bytes, list]:
    """The bytes and examples of an uploaded file, or a `JobError` naming each problem with its lines."""
    missing = JobError(f"{param} {file_id!r} was not found; upload it first with purpose 'fine-tune'", param)
    if store.file(file_id) is None:
        raise missing
    try:
        content = store.content_path(file_id).read_bytes()
    except FileNotFoundError:  # deleted meanwhile
        raise missing from None
    examples, wrong = training_file_examples(content.decode("utf-8"))
    if wrong:
        raise JobError(f"{param} {file_id}: {wrong}", param)
    return content, examples


def pinned_examples(folder: Path, param: str) -> list[Example]:
    """The examples of the job's copy of its file `param` (``training_file`` or ``validation_file``), read
    one line at a time, split at ``\\n`` only as `training_file_examples` splits them (the copy was checked)."""
    with open(folder / f"{param}.jsonl", "rb") as data:
        return collect(jsonl_rows(line.decode("utf-8") for line in data), parse_trainable)[0]


def clean_up(store: Store, job_id: str) -> None:
    """Remove what an ended job no longer needs: the copies of its files, the trainer's scratch folder and,
    unless it succeeded, any adapter or checkpoint (a crash can leave them half-written)."""
    folder = store.job_dir(job_id)
    leftovers = [folder / "trainer", *folder.glob("*_file.jsonl")]
    if store.job(job_id)["status"] != "succeeded":
        leftovers += [folder / "model", *folder.glob("step-*")]
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def recover(store: Store) -> list[str]:
    """Fail the jobs that a crash or restart left unfinished and `clean_up` every job; return the failed ids."""
    interrupted = store.fail_unfinished(CRASHED)
    for job in store.jobs():
        clean_up(store, job["id"])
    return interrupted


def _failure(error: Exception, job: dict) -> str:
    """Why a job's training failed, in the API's terms (a diverged loss names the hyperparameter to lower)."""
    from ...finetune import TrainingDiverged

    if isinstance(error, TrainingDiverged):
        multiplier = job["hyperparameters"].get("learning_rate_multiplier", "auto")
        return (
            f"training diverged: {error.problem}, so training stopped; "
            f"try a lower learning_rate_multiplier (it was {multiplier})"
        )
    return f"{type(error).__name__}: {error}"


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


TRAINING_NICENESS = 19  # the lowest priority: Linux's scheduler weighs such a thread at 15/1024 of a normal one


def _yield_to_inference() -> None:
    """Lower the calling thread's CPU priority to `TRAINING_NICENESS`: training then runs on the CPU time
    that answering requests leaves idle (all of it on an idle server), and does not slow the answers.

    Measured on 2 busy cores, SmolLM2-135M, 32-token chat completions while a LoRA job trained: 10.8 s
    (2.7x the 4.0 s alone) at the server's priority, 3.8 s (4.5 s alone) at niceness 19, 7.9 s (5.4 s alone)
    at 10. The price: a server answering without pause trains next to nothing until it pauses. Linux keeps
    a niceness per thread, and the threads this one starts (torch's OpenMP team for its operations) inherit
    it; elsewhere, or when not allowed, training keeps the server's priority. It does not share a GPU.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), TRAINING_NICENESS)
    except (AttributeError, OSError):
        pass


class JobRunner:
    """Trains queued jobs one after another in a daemon thread."""

    def __init__(self, store: Store, profile: Profile):
        self.store, self.profile = store, profile
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()  # status changes: cancel vs. the trainer finishing
        self._thread = threading.Thread(target=self._work, name="gptnb-fine-tuning", daemon=True)
        self._thread.start()

    def submit(self, job: dict) -> dict:
        """Store a new job, check its files (a failed check fails the job), copy them into the job's folder
        (deleting an uploaded file does not affect the job) and queue it; return it."""
        store, job_id = self.store, job["id"]
        store.add_job(job)
        store.add_event(job_id, f"Validating training file: {job['training_file']}")
        try:
            files = {param: checked_file(store, job[param], param) for param in FILES if job[param]}
        except JobError as error:
            with self._lock:
                return self._finish(
                    job_id,
                    "failed",
                    f"Job failed: {error}",
                    error={"code": "invalid_file", "message": str(error), "param": error.param},
                )
        for param, (content, _) in files.items():
            write_atomically(store.job_dir(job_id) / f"{param}.jsonl", content, mode=PRIVATE_FILE)
        examples = files["training_file"][1]
        hyper = resolve_hyperparameters(job["hyperparameters"], len(examples), self.profile)
        method = {"type": "supervised", "supervised": {"hyperparameters": hyper}}
        with self._lock:
            if store.job(job_id)["status"] != "validating_files":  # cancelled, or the server stopped, meanwhile
                return store.job(job_id)
            store.add_event(job_id, f"Files validated ({len(examples)} training examples), moving job to queued state")
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

    def close(self, timeout: float = 60) -> list[str]:
        """Fail the unfinished jobs, end the worker thread and wait for it (training stops after its current step)
        at most `timeout` seconds; return the ids of the failed jobs. Calling it again does nothing."""
        with self._lock:
            failed = self.store.fail_unfinished(STOPPED)
        self._queue.put(None)
        self._thread.join(timeout)
        return failed

    @property
    def stopped(self) -> bool:
        """Whether the worker thread has ended (after `close`)."""
        return not self._thread.is_alive()

    def _running(self, job_id: str) -> bool:
        return self.store.job(job_id)["status"] == "running"

    def _finish(self, job_id: str, status: str, message: str, **changes) -> dict:
        """End an unfinished job with its last event (the caller holds the lock); an ended job stays as it is."""
        if self.store.job(job_id)["status"] not in ACTIVE:
            return self.store.job(job_id)
        self.store.add_event(job_id, message, level="error" if status == "failed" else "info")
        return self.store.update_job(
            job_id, status=status, finished_at=int(time.time()), estimated_finish=None, **changes
        )

    def _work(self) -> None:
        _yield_to_inference()
        while (job_id := self._queue.get()) is not None:  # None: closed
            try:
                with self._lock:
                    if self.store.job(job_id)["status"] != "queued":  # cancelled, or the server stopped, meanwhile
                        continue
                    self.store.update_job(job_id, status="running")
                    self.store.add_event(job_id, "Fine-tuning job started")
                self._train(job_id)
            except Exception as error:  # a training crash fails this job, never the server
                traceback.print_exc()
                reason = _failure(error, self.store.job(job_id))
                with self._lock:
                    self._finish(
                        job_id,
                        "failed",
                        f"Job failed: {reason}",
                        error={"code": "training_failed", "message": reason, "param": None},
                    )
            finally:
                clean_up(self.store, job_id)

    def _train(self, job_id: str) -> None:
        from ...finetune import finetune
        from ...lora import save_finetuned
        from ...models import load_model

        store, profile, job = self.store, self.profile, self.store.job(job_id)
        started = time.time()
        hyper, folder = job["hyperparameters"], store.job_dir(job_id)
        model, tokenizer = load_model(job["model"], training=True)
        train = [training_pair(e, tokenizer) for e in pinned_examples(folder, "training_file")]
        val = None
        if job["validation_file"]:
            val = [training_pair(e, tokenizer) for e in pinned_examples(folder, "validation_file")]
        if not self._running(job_id):  # cancelled, or the server stopped, while the model loaded
            return

        def on_step(log: dict) -> None:
            with self._lock:  # no event after the job ended
                if self._running(job_id):
                    self._log_step(job_id, log, started)

        result = finetune(
            model,
            tokenizer,
            train,
            val,
            **job_settings(hyper, len(train), profile).as_dict(),
            seed=job["seed"],
            output_dir=folder / "trainer",
            on_step=on_step,
            should_stop=lambda: not self._running(job_id),
            progress=False,
        )
        if result.stopped or not self._running(job_id):
            return
        save_finetuned(result.model, tokenizer, folder / "trainer" / "model", merge=False)
        checkpoints = self._stage_checkpoints(job, result.log_history)
        with self._lock:
            if not self._running(job_id):  # cancelled while saving
                return
            for name in ("model", *(f"step-{checkpoint['step_number']}" for checkpoint in checkpoints)):
                (folder / "trainer" / name).rename(folder / name)
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
                trained_tokens=result.trained_tokens,
            )

    def _log_step(self, job_id: str, log: dict, started: float) -> None:
        """Record a training log entry: the estimated finish, and a ``metrics`` event for a loss."""
        store = self.store
        data = {"step": log["step"], "total_steps": log["total_steps"], "epoch": round(log.get("epoch") or 0, 3)}
        if log["step"]:
            per_step = (time.time() - started) / log["step"]
            store.update_job(job_id, estimated_finish=int(time.time() + per_step * (log["total_steps"] - log["step"])))
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

    def _stage_checkpoints(self, job: dict, history: list[dict]) -> list[dict]:
        """The Trainer's epoch checkpoints (best and last, with a validation file), or else the saved model,
        as ``trainer/step-N`` folders, described as the API's checkpoint objects, newest first."""
        scratch, name = self.store.job_dir(job["id"]) / "trainer", model_name(job)
        steps = sorted(int(path.name.split("-")[1]) for path in scratch.glob("checkpoint-*"))
        for step in steps:
            (scratch / f"checkpoint-{step}").rename(scratch / f"step-{step}")
        if not steps:
            steps = [max((entry.get("step", 0) for entry in history), default=0)]
            shutil.copytree(scratch / "model", scratch / f"step-{steps[0]}")
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
