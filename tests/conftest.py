"""Shared fixtures: an isolated gptnb cache per test session, built offline models reused."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _offline_cache(tmp_path_factory):
    """Tests use GPTNB_CACHE when set (CI sets it so models are built once); else a temp folder."""
    if not os.environ.get("GPTNB_CACHE"):
        os.environ["GPTNB_CACHE"] = str(tmp_path_factory.mktemp("gptnb-cache"))
    yield


@pytest.fixture(scope="session")
def tiny_gpt2():
    """(model, tokenizer) of the tiny random GPT-2 with the real GPT-2 tokenizer."""
    import gptnb

    return gptnb.load_model("tiny-gpt2", device="cpu")
