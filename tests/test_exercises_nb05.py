"""Notebook 05's checks: a right answer passes; a wrong answer and the placeholder are reported as such;
under nbgrader a wrong answer raises."""

import pytest

from gptnb.exercises import nb05


def right_label(top_logprobs, labels):
    scores = [
        max(
            [t.logprob for t in top_logprobs if t.token.strip() and label.startswith(t.token.strip().lower())],
            default=None,
        )
        for label in labels
    ]
    found = [(score, i) for i, score in enumerate(scores) if score is not None]
    return max(found)[1] if found else -1


def wrong_label_no_blank_skip(top_logprobs, labels):
    scores = [
        max([t.logprob for t in top_logprobs if label.startswith(t.token.strip().lower())], default=None)
        for label in labels
    ]
    found = [(score, i) for i, score in enumerate(scores) if score is not None]
    return max(found)[1] if found else -1


def right_record(prompt, completion, system):
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": prompt.strip()},
            {"role": "assistant", "content": completion.strip()},
        ]
    }


def unstripped_record(prompt, completion, system):
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": completion},
        ]
    }


def right_cost(token_counts, n_epochs, usd_per_1m, max_tokens):
    return n_epochs * sum(min(n, max_tokens) for n in token_counts) * usd_per_1m / 1e6


def cost_one_epoch(token_counts, n_epochs, usd_per_1m, max_tokens):
    return sum(min(n, max_tokens) for n in token_counts) * usd_per_1m / 1e6


def cost_untruncated(token_counts, n_epochs, usd_per_1m, max_tokens):
    return n_epochs * sum(token_counts) * usd_per_1m / 1e6


def placeholder(*args):
    raise NotImplementedError()


CHECKS = [
    (nb05.check_label_from_logprobs, right_label, wrong_label_no_blank_skip, "5.1", "blank tokens"),
    (nb05.check_chat_record, right_record, unstripped_record, "5.2", "message 2 (assistant) has content"),
    (nb05.check_training_cost, right_cost, cost_one_epoch, "5.3", "every epoch is billed"),
]


@pytest.mark.parametrize("check, right, wrong, exercise, says", CHECKS)
def test_right_wrong_and_placeholder(check, right, wrong, exercise, says, capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert check(right) is True
    assert capsys.readouterr().out.strip() == f"Exercise {exercise}: right"
    assert check(wrong) is False
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"Exercise {exercise}: not yet: ") and says in line and "\n" not in line
    assert check(placeholder) is False
    assert capsys.readouterr().out.strip().startswith(f"Exercise {exercise}: not answered yet")


@pytest.mark.parametrize("check, right, wrong, exercise, says", CHECKS)
def test_wrong_answer_raises_under_nbgrader(check, right, wrong, exercise, says, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match=f"Exercise {exercise}: not yet"):
        check(wrong)
    assert check(right) is True


def test_more_wrong_answers_are_named():
    def no_label_zero(top, labels):
        return max(right_label(top, labels), 0)

    def not_an_int(top, labels):
        return labels[0]

    def crashes(top, labels):
        return top[0]["token"]

    for wrong, says in [
        (no_label_zero, "no label among the tokens"),
        (not_an_int, "return an int"),
        (crashes, "your function raised TypeError"),
    ]:
        assert nb05.check_label_from_logprobs(wrong) is False, says
    assert nb05.check_training_cost(cost_untruncated) is False
    assert nb05.check_training_cost(lambda c, e, p, m: right_cost(c, e, p, m) * 1e6) is False
    assert nb05.check_chat_record(lambda p, c, s: {"prompt": p, "completion": c}) is False


def test_hints_and_quizzes(capsys):
    nb05.check_training_cost(cost_untruncated)
    assert "only max_tokens of a longer example are billed" in capsys.readouterr().out
    nb05.check_training_cost(lambda c, e, p, m: right_cost(c, e, p, m) * 1e6)
    assert "per million tokens" in capsys.readouterr().out
    model, price = nb05.training_price()
    assert price > 0 and model
    for question, choices in (nb05.QUIZ_ENGINES, nb05.QUIZ_MODEL_LIST, nb05.QUIZ_INTERVALS):
        assert question and sum(choice.correct for choice in choices) == 1 and all(c.why for c in choices)


def test_swapping_the_original_prompts_examples_keeps_its_blank_line_layout():
    from gptnb.exercises import nb02

    swapped = nb05.swap_examples(nb02.ORIGINAL_PROMPT)
    assert swapped == "\n" + nb02.MOVIES.render(nb02.ORIGINAL_QUERY, nb02.ORIGINAL_EXAMPLES[::-1])
    assert swapped.split("\n\n")[2] == "Review: I am sad that the hero died.\nSentiment: Negative"
    assert nb05.swap_examples(swapped) == nb02.ORIGINAL_PROMPT
    single_newlines = nb02.ORIGINAL_PROMPT.replace("\n\n", "\n")  # the layout an earlier version assumed
    with pytest.raises(ValueError, match="has 1 blocks separated by blank lines; swap_examples wants 4"):
        nb05.swap_examples(single_newlines)


def test_notebook_05_uses_the_exact_original_prompt_and_the_swap():
    import json
    from pathlib import Path

    notebook = Path(__file__).resolve().parent.parent / "notebooks" / "05_openai_api.ipynb"
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    code = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
    assert any("from gptnb.exercises.nb02 import ORIGINAL_PROMPT" in cell for cell in code)
    assert not any("ORIGINAL_PROMPT = " in cell for cell in code), "05 must not retype the original prompt"
    assert any("nb05.swap_examples(ORIGINAL_PROMPT)" in cell for cell in code)


def test_the_blank_token_case_has_the_blank_line_that_separates_the_prompts_blocks():
    blank = next(top for top, _, about in nb05.LOGPROB_CASES if about.startswith("blank tokens"))
    assert blank[0][0] == "\n\n"  # the most likely token: what a model may write after a blank-line prompt
