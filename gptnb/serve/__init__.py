"""gptnb's OpenAI-compatible local server (``gptnb serve``), in one-way layers: `engine` (decode, batcher, pool),
`jobs` (store, runner), `security`, `protocol`, then `inference`, `responses` and `routes`, and `app` over them all.

From a notebook, `local_server()` starts the server in the background and hands
back an ``openai`` client for it::

    server = gptnb.serve.local_server()
    client = server.client()
    client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "Hi"}])
"""

from __future__ import annotations

import atexit
import secrets
from pathlib import Path


class LocalServer:
    """A `gptnb serve` running in a background thread of this process, on a free port of 127.0.0.1."""

    def __init__(self, models: tuple[str, ...], data_dir: Path, api_key: str):
        from .app import Settings
        from .running import Background

        self.model = models[0]
        self.api_key = api_key
        self._background = Background(Settings(models=models, data_dir=data_dir, api_key=api_key))
        self.base_url = self._background.base_url
        self.store = self._background.app.state.store
        atexit.register(self.stop)

    def client(self, **options):
        """An ``openai.OpenAI`` client for this server (extra `options` go to its constructor)."""
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key, **options)

    @property
    def loaded(self) -> str:
        """The gptnb name of the model actually loaded for `model` (it differs when a substitute was loaded)."""
        return self._background.app.state.pool.get(self.model).model.gptnb_info.name

    def describe(self) -> str:
        """One line on the model served by default: what was loaded, its size, where it came from."""
        from ..models import describe_model

        return describe_model(self._background.app.state.pool.get(self.model).model)

    def stop(self) -> None:
        """Stop the server (also done when Python exits)."""
        self._background.stop()
        atexit.unregister(self.stop)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self) -> str:
        return f"LocalServer({self.base_url}, model={self.model!r}, data in {self._background.settings.data_dir})"


def local_server(
    model: str | list[str] | None = None, *, data_dir: str | Path | None = None, api_key: str | None = None
) -> LocalServer:
    """Start `gptnb serve` in the background (a free port of 127.0.0.1) and load its first model.

    `model`: the gptnb model name(s) to serve (default: the profile's prompting model).
    `data_dir`: where files, jobs and fine-tuned models are kept (default: ``<gptnb cache>/api``).
    `api_key`: the key clients must send; a random one by default (`LocalServer.client` sends it).
    """
    from ..profiles import get_profile
    from .app import default_data_dir

    models = tuple([model] if isinstance(model, str) else model or [get_profile().prompting_model])
    server = LocalServer(
        models, Path(data_dir) if data_dir else default_data_dir(), api_key or secrets.token_urlsafe(24)
    )
    server._background.app.state.pool.get(server.model)
    return server


__all__ = ["LocalServer", "local_server"]
