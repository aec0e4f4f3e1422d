"""Notebook 03's exercises (the greedy loop with a KV cache, top-k and top-p filtering in the generation loop)
and quizzes.

The cached loop must feed the model as a cached loop does (the prompt once, then one token with the cache
passed back) and return `model.generate`'s greedy tokens. The filters are checked on small logits with known
answers (the references are transformers' own logits warpers), then inside a sampling loop written here,
whose tokens must equal `model.generate`'s under the same seed and settings.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import TopKLogitsWarper, TopPLogitsWarper

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


@contextlib.contextmanager
def _forward_calls(model):
    """While inside: one (tokens fed, tokens already in the cache passed, or None) per forward call of `model`."""
    calls = []

    def record(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        cache = next((kwargs[name] for name in ("cache", "past_key_values") if kwargs.get(name) is not None), None)
        cached = None if cache is None else int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else -1
        calls.append((None if ids is None else ids.shape[-1], cached))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def _fed_as_a_cached_loop(calls: list, prompt_length: int) -> None:
    """Each call after the first must feed one token and pass back the cache holding every token fed before."""
    if not calls:
        raise AssertionError("your function never called the model; call model(ids, ...) once per new token")
    if calls[0][0] != prompt_length:
        raise AssertionError(f"the first call fed {calls[0][0]} tokens; feed the whole prompt ({prompt_length})")
    fed = prompt_length
    for number, (tokens, cached) in enumerate(calls[1:], start=2):
        if tokens != 1:
            raise AssertionError(f"call {number} fed {tokens} tokens; with a cache, feed only the newest token")
        if cached is None:
            raise AssertionError(f"call {number} passed no cache, so the model saw the new token alone; pass it back")
        if cached not in (fed, -1):
            raise AssertionError(
                f"call {number} passed a cache holding {cached} tokens where {fed} were fed before; pass back the "
                "cache the earlier calls filled, not a new one"
            )
        fed += 1


def check_cached_greedy(greedy_with_cache, model, tokenizer) -> bool:
    """Exercise 3.1: `greedy_with_cache(model, input_ids, max_new_tokens, eos_token_id)` is the greedy loop with a
    KV cache: the whole prompt once, then only each new token with the cache passed back; it returns the new token
    ids, which must be `model.generate(do_sample=False)`'s, token for token."""

    def check():
        for prompt, new_tokens in ((PROMPT, NEW_TOKENS), ("Once upon a time", 3)):
            ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
            call = f"greedy_with_cache(model, ids, {new_tokens}, tokenizer.eos_token_id) for {prompt!r}"
            with _forward_calls(model) as calls:
                got = call_answer(greedy_with_cache, model, ids, new_tokens, tokenizer.eos_token_id)
            if isinstance(got, list) and all(isinstance(i, (int, torch.Tensor)) for i in got):
                got = torch.tensor([int(i) for i in got])
            if not isinstance(got, torch.Tensor) or got.dim() > 2 or (got.dim() == 2 and len(got) != 1):
                raise AssertionError(f"{call} returned {type(got).__name__}; return a 1-D tensor of the new token ids")
            _fed_as_a_cached_loop(calls, ids.shape[1])
            got = got.flatten().cpu()
            with torch.no_grad():
                expected = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=new_tokens,
                    do_sample=False,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )[0, ids.shape[1] :].cpu()
            if len(got) != len(expected):
                raise AssertionError(
                    f"{call} returned {len(got)} tokens, generate {len(expected)}; stop after max_new_tokens, or "
                    "right after the end-of-text token"
                )
            if not torch.equal(got, expected):
                first = int((got != expected).nonzero()[0])
                raise AssertionError(
                    f"{call}: new token {first + 1} differs from generate's; take the argmax of the last position's "
                    "logits, feed that token next, and let the cache give it its position (no position_ids)"
                )

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
            "Of the texts its 4 beams finished, the one with the highest log-probability per new token",
            True,
            "Right: transformers ranks finished beams by log-probability / new tokens ** length_penalty "
            "(1.0 by default: the average per token). That is a high-scoring text, not necessarily the most likely "
            "one: a text whose start looked unlikely was pruned early, and a longer text can win on the average.",
        ),
        Choice(
            "The most likely text the model can produce within max_new_tokens",
            False,
            "Finding that would mean scoring every possible text; beam search keeps 4 candidates per step and drops "
            "the rest, so it can miss the most likely text, and it ranks the finished ones per token anyway.",
        ),
        Choice(
            "Of the texts its 4 beams finished, the one with the highest total log-probability",
            False,
            "Only with length_penalty=0. By default transformers divides each finished beam's log-probability by its "
            "length, so a longer text with a lower total can win.",
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
