"""``gptnb serve``: gptnb's local models behind the OpenAI API, fine-tuning included.

Endpoints (the shapes the official ``openai`` SDK expects): ``/v1/models``,
``/v1/completions`` (logprobs, echo, stop, n, seed, streaming),
``/v1/chat/completions``, ``/v1/responses`` (stored, continued by
``previous_response_id``), ``/v1/files`` and ``/v1/fine_tuning/jobs`` (with events,
checkpoints and cancel). Everything is kept under the data folder, so files, jobs
and fine-tuned models survive a restart. It listens on 127.0.0.1 unless told
otherwise; with an API key set, a request without it gets 401. Concurrent requests
to a model are decoded together (continuous batching), up to --max-batch rows at
once; past --max-waiting more waiting requests, a request gets 429 and Retry-After.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote_plus

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .. import __version__
from ..models import ModelUnavailableError, describe_model
from ..paths import cache_dir
from ..profiles import get_profile
from .batching import LIMITS
from .engine import ModelPool
from .guard import Guard, MiB
from .jobs import JobRunner, recover
from .keys import Keys, KeysFileError, Usage
from .registry import ModelRegistry
from .routes import completions, files, fine_tuning, models, responses, usage
from .schemas import APIError
from .store import Store


@dataclass
class Settings:
    """What a server serves and where it keeps things."""

    models: tuple[str, ...]  # base models by gptnb name; the first is loaded at start
    data_dir: Path
    api_key: str | None = None
    keys_file: Path | None = None  # --keys-file: API keys by name, one per learner or group (gptnb.api.keys)
    host: str = "127.0.0.1"  # the address it listens on (the Host header a request must name when it is loopback)
    max_body_bytes: int = 4 * MiB
    max_file_bytes: int = 64 * MiB
    # Continuous batching, per model (None: `batching.LIMITS` for the model's device, CPU or GPU).
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
    app = FastAPI(title="gptnb local OpenAI-compatible server", version=__version__, lifespan=_threads)
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
async def _threads(app: FastAPI):
    """Let as many requests wait for a batcher as its limits allow: a completion waits in a worker thread,
    and Starlette's pool (anyio's, 40 by default) would otherwise queue requests past 40 with no 429."""
    import anyio.to_thread

    anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
    yield


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


# --- running it ------------------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one); `OSError` says why it cannot be had."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


class RedactKeys(logging.Filter):
    """Hides API keys in the request paths of uvicorn's access log: the value of every query parameter whose
    name says key, token, secret, password or auth, and each of the servers' `keys` wherever it appears."""

    SECRET_NAME = re.compile(r"key|token|secret|password|auth", re.IGNORECASE)

    def __init__(self):
        super().__init__()
        self.keys: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True

    def redact(self, text: str) -> str:
        """`text` (a path with its query string) with every key replaced by ``***``."""
        path, mark, query = text.partition("?")
        if mark:
            query = "&".join(self._redact_parameter(parameter) for parameter in query.split("&"))
        text = path + mark + query
        for key in self.keys:
            for form in {key, quote(key), quote(key, safe=""), quote_plus(key)}:
                text = text.replace(form, "***")
        return text

    def _redact_parameter(self, parameter: str) -> str:
        name, equals, value = parameter.partition("=")
        if equals and (self.SECRET_NAME.search(unquote_plus(name)) or unquote_plus(value).strip() in self.keys):
            return f"{name}=***"
        return parameter


STOP_WAIT_S = 60  # how long a stopped server waits for the fine-tuning job's current step
ACCESS_LOG_FILTER = RedactKeys()  # one for the process: every server in it adds its key


def uvicorn_server(app: FastAPI, log_level: str = "info"):
    """A uvicorn server for `app`, whose access log never shows the app's API key (`RedactKeys`)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=2))
    ACCESS_LOG_FILTER.keys.update(app.state.keys.secrets)
    logging.getLogger("uvicorn.access").addFilter(ACCESS_LOG_FILTER)  # after the Config set up uvicorn's logging
    return server


@contextmanager
def stop_signals(server) -> Iterator[list[int]]:
    """Within the block, SIGINT and SIGTERM make `server` exit and are added to the list it yields.

    uvicorn handles them itself while it serves, then raises the signal again after its shutdown; without
    this, that signal would end the process (SIGTERM) or raise KeyboardInterrupt (SIGINT) before the
    fine-tuning job is stopped and marked failed.
    """
    received: list[int] = []

    def stop(signum, frame):
        received.append(signum)
        server.should_exit = True

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(args: argparse.Namespace) -> int:
    models = tuple(args.model or [get_profile().prompting_model])
    api_key = args.api_key or os.environ.get("GPTNB_API_KEY") or None
    settings = Settings(
        models=models,
        data_dir=args.data_dir or default_data_dir(),
        api_key=api_key,
        keys_file=args.keys_file,
        host=args.host,
        max_batch=args.max_batch,
        max_waiting=args.max_waiting,
        max_tokens_in_flight=args.max_tokens_in_flight,
    )
    try:
        sock = bind(args.host, args.port)
    except OSError as error:
        print(f"gptnb serve: cannot listen on {args.host}:{args.port} ({error.strerror}); choose another --port")
        return 1
    try:
        app = create_app(settings)
    except KeysFileError as error:
        print(f"gptnb serve: {error}")
        return 1
    try:
        loaded = app.state.pool.get(models[0])
    except ModelUnavailableError as error:
        print(f"gptnb serve: {error}")
        return 1
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"gptnb serve: {models[0]} = {describe_model(loaded.model)}")
    print(
        f"gptnb serve: http://{host}:{args.port}/v1 | data in {settings.data_dir} | "
        + (
            f"API keys: {', '.join(app.state.keys.names)}"
            if app.state.keys.names
            else "API key not required (set --api-key, GPTNB_API_KEY or --keys-file to require one)"
        )
    )
    if args.host not in ("127.0.0.1", "localhost", "::1") and not app.state.keys.names:
        print("gptnb serve: WARNING: listening beyond this machine with no API key: anyone who can reach it can use it")
    server = uvicorn_server(app)
    with stop_signals(server) as received:
        try:
            server.run(sockets=[sock])
        finally:
            app.state.pool.close()
            failed = app.state.runner.close(timeout=STOP_WAIT_S)
        if failed:
            print(f"gptnb serve: stopped before these fine-tuning jobs finished; marked failed: {', '.join(failed)}")
    # After a stop signal, 128 + its number: the shell's code for "ended by this signal", once the jobs are saved.
    code = 128 + received[0] if received else 0
    if not app.state.runner.stopped:
        # A training step or model load still running would abort the interpreter's exit ("terminate called").
        print(f"gptnb serve: the fine-tuning job did not stop within {STOP_WAIT_S} s; exiting without it", flush=True)
        sys.stderr.flush()
        os._exit(code)
    return code


def add_command(commands, summary: str) -> None:
    """Register ``gptnb serve``."""
    parser = commands.add_parser("serve", help=summary, description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument(
        "--model",
        action="append",
        help="a gptnb model name to serve and fine-tune; repeat for more (default: the profile's prompting model)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)"
    )
    parser.add_argument("--port", type=_port, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--data-dir", type=Path, help=f"where files, jobs and models are kept (default: {default_data_dir()})"
    )
    parser.add_argument("--api-key", help="require this key (default: GPTNB_API_KEY if set, else none)")
    parser.add_argument(
        "--keys-file",
        type=Path,
        help="API keys, one 'name key' pair a line ('#' comments), one per learner or group; keys named instructor "
        "or instructor-... (and --api-key's) see everyone's usage at GET /v1/usage, the others their own",
    )
    cpu, gpu = LIMITS["cpu"], LIMITS["gpu"]
    parser.add_argument(
        "--max-batch",
        type=_positive,
        help="choices decoded at once per model, from all requests together; one request gets at most half "
        f"(default: {cpu['max_rows']} on a CPU, {gpu['max_rows']} on a GPU)",
    )
    parser.add_argument(
        "--max-waiting",
        type=_count,
        help="requests that may wait for a free row per model; more get 429 with Retry-After "
        f"(default: {cpu['max_waiting']} on a CPU, {gpu['max_waiting']} on a GPU)",
    )
    parser.add_argument(
        "--max-tokens-in-flight",
        type=_positive,
        help="prompt plus max_tokens of the choices decoded at once per model; one request gets at most half "
        f"(default: {cpu['max_tokens_in_flight']} on a CPU, {gpu['max_tokens_in_flight']} on a GPU)",
    )
    parser.set_defaults(run=_run)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: give a number from 1 to 65535")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: give a whole number, 0 or more")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: give a whole number, 1 or more")
    return int(text)


class Background:
    """A server running in a daemon thread of this process (see `gptnb.api.local_server`)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        host = settings.host
        sock = bind(host, 0)
        self.port = sock.getsockname()[1]
        self.base_url = f"http://{host}:{self.port}/v1"
        self.app = create_app(settings)
        self._server = uvicorn_server(self.app, log_level="warning")
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="gptnb-serve"
        )
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
        self.app.state.pool.close()
