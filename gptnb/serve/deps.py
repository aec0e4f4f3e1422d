"""FastAPI dependencies of the routes (the server's parts, a file, job or model by id or 404), and `answer`, which
runs a generation endpoint in a worker thread while watching the connection."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from fastapi import Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from .engine.decode import Cancelled, Loaded
from .engine.pool import ModelPool
from .jobs.runner import JobRunner
from .jobs.store import Store
from .protocol import APIError
from .registry import ModelRegistry


def get_store(request: Request) -> Store:
    """The server's `Store` (files, jobs, events, checkpoints)."""
    return request.app.state.store


def get_runner(request: Request) -> JobRunner:
    """The server's fine-tuning `JobRunner`."""
    return request.app.state.runner


def get_registry(request: Request) -> ModelRegistry:
    """The names the server answers to (`ModelRegistry`)."""
    return request.app.state.registry


def get_pool(request: Request) -> ModelPool:
    """The server's loaded models (`ModelPool`)."""
    return request.app.state.pool


UPLOADS_AT_ONCE = 2  # each holds a file of up to 64 MiB on its way to the disk and a thread checking it


async def upload_slot(request: Request) -> AsyncIterator[None]:
    """One of the server's `UPLOADS_AT_ONCE` upload slots, held while the request runs; 429 when all are taken.

    A 429 rather than a wait: the openai client retries a 429 by itself after a pause, while a queue of
    waiting uploads would hold their connections open, with no bound, until the client's timeout.
    (It runs on the server's event loop, one request at a time: the count needs no lock.)
    """
    state = request.app.state
    busy = getattr(state, "uploads", 0)
    if busy >= UPLOADS_AT_ONCE:
        raise APIError(
            429,
            f"{busy} uploads are already being received, the most this server takes at once; retry in a moment",
            code="rate_limit_exceeded",
        )
    state.uploads = busy + 1
    try:
        yield
    finally:
        state.uploads -= 1


def file_or_404(file_id: str, store: Store = Depends(get_store)) -> dict:
    """The file object `file_id` of the path."""
    found = store.file(file_id)
    if found is None:
        raise APIError(404, f"No such File object: {file_id}", param="id", code="file_not_found")
    return found


def job_or_404(job_id: str, store: Store = Depends(get_store)) -> dict:
    """The fine-tuning job `job_id` of the path."""
    job = store.job(job_id)
    if job is None:
        raise APIError(
            404, f"No fine-tuning job {job_id}", param="fine_tuning_job_id", code="fine_tuning_job_not_found"
        )
    return job


def loaded_model(pool: ModelPool, name: str) -> Loaded:
    """The served model `name`, loaded (the request body names it, so this is called, not injected)."""
    try:
        return pool.get(name)
    except KeyError:
        raise APIError(
            404,
            f"The model `{name}` does not exist; GET /v1/models lists the models served here",
            param="model",
            code="model_not_found",
        ) from None


def page(items: list[dict], after: str | None, limit: int) -> dict:
    """A cursor page: the items after the one with id `after`, at most `limit` of them."""
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


CLIENT_CLOSED_REQUEST = 499  # nginx's status for it; the client has gone, so nothing receives it


async def answer(endpoint, request, http: Request, pool: ModelPool):
    """`endpoint` (`inference.complete`, `inference.chat`, `responses.respond`) on the request's model, in a
    worker thread, with a ``cancel`` event set if the client disconnects before it returns (then 499) and the
    usage reported to ``http.state`` (for the guard's per-key usage)."""
    cancel = threading.Event()

    def report(usage: dict) -> None:
        http.state.usage = usage

    async def watch() -> None:
        # The body has been read: the next message is http.disconnect.
        while (await http.receive())["type"] != "http.disconnect":
            pass
        cancel.set()

    watcher = asyncio.create_task(watch())
    try:
        return await run_in_threadpool(lambda: endpoint(loaded_model(pool, request.model), request, cancel, report))
    except Cancelled:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    finally:
        watcher.cancel()
