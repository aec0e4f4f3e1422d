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


@pytest.fixture
def offline(monkeypatch):
    """No hub for one test, whatever the machine (``GPTNB_OFFLINE=1``); afterwards the hub library's offline
    switch, which `gptnb.hub.go_offline` turns on for the whole process, is as it was before the test."""
    from huggingface_hub import constants

    from gptnb import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # recorded, so that `go_offline`'s "1" is undone afterwards
    if (before := os.environ.get("HF_HUB_OFFLINE")) is not None:
        monkeypatch.setenv("HF_HUB_OFFLINE", before)
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("GPTNB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    yield
    hub.hub_reachable.cache_clear()


@pytest.fixture(scope="session")
def tiny_gpt2():
    """(model, tokenizer) of the tiny random GPT-2 with the real GPT-2 tokenizer."""
    import gptnb

    return gptnb.load_model("tiny-gpt2", device="cpu")


@pytest.fixture(scope="session")
def make_tiny_llama():
    """A function making a random two-layer Llama over a tokenizer: SmolLM2's architecture (rotary positions,
    grouped heads), each call a fresh model with the same weights."""
    return _tiny_llama


def _tiny_llama(tokenizer):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
