"""Notebook 03's exercises (temperature, top-k and top-p filtering in the generation loop) and quizzes.

The filters are checked on small logits with known answers (the references are transformers' own logits
warpers), then inside a sampling loop written here, whose tokens must equal `model.generate`'s under the
same seed and settings.
"""

from __future__ import annotations

import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from . import Choice, call_answer, report

PROMPT = "The meaning of life is"
NEW_TOKENS = 6


def _tensor(got, call: str, shape) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        message = f"{call} returned {type(got).__name__}; return a torch.Tensor"
        raise AssertionError(message)  # noqa: TRY004 (feedback, see report)
    if tuple(got.shape) != tuple(shape):
        raise AssertionError(f"{call} returned shape {tuple(got.shape)}; expected the input's shape {tuple(shape)}")
    return got.detach().float().cpu()


def check_temperature(apply_temperature) -> bool:
    """Exercise 3.1: `apply_temperature(logits, temperature)` returns the next-token probabilities at that
    temperature (softmax over the last dimension)."""

    def check():
        logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5], [0.0, 3.0, -2.0, 1.0, 1.0]])
        for temperature in (1.0, 0.5, 2.0):
            call = f"apply_temperature(logits, {temperature})"
            got = _tensor(call_answer(apply_temperature, logits.clone(), temperature), call, logits.shape)
            if not torch.allclose(got.sum(-1), torch.ones(len(logits)), atol=1e-4) or (got < 0).any():
                raise AssertionError(f"{call}: each row must be probabilities (>= 0, summing to 1); apply a softmax")
            expected = TemperatureLogitsWarper(temperature)(None, logits.clone()).softmax(-1)
            if not torch.allclose(got, expected, atol=1e-5):
                multiplied = (logits * temperature).softmax(-1)
                hint = (
                    "the logits must be divided by the temperature, not multiplied"
                    if torch.allclose(got, multiplied, atol=1e-5)
                    else "a lower temperature must sharpen the distribution, a higher one flatten it"
                )
                raise AssertionError(f"{call}: wrong probabilities; {hint}")

    return report("3.1", check)


def _check_filter(answer, name: str, setting, reference) -> None:
    """Compare `answer(logits, setting)` with `reference` (a transformers warper) on built-in cases."""
    probabilities = torch.tensor([[0.05, 0.5, 0.1, 0.2, 0.15], [0.31, 0.04, 0.26, 0.21, 0.18]])
    logits = probabilities.log()
    call = f"{name}(logits, {setting})"
    got = _tensor(call_answer(answer, logits.clone(), setting), call, logits.shape)
    expected = reference(None, logits.clone())
    kept = torch.isfinite(expected)
    if torch.isnan(got).any():
        raise AssertionError(f"{call} returned NaN; removed tokens must get -inf")
    if (got[~kept] > -1e30).any():
        row, col = (~kept & (got > -1e30)).nonzero()[0].tolist()
        raise AssertionError(f"{call}: row {row} keeps token {col}, which this setting removes (give it -inf)")
    if not torch.isfinite(got[kept]).all():
        row, col = (kept & ~torch.isfinite(got)).nonzero()[0].tolist()
        raise AssertionError(f"{call}: row {row} removes token {col}, which this setting keeps")
    if not torch.allclose(got[kept], logits[kept]):
        raise AssertionError(f"{call}: the kept tokens' logits must be returned unchanged")


@torch.no_grad()
def _sampled_with(model, tokenizer, filter_logits, seed: int = 0) -> torch.Tensor:
    """The sampling loop, by hand as in the notebook's greedy loop: filter the last logits, softmax, draw, append."""
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids.to(model.device)
    torch.manual_seed(seed)
    for _ in range(NEW_TOKENS):
        logits = model(ids).logits[:, -1, :].float()  # generate also samples from float32 scores
        next_id = torch.multinomial(call_answer(filter_logits, logits).softmax(-1), num_samples=1)
        ids = torch.cat([ids, next_id], dim=1)
        if next_id.item() == tokenizer.eos_token_id:
            break
    return ids[0]


@torch.no_grad()
def _generated(model, tokenizer, seed: int = 0, **settings) -> torch.Tensor:
    inputs = tokenizer(PROMPT, return_tensors="pt").to(model.device)
    torch.manual_seed(seed)
    return model.generate(
        **inputs, do_sample=True, max_new_tokens=NEW_TOKENS, pad_token_id=tokenizer.pad_token_id, **settings
    )[0]


def _compare_loop(model, tokenizer, filter_logits, settings: dict) -> None:
    by_hand = _sampled_with(model, tokenizer, filter_logits)
    reference = _generated(model, tokenizer, **settings)
    if not torch.equal(by_hand.cpu(), reference[: len(by_hand)].cpu()):
        arguments = ", ".join(f"{key}={value}" for key, value in settings.items())
        raise AssertionError(
            f"sampling with your filter drew other tokens than model.generate({arguments}) with the same seed"
        )


def check_top_k(top_k_filter, model, tokenizer) -> bool:
    """Exercise 3.2: `top_k_filter(logits, k)` keeps the `k` largest logits of each row and sets the rest to -inf;
    then the hand-written sampling loop with it must draw `model.generate(top_k=k)`'s tokens."""

    def check():
        for k in (1, 2, 4):
            _check_filter(top_k_filter, "top_k_filter", k, TopKLogitsWarper(k))
        k = 5
        _compare_loop(
            model, tokenizer, lambda logits: top_k_filter(logits, k), {"top_k": k, "top_p": 1.0, "temperature": 1.0}
        )

    return report("3.2", check)


def check_top_p(top_p_filter, model, tokenizer) -> bool:
    """Exercise 3.3: `top_p_filter(logits, p)` keeps each row's smallest set of most likely tokens whose
    probabilities add up to at least `p` (always at least one) and sets the rest to -inf; then the sampling
    loop with it must draw `model.generate(top_p=p)`'s tokens."""

    def check():
        for p in (0.3, 0.6, 0.9):
            _check_filter(top_p_filter, "top_p_filter", p, TopPLogitsWarper(p))
        p = 0.8
        _compare_loop(
            model, tokenizer, lambda logits: top_p_filter(logits, p), {"top_k": 0, "top_p": p, "temperature": 1.0}
        )

    return report("3.3", check)


ORIGINAL_CALL_QUIZ = (
    (
        "The original lesson calls generate(..., do_sample=False, top_k=50, top_p=0.90, temperature=0, ...). "
        "What do top_k, top_p and temperature change in that call?"
    ),
    [
        Choice(
            "Nothing: with do_sample=False decoding is greedy, and transformers ignores them (with a warning)",
            True,
            "Right: the three only reshape the distribution that sampling draws from; greedy decoding "
            "takes the most likely token whatever they say.",
        ),
        Choice(
            "temperature=0 is what makes the output deterministic",
            False,
            "do_sample=False does that. With sampling on, temperature=0 would divide by zero, and transformers "
            "refuses it.",
        ),
        Choice(
            "They keep the 50 most likely tokens covering 90% of the probability, then sample",
            False,
            "That is what they would do with do_sample=True; here nothing is sampled.",
        ),
    ],
)

BEAM_QUIZ = (
    "model.generate(..., num_beams=4) returns one text. Which one?",
    [
        Choice(
            "The most likely of the texts its 4 beams kept to the end",
            True,
            "Right: at every step it keeps only the 4 best partial texts and drops the rest, so a text whose "
            "start looked unlikely is never considered, however likely its whole.",
        ),
        Choice(
            "The most likely text of that length the model can produce",
            False,
            "Finding that would mean scoring every possible text; beam search prunes to 4 candidates per step "
            "and can miss it.",
        ),
        Choice(
            "A random one of 4 sampled texts",
            False,
            "Beam search (with do_sample=False) draws nothing at random: the same prompt gives the same text.",
        ),
    ],
)

DECODER_ONLY_QUIZ = (
    "The notebook slices output[:, prompt_length:] after model.generate. Why would a T5 model not need that?",
    [
        Choice(
            "GPT-2 is decoder-only: its output continues the input sequence, prompt included; T5's decoder "
            "writes a new sequence",
            True,
            "Right: the original lesson notes the same. A decoder-only model's output is the prompt's tokens "
            "followed by the new ones; an encoder-decoder model returns only the text its decoder wrote.",
        ),
        Choice(
            "T5's tokenizer removes the prompt when decoding",
            False,
            "Decoding turns ids into text; it removes nothing. The difference is what the model returns.",
        ),
        Choice(
            "GPT-2 repeats the prompt only when sampling",
            False,
            "Greedy, beam search and sampling all return the prompt's tokens first: generation appends to it.",
        ),
    ],
)
