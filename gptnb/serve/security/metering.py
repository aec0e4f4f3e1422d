"""Metering: a completion, chat or responses request counted in the usage of its key once it has been answered (a
stream: once it has ended), with its model, status, time and the tokens its route left in ``request.state.usage``."""

from __future__ import annotations

import time

from .keys import Usage, model_of

METERED = ("/v1/completions", "/v1/chat/completions", "/v1/responses")  # the requests counted in the usage of their key


async def metered(app, usage: Usage, name: str, scope, receive, send) -> None:
    """Run `app` on the request, then record it in `usage` under key `name`: its model, status, tokens and time."""
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
        await app(scope, keep_body, note_status)
    finally:
        usage.record(name, model_of(bytes(body)), status, scope["state"].get("usage"), time.perf_counter() - started)
