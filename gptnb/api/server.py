"""``gptnb serve``: gptnb's local models behind the OpenAI API, fine-tuning included.

Endpoints (the shapes the official ``openai`` SDK expects): ``/v1/models``,
``/v1/completions`` (logprobs, echo, stop, n, seed, streaming),
``/v1/chat/completions``, ``/v1/files`` and ``/v1/fine_tuning/jobs`` (with events,
checkpoints and cancel). Everything is kept under the data folder, so files, jobs
and fine-tuned models survive a restart. It listens on 127.0.0.1 unless told
otherwise; with an API key set, a request without it gets 401.
"""
from __future__ import annotations

import argparse
import hmac
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, File, Form, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from .. import __version__
from ..models import ModelUnavailableError, describe_model
from ..paths import cache_dir
from ..profiles import get_profile
from . import inference
from .engine import Loaded, ModelPool
from .formats import problem_summary, read_jsonl
from .jobs import JobError, JobRunner
from .schemas import APIError, ChatRequest, CompletionRequest, JobRequest
from .store import Store, new_id

MiB = 2**20


@dataclass
class Settings:
    """What a server serves and where it keeps things."""

    models: tuple[str, ...]  # base models by gptnb name; the first is loaded at start
    data_dir: Path
    api_key: str | None = None
    max_body_bytes: int = 4 * MiB
    max_file_bytes: int = 64 * MiB


def default_data_dir() -> Path:
    """Where `gptnb serve` keeps files, jobs and models unless told: ``<gptnb cache>/api``."""
    return cache_dir() / "api"


# --- guards: API key and body size, before any route runs -------------------------------------------


class BodyTooLarge(APIError):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than this server's limit of {limit // MiB} MiB",
                         code="request_too_large")


class Guard:
    """ASGI middleware: 401 without the API key, 413 past the body limit (declared or streamed)."""

    def __init__(self, app, settings: Settings):
        self.app, self.settings = app, settings
        self.expected = f"Bearer {settings.api_key}".encode() if settings.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected and not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            error = APIError(401, "missing or incorrect API key: send it as 'Authorization: Bearer <key>' "
                                  "(the openai client does this with api_key=...)", code="invalid_api_key")
            return await _send(send, error)
        limit = self.settings.max_file_bytes if scope["path"] == "/v1/files" else self.settings.max_body_bytes
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit():
            return await _send(send, APIError(400, "the Content-Length header is not a number"))
        if int(declared) > limit:
            return await _send(send, BodyTooLarge(limit))
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
            return message

        return await self.app(scope, limited_receive, send)


async def _send(send, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    await send({"type": "http.response.start", "status": error.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# --- shapes of responses ---------------------------------------------------------------------------


def _page(items: list[dict], after: str | None, limit: int) -> dict:
    """A cursor page: the items after the one with id `after`, at most `limit` of them."""
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


# --- the app ---------------------------------------------------------------------------------------


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI app: routes over a `Store` in ``settings.data_dir``, a `ModelPool` and a `JobRunner`."""
    store = Store(settings.data_dir)
    interrupted = store.fail_unfinished("the server stopped (a crash or restart) before this job finished; "
                                        "create a new job")
    if interrupted:
        print(f"gptnb serve: {len(interrupted)} job(s) left unfinished by the last run marked failed: {', '.join(interrupted)}")
    runner = JobRunner(store, get_profile())
    started = int(time.time())

    def served() -> dict[str, dict]:
        """Every model name the server answers to: base models, fine-tuned models and their checkpoints."""
        names = {name: {"base": name, "adapter": None, "created": started, "owned_by": "gptnb"} for name in settings.models}
        for job in store.jobs():
            if job["status"] == "succeeded":
                folder = store.job_dir(job["id"])
                names[job["fine_tuned_model"]] = {"base": job["model"], "adapter": folder / "model",
                                                  "created": job["finished_at"], "owned_by": "user"}
                for checkpoint in store.checkpoints(job["id"]):
                    names[checkpoint["fine_tuned_model_checkpoint"]] = {
                        "base": job["model"], "adapter": folder / f"step-{checkpoint['step_number']}",
                        "created": checkpoint["created_at"], "owned_by": "user"}
        return names

    def resolve(name: str):
        entry = served()[name]
        return entry["base"], entry["adapter"]

    pool = ModelPool(resolve)
    app = FastAPI(title="gptnb local OpenAI-compatible server", version=__version__)
    app.add_middleware(Guard, settings=settings)
    app.state.settings, app.state.store, app.state.pool, app.state.runner = settings, store, pool, runner

    @app.exception_handler(HTTPException)
    def http_error(request, error: HTTPException):
        if not isinstance(error, APIError):
            error = APIError(error.status_code, str(error.detail))
        return JSONResponse(error.body(), status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    def invalid(request, error: RequestValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "path"))
        if first["type"] == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {where}"
        elif first["type"] == "json_invalid":
            message, where = "the request body is not valid JSON", ""
        else:
            message = f"{where}: {first['msg']}" if where else first["msg"]
        return JSONResponse(APIError(400, message, param=where or None).body(), status_code=400)

    @app.exception_handler(Exception)
    def crashed(request, error: Exception):  # a bug: Starlette logs the traceback after this answer
        return JSONResponse(APIError(500, f"internal error ({type(error).__name__}); see the server's log").body(),
                            status_code=500)

    def model(name: str) -> Loaded:
        try:
            return pool.get(name)
        except KeyError:
            raise APIError(404, f"The model `{name}` does not exist; GET /v1/models lists the models served here",
                           param="model", code="model_not_found") from None

    # --- models ---

    def model_object(name: str, entry: dict) -> dict:
        return {"id": name, "object": "model", "created": entry["created"], "owned_by": entry["owned_by"]}

    @app.get("/v1/models")
    def list_models():
        return {"object": "list", "data": [model_object(name, entry) for name, entry in served().items()]}

    @app.get("/v1/models/{name:path}")
    def get_model(name: str):
        entry = served().get(name)
        if entry is None:
            raise APIError(404, f"The model `{name}` does not exist", param="model", code="model_not_found")
        return model_object(name, entry)

    # --- completions ---

    @app.post("/v1/completions")
    def completions(request: CompletionRequest):
        return inference.complete(model(request.model), request)

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatRequest):
        return inference.chat(model(request.model), request)

    # --- files ---

    @app.post("/v1/files")
    def upload_file(file: UploadFile = File(...), purpose: str = Form(...)):
        if purpose != "fine-tune":
            raise APIError(400, f"purpose {purpose!r} is not supported here: this server keeps files for fine-tuning "
                                "only (purpose='fine-tune')", param="purpose")
        content = file.file.read()
        try:
            examples, problems = read_jsonl(content.decode("utf-8"))
        except UnicodeDecodeError:
            raise APIError(400, f"{file.filename}: not UTF-8 text; a fine-tuning file is JSONL", param="file") from None
        problems.pop("duplicate", None)
        if problems or not examples:
            found = problem_summary(problems) or "no examples"
            raise APIError(400, f"Invalid file format for fine-tuning: {file.filename}: {found}. "
                                "Each line must be a chat example {\"messages\": [...]} or {\"prompt\", \"completion\"}; "
                                "`gptnb prepare-data` checks and converts a file.", param="file", code="invalid_file_format")
        return store.add_file(file.filename or "upload.jsonl", purpose, content)

    def file_or_404(file_id: str) -> dict:
        found = store.file(file_id)
        if found is None:
            raise APIError(404, f"No such File object: {file_id}", param="id", code="file_not_found")
        return found

    @app.get("/v1/files")
    def list_files(purpose: str | None = None, after: str | None = None, limit: int = Query(10000, ge=1, le=10000),
                   order: str = Query("desc", pattern="^(asc|desc)$")):
        files = [f for f in store.files() if purpose is None or f["purpose"] == purpose]
        return _page(files[::-1] if order == "desc" else files, after, limit)

    @app.get("/v1/files/{file_id}")
    def get_file(file_id: str):
        return file_or_404(file_id)

    @app.get("/v1/files/{file_id}/content")
    def file_content(file_id: str):
        file_or_404(file_id)
        return Response(store.content_path(file_id).read_bytes(), media_type="application/octet-stream")

    @app.delete("/v1/files/{file_id}")
    def delete_file(file_id: str):
        file_or_404(file_id)
        store.delete_file(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    # --- fine-tuning jobs ---

    def job_or_404(job_id: str) -> dict:
        job = store.job(job_id)
        if job is None:
            raise APIError(404, f"No fine-tuning job {job_id}", param="fine_tuning_job_id", code="fine_tuning_job_not_found")
        return job

    @app.post("/v1/fine_tuning/jobs")
    def create_job(request: JobRequest):
        if request.model not in settings.models:
            bases = ", ".join(settings.models)
            if request.model in served():
                raise APIError(400, f"{request.model} is a fine-tuned model; fine-tune its base model instead ({bases})",
                               param="model")
            raise APIError(404, f"The model `{request.model}` does not exist; models that can be fine-tuned here: {bases}",
                           param="model", code="model_not_found")
        for param in ("training_file", "validation_file"):
            file_id = getattr(request, param)
            if file_id is not None and (store.file(file_id) or {}).get("purpose") != "fine-tune":
                raise APIError(400, f"invalid {param}: {file_id} (no uploaded file with purpose 'fine-tune' has this id)",
                               param=param, code="invalid_file")
        hyper = {name: "auto" if value is None else value for name, value in request.hyperparameters_given().items()}
        job = {"id": new_id("ftjob"), "object": "fine_tuning.job", "model": request.model, "created_at": int(time.time()),
               "finished_at": None, "fine_tuned_model": None, "organization_id": "org-gptnb-local", "result_files": [],
               "status": "validating_files", "training_file": request.training_file,
               "validation_file": request.validation_file, "hyperparameters": hyper, "trained_tokens": None,
               "error": None, "user_provided_suffix": request.suffix,
               "seed": request.seed if request.seed is not None else secrets.randbelow(2**31), "estimated_finish": None,
               "integrations": [], "metadata": request.metadata,
               "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}}}
        return runner.submit(job)

    @app.get("/v1/fine_tuning/jobs")
    def list_jobs(after: str | None = None, limit: int = Query(20, ge=1, le=100)):
        return _page(store.jobs()[::-1], after, limit)

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    def get_job(job_id: str):
        return job_or_404(job_id)

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    def cancel_job(job_id: str):
        job_or_404(job_id)
        try:
            return runner.cancel(job_id)
        except JobError as error:
            raise APIError(400, str(error), param="fine_tuning_job_id") from None

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    def job_events(job_id: str, after: str | None = None, limit: int = Query(20, ge=1, le=1000)):
        job_or_404(job_id)
        return _page(store.events(job_id)[::-1], after, limit)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    def job_checkpoints(job_id: str, after: str | None = None, limit: int = Query(10, ge=1, le=100)):
        job_or_404(job_id)
        return _page(store.checkpoints(job_id), after, limit)

    return app


# --- running it ------------------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one); `OSError` says why it cannot be had."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def uvicorn_server(app: FastAPI, log_level: str = "info"):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=2))


def _run(args: argparse.Namespace) -> int:
    models = tuple(args.model or [get_profile().prompting_model])
    api_key = args.api_key or os.environ.get("GPTNB_API_KEY") or None
    settings = Settings(models=models, data_dir=args.data_dir or default_data_dir(), api_key=api_key)
    try:
        sock = bind(args.host, args.port)
    except OSError as error:
        print(f"gptnb serve: cannot listen on {args.host}:{args.port} ({error.strerror}); choose another --port")
        return 1
    app = create_app(settings)
    try:
        loaded = app.state.pool.get(models[0])
    except ModelUnavailableError as error:
        print(f"gptnb serve: {error}")
        return 1
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"gptnb serve: {models[0]} = {describe_model(loaded.model)}")
    print(f"gptnb serve: http://{host}:{args.port}/v1 | data in {settings.data_dir} | "
          f"API key {'required' if api_key else 'not required (set --api-key or GPTNB_API_KEY to require one)'}")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print("gptnb serve: WARNING: listening beyond this machine with no API key: anyone who can reach it can use it")
    try:
        uvicorn_server(app).run(sockets=[sock])
    finally:
        app.state.runner.close()
    return 0


def add_command(commands, summary: str) -> None:
    """Register ``gptnb serve``."""
    parser = commands.add_parser("serve", help=summary,
                                 description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--model", action="append",
                        help="a gptnb model name to serve and fine-tune; repeat for more (default: the profile's prompting model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--data-dir", type=Path, help=f"where files, jobs and models are kept (default: {default_data_dir()})")
    parser.add_argument("--api-key", help="require this key (default: GPTNB_API_KEY if set, else none)")
    parser.set_defaults(run=_run)


class Background:
    """A server running in a daemon thread of this process (see `gptnb.api.local_server`)."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1"):
        self.settings = settings
        sock = bind(host, 0)
        self.port = sock.getsockname()[1]
        self.base_url = f"http://{host}:{self.port}/v1"
        self.app = create_app(settings)
        self._server = uvicorn_server(self.app, log_level="warning")
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="gptnb-serve")
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the local server stopped while starting; see the messages above")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving; an unfinished fine-tuning job stops and is marked failed."""
        self.app.state.runner.close()
        self._server.should_exit = True
        self._thread.join(timeout=10)
