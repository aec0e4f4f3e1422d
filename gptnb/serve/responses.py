"""``/v1/responses``: one reply to a conversation, whole or as the Responses API's stream of typed events.

The input (a string, or messages) follows the stored conversation of ``previous_response_id`` when one is
given, and ``instructions`` (this request's only: OpenAI does not carry them over) come first as a system
message; the whole is rendered with the model's chat template and decoded on its `engine.batcher.Batcher` as chat
is, through the same collector (`inference.Decoding`). The stream is OpenAI's sequence::

    response.created, response.in_progress, response.output_item.added, response.content_part.added,
    response.output_text.delta ..., response.output_text.done, response.content_part.done,
    response.output_item.done, response.completed (its status ``incomplete`` when max_output_tokens cut it
    short: the SDK's stream helper expects response.completed)

and the whole response is the last event's, so the two cannot disagree. With ``store`` (the default),
the response and its conversation are kept (`store.Store.add_response`) before the last event is sent.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Callable, Iterator

from ..datacheck.formats import PLAIN_CHAT_STOPS
from .engine.decode import Loaded
from .inference import Decoding, Report, chat_turn, sampling, submit
from .jobs.store import new_id, new_response_id
from .protocol import ResponsesRequest
from .wire import OutputMessage, OutputText, ResponseObject, ResponseUsage, event_stream

Keep = Callable[[dict], None] | None  # given the record to store: {"id", "created_at", "response", "conversation"}


def respond(
    loaded: Loaded,
    request: ResponsesRequest,
    cancel: threading.Event | None = None,
    report: Report = None,
    *,
    history: list[dict] | tuple = (),
    keep: Keep = None,
):
    """Answer ``POST /v1/responses`` after the conversation `history` (``role``/``content`` messages): the
    response object, or its event stream. `cancel` and `report` as in `inference.complete`; `keep` is given the
    record to store once the reply is complete."""
    conversation = [*history, *request.messages()]
    system = [{"role": "system", "content": request.instructions}] if request.instructions else []
    ids, max_tokens, plain = chat_turn(loaded, system + conversation, request.max_output_tokens, "input")
    generation = submit(loaded, [ids], max_tokens, sampling(loaded, request, None, 1), cancel)
    decoding = Decoding(loaded, generation, PLAIN_CHAT_STOPS if plain else (), len(ids), report, strip_start=plain)
    response = ResponseObject(
        id=new_response_id(),
        created_at=int(time.time()),
        status="in_progress",
        model=request.model,
        instructions=request.instructions,
        max_output_tokens=request.max_output_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        previous_response_id=request.previous_response_id,
        store=bool(request.store),
        metadata=request.metadata or {},
        user=request.user,
        output=[],
    )

    item = new_id("msg").replace("-", "_")

    def finished(text: str, complete: bool) -> ResponseObject:
        """The response once its reply `text` is complete (or cut short), kept when asked."""
        message = OutputMessage(
            id=item, status="completed" if complete else "incomplete", content=[OutputText(text=text)]
        )
        done = response.model_copy(
            update={
                "status": "completed" if complete else "incomplete",
                "completed_at": int(time.time()) if complete else None,
                "incomplete_details": None if complete else {"reason": "max_output_tokens"},
                "output": [message],
                "usage": ResponseUsage.of(decoding.prompt_tokens, decoding.completion_tokens),
            }
        )
        if keep is not None:
            said = [*conversation, {"role": "assistant", "content": text}]
            keep({"id": done.id, "created_at": done.created_at, "response": done.model_dump(), "conversation": said})
        return done

    events = stream_events(response, item, decoding, finished)
    if request.stream:
        return event_stream(events)
    *_, last = events
    return last["response"]


def stream_events(response: ResponseObject, item: str, decoding: Decoding, finished: Callable) -> Iterator[dict]:
    """The Responses API's events for `response`'s one message `item`, its text from `decoding` as it comes;
    `finished(text, complete)` makes the final response."""
    numbers = itertools.count()
    where = {"item_id": item, "output_index": 0, "content_index": 0}

    def event(kind: str, **fields) -> dict:
        return {"type": kind, "sequence_number": next(numbers), **fields}

    yield event("response.created", response=response.model_dump())
    yield event("response.in_progress", response=response.model_dump())
    message = OutputMessage(id=item, status="in_progress", content=[])
    yield event("response.output_item.added", output_index=0, item=message.model_dump())
    yield event("response.content_part.added", **where, part=OutputText(text="").model_dump())
    text, finish_reason = "", None
    with decoding:
        for _, piece in decoding:
            finish_reason = piece.finish_reason or finish_reason
            if piece.text:
                text += piece.text
                yield event("response.output_text.delta", **where, delta=piece.text, logprobs=[])
    done = finished(text, finish_reason != "length")
    yield event("response.output_text.done", **where, text=text, logprobs=[])
    yield event("response.content_part.done", **where, part=done.output[0].content[0].model_dump())
    yield event("response.output_item.done", output_index=0, item=done.output[0].model_dump())
    yield event("response.completed", response=done.model_dump())  # its status says when it is incomplete
