"""``/v1/fine_tuning/jobs``: create (checked here, trained by `gptnb.serve.jobs.runner.JobRunner`), list, retrieve,
cancel, events and checkpoints."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from ..deps import get_registry, get_runner, get_store, job_or_404, page
from ..jobs.runner import JobError, JobRunner, new_job
from ..jobs.store import Store
from ..protocol import APIError, JobRequest
from ..registry import ModelRegistry

router = APIRouter(prefix="/v1/fine_tuning/jobs")


@router.post("")
def create_job(
    request: JobRequest,
    store: Store = Depends(get_store),
    runner: JobRunner = Depends(get_runner),
    registry: ModelRegistry = Depends(get_registry),
):
    if request.model not in registry.bases:
        bases = ", ".join(registry.bases)
        if request.model in registry.served():
            raise APIError(
                400, f"{request.model} is a fine-tuned model; fine-tune its base model instead ({bases})", param="model"
            )
        raise APIError(
            404,
            f"The model `{request.model}` does not exist; models that can be fine-tuned here: {bases}",
            param="model",
            code="model_not_found",
        )
    for param in ("training_file", "validation_file"):
        file_id = getattr(request, param)
        if file_id is not None and (store.file(file_id) or {}).get("purpose") != "fine-tune":
            raise APIError(
                400,
                f"invalid {param}: {file_id} (no uploaded file with purpose 'fine-tune' has this id)",
                param=param,
                code="invalid_file",
            )
    hyper = {name: "auto" if value is None else value for name, value in request.hyperparameters_given().items()}
    return runner.submit(new_job(request, hyper))


@router.get("")
def list_jobs(after: str | None = None, limit: int = Query(20, ge=1, le=100), store: Store = Depends(get_store)):
    return page(store.jobs()[::-1], after, limit)


@router.get("/{job_id}")
def get_job(job: dict = Depends(job_or_404)):
    return job


@router.post("/{job_id}/cancel")
def cancel_job(job: dict = Depends(job_or_404), runner: JobRunner = Depends(get_runner)):
    try:
        return runner.cancel(job["id"])
    except JobError as error:
        raise APIError(400, str(error), param="fine_tuning_job_id") from None


@router.get("/{job_id}/events")
def job_events(
    job: dict = Depends(job_or_404),
    after: str | None = None,
    limit: int = Query(20, ge=1, le=1000),
    store: Store = Depends(get_store),
):
    return page(store.events(job["id"])[::-1], after, limit)


@router.get("/{job_id}/checkpoints")
def job_checkpoints(
    job: dict = Depends(job_or_404),
    after: str | None = None,
    limit: int = Query(10, ge=1, le=100),
    store: Store = Depends(get_store),
):
    return page(store.checkpoints(job["id"]), after, limit)
