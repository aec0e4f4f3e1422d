"""Notebook 03's exercise checks: a right answer passes; a wrong one and the placeholder are told apart;
under nbgrader a wrong answer raises. The checks run on the tiny random GPT-2 (a few tokens)."""

from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from gptnb.exercises import NOT_ANSWERED, RIGHT, nb03
from gptnb.kvcache import cache_argument


def placeholder(*args):
    raise NotImplementedError()


@torch.no_grad()
def greedy_with_cache(model, input_ids, max_new_tokens, eos_token_id, *, fresh_cache=False, **extra):
    """The reference loop; `fresh_cache`, or `extra` forward arguments, make it wrong."""
    cache, new_ids, generated = DynamicCache(), input_ids, []
    for _ in range(max_new_tokens):
        cache = DynamicCache() if fresh_cache else cache
        next_id = model(new_ids, use_cache=True, **{cache_argument(model): cache}, **extra).logits[0, -1].argmax()
        generated.append(next_id)
        if next_id.item() == eos_token_id:
            break
        new_ids = next_id.view(1, 1)
    return torch.stack(generated)


@torch.no_grad()
def greedy_without_cache(model, input_ids, max_new_tokens, eos_token_id):
    ids = input_ids
    for _ in range(max_new_tokens):
        ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, input_ids.shape[1] :]


@torch.no_grad()
def new_token_alone(model, input_ids, max_new_tokens, eos_token_id):
    ids, generated = input_ids, []
    for _ in range(max_new_tokens):
        generated.append(model(ids).logits[0, -1].argmax())
        ids = generated[-1].view(1, 1)
    return torch.stack(generated)


@torch.no_grad()
def feeds_the_prompts_last_token(model, input_ids, max_new_tokens, eos_token_id):
    """Called the right way (one token, the cache passed back), but always with the prompt's last token."""
    cache, new_ids, generated = DynamicCache(), input_ids, []
    for _ in range(max_new_tokens):
        generated.append(model(new_ids, use_cache=True, **{cache_argument(model): cache}).logits[0, -1].argmax())
        new_ids = input_ids[:, -1:]
    return torch.stack(generated)


def wrong_positions(model, input_ids, max_new_tokens, eos_token_id):
    return greedy_with_cache(model, input_ids, max_new_tokens, eos_token_id, position_ids=torch.zeros(1, 1).long())


def top_k_filter(logits, k):
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits, p):
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probabilities = sorted_logits.softmax(-1)
    before = probabilities.cumsum(-1) - probabilities  # mass of the more likely tokens
    remove = (before >= p).scatter(-1, order, before >= p)
    return logits.masked_fill(remove, float("-inf"))


def top_p_keeps_one_too_few(logits, p):
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    remove = sorted_logits.softmax(-1).cumsum(-1) > p
    remove[..., 0] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))


def top_k_leaves_the_rest_at_zero(logits, k):
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, 0.0)


def told(check, answer, *args, capsys):
    passed = check(answer, *args)
    return passed, capsys.readouterr().out.strip()


CASES = [
    (nb03.check_cached_greedy, "3.1", greedy_with_cache, greedy_without_cache, "feed only the newest token"),
    (nb03.check_cached_greedy, "3.1", greedy_with_cache, new_token_alone, "passed no cache"),
    (
        nb03.check_cached_greedy,
        "3.1",
        greedy_with_cache,
        lambda *args: greedy_with_cache(*args, fresh_cache=True),
        "not a new one",
    ),
    (nb03.check_cached_greedy, "3.1", greedy_with_cache, feeds_the_prompts_last_token, "differs from generate's"),
    (nb03.check_cached_greedy, "3.1", greedy_with_cache, wrong_positions, "no position_ids"),
    (nb03.check_cached_greedy, "3.1", greedy_with_cache, lambda m, i, n, e: greedy_with_cache(m, i, n - 1, e), "stop"),
    (nb03.check_top_k, "3.2", top_k_filter, top_k_leaves_the_rest_at_zero, "give it -inf"),
    (nb03.check_top_k, "3.2", top_k_filter, lambda logits, k: top_k_filter(logits, k + 1), "setting removes"),
    (nb03.check_top_p, "3.3", top_p_filter, top_p_keeps_one_too_few, "which this setting keeps"),
    (nb03.check_top_p, "3.3", top_p_filter, lambda logits, p: top_p_filter(logits, p) * 2, "unchanged"),
]


@pytest.mark.parametrize("check, exercise, right, wrong, hint", CASES)
def test_checks_tell_right_wrong_and_unanswered(check, exercise, right, wrong, hint, tiny_untied, capsys):
    assert told(check, right, *tiny_untied, capsys=capsys) == (True, f"Exercise {exercise}: {RIGHT}")
    passed, line = told(check, wrong, *tiny_untied, capsys=capsys)
    assert not passed and line.startswith(f"Exercise {exercise}: not yet:") and hint in line, line
    passed, line = told(check, placeholder, *tiny_untied, capsys=capsys)
    assert not passed and line.startswith(f"Exercise {exercise}: {NOT_ANSWERED}"), line


def test_a_filter_right_on_the_small_cases_but_not_in_the_loop_is_caught(tiny_untied, capsys):
    """The loop comparison with model.generate fails for a filter that only handles the 5-token cases."""

    def only_small(logits, k):
        return top_k_filter(logits, k) if logits.shape[-1] <= 5 else logits

    passed, line = told(nb03.check_top_k, only_small, *tiny_untied, capsys=capsys)
    assert not passed and "model.generate(top_k=5" in line, line


def test_the_sampling_loop_matches_generate_with_the_reference_filters(tiny_untied):
    model, tokenizer = tiny_untied
    for seed in range(3):
        by_hand = nb03._sampled_with(model, tokenizer, lambda logits: top_p_filter(logits, 0.7), seed=seed)
        reference = nb03._generated(model, tokenizer, seed=seed, top_k=0, top_p=0.7, temperature=1.0)
        assert torch.equal(by_hand, reference[: len(by_hand)])


@pytest.mark.parametrize(
    "check, wrong",
    [
        (nb03.check_cached_greedy, greedy_without_cache),
        (nb03.check_top_k, top_k_leaves_the_rest_at_zero),
        (nb03.check_top_p, top_p_keeps_one_too_few),
    ],
)
def test_wrong_answers_raise_under_nbgrader(check, wrong, tiny_untied, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match="not yet"):
        check(wrong, *tiny_untied)


def test_the_cached_loop_may_return_a_list_or_a_row(tiny_untied, capsys):
    as_list = lambda *args: greedy_with_cache(*args).tolist()  # noqa: E731
    as_row = lambda *args: greedy_with_cache(*args)[None]  # noqa: E731
    for answer in (as_list, as_row):
        assert told(nb03.check_cached_greedy, answer, *tiny_untied, capsys=capsys) == (True, f"Exercise 3.1: {RIGHT}")


@pytest.mark.parametrize("question, choices", [nb03.ORIGINAL_CALL_QUIZ, nb03.BEAM_QUIZ, nb03.DECODER_ONLY_QUIZ])
def test_quizzes_have_one_right_choice_and_explain_every_choice(question, choices):
    assert question.endswith("?") and sum(choice.correct for choice in choices) == 1
    assert all(choice.why for choice in choices)


def test_every_quiz_is_readable_in_the_markdown_above_it():
    """A rendered notebook (GitHub, a static page) shows no widget: the question and choices are in the markdown."""
    import nbformat

    notebook = Path(__file__).resolve().parent.parent / "notebooks" / "03_generation.ipynb"
    cells = nbformat.read(notebook, as_version=4).cells
    quizzes = {f"quiz(*nb03.{name});": getattr(nb03, name) for name in dir(nb03) if name.endswith("_QUIZ")}
    shown = [i for i, c in enumerate(cells) if c.cell_type == "code" and c.source.strip() in quizzes]
    assert len(shown) == len(quizzes)
    for index in shown:
        question, choices = quizzes[cells[index].source.strip()]
        above = cells[index - 1]
        assert above.cell_type == "markdown" and question in above.source, cells[index].source
        assert all(f"- {choice.text}" in above.source for choice in choices), cells[index].source
