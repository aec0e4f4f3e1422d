"""Running the server: on a socket of its own, in uvicorn, whose access log never shows an API key; in a
background thread of this process (`Background`, what `gptnb.serve.local_server` starts), or in the foreground
(`gptnb.serve.cli`) with the stop signals handled so that the fine-tuning job is saved as failed first."""

from __future__ import annotations

import logging
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, quote_plus, unquote_plus

from fastapi import FastAPI

from .app import STOP_WAIT_S, Settings, create_app


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


class Background:
    """A server running in a daemon thread of this process (see `gptnb.serve.local_server`)."""

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
        """Stop serving; an unfinished fine-tuning job stops and is marked failed (the server's shutdown,
        `_lifespan`). Calling it again does nothing."""
        self._server.should_exit = True
        self._thread.join(timeout=STOP_WAIT_S + 10)
