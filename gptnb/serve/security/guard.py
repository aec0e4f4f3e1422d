"""What runs before any route, as ASGI middleware: who may call, the API key, the body-size limit, HEAD, usage.

All is checked on the raw request, before its body is read or parsed: a client refused
costs the server no parsing.

Web pages. A page the user visits in a browser can send requests to the server (a form or
``fetch`` POST needs no CORS preflight) and, by DNS rebinding (a name of the attacker's that
resolves to 127.0.0.1), read the answers. Two headers, which a browser sets and a page cannot
forge, stop both:

- ``Host``, when the server listens on a loopback address (127.0.0.1, ::1, localhost: the
  default): it must name this machine (``localhost``, ``127.0.0.1``, ``[::1]``, with or without
  the port), else 403 (400 when malformed). A rebinding page's requests name the attacker's host.
  When the user binds another address on purpose (``--host 0.0.0.0`` or a LAN address, for a
  classroom), clients reach the server by whatever name or address the network gives it, so
  Host is not checked; the API key is what protects such a server.
- ``Origin``, always: a request that carries one must come from a page of this machine
  (``http://localhost:8888``, a local Jupyter), else 403. Browsers add Origin to every
  cross-site request that could change something (POSTs, forms included); the openai SDK,
  httpx, curl and a notebook's Python, on this machine or a learner's, send none, so in a
  classroom nothing legitimate carries a foreign Origin (Jupyter's browser page does not call
  the API itself; the notebook's kernel does). A page on another machine therefore cannot
  drive a LAN server either, even one without a key. The price: FastAPI's ``/docs`` page
  can try the API out only when opened on this machine.

HEAD on a GET route answers as GET does, without the body (FastAPI routes answer only the
methods they declare).

API keys (`gptnb.serve.security.keys`): a request under ``/v1`` must carry one of the server's keys, else 401;
its name is left for the routes in ``request.state.api_key_name``. A completion, chat or responses request is
counted and logged under that name once it has been answered (a stream: once it has ended), with the
tokens its route left in ``request.state.usage`` (``{"prompt_tokens", "completion_tokens"}``).
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from urllib.parse import urlsplit

from ..protocol import APIError
from .keys import Keys, Usage, model_of

MiB = 2**20
HOST_HEADER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::\d{1,5})?")
METERED = ("/v1/completions", "/v1/chat/completions", "/v1/responses")  # the requests counted in the usage of their key


class BodyTooLarge(APIError):
    """413: the request body is past the server's limit."""

    def __init__(self, limit: int):
        super().__init__(
            413, f"the request body is larger than this server's limit of {limit // MiB} MiB", code="request_too_large"
        )


def is_loopback(host: str) -> bool:
    """Whether `host` (a name, an IP address, or an IPv6 address in brackets) is this machine's loopback."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def foreign_caller(headers: dict[bytes, bytes], check_host: bool) -> APIError | None:
    """Why a request from a web page (a foreign ``Origin``) or by a foreign name (``Host``) is refused, or None."""
    origin = headers.get(b"origin")
    if origin is not None and not _local_origin(origin.decode("latin-1")):
        return APIError(
            403,
            f"requests from web pages of other sites are refused (Origin: {origin.decode('latin-1')}); "
            "call the API from Python (the openai client) or another non-browser client",
            code="forbidden_origin",
        )
    if not check_host:
        return None
    host = headers.get(b"host", b"").decode("latin-1")
    name = HOST_HEADER.fullmatch(host)
    if not name:
        return APIError(
            400, f"the Host header ({host!r}) is missing or not a host name or address", code="invalid_host"
        )
    if not is_loopback(name[1]):
        return APIError(
            403,
            f"this server listens on this machine only and answers to localhost, 127.0.0.1 or [::1], not to {host}",
            code="forbidden_host",
        )
    return None


def _local_origin(origin: str) -> bool:
    try:
        parts = urlsplit(origin)
    except ValueError:  # an unclosed [ of an IPv6 address
        return False
    return parts.scheme in ("http", "https") and is_loopback(parts.hostname or "")


class Guard:
    """ASGI middleware: 403 from a web page or a foreign Host, 401 without one of the API `keys`, 413 past the body
    limit (declared or streamed); HEAD answered as GET without the body; completions counted in `usage`.

    By default, the keys are the settings' single ``api_key`` (none: no key needed) and the usage is counted
    in a `Usage` of its own.
    """

    def __init__(self, app, settings, keys: Keys | None = None, usage: Usage | None = None):
        self.app, self.settings = app, settings
        self.keys = keys or Keys.load(settings.api_key, None)
        self.usage = usage or Usage(self.keys.names)
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
            return await _send(send, refused)
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
            return await _send(send, error)
        scope["state"]["api_key_name"] = name
        if scope["method"] == "POST" and scope["path"] in METERED:
            return await self._metered(name, scope, receive, send, headers)
        return await self._within_limits(scope, receive, send, headers)

    async def _metered(self, name: str, scope, receive, send, headers: dict[bytes, bytes]) -> None:
        """The request, counted in the usage of key `name` once answered: its model, status, tokens and time."""
        started, body, status = time.perf_counter(), bytearray(), 500  # 500 unless an answer begins

        async def keep_body():
            message = await receive()
            body.extend(message.get("body", b""))  # at most the body limit: checked as it is received
            return message

        async def note_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._within_limits(scope, keep_body, note_status, headers)
        finally:
            elapsed = time.perf_counter() - started
            self.usage.record(name, model_of(bytes(body)), status, scope["state"].get("usage"), elapsed)

    async def _within_limits(self, scope, receive, send, headers: dict[bytes, bytes]) -> None:
        """The request, refused with 400 or 413 when its body is (declared or found) past the server's limit."""
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


def _without_body(send):
    """`send` for a HEAD request: the GET answer's status and headers, its body left out."""

    async def send_head(message):
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head


async def _send(send, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
