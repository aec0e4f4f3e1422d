"""``gptnb serve``: gptnb's local models behind the OpenAI API, fine-tuning included (the command line).

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
import os
import sys
from pathlib import Path

from ..models import ModelUnavailableError, describe_model
from ..profiles import get_profile
from .app import STOP_WAIT_S, Settings, create_app, default_data_dir
from .engine.batcher import LIMITS
from .running import bind, stop_signals, uvicorn_server
from .security.keys import KeysFileError


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
        server.run(sockets=[sock])  # its shutdown stops the batchers and the job (`_lifespan`)
    if app.state.stopped_jobs:
        print(
            "gptnb serve: stopped before these fine-tuning jobs finished; marked failed: "
            + ", ".join(app.state.stopped_jobs)
        )
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
