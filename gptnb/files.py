"""Reading and writing files safely: `DataError`, CSV rows with their line numbers, atomic writes.

A file is written beside its destination, flushed to the disk and renamed onto it when complete,
so a crash or power loss leaves the old file or the new one, never half of one. An input that cannot be used raises
`DataError` with ``file:line: field ...`` and what to do.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class DataError(ValueError):
    """Input data that cannot be used; the message says where and what to do."""


def csv_rows(
    path: Path, text: str, fix: str, error: type[Exception] = DataError, strict: bool = False
) -> list[tuple[int, list[str]]]:
    """(line, cells) of each row of `text`, the CSV read from `path`, skipping blank rows.

    `line` is where the row starts (a quoted field may span lines). A row the csv module cannot
    parse raises `error` with ``path:line`` of the row's start, what went wrong and `fix`, the remedy.
    With `strict`, a quote that is never closed, or closed with text after it (``"broken,negative``
    then ``"fine",positive``: two rows that would merge into one field), is such an error.
    """
    reader = csv.reader(io.StringIO(text), strict=strict)
    rows, start = [], 1
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as problem:
        found = f"{problem}" if reader.line_num <= start else f"{problem} on line {reader.line_num}"
        raise error(f"{path}:{start}: not readable as CSV from this line ({found}); {fix}") from None
    return rows


@contextmanager
def replacing(path: str | Path, folder: bool = False, keep_existing: bool = False, mode: int = 0o644) -> Iterator[Path]:
    """``with replacing(path) as tmp:`` write `tmp` (a file, or with `folder` a folder); it becomes `path`.

    `tmp` is beside `path` (same file system, hidden name). When the block ends without an error it is
    renamed onto `path`, replacing what was there; otherwise it is removed and `path` is left as it was.
    With `keep_existing`, a folder that another process completed at `path` meanwhile is kept instead.
    A file gets the permissions `mode` and reaches the disk (fsync) before the rename, the rename after.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    else:
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
        tmp = Path(name)
        os.chmod(tmp, mode)  # a temporary file starts private
    try:
        yield tmp
        if folder and keep_existing:
            try:
                tmp.rename(path)
            except OSError:
                if not path.exists():
                    raise
        elif folder and path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            _fsync(tmp)
            os.replace(tmp, path)
            _fsync(path.parent)
    finally:
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush `path` (a file's bytes, or a folder's names) to the disk."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames need no folder flush
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_atomically(path: str | Path, content: str | bytes, mode: int = 0o644) -> None:
    """Write `content` (text as UTF-8) to `path`, with permissions `mode`, through `replacing`."""
    with replacing(path, mode=mode) as tmp:
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)
