"""The two inference endpoints: ``/v1/completions`` and ``/v1/chat/completions``, whole or streamed.

Each turns a checked request (`protocol`) into token ids, submits one row per choice to the
model's `engine.batcher.Batcher` (so that concurrent requests, and a request's choices, are decoded
together), and collects each row's tokens as text (`Decoding`, which ``/v1/responses`` shares) into
the stream's chunks (`chunks_of`: typed `wire.Completion`, `wire.ChatCompletion`, the choices'
chunks interleaved as their tokens come, as OpenAI streams ``n`` > 1, the usage last). `wire.delivered`
sends them as server-sent events or joins them into the whole response. A full waiting line is a
429 with ``Retry-After``, sent before any stream starts.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Callable, Iterable, Iterator

import torch

from .. import __version__
from ..datacheck.formats import PLAIN_CHAT_STOPS, chat_prompt
from .engine.batcher import Generation, QueueFull
from .engine.decode import ChoiceText, Loaded, Piece, prompt_tokens
from .jobs.store import new_id
from .protocol import DEFAULT_CHAT_MAX_TOKENS, MAX_PROMPTS, APIError, ChatRequest, CompletionRequest
from .wire import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatMessage,
    Chunk,
    Completion,
    CompletionChoice,
    Usage,
    chat_logprobs,
    completion_logprobs,
    delivered,
    joined_choices,
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
    (`row_pieces`), its output tokens counted as they come. With `strip_start` (a reply in the plain
    ``User:``/``Assistant:`` template), each row's text loses the spaces it starts with.

    Use it in a ``with`` block: leaving it, however (finished, failed, the client gone), closes the generation
    and gives `report` the usage."""

    def __init__(
        self,
        loaded: Loaded,
        generation: Generation,
        stops: tuple[str, ...],
        prompted: int,
        report: Report,
        strip_start: bool = False,
    ):
        self.loaded, self.generation, self.stops, self.report = loaded, generation, stops, report
        self.prompt_tokens, self.completion_tokens = prompted, 0
        self.strip_start = strip_start

    def __iter__(self) -> Iterator[tuple[int, Piece]]:
        started: set[int] = set()  # rows whose text has begun
        for index, piece in row_pieces(self.loaded, self.generation, self.stops):
            self.completion_tokens += len(piece.tokens)
            if self.strip_start and index not in started:
                piece.text = piece.text.lstrip()
            if piece.text:
                started.add(index)
            yield index, piece

    def __enter__(self) -> Decoding:
        return self

    def __exit__(self, *exc) -> None:
        self.generation.close()
        if self.report is not None:
            self.report({"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens})

    def usage(self) -> Usage:
        return Usage.of(self.prompt_tokens, self.completion_tokens)


def chunks_of(
    decoding: Decoding,
    chunk: Callable[[int, Piece], Chunk],
    usage_chunk: Callable[[Usage], Chunk],
    opening: Iterable[Chunk] = (),
) -> Iterator[Chunk]:
    """A completions or chat stream's chunks: the `opening` ones (consumed once generation has begun), then
    `chunk(index, piece)` for each row's pieces as they come (`decoding`), then `usage_chunk` of the usage."""
    with decoding:
        yield from opening
        for index, piece in decoding:
            yield chunk(index, piece)
    yield usage_chunk(decoding.usage())


def chat_turn(loaded: Loaded, messages: list[dict], max_tokens: int | None, param: str) -> tuple[list[int], int, bool]:
    """The next reply to chat `messages` (``role``, ``content``): their token ids rendered with the model's chat
    template, the tokens to generate (`max_tokens`, else up to `DEFAULT_CHAT_MAX_TOKENS` as the context allows),
    and whether the template is the plain ``User:``/``Assistant:`` one (no template of its own: stop at
    `formats.PLAIN_CHAT_STOPS`, and drop the reply's leading space). 400 naming `param` when they do not fit."""
    ids = encode(loaded, chat_prompt(messages, loaded.tokenizer))
    check_room(loaded, ids, max_tokens or 1, param)
    max_tokens = max_tokens or min(DEFAULT_CHAT_MAX_TOKENS, loaded.context_length - len(ids))
    return ids, max_tokens, not getattr(loaded.tokenizer, "chat_template", None)


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

    at = [len(prompts[index // n][0]) for index in range(len(rows))]  # each choice's text offset

    def chunk(index: int, text: str, tokens, start: int, finish_reason: str | None) -> Completion:
        logprobs = completion_logprobs(tokens, start) if k is not None else None
        choice = CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish_reason)
        return Completion(**head, system_fingerprint=FINGERPRINT, choices=[choice])

    def echoed() -> Iterator[Completion]:
        """With ``echo``, every choice's prompt first (scored when logprobs are asked)."""
        for p, (prompt, ids) in enumerate(prompts):
            tokens = prompt_tokens(loaded, ids, k) if k is not None else []
            yield from (chunk(index, prompt, tokens, 0, None) for index in range(p * n, p * n + n))

    def piece_chunk(index: int, piece: Piece) -> Completion:
        start, at[index] = at[index], at[index] + len(piece.text)
        return chunk(index, piece.text, piece.tokens, start, piece.finish_reason)

    def whole(pieces: list[Completion], usage: Usage) -> Completion:
        choices = joined_choices(
            pieces, lambda i: CompletionChoice(index=i, text="", logprobs=None, finish_reason=None)
        )
        return Completion(**head, system_fingerprint=FINGERPRINT, choices=choices, usage=usage)

    decoding = Decoding(loaded, generation, tuple(request.stop), sum(len(ids) for _, ids in prompts), report)
    chunks = chunks_of(
        decoding,
        piece_chunk,
        lambda usage: Completion(**head, choices=[], usage=usage),
        echoed() if request.echo else (),
    )
    return delivered(request, chunks, whole)


def chat(loaded: Loaded, request: ChatRequest, cancel: threading.Event | None = None, report: Report = None):
    """Answer ``/v1/chat/completions``: the messages rendered with the model's chat template
    (or plain ``User:``/``Assistant:`` lines), `n` replies, as one response or a stream; checks,
    `cancel` and `report` as in `complete`."""
    if request.top_logprobs is not None and not request.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
    messages = [message.chat() for message in request.messages]
    ids, max_tokens, plain = chat_turn(
        loaded, messages, request.max_completion_tokens or request.max_tokens, "messages"
    )
    stops = tuple(request.stop) + (PLAIN_CHAT_STOPS if plain else ())
    k = (request.top_logprobs or 0) if request.logprobs else None
    n = request.n or 1
    generation = submit(loaded, [ids] * n, max_tokens, sampling(loaded, request, k, n), cancel)
    head = {
        "id": new_id("chatcmpl"),
        "created": int(time.time()),
        "model": request.model,
        "system_fingerprint": FINGERPRINT,
    }

    def chunk(
        index: int, delta: dict, logprobs: dict | None = None, finish_reason: str | None = None
    ) -> ChatCompletion:
        choice = ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish_reason)
        return ChatCompletion(**head, object="chat.completion.chunk", choices=[choice])

    def piece_chunk(index: int, piece: Piece) -> ChatCompletion:
        logprobs = chat_logprobs(piece.tokens) if k is not None else None
        delta = {"content": piece.text} if piece.text or not piece.finish_reason else {}
        return chunk(index, delta, logprobs, piece.finish_reason)

    def whole(pieces: list[ChatCompletion], usage: Usage) -> ChatCompletion:
        def blank(index: int) -> ChatChoice:
            return ChatChoice(index=index, finish_reason=None, message=ChatMessage(content=""), logprobs=None)

        return ChatCompletion(**head, object="chat.completion", choices=joined_choices(pieces, blank), usage=usage)

    decoding = Decoding(loaded, generation, stops, len(ids), report, strip_start=plain)
    roles = (chunk(index, {"role": "assistant", "content": ""}) for index in range(n))
    chunks = chunks_of(
        decoding,
        piece_chunk,
        lambda usage: ChatCompletion(**head, object="chat.completion.chunk", choices=[], usage=usage),
        roles,
    )
    return delivered(request, chunks, whole)
