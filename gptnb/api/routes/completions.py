"""``/v1/completions`` and ``/v1/chat/completions`` (the work is in `gptnb.api.inference`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from .. import inference
from ..deps import get_pool, loaded_model
from ..engine import ModelPool
from ..schemas import ChatRequest, CompletionRequest

router = APIRouter(prefix="/v1")


@router.post("/completions")
def completions(request: CompletionRequest, pool: ModelPool = Depends(get_pool)):
    return inference.complete(loaded_model(pool, request.model), request)


@router.post("/chat/completions")
def chat_completions(request: ChatRequest, pool: ModelPool = Depends(get_pool)):
    return inference.chat(loaded_model(pool, request.model), request)
