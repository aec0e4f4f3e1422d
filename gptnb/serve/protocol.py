"""The request bodies the server accepts, checked by pydantic, and its OpenAI-shaped errors.

An argument the server does not know is refused (400), as OpenAI refuses it,
rather than silently ignored; OpenAI arguments this server does not implement are
accepted only at their neutral default. A string holding a lone UTF-16 surrogate (``"\\ud800"``
in JSON), anywhere in a body, is refused too: it is not text, and no tokenizer or file can take it.

What the server sends back is shaped in `wire`. Over 300 lines: one pydantic model per request shape of the API,
with its checks, kept together so that all the SDK may send reads in one place.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Union

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..datacheck.formats import lone_surrogate

MAX_N = 16  # choices per prompt
MAX_PROMPTS = 64  # prompts per completions request
DEFAULT_CHAT_MAX_TOKENS = 256
SMALLEST_SAMPLING_VALUE = 1e-6  # a smaller positive temperature or top_p underflows in float32 sampling


class APIError(HTTPException):
    """An error the client sees as ``{"error": {"message", "type", "param", "code"}}``, with `headers`
    (``Retry-After`` on a 429)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.param, self.code = param, code

    def body(self) -> dict:
        """The error as JSON data; a lone surrogate the client sent is shown escaped (it cannot be encoded).
        Its type is OpenAI's: ``requests`` for a 429 (too many requests at once), ``server_error`` for a 5xx,
        else ``invalid_request_error``."""
        kind = "server_error" if self.status_code >= 500 else "invalid_request_error"
        kind = "requests" if self.status_code == 429 else kind
        message, param = (_escaped(text) for text in (self.detail, self.param))
        return {"error": {"message": message, "type": kind, "param": param, "code": self.code}}


def _escaped(text: str | None) -> str | None:
    return text if text is None else text.encode("utf-8", "backslashreplace").decode()


def lone_surrogate_at(value) -> str | None:
    """Where in JSON data `value` a string or key holds a lone surrogate (``messages.0.content``), or None."""
    pending = [("", value)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str) and lone_surrogate(value):
            return path
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and lone_surrogate(key):
                return where
            pending.append((where, item))
    return None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Body(Strict):
    """A request body: refused whole (400 naming where) when a string in it holds a lone surrogate."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data):
        where = lone_surrogate_at(data)
        if where is not None:
            # An APIError, not a ValueError: pydantic would report it at the body, not at `where`.
            raise APIError(
                400,
                f"{where}: holds a lone UTF-16 surrogate (half of a character), which is not valid Unicode text; "
                "send UTF-8 text",
                param=where,
            )
        return data


class StreamOptions(Strict):
    include_usage: bool = False


class Unsupported(Strict):
    """OpenAI arguments accepted only at their neutral value."""

    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None  # an end-user id; nothing to do locally

    @field_validator("presence_penalty", "frequency_penalty", "logit_bias")
    @classmethod
    def _neutral(cls, value, info):
        if value:
            raise ValueError(f"{info.field_name} is not supported by gptnb's local server; leave it out")
        return value


class Tuning(Body):
    """What every generation request has: the model, its sampling temperature and top_p, streaming or not."""

    model: str = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool | None = False

    @field_validator("temperature", "top_p")
    @classmethod
    def _no_underflow(cls, value, info):
        if value and value < SMALLEST_SAMPLING_VALUE:
            zero = "0 (greedy) or " if info.field_name == "temperature" else ""
            raise ValueError(
                f"must be {zero}at least {SMALLEST_SAMPLING_VALUE:g}: a smaller value underflows in float32 "
                "sampling (use temperature 0 for greedy decoding)"
            )
        return value


class Sampling(Tuning, Unsupported):
    """The sampling arguments of completions and chat."""

    n: int | None = Field(None, ge=1, le=MAX_N)
    stop: str | list[str] | None = Field(None, validate_default=True)
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stream_options: StreamOptions | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stops(cls, stop):
        stops = [stop] if isinstance(stop, str) else stop or []
        if not isinstance(stops, list) or len(stops) > 4 or not all(s and isinstance(s, str) for s in stops):
            raise ValueError("stop takes a string or a list of up to 4 non-empty strings")
        return stops


TokenIds = list[int]


class CompletionRequest(Sampling):
    prompt: Union[str, list[str], TokenIds, list[TokenIds]]

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, prompt):
        def ids(value):
            return isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)

        if isinstance(prompt, str) or (
            isinstance(prompt, list)
            and (all(isinstance(p, str) for p in prompt) or ids(prompt) or all(ids(p) for p in prompt))
        ):
            return prompt
        raise ValueError("prompt must be a string, a list of strings, a list of token ids or a list of such lists")

    max_tokens: int | None = Field(16, ge=0)
    echo: bool | None = False
    logprobs: int | None = Field(None, ge=0, le=5)
    best_of: Literal[1] | None = None
    suffix: None = None


class TextPart(Strict):
    type: Literal["text"]
    text: str


class TextContent(Strict):
    """A message whose content is text: a string, or a list of parts of the `PARTS` types, each with a ``text``."""

    PARTS: ClassVar[tuple[str, ...]]

    @field_validator("content", mode="before", check_fields=False)
    @classmethod
    def _text_only(cls, content):
        if isinstance(content, list):
            kinds = {part.get("type") if isinstance(part, dict) else type(part).__name__ for part in content}
            if kinds - set(cls.PARTS):
                unknown = ", ".join(map(str, kinds - set(cls.PARTS)))
                raise ValueError(f"only {cls.PARTS[0]} content parts are supported here, not {unknown}")
        elif not isinstance(content, str):
            raise ValueError(f"content must be a string or a list of {cls.PARTS[0]} parts")
        return content

    def text(self) -> str:
        """The content as one string: its parts' text joined."""
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)

    def chat(self) -> dict:
        """The message as a chat template takes it (``role``, ``content``): a developer message as a system one."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}


class Message(TextContent):
    PARTS: ClassVar[tuple[str, ...]] = ("text",)
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    store: bool | None = None
    metadata: dict[str, str] | None = None


class InputPart(Strict):
    """A text part of a Responses input message (``output_text`` when an earlier answer is sent back)."""

    type: Literal["input_text", "output_text"]
    text: str
    annotations: list | None = None
    logprobs: list | None = None


class InputMessage(TextContent):
    """A message of a Responses ``input`` list (`EasyInputMessage`, or an output message sent back)."""

    PARTS: ClassVar[tuple[str, ...]] = ("input_text", "output_text")
    type: Literal["message"] = "message"
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[InputPart]
    id: str | None = None
    status: str | None = None


class TextFormat(Strict):
    type: Literal["text"]


class TextConfig(Strict):
    """``text``: only plain text output (``{"format": {"type": "text"}}``) is served here."""

    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = None


class ResponsesRequest(Tuning):
    """A ``POST /v1/responses`` body. Tools, reasoning and structured output are not served here: those
    arguments are accepted only at their neutral value."""

    input: str | list[InputMessage]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    previous_response_id: str | None = Field(None, min_length=1)
    store: bool | None = True
    metadata: dict[str, str] | None = None
    user: str | None = None
    text: TextConfig | None = None
    tools: list[dict] | None = Field(None, max_length=0)
    tool_choice: Literal["none", "auto"] | None = None
    parallel_tool_calls: bool | None = None
    truncation: Literal["disabled"] | None = None
    reasoning: None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value):
        if not value:
            raise ValueError("input is empty: give a string or a list of messages")
        return value

    def messages(self) -> list[dict]:
        """The input as chat messages (``role``, ``content``), a developer message as a system one."""
        items = [InputMessage(role="user", content=self.input)] if isinstance(self.input, str) else self.input
        return [message.chat() for message in items]


Auto = Literal["auto"]


class Hyperparameters(Strict):
    n_epochs: Auto | int | None = None
    batch_size: Auto | int | None = None
    learning_rate_multiplier: Auto | float | None = None

    RANGES: ClassVar[dict] = {"n_epochs": (1, 50), "batch_size": (1, 256), "learning_rate_multiplier": (1e-3, 100)}

    @field_validator("n_epochs", "batch_size", "learning_rate_multiplier", mode="before")
    @classmethod
    def _auto_or_in_range(cls, value, info):
        low, high = cls.RANGES[info.field_name]
        whole = info.field_name != "learning_rate_multiplier"
        number = (
            isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and math.isfinite(value)
        )
        if value is None or value == "auto" or (number and low <= value <= high and (not whole or value == int(value))):
            return value
        raise ValueError(
            f"must be 'auto' or {'an integer' if whole else 'a number'} from {low} to {high}, not {value!r}"
        )


class Supervised(Strict):
    hyperparameters: Hyperparameters = Hyperparameters()


class Method(Strict):
    type: Literal["supervised"]
    supervised: Supervised | None = None


class JobRequest(Body):
    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    metadata: dict[str, str] | None = None
    integrations: list[dict] | None = Field(None, max_length=0)

    def hyperparameters_given(self) -> dict:
        """The hyperparameters from ``method.supervised`` (current API) or the top level (older API)."""
        if self.method and self.method.supervised and self.hyperparameters:
            raise APIError(
                400, "give hyperparameters in method.supervised or at the top level, not both", param="hyperparameters"
            )
        chosen = (
            self.method.supervised.hyperparameters if self.method and self.method.supervised else self.hyperparameters
        )
        return (chosen or Hyperparameters()).model_dump()
