"""``GET /v1/usage``: completion and chat usage by API key name since the server started (`gptnb.serve.security.keys`).

An instructor's key (named ``instructor`` or ``instructor-...``, or ``--api-key``'s) sees every key's
usage, a learner's key only its own. The answer has the shape of OpenAI's
``/v1/organization/usage/completions`` page, with ``num_errors`` added to each result.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..security.keys import Keys

router = APIRouter(prefix="/v1")


@router.get("/usage")
def usage(request: Request):
    name = request.state.api_key_name  # set by the Guard, which let the request through
    return request.app.state.usage.page(None if Keys.sees_all(name) else {name})
