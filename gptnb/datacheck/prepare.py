"""``gptnb prepare-data``: a CSV or JSONL of examples → fine-tuning JSONL, with a report.

The replacement for the removed ``openai tools fine_tunes.prepare_data``: it reads
a CSV with ``prompt`` and ``completion`` columns (the seed's layout) or a JSONL in
chat or prompt/completion format, names every problem with its line numbers (as
OpenAI's data-prep cookbook does), shows the token-count distribution and
estimates the tokens a job would be billed for. The input is never modified and
the output appears whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..files import csv_rows, write_atomically
from ..models import ModelUnavailableError, load_tokenizer
from ..profiles import get_profile
from ..training_settings import default_epochs
from .formats import (
    PROBLEMS,
    WARNINGS,
    Example,
    collect,
    example_from_pair,
    lone_surrogate,
    read_jsonl,
    to_record,
    training_pair,
)

FORMATS = ("chat", "completion")
MAX_LINES_SHOWN = 8


class PrepareError(ValueError):
    """An input that cannot be prepared at all; the message says what to do."""


@dataclass
class Prepared:
    """What `prepare_data` found and wrote."""

    source: Path
    kind: str  # "CSV" or "JSONL"
    examples: list[Example]
    problems: dict[str, list[int]]  # problem name → line numbers of the examples left out
    warnings: dict[str, list[int]]  # warning name → line numbers of examples kept anyway
    token_counts: list[int]
    tokenizer: str
    max_tokens: int
    form: str
    output: Path | None = None
    n_epochs: int = field(init=False)
    billed_tokens: int = field(init=False)

    def __post_init__(self):
        self.n_epochs = default_epochs(len(self.examples))
        self.billed_tokens = self.n_epochs * sum(min(n, self.max_tokens) for n in self.token_counts)

    def summary(self) -> str:
        """The report, as `gptnb prepare-data` prints it."""
        left_out = sum(len(lines) for lines in self.problems.values())
        lines = [f"{self.source}: {self.kind}, {len(self.examples) + left_out} examples read"]
        for title, found, meanings in (
            ("left out", self.problems, PROBLEMS),
            ("kept, but note", self.warnings, WARNINGS),
        ):
            if found:
                lines.append(f"{title}:")
                lines += [
                    f"  {name:<26}{len(at):>5}  lines {_lines(at)}  ({meanings[name]})" for name, at in found.items()
                ]
        if not self.problems:
            lines.append("no problems found")
        counts = sorted(self.token_counts)
        lines.append(
            f"tokens per example ({self.tokenizer} tokenizer): min {counts[0]}, median {statistics.median(counts):g}, "
            f"mean {statistics.fmean(counts):.1f}, p95 {counts[math.ceil(0.95 * len(counts)) - 1]}, max {counts[-1]}"
        )
        lines.append(
            f"estimate: {len(self.examples)} examples x {self.n_epochs} epochs (OpenAI's 'auto') = "
            f"~{self.billed_tokens:,} billed training tokens"
        )
        if self.output:
            lines.append(f"wrote {self.output}: {len(self.examples)} examples in {self.form} format")
        return "\n".join(lines)


def _lines(at: list[int]) -> str:
    shown = ", ".join(map(str, at[:MAX_LINES_SHOWN]))
    return shown + (f", ... (+{len(at) - MAX_LINES_SHOWN} more)" if len(at) > MAX_LINES_SHOWN else "")


def read_examples(path: Path) -> tuple[str, list[Example], dict[str, list[int]]]:
    """(kind, examples, problems) of a CSV or JSONL file; `PrepareError` if it cannot be read at all."""
    if not path.is_file():
        raise PrepareError(f"{path}: no such file; give a .csv (prompt,completion columns) or a .jsonl file")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PrepareError(f"{path}: cannot read it ({error.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise PrepareError(f"{path}:{line}: not UTF-8 text (byte {error.start}); save the file as UTF-8") from None
    if not text.strip():
        raise PrepareError(f"{path}: the file is empty")
    is_jsonl = path.suffix.lower() in {".jsonl", ".json"} or (path.suffix.lower() != ".csv" and text.lstrip()[0] == "{")
    kind, (examples, problems) = ("JSONL", read_jsonl(text)) if is_jsonl else ("CSV", _read_csv(path, text))
    if not examples and not problems:
        raise PrepareError(f"{path}: no examples, only a header; add rows of prompt,completion under it")
    if not examples:
        found = "; ".join(f"{name} on lines {_lines(at)}" for name, at in problems.items())
        raise PrepareError(f"{path}: no usable examples ({found}); see `gptnb prepare-data --help` for the formats")
    _check_encodable(path, examples)
    return kind, examples, problems


def _check_encodable(path: Path, examples: list[Example]) -> None:
    """Refuse text that is not valid Unicode (a lone surrogate such as ``"\\ud800"`` in JSON): no tokenizer takes it."""
    for example in examples:
        surrogate = lone_surrogate("".join(message["content"] for message in example.as_chat()))
        if surrogate is not None:
            raise PrepareError(
                f"{path}:{example.line}: a lone surrogate ({surrogate!r}) in the text, which is not "
                "valid Unicode and no tokenizer can encode; fix or remove that line"
            )


def _read_csv(path: Path, text: str):
    fix = 'check its quoting: close every quote, and double a quote inside quotes ("")'
    rows = csv_rows(path, text, fix, PrepareError, strict=True)
    header = [cell.strip().lower() for cell in rows[0][1]] if rows else []
    if "prompt" not in header or "completion" not in header:
        raise PrepareError(
            f"{path}:1: missing columns: the header is {','.join(header)!r}; a CSV needs 'prompt' and "
            "'completion' columns (or give a .jsonl file)"
        )
    return collect([(line, dict(zip(header, row))) for line, row in rows[1:]], example_from_pair)


def prepare_data(
    path: str | Path,
    output: str | Path | None = None,
    *,
    form: str = "chat",
    tokenizer: str | None = None,
    max_tokens: int | None = None,
    system: str | None = None,
    force: bool = False,
) -> Prepared:
    """Check `path` (CSV or JSONL), write the usable examples as JSONL in `form` to `output`
    (default: ``<name>_prepared.jsonl`` beside it) and return the report.

    Tokens are counted with `tokenizer` (default: the profile's fine-tuning model),
    and examples over `max_tokens` (default: the profile's training length) are flagged.
    `system` opens every chat example that has no system message with this one (ask the
    fine-tuned model with the same system message). An existing `output` other than the default
    is replaced only with `force`.
    """
    if form not in FORMATS:
        raise PrepareError(f"unknown format {form!r}; use one of {', '.join(FORMATS)}")
    if system and form != "chat":
        raise PrepareError("a system message needs the chat format (--format chat)")
    if max_tokens is not None and max_tokens <= 0:
        raise PrepareError(f"--max-tokens must be a positive number of tokens, not {max_tokens}")
    path = Path(path)
    default = path.with_name(f"{path.stem}_prepared.jsonl")
    output = Path(output) if output else default
    if output.resolve() == path.resolve():
        raise PrepareError(f"{output}: the output would overwrite the input; choose another -o path")
    if not output.parent.is_dir():
        raise PrepareError(f"{output.parent}: no such folder for the output; create it or choose another -o path")
    if output.is_dir():
        raise PrepareError(f"{output}: is a folder; give -o a file path, e.g. {output / default.name}")
    if output.exists() and output.resolve() != default.resolve() and not force:
        raise PrepareError(
            f"{output}: already exists; add --force (in Python: force=True) to replace it, or choose another -o path"
        )
    kind, examples, problems = read_examples(path)
    try:
        tempfile.TemporaryFile(dir=output.parent).close()  # fail now, not after counting tokens
    except OSError as error:
        raise _unwritable(output, error) from None
    if system:
        examples = [example.with_system(system) for example in examples]
    profile = get_profile()
    tokenizer = tokenizer or profile.finetune_model
    max_tokens = max_tokens or profile.max_length
    counter = load_tokenizer(tokenizer)
    counts = [len(counter("".join(training_pair(example, counter))).input_ids) + 1 for example in examples]  # +1: eos
    too_long = [example.line for example, n in zip(examples, counts) if n > max_tokens]
    try:
        write_atomically(output, "".join(json.dumps(to_record(example, form)) + "\n" for example in examples))
    except OSError as error:
        raise _unwritable(output, error) from None
    return Prepared(
        path,
        kind,
        examples,
        problems,
        {"too_long": too_long} if too_long else {},
        counts,
        tokenizer,
        max_tokens,
        form,
        output,
    )


def _unwritable(output: Path, error: OSError) -> PrepareError:
    return PrepareError(
        f"{output}: cannot write a file there ({error.strerror}); choose an -o path in a folder you can write to"
    )


def _run(args: argparse.Namespace) -> int:
    try:
        prepared = prepare_data(
            args.file,
            args.output,
            form=args.format,
            tokenizer=args.tokenizer,
            max_tokens=args.max_tokens,
            system=args.system,
            force=args.force,
        )
    except (PrepareError, ModelUnavailableError) as error:
        print(f"gptnb prepare-data: error: {error}", file=sys.stderr)
        return 2
    print(prepared.summary())
    return 0


def add_command(commands, summary: str) -> None:
    """Register ``gptnb prepare-data``."""
    parser = commands.add_parser(
        "prepare-data",
        help=summary,
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument(
        "file", type=Path, help="a .csv with prompt,completion columns, or a .jsonl (chat or prompt/completion)"
    )
    parser.add_argument("-o", "--output", type=Path, help="where to write (default: <file>_prepared.jsonl)")
    parser.add_argument("--force", action="store_true", help="replace an existing -o file")
    parser.add_argument("--format", choices=FORMATS, default="chat", help="output format (default: chat)")
    parser.add_argument(
        "--tokenizer", help="count tokens with this model's tokenizer (default: the profile's fine-tuning model)"
    )
    parser.add_argument(
        "--max-tokens", type=int, help="flag examples longer than this (default: the profile's max_length)"
    )
    parser.add_argument("--system", help="open every chat example that has none with this system message")
    parser.set_defaults(run=_run)
