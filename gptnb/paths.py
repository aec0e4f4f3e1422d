"""Where things live: gptnb's cache, its data files, the results table, installed packages' files."""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Where gptnb keeps what it builds: ``GPTNB_CACHE``, else ``~/.cache/gptnb``."""
    return Path(os.environ.get("GPTNB_CACHE") or Path.home() / ".cache" / "gptnb")


def data_dir() -> Path:
    """gptnb's data files: the repository's ``data/`` folder, installed with the package as ``gptnb.datafiles``
    (``GPTNB_DATA`` overrides)."""
    if os.environ.get("GPTNB_DATA"):
        return Path(os.environ["GPTNB_DATA"])
    return Path(str(importlib.resources.files("gptnb.datafiles")))


def results_dir() -> Path:
    """Where notebooks keep their shared results table: ``GPTNB_RESULTS``, else ``results/`` in the current folder
    (the notebook's own folder in Jupyter and Colab), never inside the installed package."""
    return Path(os.environ.get("GPTNB_RESULTS") or Path.cwd() / "results")


def package_dir(package: str) -> Path | None:
    """Where an installed package lives, without importing it (some import heavy or missing deps)."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))
