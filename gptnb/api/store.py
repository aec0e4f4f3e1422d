"""Everything the server keeps, as plain files under one folder, so it survives a restart.

    files/<file-id>.json, files/<file-id>.data     an uploaded file: its metadata and bytes
    jobs/<job-id>/job.json                         a fine-tuning job, as the API returns it
    jobs/<job-id>/events.jsonl                     its events, oldest first
    jobs/<job-id>/checkpoints.json                 its checkpoints, as the API returns them
    jobs/<job-id>/model, jobs/<job-id>/step-N      the trained LoRA adapters

Every JSON file is written to a temporary name and renamed into place, so a crash
leaves the old version or the new one, never half of one.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path

from ..files import write_atomically

ACTIVE = ("validating_files", "queued", "running")


def new_id(prefix: str) -> str:
    """An OpenAI-style object id, e.g. ``file-3f9a...``."""
    return f"{prefix}-{secrets.token_hex(12)}"


def write_json(path: Path, data) -> None:
    """Write `data` as JSON to `path` atomically (temporary file, then rename)."""
    write_atomically(path, json.dumps(data, indent=1))


class Store:
    """Files, jobs, events and checkpoints under `root`; safe to use from several threads."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._files = {f["id"]: f for f in self._read_all(self.root / "files", "*.json")}
        self._jobs = {j["id"]: j for j in self._read_all(self.root / "jobs", "*/job.json")}

    @staticmethod
    def _read_all(folder: Path, pattern: str) -> list[dict]:
        found = [json.loads(path.read_text()) for path in folder.glob(pattern)]
        return sorted(found, key=lambda item: item["created_at"])

    # --- files ---------------------------------------------------------------------------------

    def add_file(self, filename: str, purpose: str, content: bytes) -> dict:
        """Keep `content` as a new file object and return it."""
        record = {
            "id": new_id("file"),
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
        }
        with self._lock:
            self.content_path(record["id"]).write_bytes(content)
            write_json(self.root / "files" / f"{record['id']}.json", record)
            self._files[record["id"]] = record
        return record

    def files(self) -> list[dict]:
        """All file objects, oldest first."""
        with self._lock:
            return list(self._files.values())

    def file(self, file_id: str) -> dict | None:
        return self._files.get(file_id)

    def content_path(self, file_id: str) -> Path:
        return self.root / "files" / f"{file_id}.data"

    def delete_file(self, file_id: str) -> bool:
        """Remove a file object and its bytes; False if there was none."""
        with self._lock:
            if self._files.pop(file_id, None) is None:
                return False
            (self.root / "files" / f"{file_id}.json").unlink(missing_ok=True)
            self.content_path(file_id).unlink(missing_ok=True)
            return True

    # --- jobs, events, checkpoints -------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def add_job(self, job: dict) -> dict:
        with self._lock:
            self.job_dir(job["id"]).mkdir()
            write_json(self.job_dir(job["id"]) / "job.json", job)
            self._jobs[job["id"]] = job
        return job

    def jobs(self) -> list[dict]:
        """All jobs, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def job(self, job_id: str) -> dict | None:
        return self._jobs.get(job_id)

    def update_job(self, job_id: str, **changes) -> dict:
        """Change fields of a job, save it, and return the new version."""
        with self._lock:
            job = {**self._jobs[job_id], **changes}
            write_json(self.job_dir(job_id) / "job.json", job)
            self._jobs[job_id] = job
            return job

    def add_event(self, job_id: str, message: str, *, level: str = "info", data: dict | None = None) -> dict:
        """Append an event to a job's log (``type`` is ``metrics`` when `data` is given)."""
        event = {
            "id": new_id("ftevent"),
            "object": "fine_tuning.job.event",
            "created_at": int(time.time()),
            "level": level,
            "message": message,
            "data": data,
            "type": "metrics" if data else "message",
        }
        with self._lock, open(self.job_dir(job_id) / "events.jsonl", "a") as log:
            log.write(json.dumps(event) + "\n")
        return event

    def events(self, job_id: str) -> list[dict]:
        """A job's events, oldest first (a line cut short by a crash is skipped)."""
        path = self.job_dir(job_id) / "events.jsonl"
        events = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events

    def checkpoints(self, job_id: str) -> list[dict]:
        path = self.job_dir(job_id) / "checkpoints.json"
        return json.loads(path.read_text()) if path.exists() else []

    def set_checkpoints(self, job_id: str, checkpoints: list[dict]) -> None:
        write_json(self.job_dir(job_id) / "checkpoints.json", checkpoints)

    def fail_unfinished(self, reason: str) -> list[str]:
        """Mark every unfinished job failed because of `reason` (a stop or crash of the server); return their ids."""
        unfinished = [job["id"] for job in self.jobs() if job["status"] in ACTIVE]
        for job_id in unfinished:
            self.update_job(
                job_id,
                status="failed",
                finished_at=int(time.time()),
                error={"code": "server_stopped", "message": reason, "param": None},
            )
            self.add_event(job_id, f"Job failed: {reason}", level="error")
        return unfinished
