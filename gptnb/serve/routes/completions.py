"""``/v1/completions`` and ``/v1/chat/completions`` (the work is in `gptnb.serve.inference`).

The work runs (`deps.answer`) in a worker thread while the event loop watches the connection: when the
client disconnects before a whole (not streamed) answer is ready, the ``cancel`` event
handed to the generation is set and its rows leave the batch. A stream stops by itself:
Starlette stops asking it for tokens once the client has gone, which closes its rows.
Once generation ends, ``request.state.usage`` holds its prompt and completion tokens
(for the guard's per-key usage).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from .. import inference
from ..deps import answer, get_pool
from ..engine.pool import ModelPool
from ..protocol import ChatRequest, CompletionRequest

router = APIRouter(prefix="/v1")


@router.post("/completions")
async def completions(request: CompletionRequest, http: Request, pool: ModelPool = Depends(get_pool)):
    return await answer(inference.complete, request, http, pool)


@router.post("/chat/completions")
async def chat_completions(request: ChatRequest, http: Request, pool: ModelPool = Depends(get_pool)):
    return await answer(inference.chat, request, http, pool)
