"""The old name of the server's module, now three: `gptnb.serve.app` (the app and its lifespan), `gptnb.serve.running`
(uvicorn, a background server) and `gptnb.serve.cli` (``gptnb serve``); kept until nothing uses it (issue 24)."""

from gptnb.serve.app import STOP_WAIT_S, Settings, create_app, default_data_dir
from gptnb.serve.cli import add_command
from gptnb.serve.running import Background, RedactKeys, bind, stop_signals, uvicorn_server

__all__ = [
    "STOP_WAIT_S", "Background", "RedactKeys", "Settings", "add_command", "bind", "create_app", "default_data_dir",
    "stop_signals", "uvicorn_server",
]  # fmt: skip
