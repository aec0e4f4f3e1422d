"""API keys by name (``gptnb serve --keys-file``) and what each has used since the server started.

The keys file gives one key a line, its name first, then the key, separated by spaces or tabs;
``#`` starts a comment (a key cannot hold ``#``), blank lines are skipped::

    # gptnb serve --keys-file class.keys
    instructor  0Qx2fJc9-l3k1VwTqR8m2sYb
    alice       Yk7Pw1s0Hb3DnaQz5Ue9tLrc
    table-3     Xa9Jd2mP0cVw7TnQe4Lu1yZs   # one key shared by a group

A name is up to 64 letters, digits and ``. _ @ -``; a key is at least `MIN_KEY_LENGTH` letters,
digits and ``. _ ~ + / = -`` (``python -c "import secrets; print(secrets.token_urlsafe(24))"``
makes one). Names and keys are each used once. A bad line stops the server at start with one error
naming the file and line (never the key).

A request's key (``Authorization: Bearer <key>``) is compared with every key in constant time and
stands for its name from then on: the log and ``GET /v1/usage`` show names, never keys. The key of
``--api-key`` is named ``default``; with no key at all, every caller is ``anonymous``.

Who sees what in ``GET /v1/usage``: the keys named ``instructor`` or ``instructor-<anything>``
(``instructor-ta``), ``default`` and ``anonymous`` see every name's usage; any other key sees only
its own.

Usage: each completion or chat request is counted under its key's name (requests, errors: answered
with a status of 400 or more, prompt and completion tokens) and logged as one line of the server's
log (``uvicorn.error``, not the access log)::

    usage key=alice model="SmolLM2-135M-Instruct" status=200 prompt_tokens=31 completion_tokens=32 latency_ms=2210

The counts live in memory: a restarted server starts from zero.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MIN_KEY_LENGTH = 16
SERVER_KEY_NAME = "default"  # the name of --api-key's key
OPEN_NAME = "anonymous"  # every caller of a server without keys
INSTRUCTOR = re.compile(r"instructor(-.*)?")
NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
KEY = re.compile(r"[A-Za-z0-9._~+/=-]+")
MAKE_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(24))" makes one'
FORMAT = "one 'name key' pair a line, '#' for comments"
LOG = logging.getLogger("uvicorn.error.usage")  # the server's log: uvicorn's handler prints it


class KeysFileError(ValueError):
    """A keys file that cannot be used; the message names the file and line and never shows a key."""


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def read_keys_file(path: Path, api_key: str | None = None) -> dict[str, str]:
    """The keys of the file at `path` by name (and `api_key` as ``default`` when given); `KeysFileError` at the
    first line that cannot be used, a missing or unreadable file, or a file without keys."""
    try:
        lines = path.read_bytes().decode("utf-8-sig").split("\n")
    except FileNotFoundError:
        raise KeysFileError(f"the keys file {path} does not exist; write one with {FORMAT}") from None
    except OSError as error:
        raise KeysFileError(f"cannot read the keys file {path} ({error.strerror})") from None
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        raise KeysFileError(f"{path}, line {line}: not UTF-8 text; a keys file holds {FORMAT}") from None
    keys, name_at, key_at = {}, {}, {}  # where each name and each key (by digest, with its name) was given
    if api_key:
        keys[SERVER_KEY_NAME], name_at[SERVER_KEY_NAME] = api_key, "--api-key"
        key_at[_digest(api_key)] = (SERVER_KEY_NAME, "--api-key")
    for number, line in enumerate(lines, start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        at = f"{path}, line {number}"
        name, key = _checked_line(words, at)
        if name in name_at:
            raise KeysFileError(
                f"{at}: the name {name!r} is already used ({_at(name_at[name])}); give each key its own name"
            )
        if _digest(key) in key_at:
            other, other_at = key_at[_digest(key)]
            raise KeysFileError(
                f"{at}: the key of {name!r} is also the key of {other!r} ({_at(other_at)}); give each name its own key"
            )
        keys[name], name_at[name], key_at[_digest(key)] = key, f"line {number}", (name, f"line {number}")
    if len(keys) == (1 if api_key else 0):
        raise KeysFileError(f"the keys file {path} holds no keys; write {FORMAT}")
    return keys


def _at(where: str) -> str:
    return where if where == "--api-key" else f"on {where}"


def _checked_line(words: list[str], at: str) -> tuple[str, str]:
    """(name, key) of a line's words, or `KeysFileError`."""
    if len(words) != 2:
        raise KeysFileError(f"{at}: a line holds two words, a name and its key; this one holds {len(words)}")
    name, key = words
    if not NAME.fullmatch(name):
        raise KeysFileError(f"{at}: the name {name[:64]!r} is not a name: use up to 64 letters, digits and . _ @ -")
    if not KEY.fullmatch(key):
        raise KeysFileError(f"{at}: the key of {name!r} holds characters other than letters, digits and . _ ~ + / = -")
    if len(key) < MIN_KEY_LENGTH:
        raise KeysFileError(
            f"{at}: the key of {name!r} has {len(key)} characters, too short to be hard to guess; use at least "
            f"{MIN_KEY_LENGTH} ({MAKE_KEY})"
        )
    return name, key


class Keys:
    """The keys a server accepts, each by name; none: every caller is `OPEN_NAME`."""

    def __init__(self, keys: dict[str, str]):
        self._keys = dict(keys)
        self._digests = [(name, _digest(key)) for name, key in keys.items()]

    @classmethod
    def load(cls, api_key: str | None, keys_file: Path | None) -> Keys:
        """The keys of a server: `api_key` (``--api-key``) as ``default`` and those of `keys_file`, if given."""
        if keys_file is not None:
            return cls(read_keys_file(keys_file, api_key))
        return cls({SERVER_KEY_NAME: api_key} if api_key else {})

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the keys, in the file's order (``default`` first)."""
        return tuple(self._keys)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The keys themselves: only for hiding them (the access log's `RedactKeys`)."""
        return tuple(self._keys.values())

    def name_of(self, authorization: bytes | None) -> str | None:
        """The name of the key in an ``Authorization: Bearer <key>`` header, or None when it is no key of these.

        The key is compared with every key, each in constant time (digests of equal length), and the loop
        does not stop at a match: the time taken says nothing about the key or which one matched.
        """
        if not self._digests:
            return OPEN_NAME
        scheme, _, token = (authorization or b"").partition(b" ")
        sent = _digest(token.strip() if scheme.lower() == b"bearer" else b"")
        found = None
        for name, digest in self._digests:
            if hmac.compare_digest(sent, digest) and found is None:
                found = name
        return found

    @staticmethod
    def sees_all(name: str) -> bool:
        """Whether the key `name` sees every name's usage (an instructor's), or only its own."""
        return name in (SERVER_KEY_NAME, OPEN_NAME) or bool(INSTRUCTOR.fullmatch(name))


@dataclass
class Counts:
    """What one key has used: completion and chat requests, errors among them, and tokens."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Usage:
    """Completion and chat requests counted by key name since `started`; each is logged as one line."""

    def __init__(self, names: tuple[str, ...] = ()):
        self.started = int(time.time())
        self._counts = {name: Counts() for name in names}
        self._lock = threading.Lock()

    def record(self, name: str, model: str | None, status: int, tokens: dict | None, seconds: float) -> None:
        """Count a request of key `name` answered with `status`, with the ``prompt_tokens`` and
        ``completion_tokens`` of `tokens` (None: none were used), and log it."""
        prompt, completion = (_count(tokens, field) for field in ("prompt_tokens", "completion_tokens"))
        with self._lock:
            counts = self._counts.setdefault(name, Counts())
            counts.requests += 1
            counts.errors += status >= 400
            counts.prompt_tokens += prompt
            counts.completion_tokens += completion
        shown = json.dumps(model[:100]) if isinstance(model, str) else "null"  # quoted: no line breaks, no spaces
        LOG.info(
            "usage key=%s model=%s status=%d prompt_tokens=%d completion_tokens=%d latency_ms=%d",
            *(name, shown, status, prompt, completion, round(seconds * 1000)),
        )

    def page(self, names: set[str] | None = None) -> dict:
        """The usage of `names` (None: all) as OpenAI's usage page (``/v1/organization/usage/completions``): one
        bucket since the server started, one result per key name (``api_key_id``), plus ``num_errors``."""
        with self._lock:
            counts = {name: Counts(**vars(c)) for name, c in self._counts.items() if names is None or name in names}
        results = [
            {
                "object": "organization.usage.completions.result",
                "api_key_id": name,
                "num_model_requests": c.requests,
                "num_errors": c.errors,
                "input_tokens": c.prompt_tokens,
                "output_tokens": c.completion_tokens,
                "input_cached_tokens": 0,
                "project_id": None,
                "user_id": None,
                "model": None,
                "batch": None,
            }
            for name, c in counts.items()
        ]
        bucket = {"object": "bucket", "start_time": self.started, "end_time": int(time.time()), "results": results}
        return {"object": "page", "data": [bucket], "has_more": False, "next_page": None}


def _count(tokens: dict | None, field: str) -> int:
    value = (tokens or {}).get(field)
    return value if isinstance(value, int) and value >= 0 else 0


def model_of(body: bytes) -> str | None:
    """The ``model`` of a JSON request body, or None when it has none (or is not JSON)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None
