"""What runs before any route: the API key and the body-size limit, as ASGI middleware.

Both are checked on the raw request, before its body is read or parsed: a client without the
key, or with a body past the limit, costs the server no parsing.
"""

from __future__ import annotations

import hmac
import json

from .schemas import APIError

MiB = 2**20


class BodyTooLarge(APIError):
    """413: the request body is past the server's limit."""

    def __init__(self, limit: int):
        super().__init__(
            413, f"the request body is larger than this server's limit of {limit // MiB} MiB", code="request_too_large"
        )


class Guard:
    """ASGI middleware: 401 without the API key, 413 past the body limit (declared or streamed)."""

    def __init__(self, app, settings):
        self.app, self.settings = app, settings
        self.expected = f"Bearer {settings.api_key}".encode() if settings.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected and not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            error = APIError(
                401,
                "missing or incorrect API key: send it as 'Authorization: Bearer <key>' "
                "(the openai client does this with api_key=...)",
                code="invalid_api_key",
            )
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
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
