"""What a job would cost at OpenAI: token counts, and the dated price table in ``data/openai_prices.csv``.

Prices change: the table carries the date they were copied (``as_of``) and where
from; check OpenAI's pricing page before relying on them. Token counts use tiktoken
(OpenAI's tokenizer), which downloads its BPE files on first use; offline, a local
tokenizer stands in and the counts are labelled approximate.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from .paths import data_dir

PRICES_CSV = "openai_prices.csv"
PER_MESSAGE, REPLY_PRIMING = 3, 3  # the chat format's own tokens, as OpenAI's cookbook counts them


def load_prices(path=None) -> pd.DataFrame:
    """The price table: model, kind, USD per 1M input/output/training tokens, ``as_of`` date, source."""
    return pd.read_csv(path or data_dir() / PRICES_CSV)


@dataclass
class TokenCounter:
    """Counts tokens of a text; `exact` says whether they are OpenAI's own counts."""

    count: Callable[[str], int]
    label: str
    exact: bool

    def chat(self, messages: list[dict]) -> int:
        """Input tokens of a chat request: each message's content plus the format's fixed overhead."""
        return sum(PER_MESSAGE + self.count(message["content"]) for message in messages) + REPLY_PRIMING


def token_counter(openai_model: str, fallback_model: str, timeout: float = 10.0) -> TokenCounter:
    """tiktoken's counter for `openai_model` if its files can be had within `timeout` seconds
    (downloaded once, then cached), else `fallback_model`'s tokenizer, labelled approximate."""
    import tiktoken

    found = {}

    def load():  # tiktoken downloads without a timeout: give it one by waiting in another thread
        try:
            found["encoding"] = tiktoken.encoding_for_model(openai_model)
        except Exception as error:  # no network, a proxy, an unknown model name
            found["error"] = error

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout)
    if "encoding" in found:
        encoding = found["encoding"]
        return TokenCounter(
            lambda text: len(encoding.encode(text)), f"tiktoken {encoding.name} (exact for {openai_model})", True
        )
    from .models import load_tokenizer

    tokenizer = load_tokenizer(fallback_model)
    why = type(found.get("error", TimeoutError())).__name__
    return TokenCounter(
        lambda text: len(tokenizer(text, add_special_tokens=False).input_ids),
        f"{fallback_model} tokenizer (APPROXIMATE: tiktoken's files could not be downloaded, {why})",
        False,
    )


def cost_table(prices: pd.DataFrame, **uses: dict[str, int]) -> pd.DataFrame:
    """USD per priced model for each named use, given as token counts by kind, e.g.
    ``cost_table(prices, classify={"input": 120_000, "output": 300}, tune={"training": 50_000})``;
    a use that needs a price the model lacks (training an ``ft:`` model) shows NaN."""
    rates = {"input": "input_usd_per_1m", "output": "output_usd_per_1m", "training": "training_usd_per_1m"}
    table = prices[["model", "kind"]].copy()
    for name, tokens in uses.items():
        table[f"{name} USD"] = sum(prices[rates[kind]] * count / 1e6 for kind, count in tokens.items()).round(4)
    table["prices as of"] = prices["as_of"]
    return table
