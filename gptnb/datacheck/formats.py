"""The two fine-tuning data formats and what can be wrong with a record of either.

Chat format, one JSON object a line: ``{"messages": [{"role": "user", "content": "..."},
{"role": "assistant", "content": "..."}]}``. Prompt/completion format (GPT-3's):
``{"prompt": "...", "completion": "..."}``. Both are read into `Example`s; a record
that cannot be used gets a named problem instead, as in OpenAI's data-prep cookbook.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

ROLES = ("system", "developer", "user", "assistant")

# Problems that leave an example out of the training data, and what each means.
PROBLEMS = {
    "invalid_json": "the line is not valid JSON",
    "not_an_object": "the line is JSON but not an object {...}",
    "missing_keys": "no 'messages' list, or 'prompt' without 'completion' (or a message without role/content)",
    "invalid_type": "a field has the wrong type (content must be a string)",
    "empty_field": "a prompt, completion or message content is empty",
    "invalid_unicode": "a text holds a lone surrogate escape (\\ud800-\\udfff), which is no character",
    "unrecognized_role": f"a message role other than {', '.join(ROLES)}",
    "missing_assistant_message": "no assistant message to learn from",
    "duplicate": "the same example as an earlier line",
}
# Kept, but worth knowing.
WARNINGS = {"too_long": "longer than the training length: the end (the answer) is cut off in training"}


class FormatError(ValueError):
    """A record that cannot be used; ``problem`` is a key of `PROBLEMS`."""

    def __init__(self, problem: str, detail: str = ""):
        super().__init__(f"{problem}: {detail or PROBLEMS[problem]}")
        self.problem = problem


@dataclass(frozen=True)
class Example:
    """One training example, from `line` of its file, in whichever format it came."""

    line: int
    messages: tuple[tuple[str, str], ...] = ()  # (role, content) pairs, chat format
    prompt: str | None = None  # prompt/completion format
    completion: str | None = None

    def as_chat(self) -> list[dict]:
        """The example as chat messages (a prompt/completion pair becomes user/assistant, trimmed)."""
        if self.messages:
            return [{"role": role, "content": content} for role, content in self.messages]
        return [
            {"role": "user", "content": self.prompt.strip()},
            {"role": "assistant", "content": self.completion.strip()},
        ]

    def as_completion(self) -> tuple[str, str]:
        """The example as (prompt, completion); chat turns are rendered with `plain_chat_prompt`."""
        if not self.messages:
            return self.prompt, self.completion
        *context, (_, answer) = self.messages
        return plain_chat_prompt([{"role": r, "content": c} for r, c in context]), " " + answer

    def with_system(self, text: str) -> Example:
        """The example in chat format, opening with the system message `text` unless it has one already."""
        messages = tuple((m["role"], m["content"]) for m in self.as_chat())
        if messages[0][0] != "system":
            messages = (("system", text), *messages)
        return Example(self.line, messages=messages)

    def key(self) -> str:
        """What two duplicate examples share."""
        return json.dumps([self.messages, self.prompt, self.completion])


def plain_chat_prompt(messages: list[dict]) -> str:
    """A chat as plain text for models without a chat template (GPT-2): ``User: ...`` lines, then ``Assistant:``."""
    lines = [f"{message['role'].capitalize()}: {message['content']}" for message in messages]
    return "\n".join([*lines, "Assistant:"])


PLAIN_CHAT_STOPS = ("\nUser:", "\nSystem:")  # where a base model's reply to `plain_chat_prompt` should end


def chat_prompt(messages: list[dict], tokenizer) -> str:
    """The text a model continues to answer `messages`: its chat template, else `plain_chat_prompt`."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return plain_chat_prompt(messages)


def training_pair(example: Example, tokenizer) -> tuple[str, str]:
    """(prompt, completion) as the model is trained on it, without the final eos (the trainer adds it).

    A chat example is rendered as `chat_prompt` renders a request at inference, so the
    fine-tuned model is asked exactly the way it was taught.
    """
    if not example.messages or not getattr(tokenizer, "chat_template", None):
        return example.as_completion()
    messages = example.as_chat()
    prompt = chat_prompt(messages[:-1], tokenizer)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    completion = full[len(prompt) :] if full.startswith(prompt) else messages[-1]["content"]
    end = completion.rfind(tokenizer.eos_token or "\0")
    return prompt, completion[:end] if end > 0 else completion  # the trainer appends the eos itself


def parse_record(text: str, line: int) -> Example:
    """One JSONL line as an `Example`; raises `FormatError` naming the problem."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise FormatError("invalid_json", f"{error.msg} at column {error.colno}") from None
    if not isinstance(record, dict):
        raise FormatError("not_an_object")
    if "messages" in record:
        return Example(line, messages=_messages(record["messages"]))
    return example_from_pair(record, line)


def example_from_pair(record: dict, line: int) -> Example:
    """A prompt/completion record (a JSON object or a CSV row) as an `Example`."""
    missing = [key for key in ("prompt", "completion") if record.get(key) is None]
    if missing:
        raise FormatError("missing_keys", f"no {' or '.join(repr(key) for key in missing)} (and no 'messages')")
    prompt, completion = record["prompt"], record["completion"]
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise FormatError("invalid_type", "prompt and completion must be strings")
    if not prompt.strip() or not completion.strip():
        raise FormatError("empty_field", f"empty {'prompt' if not prompt.strip() else 'completion'}")
    return Example(line, prompt=prompt, completion=completion)


SURROGATE = re.compile("[\ud800-\udfff]")  # half of a UTF-16 pair: what a lone "\\ud800" escape in JSON gives


def lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in `text` (not valid Unicode: no tokenizer, and no UTF-8, can take it), or None."""
    found = SURROGATE.search(text)
    return found.group() if found else None


def parse_trainable(text: str, line: int) -> Example:
    """`parse_record`, refusing as well what training would fail on: text no tokenizer can encode, a lone
    surrogate from a ``"\\ud800"`` escape (``invalid_unicode``). (`gptnb prepare-data` refuses such a file.)"""
    example = parse_record(text, line)
    for part in (example.prompt or "", example.completion or "", *(content for _, content in example.messages)):
        if (surrogate := lone_surrogate(part)) is not None:
            raise FormatError("invalid_unicode", f"the lone surrogate {surrogate!r}")
    return example


def _messages(messages) -> tuple[tuple[str, str], ...]:
    if not isinstance(messages, list) or not messages:
        raise FormatError("missing_keys", "'messages' must be a non-empty list")
    pairs = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise FormatError("missing_keys", f"message {i} needs 'role' and 'content'")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise FormatError("unrecognized_role", f"message {i} has role {role!r}; use one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise FormatError("invalid_type", f"message {i}: content must be a string")
        if not content.strip():
            raise FormatError("empty_field", f"message {i} ({role}) has empty content")
        pairs.append((role, content))
    if pairs[-1][0] != "assistant":
        raise FormatError("missing_assistant_message", "the last message must be the assistant's answer")
    return tuple(pairs)


def parse_each(rows, parse, problems: dict[str, list[int]]) -> Iterator[Example]:
    """The `Example` of each ``(line, row)`` that ``parse(row, line)`` can read; the line numbers of the others
    are added to `problems` under the name of their problem."""
    for line, row in rows:
        try:
            yield parse(row, line)
        except FormatError as error:
            problems.setdefault(error.problem, []).append(line)


def collect(rows, parse) -> tuple[list[Example], dict[str, list[int]]]:
    """Parse each ``(line, row)`` with ``parse(row, line)``; keep the usable examples, the first
    of any duplicates, and the line numbers of each problem."""
    examples, problems, seen = [], {}, set()
    for example in parse_each(rows, parse, problems):
        if example.key() in seen:
            problems.setdefault("duplicate", []).append(example.line)
            continue
        seen.add(example.key())
        examples.append(example)
    return examples, problems


def jsonl_rows(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line that is not blank."""
    return ((line, row) for line, row in enumerate(lines, start=1) if row.strip())


def read_jsonl(text: str) -> tuple[list[Example], dict[str, list[int]]]:
    """Every usable example of a JSONL text, and the line numbers of each problem."""
    lines = text.split("\n")  # not splitlines(): JSON strings may hold U+2028 and other line-breaking characters
    return collect(jsonl_rows(lines), parse_record)


def training_file_examples(text: str) -> tuple[list[Example], str | None]:
    """The examples of an uploaded fine-tuning file and, when it cannot be trained on, what is wrong.

    Duplicates are harmless for training and not counted as a problem (`gptnb prepare-data` reports them).
    """
    examples, problems = collect(jsonl_rows(text.split("\n")), parse_trainable)
    problems.pop("duplicate", None)
    return examples, _verdict(problems, bool(examples))


def training_file_problem(lines: Iterable[str]) -> str | None:
    """What `training_file_examples` finds wrong with a file given as its lines (split at ``\\n`` only),
    read one at a time and none kept, so a large file is checked in little memory; None when it can be trained on."""
    problems: dict[str, list[int]] = {}
    usable = sum(1 for _ in parse_each(jsonl_rows(lines), parse_trainable, problems))
    return _verdict(problems, usable > 0)


def _verdict(problems: dict[str, list[int]], usable: bool) -> str | None:
    return (problem_summary(problems) or "no examples") if problems or not usable else None


def problem_summary(problems: dict[str, list[int]], shown: int = 5) -> str:
    """``"invalid_json on lines 3, 9 (the line is not valid JSON); ..."`` for a problems dict."""
    return "; ".join(
        f"{name} on lines {', '.join(map(str, lines[:shown]))}{', ...' if len(lines) > shown else ''} "
        f"({PROBLEMS[name]})"
        for name, lines in problems.items()
    )


def to_record(example: Example, form: str) -> dict:
    """The example as a JSONL record of `form` (``chat`` or ``completion``)."""
    if form == "chat":
        return {"messages": example.as_chat()}
    prompt, completion = example.as_completion()
    return {"prompt": prompt, "completion": completion}
