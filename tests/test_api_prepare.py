"""`gptnb prepare-data`: named problems with line numbers, both output formats, clean failures."""

import json

import pytest

from gptnb import cli
from gptnb.datacheck.formats import plain_chat_prompt
from gptnb.datacheck.prepare import PrepareError, prepare_data
from gptnb.training_settings import default_epochs

CSV = """prompt,completion
"Tweet: I love it
Sentiment:", positive
"Tweet: awful day
Sentiment:", negative
"Tweet: awful day
Sentiment:", negative
,negative
"Tweet: meh",
"""

JSONL_LINES = [
    '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}',
    '{"messages": [{"role": "user", "content": "hi"}]}',
    '{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}',
    "not json",
    "[1, 2]",
    '{"prompt": "a", "completion": " b"}',
    '{"prompt": "a"}',
    "",
    '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}',
    '{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "hello"}]}',
    '{"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "hello"}]}',
]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_csv_becomes_chat_jsonl_and_problems_carry_line_numbers(tmp_path):
    source = tmp_path / "tweets.csv"
    source.write_text(CSV)
    before = source.read_bytes()
    prepared = prepare_data(source, tokenizer="tiny-gpt2")
    assert prepared.kind == "CSV"
    # Quoted prompts span two lines, so rows start on lines 2, 4, 6, 8 and 9.
    assert prepared.problems == {"duplicate": [6], "empty_field": [8, 9]}
    assert source.read_bytes() == before, "the input is never modified"
    assert prepared.output == tmp_path / "tweets_prepared.jsonl"
    assert read_jsonl(prepared.output) == [
        {
            "messages": [
                {"role": "user", "content": "Tweet: I love it\nSentiment:"},
                {"role": "assistant", "content": "positive"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Tweet: awful day\nSentiment:"},
                {"role": "assistant", "content": "negative"},
            ]
        },
    ]
    summary = prepared.summary()
    assert "duplicate" in summary and "lines 8, 9" in summary and "billed training tokens" in summary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tweets.csv", "tweets_prepared.jsonl"], "no temp files left"


def test_every_jsonl_problem_is_named_at_its_line(tmp_path):
    source = tmp_path / "mixed.jsonl"
    source.write_text("\n".join(JSONL_LINES) + "\n")
    prepared = prepare_data(source, tmp_path / "out.jsonl", form="completion", tokenizer="tiny-gpt2")
    assert prepared.problems == {
        "missing_assistant_message": [2],
        "unrecognized_role": [3],
        "invalid_json": [4],
        "not_an_object": [5],
        "missing_keys": [7],
        "duplicate": [9],
        "invalid_type": [10],
        "empty_field": [11],
    }
    # A chat example becomes plain-template text; a prompt/completion pair stays exactly as it was.
    assert read_jsonl(tmp_path / "out.jsonl") == [
        {"prompt": plain_chat_prompt([{"role": "user", "content": "hi"}]), "completion": " hello"},
        {"prompt": "a", "completion": " b"},
    ]


def test_token_counts_billing_estimate_and_too_long_examples(tmp_path):
    source = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "word " * n, "completion": " yes"} for n in (3, 5, 40)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    prepared = prepare_data(source, tokenizer="tiny-gpt2", max_tokens=20)
    assert prepared.warnings == {"too_long": [3]}
    assert len(prepared.examples) == 3, "over-long examples are kept (and flagged)"
    assert prepared.token_counts[0] < prepared.token_counts[1] < prepared.token_counts[2]
    assert prepared.n_epochs == default_epochs(3) == 25
    assert prepared.billed_tokens == 25 * (prepared.token_counts[0] + prepared.token_counts[1] + 20)


@pytest.mark.parametrize("n, epochs", [(1, 25), (10, 10), (34, 3), (5000, 3), (9000, 2), (30000, 1)])
def test_auto_epochs_follow_openais_rule(n, epochs):
    assert default_epochs(n) == epochs


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.csv", None, "no such file"),
        ("cols.csv", "text,label\nhi,1\n", "cols.csv:1: missing columns"),
        ("binary.jsonl", b'{"a": 1}\n\xff\xfe\x00', "binary.jsonl:2: not UTF-8"),
        ("empty.jsonl", "", "the file is empty"),
        ("junk.jsonl", "nope\n{]\n", "no usable examples (invalid_json on lines 1, 2)"),
    ],
)
def test_malformed_input_fails_cleanly_without_output(tmp_path, capsys, name, content, message):
    source = tmp_path / name
    if content is not None:
        source.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert cli.main(["prepare-data", str(source), "--tokenizer", "tiny-gpt2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gptnb prepare-data: error: ") and message in err and "Traceback" not in err
    assert not list(tmp_path.glob("*_prepared.jsonl")) and not list(tmp_path.glob(".*"))


def test_refuses_to_overwrite_its_input(tmp_path):
    source = tmp_path / "data.jsonl"
    source.write_text('{"prompt": "a", "completion": " b"}\n')
    with pytest.raises(PrepareError, match="overwrite the input"):
        prepare_data(source, source, tokenizer="tiny-gpt2")
    assert source.read_text() == '{"prompt": "a", "completion": " b"}\n'


def test_cli_writes_and_reports(tmp_path, capsys):
    source = tmp_path / "t.csv"
    source.write_text(CSV)
    assert (
        cli.main(
            [
                "prepare-data",
                str(source),
                "-o",
                str(tmp_path / "o.jsonl"),
                "--format",
                "completion",
                "--tokenizer",
                "tiny-gpt2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "wrote" in out and "completion format" in out
    assert read_jsonl(tmp_path / "o.jsonl")[0] == {"prompt": "Tweet: I love it\nSentiment:", "completion": " positive"}


def test_unicode_line_separators_inside_texts_survive(tmp_path):
    source = tmp_path / "odd.csv"
    source.write_text('prompt,completion\n"Tweet: a\u2028b\x85c",yes\n', encoding="utf-8")
    prepared = prepare_data(source, tokenizer="tiny-gpt2")
    assert prepared.problems == {}
    from gptnb.datacheck.formats import read_jsonl as parse

    examples, problems = parse(prepared.output.read_text())
    assert problems == {} and examples[0].as_chat()[0]["content"] == "Tweet: a\u2028b\x85c"


def test_a_system_message_opens_every_chat_example(tmp_path, capsys):
    source = tmp_path / "t.csv"
    source.write_text(CSV)
    assert (
        cli.main(["prepare-data", str(source), "--system", "Classify the sentiment.", "--tokenizer", "tiny-gpt2"]) == 0
    )
    first = read_jsonl(tmp_path / "t_prepared.jsonl")[0]["messages"]
    assert first[0] == {"role": "system", "content": "Classify the sentiment."} and first[1]["role"] == "user"
    assert cli.main(["prepare-data", str(source), "--system", "x", "--format", "completion"]) == 2
    assert "needs the chat format" in capsys.readouterr().err
