"""``/v1/responses`` (the work is in `gptnb.serve.responses`) and its stored responses by id."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Depends, Request

from .. import responses
from ..deps import answer, get_pool, get_store
from ..engine.pool import ModelPool
from ..jobs.store import Store
from ..protocol import APIError, ResponsesRequest
from ..wire import Deleted

router = APIRouter(prefix="/v1")


@router.post("/responses")
async def create_response(
    request: ResponsesRequest, http: Request, pool: ModelPool = Depends(get_pool), store: Store = Depends(get_store)
):
    history = []
    if request.previous_response_id:
        history = _stored(store, request.previous_response_id, "previous_response_id")["conversation"]
    keep = store.add_response if request.store else None
    return await answer(partial(responses.respond, history=history, keep=keep), request, http, pool)


@router.get("/responses/{response_id}")
def retrieve_response(response_id: str, store: Store = Depends(get_store)) -> dict:
    return _stored(store, response_id, "response_id")["response"]


@router.delete("/responses/{response_id}")
def delete_response(response_id: str, store: Store = Depends(get_store)) -> Deleted:
    if not store.delete_response(response_id):
        _stored(store, response_id, "response_id")
    return Deleted(id=response_id, object="response")


def _stored(store: Store, response_id: str, param: str) -> dict:
    """The stored record of `response_id`; 404 when there is none (never stored, deleted, or not an id)."""
    record = store.response(response_id)
    if record is None:
        raise APIError(404, f"Response with id '{response_id}' not found.", param=param, code="response_not_found")
    return record
