"""Everything the server keeps, as plain files under one folder, so it survives a restart.

    files/<file-id>.json, files/<file-id>.data     an uploaded file: its metadata and bytes
    jobs/<job-id>/job.json                         a fine-tuning job, as the API returns it
    jobs/<job-id>/events.jsonl                     its events, oldest first
    jobs/<job-id>/checkpoints.json                 its checkpoints, as the API returns them
    jobs/<job-id>/model, jobs/<job-id>/step-N      the trained LoRA adapters
    responses/<response-id>.json                   a stored /v1/responses answer and its conversation

JSON has no NaN or infinity: such a number (a diverged loss in a metrics event, say) is kept as null,
and one in a file written by an older version is read as null, so no answer fails to serialize.

Every JSON file is written to a temporary name, flushed to the disk and renamed into place,
so a crash leaves the old version or the new one, never half of one. One that is unreadable
all the same (emptied, cut short, edited by hand) is moved aside to ``<name>.corrupt`` with a
warning, and the server carries on without it. An events line cut short by a crash is skipped.

Only the user can read what is kept: folders the store creates are 0700, files 0600 (a data
folder the user already had keeps its permissions; ``files/``, ``jobs/`` and ``responses/`` are made 0700).
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ...files import replacing, write_atomically

ACTIVE = ("validating_files", "queued", "running")
RESPONSE_ID = re.compile(r"resp_[0-9a-f]{48}")  # what `new_response_id` makes: no path can pass for one
PRIVATE_FOLDER, PRIVATE_FILE = 0o700, 0o600


def new_id(prefix: str) -> str:
    """An OpenAI-style object id, e.g. ``file-3f9a...``."""
    return f"{prefix}-{secrets.token_hex(12)}"


def new_response_id() -> str:
    """A Responses API id, ``resp_`` and 48 hex digits (OpenAI's have an underscore)."""
    return f"resp_{secrets.token_hex(24)}"


def _finite(data):
    """`data` with every NaN or infinite float, however deep in dicts and lists, replaced by None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(value) for value in data]
    return data


def _loads(text: str | bytes):
    """Parse JSON, reading the NaN, Infinity and -Infinity that Python's `json` writes by default as None."""
    return json.loads(text, parse_constant=lambda name: None)


def write_json(path: Path, data) -> None:
    """Write `data` as JSON to `path` atomically (temporary file, then rename), readable by the user only."""
    write_atomically(path, json.dumps(data, indent=1, allow_nan=False), mode=PRIVATE_FILE)


def read_json(path: Path, usable: Callable[[Any], bool]) -> Any | None:
    """The JSON in `path` when `usable` accepts it; None when there is no such file, or when it cannot be
    used (unreadable, empty, cut short, another shape): then it is moved aside to ``<name>.corrupt``
    with a one-line warning on stderr."""
    try:
        data = _loads(path.read_bytes())
        if usable(data):
            return data
        reason = "not the shape gptnb writes"
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as error:  # ValueError: not JSON, or not UTF-8
        reason = " ".join(str(error).split()) or type(error).__name__
    aside = path.with_name(f"{path.name}.corrupt")
    try:
        path.rename(aside)
        aside.chmod(PRIVATE_FILE)  # private like all the server writes, whatever mode it was given by hand
        done = f"moved it to {aside.name}"
    except OSError as error:
        done = f"could not move it aside ({error.strerror})"
    print(f"gptnb serve: WARNING: skipped {path} ({reason}); {done}", file=sys.stderr)
    return None


def _is_record(data) -> bool:
    """A file or job object as the store writes it (an id and a creation time, at least)."""
    return isinstance(data, dict) and isinstance(data.get("id"), str) and isinstance(data.get("created_at"), int)


def _is_response_record(data) -> bool:
    """A stored response as `Store.add_response` writes it."""
    return _is_record(data) and isinstance(data.get("response"), dict) and isinstance(data.get("conversation"), list)


def _is_checkpoint_list(data) -> bool:
    return isinstance(data, list) and all(isinstance(checkpoint, dict) for checkpoint in data)


def _private(path: str, flags: int) -> int:
    """`open`'s opener for a file only the user can read (when it is created)."""
    return os.open(path, flags, PRIVATE_FILE)


class Store:
    """Files, jobs, events and checkpoints under `root`; safe to use from several threads."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
        for folder in (self.root / "files", self.root / "jobs", self.root / "responses"):
            folder.mkdir(mode=PRIVATE_FOLDER, exist_ok=True)
            folder.chmod(PRIVATE_FOLDER)  # also when an earlier version created it open to all
        self._lock = threading.RLock()
        self._files = {f["id"]: f for f in self._read_all("files/*.json")}
        self._jobs = {j["id"]: j for j in self._read_all("jobs/*/job.json")}

    def _read_all(self, pattern: str) -> list[dict]:
        found = [read_json(path, _is_record) for path in self.root.glob(pattern)]
        return sorted((item for item in found if item is not None), key=lambda item: item["created_at"])

    # --- files ---------------------------------------------------------------------------------

    @contextmanager
    def receiving(self) -> Iterator[Path]:
        """``with store.receiving() as tmp:`` an empty private file in the files folder to stream an upload
        into; ``add_file(..., tmp)`` keeps it, else it is removed when the block ends."""
        handle, name = tempfile.mkstemp(prefix=".upload-", suffix=".tmp", dir=self.root / "files")
        os.close(handle)
        try:
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def add_file(self, filename: str, purpose: str, content: bytes | Path) -> dict:
        """Keep `content` as a new file object and return it; a `Path` (from `receiving`) is moved, not copied."""
        size = content.stat().st_size if isinstance(content, Path) else len(content)
        record = {
            "id": new_id("file"),
            "object": "file",
            "bytes": size,
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
        }
        with replacing(self.content_path(record["id"]), mode=PRIVATE_FILE) as tmp:
            if isinstance(content, Path):
                os.replace(content, tmp)
            else:
                tmp.write_bytes(content)
        with self._lock:
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
        job = _finite(job)
        with self._lock:
            self.job_dir(job["id"]).mkdir(mode=PRIVATE_FOLDER)
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
            job = _finite({**self._jobs[job_id], **changes})
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
            "data": _finite(data),
            "type": "metrics" if data else "message",
        }
        line = json.dumps(event, allow_nan=False).encode() + b"\n"
        with self._lock, open(self.job_dir(job_id) / "events.jsonl", "a+b", opener=_private) as log:
            end = log.seek(0, os.SEEK_END)
            if end:
                log.seek(end - 1)
                if log.read(1) != b"\n":  # the last line was cut short by a crash: start a new one
                    line = b"\n" + line
            log.write(line)
        return event

    def events(self, job_id: str) -> list[dict]:
        """A job's events, oldest first (a line cut short by a crash is skipped)."""
        path = self.job_dir(job_id) / "events.jsonl"
        events = []
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            try:
                event = _loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def checkpoints(self, job_id: str) -> list[dict]:
        """A job's checkpoints, newest first ([] when it has none, or only an unreadable file of them)."""
        return read_json(self.job_dir(job_id) / "checkpoints.json", _is_checkpoint_list) or []

    def set_checkpoints(self, job_id: str, checkpoints: list[dict]) -> None:
        write_json(self.job_dir(job_id) / "checkpoints.json", _finite(checkpoints))

    def fail_unfinished(self, reason: str) -> list[str]:
        """Mark every unfinished job failed because of `reason` (a stop or crash of the server); return their ids."""
        unfinished = [job["id"] for job in self.jobs() if job["status"] in ACTIVE]
        for job_id in unfinished:
            self.update_job(
                job_id,
                status="failed",
                finished_at=int(time.time()),
                estimated_finish=None,
                error={"code": "server_stopped", "message": reason, "param": None},
            )
            self.add_event(job_id, f"Job failed: {reason}", level="error")
        return unfinished

    # --- stored responses ----------------------------------------------------------------------

    def add_response(self, record: dict) -> None:
        """Keep a stored response: ``{"id", "created_at", "response", "conversation"}``."""
        with self._lock:
            write_json(self.root / "responses" / f"{record['id']}.json", _finite(record))

    def response(self, response_id: str) -> dict | None:
        """The stored response record `response_id`, or None (no such id, or not one this server makes)."""
        if not RESPONSE_ID.fullmatch(response_id):
            return None
        return read_json(self.root / "responses" / f"{response_id}.json", _is_response_record)

    def delete_response(self, response_id: str) -> bool:
        """Forget a stored response; False if there was none."""
        if not RESPONSE_ID.fullmatch(response_id):
            return False
        path = self.root / "responses" / f"{response_id}.json"
        with self._lock:
            existed = path.exists()
            path.unlink(missing_ok=True)
        return existed
