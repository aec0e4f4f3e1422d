"""An OpenAI-shaped error sent straight from the ASGI layer, before any route."""

from __future__ import annotations

import json

from ..protocol import APIError


async def send_error(send, error: APIError) -> None:
    """Answer with `error` (its status, and OpenAI's ``{"error": ...}`` body)."""
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
