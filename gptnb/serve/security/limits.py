"""The body-size limit: a request whose body is declared or found (as it streams in) past the limit gets 413."""

from __future__ import annotations

from ..protocol import APIError
from .reply import send_error

MiB = 2**20


class BodyTooLarge(APIError):
    """413: the request body is past the server's limit."""

    def __init__(self, limit: int):
        super().__init__(
            413, f"the request body is larger than this server's limit of {limit // MiB} MiB", code="request_too_large"
        )


async def within_limits(app, limit: int, scope, receive, send, headers: dict[bytes, bytes]) -> None:
    """Run `app` on the request, refused with 400 or 413 when its body is (declared or found) past `limit` bytes."""
    declared = headers.get(b"content-length", b"0")
    if not declared.isdigit():
        return await send_error(send, APIError(400, "the Content-Length header is not a number"))
    if int(declared) > limit:
        return await send_error(send, BodyTooLarge(limit))
    seen = 0

    async def limited_receive():
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise BodyTooLarge(limit)
        return message

    return await app(scope, limited_receive, send)
