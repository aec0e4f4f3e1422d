"""Checks and quizzes of notebook 05 (the OpenAI API): the original prompt with its examples swapped, label scoring
from logprobs, the chat training record, what a fine-tuning job is billed."""

from __future__ import annotations

import json
import math

from ..paths import data_dir
from ..pricing import PRICES_CSV, load_prices
from . import Choice, call_answer, report

LABELS = ["negative", "positive"]


def swap_examples(prompt: str) -> str:
    """The original lesson's prompt with its two solved examples in the other order.

    Its blocks are separated by blank lines: the instruction (after the leading newline), example 1, example 2,
    the query (`gptnb.exercises.nb02.ORIGINAL_PROMPT`)."""
    blocks = prompt.split("\n\n")
    if len(blocks) != 4:
        raise ValueError(
            f"the prompt has {len(blocks)} blocks separated by blank lines; swap_examples wants 4 (instruction, "
            "two examples, the query), as in gptnb.exercises.nb02.ORIGINAL_PROMPT"
        )
    instruction, first, second, query = blocks
    return "\n\n".join([instruction, second, first, query])


def _top(*pairs):
    """`top_logprobs` as the openai SDK hands them over: TopLogprob objects with `.token` and `.logprob`."""
    from openai.types.chat.chat_completion_token_logprob import TopLogprob

    return [TopLogprob(token=token, logprob=logprob, bytes=list(token.encode())) for token, logprob in pairs]


# (top tokens, right label index, what the case is about)
LOGPROB_CASES = [
    ([(" Negative", -0.2), (" Positive", -1.8), (" It", -3.0)], 0, "capitalised label words with a leading space"),
    ([(" The", -0.4), ("pos", -1.1), (" negative", -2.5)], 1, "a token that is the start of a label word"),
    (
        [(" positive", -2.9), ("\n", -0.1), ("negative", -1.6), ("Positive", -0.9)],
        1,
        "a label spelled several ways: its best variant counts",
    ),
    (
        [("\n\n", -0.02), (" ", -0.05), ("\n", -0.3), (" neg", -2.2)],
        0,
        "blank tokens (a blank line, as between the prompt's blocks), which start every word, name no label",
    ),
    ([(" The", -0.3), (" I", -0.9), ("\n", -1.4)], -1, "no label among the tokens"),
]


def check_label_from_logprobs(answer) -> bool:
    """Exercise 5.1: ``answer(top_logprobs, labels)`` returns the index of the label whose best-matching token has
    the highest log-probability (a token matches when, stripped and lower-cased, it is non-empty and starts the
    label word), or -1 when no token matches. Checked on built-in cases with known answers."""

    def check():
        for top, right, about in LOGPROB_CASES:
            got = call_answer(answer, _top(*top), list(LABELS))
            shown = [token for token, _ in top]
            if isinstance(got, bool) or not isinstance(got, int):
                raise AssertionError(f"return an int label index (or -1), not {type(got).__name__}")
            if got != right:
                raise AssertionError(f"for top tokens {shown} ({about}) you returned {got}, which is not right")

    return report("5.1", check)


PAIRS = [
    ("Tweet: off to the beach!\nSentiment:", " positive"),
    ("Tweet:   my phone died again  \nSentiment:", " negative"),
]


def check_chat_record(answer, system: str = "Classify the sentiment of the tweet: negative or positive.") -> bool:
    """Exercise 5.2: ``answer(prompt, completion, system)`` returns the chat-format training record (a dict that is
    one JSONL line) that `gptnb.datacheck.prepare.prepare_data` writes for that prompt/completion pair with that
    system message."""
    from ..datacheck.formats import example_from_pair, to_record

    def check():
        for prompt, completion in PAIRS:
            got = call_answer(answer, prompt, completion, system)
            if not isinstance(got, dict):
                raise AssertionError(f"return a dict (one JSONL record), not {type(got).__name__}")
            try:
                json.dumps(got)
            except (TypeError, ValueError) as error:
                raise AssertionError(f"the record must be JSON-serialisable: {error}") from None
            expected = to_record(
                example_from_pair({"prompt": prompt, "completion": completion}, 1).with_system(system), "chat"
            )
            if list(got) != list(expected):
                raise AssertionError(f"the record's keys are {list(got)}; a chat record has one key, 'messages'")
            messages = got["messages"]
            if not isinstance(messages, list) or len(messages) != len(expected["messages"]):
                raise AssertionError(
                    f"'messages' must be a list of {len(expected['messages'])} messages (system, user, assistant)"
                )
            for i, (mine, right) in enumerate(zip(messages, expected["messages"])):
                if not isinstance(mine, dict) or mine.get("role") != right["role"]:
                    raise AssertionError(f"message {i} must be a dict with role {right['role']!r}")
                if mine.get("content") != right["content"]:
                    raise AssertionError(
                        f"message {i} ({right['role']}) has content {mine.get('content')!r}: "
                        "not what prepare_data writes (spaces around it?)"
                    )
                if set(mine) != {"role", "content"}:
                    raise AssertionError(f"message {i} has keys {sorted(mine)}; only 'role' and 'content'")

    return report("5.2", check)


def training_price(model: str | None = None) -> tuple[str, float]:
    """(model, USD per 1M training tokens) from ``data/openai_prices.csv``: `model`'s, else the first one priced."""
    prices = load_prices().dropna(subset=["training_usd_per_1m"])
    if model is not None:
        prices = prices[prices["model"] == model]
    if prices.empty:
        raise ValueError(f"{data_dir() / PRICES_CSV} has no training price{f' for {model}' if model else ''}")
    return prices["model"].iloc[0], float(prices["training_usd_per_1m"].iloc[0])


def check_training_cost(answer) -> bool:
    """Exercise 5.3: ``answer(token_counts, n_epochs, usd_per_1m, max_tokens)`` returns the USD a job is billed:
    every epoch pays each example's tokens, an example longer than `max_tokens` only `max_tokens` of them.
    Checked at a training price from ``data/openai_prices.csv``."""
    model, price = training_price()

    def billed(counts, epochs, limit, per_epoch=True, truncate=True):
        return (epochs if per_epoch else 1) * sum(min(n, limit) if truncate else n for n in counts)

    def check():
        for counts, epochs, limit in [([120, 80, 95], 3, 4096), ([60, 5000, 70, 44], 2, 4096), ([30] * 40, 4, 65536)]:
            got = call_answer(answer, list(counts), epochs, price, limit)
            if not isinstance(got, (int, float)) or isinstance(got, bool):
                raise AssertionError(f"return a number of USD, not {type(got).__name__}")
            right = billed(counts, epochs, limit) * price / 1e6
            if math.isclose(got, right, rel_tol=1e-9, abs_tol=1e-12):
                continue
            where = f"for {len(counts)} examples, {epochs} epochs, max_tokens {limit} at {price} USD/1M ({model})"
            hints = [
                (billed(counts, epochs, limit, per_epoch=False) * price / 1e6, "every epoch is billed"),
                (
                    billed(counts, epochs, limit, truncate=False) * price / 1e6,
                    "only max_tokens of a longer example are billed",
                ),
                (billed(counts, epochs, limit) * price, "the price is per million tokens"),
            ]
            hint = next((why for value, why in hints if math.isclose(got, value, rel_tol=1e-9)), "")
            raise AssertionError(
                f"{where} you returned {got:.6g} USD, which is not right" + (f": {hint}" if hint else "")
            )

    return report("5.3", check)


QUIZ_ENGINES = (
    "The original lesson chose among the GPT-3 engines Davinci, Curie, Babbage and Ada. What is that choice today?",
    [
        Choice(
            "The same four names, still on the completions endpoint",
            False,
            "They were shut down on 2024-01-04, with text-davinci-002 and /v1/fine-tunes.",
        ),
        Choice(
            "A trade-off between model size, price and latency, among models that are retired every few months",
            True,
            "Davinci to Ada went from most accurate to fastest; today's small/mini/nano models make the same "
            "trade, and their names go stale, hence a dated list checked against models.list().",
        ),
        Choice(
            "No choice: one model serves every purpose",
            False,
            "Providers still sell several sizes; the smaller ones are cheaper and faster, the larger more capable.",
        ),
    ],
)

QUIZ_MODEL_LIST = (
    "Why does this notebook read model names from data/openai_models.csv and check them against models.list()?",
    [
        Choice(
            "Because a hard-coded name fails with a 404 once the model is retired",
            True,
            "The list is dated, so you can see how old a choice is, and the first name the account still offers "
            "is used; when none is left you are told which file to edit.",
        ),
        Choice(
            "Because models.list() returns the models ranked by quality",
            False,
            "It returns what the account can call, in no useful order; the preference order is ours, in the CSV.",
        ),
        Choice(
            "Because the local server needs OpenAI's model names",
            False,
            "The local server lists its own models (the profile's, and the ft: models you trained); the CSV has "
            "rows for those too.",
        ),
    ],
)

QUIZ_INTERVALS = (
    (
        "On the same 300 test tweets, model A scores macro-F1 0.80 [0.75, 0.85] and model B 0.76 [0.71, 0.81] "
        "(bootstrap 95 % intervals); the paired bootstrap interval of A − B is +0.04 [+0.01, +0.07]. What can you say?"
    ),
    [
        Choice(
            "The intervals overlap, so this test split cannot tell A and B apart",
            False,
            "Overlapping intervals do not mean no difference: each interval includes the luck of which tweets were "
            "drawn, which moves both models together. The paired interval resamples the same tweets for both.",
        ),
        Choice(
            "A is better than B on tweets like these: the paired interval of the difference excludes 0",
            True,
            "Scoring both on the same resampled tweets cancels what they share; what is left, +0.01 to +0.07, "
            "is above 0. It says nothing about other kinds of text.",
        ),
        Choice(
            "A is better by exactly 0.04, on any text",
            False,
            "0.04 is this sample's difference; the interval puts it anywhere from 0.01 to 0.07, and only for tweets "
            "like the test split's.",
        ),
    ],
)
