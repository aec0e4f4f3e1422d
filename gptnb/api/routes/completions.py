"""``/v1/completions`` and ``/v1/chat/completions`` (the work is in `gptnb.api.inference`).

The work runs in a worker thread while the event loop watches the connection: when the
client disconnects before a whole (not streamed) answer is ready, the ``cancel`` event
handed to the generation is set and its rows leave the batch. A stream stops by itself:
Starlette stops asking it for tokens once the client has gone, which closes its rows.
Once generation ends, ``request.state.usage`` holds its prompt and completion tokens
(for the guard's per-key usage).
"""

from __future__ import annotations

import asyncio
import threading

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from .. import inference
from ..deps import get_pool, loaded_model
from ..engine import Cancelled, ModelPool
from ..schemas import ChatRequest, CompletionRequest

router = APIRouter(prefix="/v1")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for it; the client has gone, so nothing receives it


@router.post("/completions")
async def completions(request: CompletionRequest, http: Request, pool: ModelPool = Depends(get_pool)):
    return await _answer(inference.complete, request, http, pool)


@router.post("/chat/completions")
async def chat_completions(request: ChatRequest, http: Request, pool: ModelPool = Depends(get_pool)):
    return await _answer(inference.chat, request, http, pool)


async def _answer(endpoint, request, http: Request, pool: ModelPool):
    """`endpoint` (`inference.complete` or `inference.chat`) on the request's model, in a worker thread, with a
    ``cancel`` event set if the client disconnects before it returns and the usage reported to ``http.state``."""
    cancel = threading.Event()

    def report(usage: dict) -> None:
        http.state.usage = usage

    async def watch() -> None:
        # The body has been read: the next message is http.disconnect.
        while (await http.receive())["type"] != "http.disconnect":
            pass
        cancel.set()

    watcher = asyncio.create_task(watch())
    try:
        return await run_in_threadpool(lambda: endpoint(loaded_model(pool, request.model), request, cancel, report))
    except Cancelled:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    finally:
        watcher.cancel()
