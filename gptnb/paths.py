"""Where things live: gptnb's cache, the repository's data folder, installed packages' files."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Where gptnb keeps what it builds: ``GPTNB_CACHE``, else ``~/.cache/gptnb``."""
    return Path(os.environ.get("GPTNB_CACHE") or Path.home() / ".cache" / "gptnb")


def data_dir() -> Path:
    """The repository's ``data/`` folder (``GPTNB_DATA`` overrides)."""
    return Path(os.environ.get("GPTNB_DATA") or REPO_ROOT / "data")


def package_dir(package: str) -> Path | None:
    """Where an installed package lives, without importing it (some import heavy or missing deps)."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))
