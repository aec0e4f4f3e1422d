"""What runs before any route, as ASGI middleware: who may call, the API key, the body-size limit, HEAD, usage.

All is checked on the raw request, before its body is read or parsed: a client refused
costs the server no parsing.

The pieces, each a module of `gptnb.serve.security`: `origin` (web pages: ``Origin`` and ``Host``), `keys` (who
calls: 401 without one of the server's keys), `limits` (413 past the body limit) and `metering` (usage by key);
this module runs them in that order.

HEAD on a GET route answers as GET does, without the body (FastAPI routes answer only the
methods they declare).

API keys (`gptnb.serve.security.keys`): a request under ``/v1`` must carry one of the server's keys, else 401;
its name is left for the routes in ``request.state.api_key_name``. A completion, chat or responses request is
counted and logged under that name once it has been answered (a stream: once it has ended), with the
tokens its route left in ``request.state.usage`` (``{"prompt_tokens", "completion_tokens"}``).
"""

from __future__ import annotations

from ..protocol import APIError
from .keys import Keys, Usage
from .limits import MiB, within_limits
from .metering import METERED, metered
from .origin import foreign_caller, is_loopback
from .reply import send_error

__all__ = ["Guard", "MiB"]


class Guard:
    """ASGI middleware: 403 from a web page or a foreign Host, 401 without one of the API `keys`, 413 past the body
    limit (declared or streamed); HEAD answered as GET without the body; completions counted in `usage`."""

    def __init__(self, app, settings, keys: Keys, usage: Usage):
        self.app, self.settings, self.keys, self.usage = app, settings, keys, usage
        self.check_host = is_loopback(settings.host)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope.setdefault("state", {})  # request.state: shared with the routes, and any copy of the scope
        if scope["method"] == "HEAD":
            scope, send = {**scope, "method": "GET"}, _without_body(send)
        headers = dict(scope["headers"])
        refused = foreign_caller(headers, self.check_host)
        if refused:
            return await send_error(send, refused)
        if not scope["path"].startswith("/v1"):
            return await self.app(scope, receive, send)
        name = self.keys.name_of(headers.get(b"authorization"))
        if name is None:
            error = APIError(
                401,
                "missing or incorrect API key: send it as 'Authorization: Bearer <key>' "
                "(the openai client does this with api_key=...)",
                code="invalid_api_key",
            )
            return await send_error(send, error)
        scope["state"]["api_key_name"] = name
        limit = self.settings.max_file_bytes if scope["path"] == "/v1/files" else self.settings.max_body_bytes

        async def limited(scope, receive, send):
            return await within_limits(self.app, limit, scope, receive, send, headers)

        if scope["method"] == "POST" and scope["path"] in METERED:
            return await metered(limited, self.usage, name, scope, receive, send)
        return await limited(scope, receive, send)


def _without_body(send):
    """`send` for a HEAD request: the GET answer's status and headers, its body left out."""

    async def send_head(message):
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head
