"""Notebook 01's exercise checks: a right answer passes; a wrong one and the placeholder are told apart;
under nbgrader a wrong answer raises. Quizzes have a right choice and an explanation for every choice."""

import pytest
import torch

from gptnb.exercises import NOT_ANSWERED, RIGHT, nb01


def placeholder(*args):
    raise NotImplementedError()


def causal_mask(size):
    return torch.tril(torch.ones(size, size, dtype=torch.bool))


def attention(q, k, v, masked=True, scale=True):
    scores = q @ k.T / (q.shape[-1] ** 0.5 if scale else 1.0)
    if masked:
        scores = scores.masked_fill(~causal_mask(len(q)), float("-inf"))
    return scores.softmax(dim=-1) @ v


def local_mask(size, window):
    return causal_mask(size) & ~torch.tril(torch.ones(size, size, dtype=torch.bool), diagonal=-window)


def gpt2_parameters(config):
    vocab, positions, width, layers = config.vocab_size, config.n_positions, config.n_embd, config.n_layer
    attention = width * 3 * width + 3 * width + width * width + width
    mlp = width * 4 * width + 4 * width + 4 * width * width + width
    return vocab * width + positions * width + layers * (attention + mlp + 4 * width) + 2 * width


def told(check, answer, capsys):
    passed = check(answer)
    return passed, capsys.readouterr().out.strip()


@pytest.mark.parametrize(
    "check, exercise, right, wrong, hint",
    [
        (nb01.check_causal_attention, "1.1", attention, lambda q, k, v: attention(q, k, v, masked=False), "later"),
        (nb01.check_causal_attention, "1.1", attention, lambda q, k, v: attention(q, k, v, scale=False), "sqrt"),
        (nb01.check_causal_attention, "1.1", attention, lambda q, k, v: attention(q, k, v).T, "shape"),
        (nb01.check_causal_attention, "1.1", attention, lambda q, k, v: attention(q, k, v) + 0.01, "position 0"),
        (nb01.check_local_mask, "1.3", local_mask, lambda size, window: local_mask(size, window).int(), "dtype"),
        (
            nb01.check_local_mask,
            "1.3",
            local_mask,
            lambda size, window: local_mask(size, window + 1),
            "must not attend",
        ),
        (nb01.check_local_mask, "1.3", local_mask, lambda size, window: causal_mask(size), "must not attend"),
        (
            nb01.check_gpt2_parameters,
            "1.2",
            gpt2_parameters,
            lambda config: gpt2_parameters(config) + config.vocab_size * config.n_embd,
            "tied to the token embedding",
        ),
        (
            nb01.check_gpt2_parameters,
            "1.2",
            gpt2_parameters,
            lambda config: gpt2_parameters(config) - config.n_positions * config.n_embd,
            "position embeddings",
        ),
        (nb01.check_gpt2_parameters, "1.2", gpt2_parameters, lambda config: 354_823_168, "off"),
    ],
)
def test_checks_tell_right_wrong_and_unanswered(check, exercise, right, wrong, hint, capsys):
    assert told(check, right, capsys) == (True, f"Exercise {exercise}: {RIGHT}")
    passed, line = told(check, wrong, capsys)
    assert not passed and line.startswith(f"Exercise {exercise}: not yet:") and hint in line, line
    passed, line = told(check, placeholder, capsys)
    assert not passed and line.startswith(f"Exercise {exercise}: {NOT_ANSWERED}"), line


def test_a_crashing_answer_is_feedback(capsys):
    passed, line = told(nb01.check_causal_attention, lambda q, k, v: 1 / 0, capsys)
    assert not passed and "ZeroDivisionError" in line


@pytest.mark.parametrize(
    "check, wrong",
    [
        (nb01.check_causal_attention, lambda q, k, v: attention(q, k, v, masked=False)),
        (nb01.check_local_mask, lambda size, window: causal_mask(size)),
        (nb01.check_gpt2_parameters, lambda config: 1),
    ],
)
def test_wrong_answers_raise_under_nbgrader(check, wrong, monkeypatch, capsys):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match="not yet"):
        check(wrong)


@pytest.mark.parametrize("question, choices", [nb01.CAUSAL_MASK_QUIZ, nb01.REPORTED_SIZE_QUIZ, nb01.STAND_IN_QUIZ])
def test_quizzes_have_one_right_choice_and_explain_every_choice(question, choices):
    assert question.endswith("?") and sum(choice.correct for choice in choices) == 1
    assert all(choice.why for choice in choices)
