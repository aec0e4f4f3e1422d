"""Notebook 01's exercise checks: a right answer passes; a wrong one and the placeholder are told apart;
under nbgrader a wrong answer raises. Quizzes have a right choice and an explanation for every choice."""

from pathlib import Path

import nbformat
import pytest
import torch

from gptnb.exercises import NOT_ANSWERED, RIGHT, nb01


def placeholder(*args):
    raise NotImplementedError()


def grouped_query_attention(q, k, v, interleave=True, masked=True, scale=True):
    group = len(q) // len(k)
    k, v = (t.repeat_interleave(group, dim=0) if interleave else t.repeat(group, 1, 1) for t in (k, v))
    scores = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5 if scale else 1.0)
    if masked:
        scores = scores + torch.full(scores.shape[-2:], float("-inf")).triu(diagonal=1)
    return scores.softmax(dim=-1) @ v


def rms_norm(x, weight, eps):
    return weight * x / (x.pow(2).mean(dim=-1, keepdim=True) + eps).sqrt()


def gpt2_parameters(config):
    vocab, positions, width, layers = config.vocab_size, config.n_positions, config.n_embd, config.n_layer
    attention = width * 3 * width + 3 * width + width * width + width
    mlp = width * 4 * width + 4 * width + 4 * width * width + width
    return vocab * width + positions * width + layers * (attention + mlp + 4 * width) + 2 * width


def gqa(**options):
    return lambda q, k, v: grouped_query_attention(q, k, v, **options)


def told(check, answer, capsys):
    passed = check(answer)
    return passed, capsys.readouterr().out.strip()


@pytest.mark.parametrize(
    "check, exercise, right, wrong, hint",
    [
        (
            nb01.check_grouped_query_attention,
            "1.1",
            grouped_query_attention,
            gqa(interleave=False),
            "repeat_interleave",
        ),
        (nb01.check_grouped_query_attention, "1.1", grouped_query_attention, gqa(masked=False), "causal mask"),
        (nb01.check_grouped_query_attention, "1.1", grouped_query_attention, gqa(scale=False), "sqrt(head size)"),
        (nb01.check_grouped_query_attention, "1.1", grouped_query_attention, lambda q, k, v: q, "query head 0"),
        (nb01.check_grouped_query_attention, "1.1", grouped_query_attention, lambda q, k, v: k, "shape"),
        (nb01.check_grouped_query_attention, "1.1", grouped_query_attention, lambda q, k, v: q / 0 * 0, "NaN"),
        (nb01.check_rms_norm, "1.3", rms_norm, lambda x, w, eps: x / 0 * 0, "position 0"),
        (
            nb01.check_rms_norm,
            "1.3",
            rms_norm,
            lambda x, w, eps: torch.nn.functional.layer_norm(x, x.shape[-1:], w),
            "mean",
        ),
        (nb01.check_rms_norm, "1.3", rms_norm, lambda x, w, eps: rms_norm(x, 1.0, eps), "`weight`"),
        (
            nb01.check_rms_norm,
            "1.3",
            rms_norm,
            lambda x, w, eps: w * x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps),
            "inside",
        ),
        (
            nb01.check_rms_norm,
            "1.3",
            rms_norm,
            lambda x, w, eps: w * x / (x.pow(2).mean(-1, keepdim=True) + eps),
            "square root",
        ),
        (nb01.check_rms_norm, "1.3", rms_norm, lambda x, w, eps: rms_norm(x.T, w[:, None], eps).T, "last dimension"),
        (nb01.check_rms_norm, "1.3", rms_norm, lambda x, w, eps: rms_norm(x, w, eps).tolist(), "torch.Tensor"),
        (nb01.check_rms_norm, "1.3", rms_norm, lambda x, w, eps: rms_norm(x, w, eps) + 0.01, "position 0"),
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
    passed, line = told(nb01.check_grouped_query_attention, lambda q, k, v: 1 / 0, capsys)
    assert not passed and "ZeroDivisionError" in line


@pytest.mark.parametrize(
    "check, wrong",
    [
        (nb01.check_grouped_query_attention, gqa(masked=False)),
        (nb01.check_rms_norm, lambda x, w, eps: x),
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


def test_the_notebook_prints_each_quiz_question_and_its_choices_in_markdown():
    notebook = nbformat.read(Path(__file__).resolve().parent.parent / "notebooks" / "01_gpt_family.ipynb", 4)
    quizzes = {
        f"nb01.{name}": getattr(nb01, name) for name in ("CAUSAL_MASK_QUIZ", "REPORTED_SIZE_QUIZ", "STAND_IN_QUIZ")
    }
    shown = []
    for before, cell in zip(notebook.cells, notebook.cells[1:]):
        for name, (question, choices) in quizzes.items():
            if f"quiz(*{name})" in cell.source:
                assert before.cell_type == "markdown" and question in before.source, name
                assert all(f"- {choice.text}\n" in before.source for choice in choices), name
                shown.append(name)
    assert sorted(shown) == sorted(quizzes)
