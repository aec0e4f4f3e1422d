"""Notebook 03's exercise checks: a right answer passes; a wrong one and the placeholder are told apart;
under nbgrader a wrong answer raises. The sampling checks run on the tiny random GPT-2 (a few tokens)."""

import pytest
import torch

import gptnb
from gptnb.exercises import NOT_ANSWERED, RIGHT, nb03


@pytest.fixture(scope="module")
def tiny():
    return gptnb.load_model("tiny-gpt2", profile="tiny", device="cpu")


def placeholder(*args):
    raise NotImplementedError()


def apply_temperature(logits, temperature):
    return (logits / temperature).softmax(-1)


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
    (nb03.check_temperature, "3.1", apply_temperature, lambda logits, t: (logits * t).softmax(-1), "divided"),
    (nb03.check_temperature, "3.1", apply_temperature, lambda logits, t: logits / t, "probabilities"),
    (nb03.check_top_k, "3.2", top_k_filter, top_k_leaves_the_rest_at_zero, "give it -inf"),
    (nb03.check_top_k, "3.2", top_k_filter, lambda logits, k: top_k_filter(logits, k + 1), "setting removes"),
    (nb03.check_top_p, "3.3", top_p_filter, top_p_keeps_one_too_few, "which this setting keeps"),
    (nb03.check_top_p, "3.3", top_p_filter, lambda logits, p: top_p_filter(logits, p) * 2, "unchanged"),
]


@pytest.mark.parametrize("check, exercise, right, wrong, hint", CASES)
def test_checks_tell_right_wrong_and_unanswered(check, exercise, right, wrong, hint, tiny, capsys):
    args = () if check is nb03.check_temperature else tiny
    assert told(check, right, *args, capsys=capsys) == (True, f"Exercise {exercise}: {RIGHT}")
    passed, line = told(check, wrong, *args, capsys=capsys)
    assert not passed and line.startswith(f"Exercise {exercise}: not yet:") and hint in line, line
    passed, line = told(check, placeholder, *args, capsys=capsys)
    assert not passed and line.startswith(f"Exercise {exercise}: {NOT_ANSWERED}"), line


def test_a_filter_right_on_the_small_cases_but_not_in_the_loop_is_caught(tiny, capsys):
    """The loop comparison with model.generate fails for a filter that only handles the 5-token cases."""

    def only_small(logits, k):
        return top_k_filter(logits, k) if logits.shape[-1] <= 5 else logits

    passed, line = told(nb03.check_top_k, only_small, *tiny, capsys=capsys)
    assert not passed and "model.generate(top_k=5" in line, line


def test_the_sampling_loop_matches_generate_with_the_reference_filters(tiny):
    model, tokenizer = tiny
    for seed in range(3):
        by_hand = nb03._sampled_with(model, tokenizer, lambda logits: top_p_filter(logits, 0.7), seed=seed)
        reference = nb03._generated(model, tokenizer, seed=seed, top_k=0, top_p=0.7, temperature=1.0)
        assert torch.equal(by_hand, reference[: len(by_hand)])


@pytest.mark.parametrize(
    "check, wrong", [(nb03.check_top_k, top_k_leaves_the_rest_at_zero), (nb03.check_top_p, top_p_keeps_one_too_few)]
)
def test_wrong_answers_raise_under_nbgrader(check, wrong, tiny, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match="not yet"):
        check(wrong, *tiny)
    with pytest.raises(AssertionError, match="not yet"):
        nb03.check_temperature(lambda logits, t: logits)


@pytest.mark.parametrize("question, choices", [nb03.ORIGINAL_CALL_QUIZ, nb03.BEAM_QUIZ, nb03.DECODER_ONLY_QUIZ])
def test_quizzes_have_one_right_choice_and_explain_every_choice(question, choices):
    assert question.endswith("?") and sum(choice.correct for choice in choices) == 1
    assert all(choice.why for choice in choices)
