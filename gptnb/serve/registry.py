"""The models a server answers to: its base models, each succeeded job's model and that job's checkpoints."""

from __future__ import annotations

from pathlib import Path

from .jobs.store import Store


class ModelRegistry:
    """Served names → ``{"base", "adapter", "created", "owned_by"}``, read from the `Store` on every call
    (a job that finishes is served at once)."""

    def __init__(self, store: Store, bases: tuple[str, ...], started: int):
        self.store, self.bases, self.started = store, bases, started

    def served(self) -> dict[str, dict]:
        """Every model name the server answers to: base models, fine-tuned models and their checkpoints."""
        names = {
            name: {"base": name, "adapter": None, "created": self.started, "owned_by": "gptnb"} for name in self.bases
        }
        for job in self.store.jobs():
            if job["status"] == "succeeded":
                folder = self.store.job_dir(job["id"])
                names[job["fine_tuned_model"]] = {
                    "base": job["model"],
                    "adapter": folder / "model",
                    "created": job["finished_at"],
                    "owned_by": "user",
                }
                for checkpoint in self.store.checkpoints(job["id"]):
                    names[checkpoint["fine_tuned_model_checkpoint"]] = {
                        "base": job["model"],
                        "adapter": folder / f"step-{checkpoint['step_number']}",
                        "created": checkpoint["created_at"],
                        "owned_by": "user",
                    }
        return names

    def resolve(self, name: str) -> tuple[str, Path | None]:
        """``(base model, adapter folder or None)`` of a served name; `KeyError` for any other."""
        entry = self.served()[name]
        return entry["base"], entry["adapter"]
