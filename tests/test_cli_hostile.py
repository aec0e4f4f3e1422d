"""`gptnb finetune` and `gptnb prepare-data` given bad invocations: each exits 2 with one line on stderr, no
traceback, its input unchanged and nothing written (no output, no partial or hidden temporary file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gptnb import cli
from gptnb.paths import data_dir

TWEETS = (data_dir() / "tweets_sample.csv").read_text()
CHAT = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
PAIRS = 'prompt,completion\n"Tweet: I love it",positive\n"Tweet: awful",negative\n'

# Files each case may name; every one of them is written into the test's folder first.
FILES = {
    "tweets.csv": TWEETS,
    "bom.csv": b"\xef\xbb\xbf",
    "empty.csv": "",
    "header.csv": "text,label\n",
    "nolabel.csv": "text,stars\nhello,5\n",
    "badlabel.csv": "text,label\nhello,positive\nbye,angry\n",
    "nul.csv": b"text,label\nhi\x00,1\n",
    "fields.csv": "text,label\nhello,positive,extra\n",
    "s140.csv": '"7","1","Mon","NO_QUERY","user","hello"\n',
    "unclosed.csv": 'text,label\nhello,positive\n"bye,negative\nok,positive\n',
    "small.csv": "text,label\n" + "".join(f"tweet {i},{i % 2}\n" for i in range(10)),
    "pairs.csv": PAIRS,
    "chat.jsonl": CHAT,
    "quote.csv": 'prompt,completion\n"ok",positive\n"broken,negative\n"fine",positive\n',
    "unterminated.csv": 'prompt,completion\n"ok",positive\n"never closed,negative\n',
    "after.csv": 'prompt,completion\n"ok" here,positive\n',
    "pheader.csv": "prompt,completion\n",
    "pbom.csv": b"\xef\xbb\xbf",
    "columns.csv": "text,label\nhi,1\n",
    "latin1.csv": b"prompt,completion\ncaf\xe9,positive\n",
    "surrogate.jsonl": '{"prompt": "a\\ud800b", "completion": " yes"}\n',
    "surrogate2.jsonl": CHAT + '{"messages": [{"role": "user", "content": "hi"}, '
    '{"role": "assistant", "content": "\\udfff"}]}\n',
    "junk.jsonl": "nope\n{]\n",
    "existing.txt": "someone's notes\n",
}

FINETUNE = ("finetune", "--out", "{dir}/run", "--profile", "tiny", "--quiet")
PREPARE = ("--tokenizer", "tiny-gpt2")

# (argv after the command's fixed part, what the error line must say). {dir} is the test's folder.
FINETUNE_CASES = [
    (["--data", "{dir}/tweets.csv", "--epochs", "0"], "--epochs must be a positive number, not 0"),
    (["--data", "{dir}/tweets.csv", "--epochs", "-1"], "--epochs must be a positive number"),
    (["--data", "{dir}/tweets.csv", "--epochs", "nan"], "--epochs must be a positive number, not nan"),
    (["--data", "{dir}/tweets.csv", "--epochs", "inf"], "--epochs must be a positive number, not inf"),
    (["--data", "{dir}/tweets.csv", "--epochs=-inf"], "--epochs must be a positive number"),
    (["--data", "{dir}/tweets.csv", "--lr", "0"], "--lr must be a positive number"),
    (["--data", "{dir}/tweets.csv", "--lr", "nan"], "--lr must be a positive number, not nan"),
    (["--data", "{dir}/tweets.csv", "--lr=-1e-3"], "--lr must be a positive number"),
    (["--data", "{dir}/tweets.csv", "--batch-size", "0"], "--batch-size must be a positive number, not 0"),
    (["--data", "{dir}/tweets.csv", "--batch-size", "-4"], "--batch-size must be a positive number"),
    (["--data", "{dir}/tweets.csv", "--max-examples", "-5"], "--max-examples must be a positive number, not -5"),
    (["--data", "{dir}/tweets.csv", "--max-examples", "0"], "--max-examples must be a positive number"),
    (["--data", "{dir}/tweets.csv", "--max-length", "0"], "--max-length must be a positive number"),
    (["--data", "{dir}/tweets.csv", "--n-val", "-1"], "--n-val must be a positive number, not -1"),
    (["--data", "{dir}/tweets.csv", "--n-test", "0"], "--n-test must be a positive number, not 0"),
    (["--data", "{dir}/tweets.csv", "--n-test", "-3"], "--n-test must be a positive number"),
    (["--data", "{dir}/tweets.csv", "--lora", "0"], "--lora must be a positive number, not 0"),
    (["--data", "{dir}/tweets.csv", "--lora", "-2"], "--lora must be a positive number"),
    (["--data", "{dir}/tweets.csv", "--profile", "bogus"], "--profile: unknown profile 'bogus'"),
    (["--data", "{dir}/missing.csv"], "missing.csv: no such file"),
    (["--data", "{dir}"], ": no such file"),
    (["--data", "{dir}/bom.csv"], "bom.csv: the file is empty"),
    (["--data", "{dir}/empty.csv"], "empty.csv: the file is empty"),
    (["--data", "{dir}/header.csv"], "header.csv: no data rows"),
    (["--data", "{dir}/nolabel.csv"], "nolabel.csv:1: header 'text,stars' has a text column but no label column"),
    (["--data", "{dir}/badlabel.csv"], "badlabel.csv:3: field 'label': unknown label 'angry'"),
    (["--data", "{dir}/nul.csv"], "nul.csv: contains NUL bytes"),
    (["--data", "{dir}/fields.csv"], "fields.csv:2: 3 fields, the header has 2"),
    (["--data", "{dir}/s140.csv"], "s140.csv:1: field 'polarity': '7' is not 0, 2 or 4"),
    (["--data", "{dir}/unclosed.csv"], "unclosed.csv:3: 1 fields, the header has 2"),
    (["--data", "{dir}/small.csv"], "lower --n-val and --n-test"),
    (["--data", "{dir}/tweets.csv", "--n-test", "100000"], "lower --n-val and --n-test"),
    (["--data", "sentiment140"], "the sentiment140 source needs the CSV's path"),
    (["--data", "{dir}/tweets.csv", "--out", "{dir}/existing.txt"], "existing.txt: is a file"),
    (["--data", "{dir}/tweets.csv", "--out", "{dir}"], "already exists (not empty)"),
]

PREPARE_CASES = [
    (["{dir}/quote.csv"], "quote.csv:3: not readable as CSV from this line (',' expected after '\"' on line 4)"),
    (["{dir}/unterminated.csv"], "unterminated.csv:3: not readable as CSV from this line (unexpected end of data"),
    (["{dir}/after.csv"], "after.csv:2: not readable as CSV from this line (',' expected after '\"')"),
    (["{dir}/pheader.csv"], "pheader.csv: no examples, only a header"),
    (["{dir}/pbom.csv"], "pbom.csv: the file is empty"),
    (["{dir}/empty.csv"], "empty.csv: the file is empty"),
    (["{dir}/surrogate.jsonl"], "surrogate.jsonl:1: a lone surrogate ('\\ud800') in the text"),
    (["{dir}/surrogate2.jsonl"], "surrogate2.jsonl:2: a lone surrogate ('\\udfff') in the text"),
    (["{dir}/pairs.csv", "-o", "{dir}"], ": is a folder; give -o a file path"),
    (["{dir}/pairs.csv", "-o", "{dir}/existing.txt"], "existing.txt: already exists; add --force"),
    (["{dir}/pairs.csv", "-o", "/proc/gptnb-prepared.jsonl"], "/proc/gptnb-prepared.jsonl: cannot write a file there"),
    (["{dir}/pairs.csv", "-o", "{dir}/missing/out.jsonl"], "missing: no such folder for the output"),
    (["{dir}/pairs.csv", "-o", "{dir}/pairs.csv"], "the output would overwrite the input"),
    (["{dir}/pairs.csv", "--max-tokens", "-5"], "--max-tokens must be a positive number of tokens, not -5"),
    (["{dir}/pairs.csv", "--max-tokens", "0"], "--max-tokens must be a positive number of tokens, not 0"),
    (["{dir}/pairs.csv", "--system", "Be brief.", "--format", "completion"], "a system message needs the chat format"),
    (["{dir}/missing.csv"], "missing.csv: no such file"),
    (["{dir}"], ": no such file"),
    (["{dir}/columns.csv"], "columns.csv:1: missing columns"),
    (["{dir}/latin1.csv"], "latin1.csv:2: not UTF-8 text"),
    (["{dir}/junk.jsonl"], "no usable examples (invalid_json on lines 1, 2)"),
]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.fixture
def folder(tmp_path):
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return tmp_path


def _refused(folder: Path, capsys, argv: list[str], message: str) -> None:
    argv = [arg.replace("{dir}", str(folder)) for arg in argv]
    before = _snapshot(folder)
    assert cli.main(argv) == 2, argv
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert message in lines[0], lines[0]
    assert _snapshot(folder) == before  # the input unchanged, nothing written, no temporary file left
    assert not Path("/proc/gptnb-prepared.jsonl").exists()


@pytest.mark.parametrize("argv, message", FINETUNE_CASES)
def test_finetune_refuses_in_one_line(folder, capsys, argv, message):
    _refused(folder, capsys, [*FINETUNE, *argv], message)
    assert not (folder / "run").exists()


@pytest.mark.parametrize("argv, message", PREPARE_CASES)
def test_prepare_data_refuses_in_one_line(folder, capsys, argv, message):
    _refused(folder, capsys, ["prepare-data", *argv, *PREPARE], message)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_prepare_data_refuses_a_read_only_folder(folder, capsys):
    locked = folder / "locked"
    locked.mkdir(mode=0o500)
    try:
        _refused(
            folder, capsys, ["prepare-data", "{dir}/pairs.csv", "-o", str(locked / "o.jsonl"), *PREPARE], "o.jsonl"
        )
    finally:
        locked.chmod(0o700)


def test_prepare_data_replaces_a_file_with_force_and_its_own_output_without(folder, capsys):
    existing = folder / "existing.txt"
    assert cli.main(["prepare-data", str(folder / "pairs.csv"), "-o", str(existing), "--force", *PREPARE]) == 0
    assert existing.read_text().count("\n") == 2
    assert cli.main(["prepare-data", str(folder / "chat.jsonl"), *PREPARE]) == 0
    assert cli.main(["prepare-data", str(folder / "chat.jsonl"), *PREPARE]) == 0  # its default output, again
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["finetune", "--data", "{dir}/tweets.csv", "--out", "{dir}/run", "--epochs", "nan"], "--epochs must be"),
        (["prepare-data", "{dir}/quote.csv", *PREPARE], "quote.csv:3: not readable as CSV"),
    ],
)
def test_no_traceback_reaches_the_terminal(folder, argv, message):
    """The real command in its own process: only the one line on stderr, whatever the libraries print on import."""
    argv = [arg.replace("{dir}", str(folder)) for arg in argv]
    command = [sys.executable, "-c", "import sys; from gptnb.cli import main; sys.exit(main())", *argv]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()] and message in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
