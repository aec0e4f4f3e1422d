"""The two inference endpoints: ``/v1/completions`` and ``/v1/chat/completions``, whole or streamed.

Each turns a checked request (`schemas`) into token ids, submits one row per choice to the
model's `engine.batcher.Batcher` (so that concurrent requests, and a request's choices, are decoded
together), turns each row's tokens into text (`engine.decode.ChoiceText`), and shapes the result as
OpenAI does: ``logprobs`` per token, ``usage`` counts, server-sent events ending in ``[DONE]``
when ``stream`` is set (the choices' chunks interleaved as their tokens come, as OpenAI streams
``n`` > 1). Both build the stream's chunks (typed: `schemas.Completion`, `schemas.ChatCompletion`);
the whole response is those chunks joined, so the two cannot disagree. A full waiting line is a
429 with ``Retry-After``, sent before any stream starts.

Over 300 lines: the two endpoints' checks, decoding and response shapes, the one place where OpenAI's
completion and chat formats are made.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import traceback
from typing import Callable, Generator, Iterator

import torch
from fastapi.responses import StreamingResponse

from .. import __version__
from ..datacheck.formats import PLAIN_CHAT_STOPS, chat_prompt
from .engine.batcher import Generation, QueueFull
from .engine.decode import ChoiceText, Loaded, Piece, prompt_tokens
from .jobs.store import new_id
from .protocol import (
    DEFAULT_CHAT_MAX_TOKENS,
    MAX_PROMPTS,
    APIError,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatMessage,
    ChatRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    Usage,
    response_json,
)

FINGERPRINT = f"gptnb-{__version__}"
Report = Callable[[dict], None] | None  # given {"prompt_tokens", "completion_tokens"} once generation ends


def encode(loaded: Loaded, text: str) -> list[int]:
    """Token ids of `text` (an empty text starts a new document: the bos or eos token)."""
    ids = loaded.tokenizer(text).input_ids
    return ids or [loaded.tokenizer.bos_token_id or loaded.tokenizer.eos_token_id]


def check_room(loaded: Loaded, ids: list[int], max_tokens: int, param: str) -> None:
    """400 when the prompt and the tokens asked for do not fit the model's context."""
    if len(ids) + max_tokens > loaded.context_length:
        raise APIError(
            400,
            f"This model's maximum context length is {loaded.context_length} tokens, however you "
            f"requested {len(ids) + max_tokens} tokens ({len(ids)} in your prompt; {max_tokens} for "
            "the completion). Please reduce your prompt or completion length.",
            param=param,
            code="context_length_exceeded",
        )


def sampling(loaded: Loaded, request, k: int | None, rows: int) -> dict:
    """`Batcher.submit`'s sampling arguments for a request of `rows` rows. Row i samples with its own generator,
    seeded with the request's seed (else a random one) plus i: a seeded request repeats whatever else is decoded
    with it, and its first row samples as `engine.reference.generate` with that seed does."""
    seed = getattr(request, "seed", None)  # a Responses request has none
    seed = seed if seed is not None else secrets.randbits(63)
    return {
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "top_p": 1.0 if request.top_p is None else request.top_p,
        "k": k or 0,
        "generators": [torch.Generator(loaded.model.device).manual_seed(_row_seed(seed, i)) for i in range(rows)],
    }


def _row_seed(seed: int, row: int) -> int:
    # The seed + row, or - row where + would pass the largest seed a generator takes (2**64 - 1).
    return seed + row if seed + row < 2**64 else seed - row


def submit(loaded: Loaded, prompts: list[list[int]], max_tokens: int, options: dict, cancel) -> Generation:
    """Queue a row per prompt on the model's batcher; 429 with ``Retry-After`` when its waiting line is full."""
    try:
        return loaded.batcher.submit(prompts, max_tokens=max_tokens, cancel=cancel, **options)
    except QueueFull as full:
        raise APIError(
            429,
            f"Rate limit reached: {full.waiting} requests are already waiting for this model, the most this server "
            f"queues (gptnb serve --max-waiting). Please try again in {full.retry_after}s.",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(full.retry_after)},
        ) from None


def row_pieces(loaded: Loaded, generation: Generation, stops: tuple[str, ...]) -> Iterator[tuple[int, Piece]]:
    """Each row's text pieces (`engine.decode.ChoiceText`), as (row index, piece), as its tokens come; a row whose
    text is complete (a stop string) is stopped."""
    texts: dict[int, ChoiceText] = {}
    for index, token in generation:
        text = texts.setdefault(index, ChoiceText(loaded, stops))
        piece = text.end() if token is None else text.add(token)
        if piece is not None:
            yield index, piece
        if text.finished:
            generation.stop(index)


class Decoding:
    """The collector completions, chat and responses share: a submitted generation's rows as text pieces
    (`row_pieces`), its output tokens counted as they come.

    Use it in a ``with`` block: leaving it, however (finished, failed, the client gone), closes the generation
    and gives `report` the usage."""

    def __init__(self, loaded: Loaded, generation: Generation, stops: tuple[str, ...], prompted: int, report: Report):
        self.loaded, self.generation, self.stops, self.report = loaded, generation, stops, report
        self.prompt_tokens, self.completion_tokens = prompted, 0

    def __iter__(self) -> Iterator[tuple[int, Piece]]:
        for index, piece in row_pieces(self.loaded, self.generation, self.stops):
            self.completion_tokens += len(piece.tokens)
            yield index, piece

    def __enter__(self) -> Decoding:
        return self

    def __exit__(self, *exc) -> None:
        self.generation.close()
        if self.report is not None:
            self.report({"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens})

    def usage(self) -> Usage:
        return Usage.of(self.prompt_tokens, self.completion_tokens)


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


def chat_input(loaded: Loaded, messages: list[dict]) -> tuple[list[int], bool]:
    """The token ids of chat `messages` (``role``, ``content``) rendered with the model's chat template, and
    whether the template is the plain ``User:``/``Assistant:`` one (no template of its own: stop at
    `formats.PLAIN_CHAT_STOPS`, and drop the reply's leading space)."""
    return encode(loaded, chat_prompt(messages, loaded.tokenizer)), not getattr(loaded.tokenizer, "chat_template", None)


def prompts_of(loaded: Loaded, prompt) -> list[tuple[str, list[int]]]:
    """A completions ``prompt`` (text, texts, token ids or lists of them) as (text, token ids) pairs."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt is empty: give a string, a list of strings or a list of token ids", param="prompt")
    if isinstance(prompt[0], int):
        prompt = [prompt]
    if isinstance(prompt[0], str):
        return [(text, encode(loaded, text)) for text in prompt]
    vocabulary = len(loaded.tokenizer)
    for ids in prompt:
        if not ids or not all(0 <= i < vocabulary for i in ids):
            raise APIError(400, f"prompt: token ids must be in 0..{vocabulary - 1} and lists non-empty", param="prompt")
    return [(loaded.tokenizer.decode(ids), list(ids)) for ids in prompt]


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


def sse(events) -> StreamingResponse:
    """Server-sent events as OpenAI streams them, ending with ``[DONE]``; an error mid-stream is sent as an event."""

    def lines():
        try:
            for event in events:
                yield f"data: {json.dumps(event)}\n\n"
        except Exception as error:  # the status line is already sent: report the error in the stream
            traceback.print_exc()
            yield f"data: {json.dumps(APIError(500, f'{type(error).__name__}: {error}').body())}\n\n"
        yield "data: [DONE]\n\n"

    return EventStream(lines())


def complete(loaded: Loaded, request: CompletionRequest, cancel: threading.Event | None = None, report: Report = None):
    """Answer ``/v1/completions``: every prompt, `n` choices each, as one response or a stream.

    Everything that can be refused is checked before a stream starts (its 200 sent); `cancel`,
    once set, stops a whole response's generation (`engine.decode.Cancelled`). `report` is given the
    usage (prompt and completion tokens) once generation ends, however it ends."""
    prompts = prompts_of(loaded, request.prompt)
    n, max_tokens, k = request.n or 1, 16 if request.max_tokens is None else request.max_tokens, request.logprobs
    if len(prompts) * n > MAX_PROMPTS:
        raise APIError(400, f"at most {MAX_PROMPTS} completions per request (prompts x n)", param="prompt")
    for _, ids in prompts:
        check_room(loaded, ids, max_tokens, "max_tokens")
    rows = [ids for _, ids in prompts for _ in range(n)]  # row i: choice i, of prompt i // n
    generation = submit(loaded, rows, max_tokens, sampling(loaded, request, k, len(rows)), cancel)
    head = {"id": new_id("cmpl"), "created": int(time.time()), "model": request.model}

    def chunk(index: int, text: str, tokens, start: int, finish_reason: str | None) -> Completion:
        logprobs = completion_logprobs(tokens, start) if k is not None else None
        choice = CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish_reason)
        return Completion(**head, system_fingerprint=FINGERPRINT, choices=[choice])

    def chunks() -> Iterator[Completion]:
        """The stream: with ``echo``, every choice's prompt; then the choices' pieces as they come; the usage."""
        with Decoding(loaded, generation, tuple(request.stop), sum(len(ids) for _, ids in prompts), report) as decoding:
            if request.echo:
                for p, (prompt, ids) in enumerate(prompts):
                    echoed = prompt_tokens(loaded, ids, k) if k is not None else []
                    yield from (chunk(index, prompt, echoed, 0, None) for index in range(p * n, p * n + n))
            at = [len(prompts[index // n][0]) for index in range(len(rows))]  # each choice's text offset
            for index, piece in decoding:
                yield chunk(index, piece.text, piece.tokens, at[index], piece.finish_reason)
                at[index] += len(piece.text)
        yield Completion(**head, choices=[], usage=decoding.usage())

    if request.stream:
        return sse(_with_usage(chunks(), request))
    *pieces, last = chunks()
    choices = joined_choices(pieces, lambda i: CompletionChoice(index=i, text="", logprobs=None, finish_reason=None))
    return response_json(Completion(**head, system_fingerprint=FINGERPRINT, choices=choices, usage=last.usage))


def chat(loaded: Loaded, request: ChatRequest, cancel: threading.Event | None = None, report: Report = None):
    """Answer ``/v1/chat/completions``: the messages rendered with the model's chat template
    (or plain ``User:``/``Assistant:`` lines), `n` replies, as one response or a stream; checks,
    `cancel` and `report` as in `complete`."""
    if request.top_logprobs is not None and not request.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in request.messages]
    ids, plain = chat_input(loaded, messages)
    stops = tuple(request.stop) + (PLAIN_CHAT_STOPS if plain else ())
    max_tokens = request.max_completion_tokens or request.max_tokens
    check_room(loaded, ids, max_tokens or 1, "messages")
    max_tokens = max_tokens or min(DEFAULT_CHAT_MAX_TOKENS, loaded.context_length - len(ids))
    k = (request.top_logprobs or 0) if request.logprobs else None
    n = request.n or 1
    generation = submit(loaded, [ids] * n, max_tokens, sampling(loaded, request, k, n), cancel)
    head = {
        "id": new_id("chatcmpl"),
        "created": int(time.time()),
        "model": request.model,
        "system_fingerprint": FINGERPRINT,
    }

    def chunk(index: int, delta: dict, logprobs: dict | None, finish_reason: str | None) -> ChatCompletion:
        choice = ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish_reason)
        return ChatCompletion(**head, object="chat.completion.chunk", choices=[choice])

    def chunks() -> Iterator[ChatCompletion]:
        """The stream: every reply's role, then the replies' pieces as they come (a plain-template reply loses
        its leading space), then the usage."""
        started = [not plain] * n
        with Decoding(loaded, generation, stops, len(ids), report) as rows:
            yield from (chunk(index, {"role": "assistant", "content": ""}, None, None) for index in range(n))
            for index, piece in rows:
                text = piece.text if started[index] else piece.text.lstrip()
                started[index] = started[index] or bool(text)
                logprobs = chat_logprobs(piece.tokens) if k is not None else None
                delta = {"content": text} if text or not piece.finish_reason else {}
                yield chunk(index, delta, logprobs, piece.finish_reason)
        yield ChatCompletion(**head, object="chat.completion.chunk", choices=[], usage=rows.usage())

    if request.stream:
        return sse(_with_usage(chunks(), request))
    *pieces, last = chunks()

    def blank(index: int) -> ChatChoice:
        return ChatChoice(index=index, finish_reason=None, message=ChatMessage(content=""), logprobs=None)

    return response_json(
        ChatCompletion(**head, object="chat.completion", choices=joined_choices(pieces, blank), usage=last.usage)
    )


def _with_usage(chunks, request) -> Iterator[dict]:
    """The stream's chunks as JSON data; the last, the usage, only when ``stream_options.include_usage`` asks."""
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    for chunk in chunks:
        if chunk.usage is None or include_usage:
            yield response_json(chunk)


def _joined(whole: dict | None, piece: dict | None) -> dict | None:
    """Logprobs of a whole choice from those of its pieces: each list of the piece appended to the whole's."""
    if piece is None:
        return whole
    if whole is None:
        return {key: list(value) if isinstance(value, list) else value for key, value in piece.items()}
    return {key: whole[key] + value if isinstance(value, list) else value for key, value in piece.items()}
