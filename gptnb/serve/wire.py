"""What the server sends, in OpenAI's wire formats: the response shapes (pydantic models, as the SDK parses them),
and how the inference endpoints' answers go out.

A completions or chat answer is a stream of chunks (`Completion`, `ChatCompletion`, one choice's
piece each, the usage last); `delivered` sends them as server-sent events (`sse`: ``data:`` lines ending in
``[DONE]``) or joins them into the whole response (`joined_choices`), so that the two cannot disagree. The
Responses API's typed events go out through `event_stream`. `completion_logprobs` and `chat_logprobs` shape a
piece's tokens as the two endpoints report them. Either stream is an `EventStream`, which closes its generator
(and so its rows in the batch) however it ends.
"""

from __future__ import annotations

import json
import traceback
from typing import Callable, Generator, Iterator, Literal

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from .protocol import APIError


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: dict | None
    finish_reason: str | None


class Completion(BaseModel):
    """A ``/v1/completions`` response, and each chunk of its stream (one choice's piece, or the usage)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class ChatChoice(BaseModel):
    index: int
    finish_reason: str | None
    message: ChatMessage
    logprobs: dict | None


class ChatChunkChoice(BaseModel):
    index: int
    delta: dict
    logprobs: dict | None
    finish_reason: str | None


class ChatCompletion(BaseModel):
    """A ``/v1/chat/completions`` response (``choices`` of `ChatChoice`), and each chunk of its stream
    (``object`` ``chat.completion.chunk``, one `ChatChunkChoice` or the usage)."""

    id: str
    object: Literal["chat.completion", "chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice] | list[ChatChunkChoice]
    usage: Usage | None = None


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list = []
    logprobs: list = []


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict = {"cached_tokens": 0, "cache_write_tokens": 0}
    output_tokens: int
    output_tokens_details: dict = {"reasoning_tokens": 0}
    total_tokens: int

    @classmethod
    def of(cls, prompt: int, completion: int) -> ResponseUsage:
        return cls(input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion)


class ResponseObject(BaseModel):
    """A ``/v1/responses`` response (``object`` ``response``), also inside its stream's events."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: dict | None = None
    incomplete_details: dict | None = None
    model: str
    instructions: str | None
    max_output_tokens: int | None
    temperature: float | None
    top_p: float | None
    previous_response_id: str | None
    store: bool
    metadata: dict[str, str] = {}
    output: list[OutputMessage]
    parallel_tool_calls: bool = False
    tool_choice: Literal["none", "auto"] = "none"
    tools: list = []
    text: dict = {"format": {"type": "text"}}
    truncation: Literal["disabled"] = "disabled"
    user: str | None = None
    usage: ResponseUsage | None = None


def response_json(response: Completion | ChatCompletion) -> dict:
    """The response as JSON data; ``usage`` and ``system_fingerprint`` appear only when they have a value."""
    return response.model_dump(
        exclude={name for name in ("usage", "system_fingerprint") if getattr(response, name) is None}
    )


Chunk = Completion | ChatCompletion


class EventStream(StreamingResponse):
    """A streamed response that closes its `lines` (a generator) as soon as it ends, however it ends.

    A client that has gone makes Starlette stop iterating without closing the generator, which would keep
    its rows in the batch until the garbage collector found it; closing it closes the `engine.batcher.Generation`."""

    def __init__(self, lines: Generator[str, None, None]):
        super().__init__(lines, media_type="text/event-stream")
        self.lines = lines

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.lines.close()


def sse(events: Iterator[dict]) -> EventStream:
    """Server-sent events as OpenAI streams them, ending with ``[DONE]``; an error mid-stream is sent as an event."""
    return _streamed(events, _data, lambda error, _: _data(error), end="data: [DONE]\n\n")


def event_stream(events: Iterator[dict]) -> EventStream:
    """Server-sent events as the Responses API sends them (``event:`` the type, ``data:`` the event; no
    ``[DONE]``); an error mid-stream is sent as an ``error`` event, numbered after the last event sent."""

    def typed(event: dict) -> str:
        return f"event: {event['type']}\n{_data(event)}"

    def failed(error: dict, last: dict | None) -> str:
        number = 0 if last is None else last["sequence_number"] + 1
        return typed({**error["error"], "type": "error", "sequence_number": number})

    return _streamed(events, typed, failed)


def _data(event: dict) -> str:
    return f"data: {json.dumps(event)}\n\n"


def _streamed(
    events: Iterator[dict], line: Callable[[dict], str], failed: Callable[[dict, dict | None], str], end: str = ""
) -> EventStream:
    """`events` as `line` frames them, then `end`. An error mid-stream is printed here and sent as
    `failed(its error body, the last event sent)`: the status line is already sent."""

    def lines() -> Generator[str, None, None]:
        last = None
        try:
            for last in events:
                yield line(last)
        except Exception as error:
            traceback.print_exc()
            yield failed(APIError(500, f"{type(error).__name__}: {error}").body(), last)
        if end:
            yield end

    return EventStream(lines())


def delivered(request, chunks: Iterator[Chunk], whole: Callable[[list[Chunk], Usage], Chunk]):
    """The answer to `request`: with ``stream``, the `chunks` as server-sent events (the usage chunk only when
    ``stream_options.include_usage`` asks), else the whole response, `whole` of the chunks and the usage."""
    if request.stream:
        return sse(_with_usage(chunks, request))
    *pieces, last = chunks
    return response_json(whole(pieces, last.usage))


def _with_usage(chunks, request) -> Iterator[dict]:
    """The stream's chunks as JSON data; the last, the usage, only when ``stream_options.include_usage`` asks."""
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    for chunk in chunks:
        if chunk.usage is None or include_usage:
            yield response_json(chunk)


def joined_choices(chunks, blank: Callable[[int], CompletionChoice | ChatChoice]) -> list:
    """A whole response's choices from its stream's chunks (one choice's piece each, interleaved): choice i is
    `blank(i)` with the text of its pieces appended, their logprobs joined and the last finish reason."""
    choices: dict = {}
    for chunk in chunks:
        new = chunk.choices[0]
        old = choices.setdefault(new.index, blank(new.index))
        if isinstance(old, CompletionChoice):
            old.text += new.text
        else:
            old.message.content += new.delta.get("content", "")
        old.logprobs = _joined(old.logprobs, new.logprobs)
        old.finish_reason = new.finish_reason
    return [choices[index] for index in sorted(choices)]


def _joined(whole: dict | None, piece: dict | None) -> dict | None:
    """Logprobs of a whole choice from those of its pieces: each list of the piece appended to the whole's."""
    if piece is None:
        return whole
    if whole is None:
        return {key: list(value) if isinstance(value, list) else value for key, value in piece.items()}
    return {key: whole[key] + value if isinstance(value, list) else value for key, value in piece.items()}


def completion_logprobs(tokens, start: int) -> dict:
    """The completions endpoint's ``logprobs``: tokens, their logprobs, the top-k of each, text offsets."""
    offsets, at = [], start
    for token in tokens:
        offsets.append(at)
        at += len(token.text)
    return {
        "tokens": [t.text for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [dict(t.top) if t.logprob is not None else None for t in tokens],
        "text_offset": offsets,
    }


def chat_logprobs(tokens) -> dict:
    """The chat endpoint's ``logprobs``: one entry per token, with its UTF-8 bytes and top alternatives."""

    def entry(text: str, logprob: float) -> dict:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {
        "content": [{**entry(t.text, t.logprob), "top_logprobs": [entry(s, v) for s, v in t.top]} for t in tokens],
        "refusal": None,
    }
