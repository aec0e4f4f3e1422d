"""The server's app: ``gptnb serve``'s routes (the endpoints: `gptnb.serve.cli`) over a `Store`, a `ModelPool` and a
`JobRunner`, behind the `Guard`; OpenAI-shaped errors; and its lifespan, which owns the server's one shutdown.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .. import __version__
from ..paths import cache_dir
from ..profiles import get_profile
from .engine.pool import ModelPool
from .jobs.runner import JobRunner, recover
from .jobs.store import Store
from .protocol import APIError
from .registry import ModelRegistry
from .routes import completions, files, fine_tuning, models, responses, usage
from .security.guard import Guard, MiB
from .security.keys import Keys, Usage

STOP_WAIT_S = 60  # how long a stopped server waits for the fine-tuning job's current step


@dataclass
class Settings:
    """What a server serves and where it keeps things."""

    models: tuple[str, ...]  # base models by gptnb name; the first is loaded at start
    data_dir: Path
    api_key: str | None = None
    keys_file: Path | None = None  # --keys-file: API keys by name, one per learner or group (gptnb.serve.security.keys)
    host: str = "127.0.0.1"  # the address it listens on (the Host header a request must name when it is loopback)
    max_body_bytes: int = 4 * MiB
    max_file_bytes: int = 64 * MiB
    # Continuous batching, per model (None: `engine.batcher.LIMITS` for the model's device, CPU or GPU).
    max_batch: int | None = None  # rows (choices) decoded at once
    max_waiting: int | None = None  # requests waiting for rows beyond those free before 429
    max_tokens_in_flight: int | None = None  # prompt + max_tokens of the rows decoded at once

    def batch_limits(self) -> dict:
        """The `Batcher`'s limits."""
        return {
            "max_rows": self.max_batch,
            "max_waiting": self.max_waiting,
            "max_tokens_in_flight": self.max_tokens_in_flight,
        }


def default_data_dir() -> Path:
    """Where `gptnb serve` keeps files, jobs and models unless told: ``<gptnb cache>/api``."""
    return cache_dir() / "api"


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI app: the routers over a `Store` in ``settings.data_dir``, a `ModelPool` and a `JobRunner`.

    Raises `KeysFileError` (one line) for a keys file that cannot be used, before anything else is done."""
    keys = Keys.load(settings.api_key, settings.keys_file)
    store = Store(settings.data_dir)
    interrupted = recover(store)
    if interrupted:
        print(
            f"gptnb serve: {len(interrupted)} job(s) left unfinished by the last run marked failed: "
            f"{', '.join(interrupted)}"
        )
    registry = ModelRegistry(store, settings.models, int(time.time()))
    app = FastAPI(title="gptnb local OpenAI-compatible server", version=__version__, lifespan=_lifespan)
    app.state.keys, app.state.usage = keys, Usage(keys.names)
    app.add_middleware(Guard, settings=settings, keys=keys, usage=app.state.usage)
    app.state.settings, app.state.store, app.state.registry = settings, store, registry
    app.state.pool = ModelPool(registry.resolve, limits=settings.batch_limits())
    app.state.runner = JobRunner(store, get_profile())
    for routes in (models, completions, responses, files, fine_tuning, usage):
        app.include_router(routes.router)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _crashed)
    return app


WORKER_THREADS = 512  # a completion holds one while it waits or decodes: room for several models' rows and lines


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """The server's start and its one shutdown, whichever way it runs (`gptnb serve`, `Background`).

    At the start, as many requests may wait for a batcher as its limits allow: a completion waits in a worker
    thread, and Starlette's pool (anyio's, 40 by default) would otherwise queue requests past 40 with no 429.
    At the end, once the last request is answered: every batcher stops, then the fine-tuning job does (after its
    current step, at most `STOP_WAIT_S`), marked failed; the ids of the jobs so failed are left in
    ``app.state.stopped_jobs``."""
    import anyio.to_thread

    anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
    app.state.stopped_jobs = []
    yield
    app.state.pool.close()
    app.state.stopped_jobs = await anyio.to_thread.run_sync(app.state.runner.close, STOP_WAIT_S)


RETRY_AFTER_S = "1"  # a 429 that does not say when to retry (the upload slots)


def _http_error(request, error: HTTPException):
    if not isinstance(error, APIError):
        error = APIError(error.status_code, str(error.detail), headers=error.headers)
    headers = dict(error.headers or {})
    if error.status_code == 429:
        headers.setdefault("Retry-After", RETRY_AFTER_S)
    return JSONResponse(error.body(), status_code=error.status_code, headers=headers)


def _invalid(request, error: RequestValidationError):
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "path"))
    if first["type"] == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {where}"
    elif first["type"] == "json_invalid":
        message, where = "the request body is not valid JSON", ""
    else:
        message = f"{where}: {first['msg']}" if where else first["msg"]
    return JSONResponse(APIError(400, message, param=where or None).body(), status_code=400)


def _crashed(request, error: Exception):  # a bug: Starlette logs the traceback after this answer
    return JSONResponse(
        APIError(500, f"internal error ({type(error).__name__}); see the server's log").body(), status_code=500
    )
