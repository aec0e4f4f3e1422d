"""Exercise checks and quizzes shared by the notebooks.

How an exercise looks in a notebook (``notebooks/`` is the instructor/source copy; ``make assignments``
turns it into student copies with nbgrader):

1. a markdown cell with the task;
2. the answer cell, an nbgrader *solution* cell (``grade_id`` ``exNN-K-answer``). Every answer is a
   function, so that a student copy's placeholder (``raise NotImplementedError()``) fails only when
   called. In the source the reference answer sits between ``### BEGIN SOLUTION`` / ``### END SOLUTION``
   and the cell is collapsed (JupyterLab ``source_hidden``, Colab ``cellView: form`` with a ``#@title``);
3. the check cell, an nbgrader *autograded test* cell (``exNN-K-check``, locked, points), calling one
   ``gptnb.exercises.nbNN.check_*`` function. A check prints one line, right or what is wrong, never the
   answer; it raises only while nbgrader grades (``NBGRADER_EXECUTION`` is set), so that a student copy
   runs top to bottom however many answers are missing.

Quizzes (``quiz``) are multiple-choice questions whose every choice explains why it is right or wrong.
"""

from __future__ import annotations

import contextlib
import html
import io
import os
from dataclasses import dataclass
from typing import Any, Callable

RIGHT = "right"
NOT_ANSWERED = "not answered yet"


class NotAnswered(Exception):
    """The learner's function still raises NotImplementedError (the student copy's placeholder)."""


class CheckFailed(AssertionError):
    """A check failed while nbgrader grades: Jupyter shows its one line, not a traceback through the checker."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook for how an exception is shown
        return [f"{type(self).__name__}: {self}"]


def grading() -> bool:
    """True while nbgrader runs the notebook (autograde or validate), when a wrong answer must fail the cell."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def call_answer(answer: Callable, *args, **kwargs) -> Any:
    """Call the learner's function; its placeholder becomes `NotAnswered`, a crash a one-line `AssertionError`."""
    if not callable(answer):
        raise AssertionError(
            f"expected a function, got {type(answer).__name__}: define it with `def` in the cell above"
        )
    try:
        return answer(*args, **kwargs)
    except NotImplementedError as error:
        raise NotAnswered from error
    except Exception as error:  # the learner's code: any exception is feedback, not a crash of the check
        raise AssertionError(f"your function raised {type(error).__name__}: {error}") from error


def report(exercise: str, check: Callable[[], None]) -> bool:
    """Run `check` (which raises `AssertionError` with what is wrong) and print one line about it.

    Returns True when the answer is right. While nbgrader grades, a wrong or missing answer raises,
    so the test cell scores zero; otherwise it only prints, and the notebook goes on.
    """
    # nbgrader scores a test cell that writes to stderr as failed: a library's warning must not cost a right answer.
    quiet = contextlib.redirect_stderr(io.StringIO()) if grading() else contextlib.nullcontext()
    try:
        with quiet:
            check()
    except NotAnswered:
        line = f"Exercise {exercise}: {NOT_ANSWERED} (the answer cell still raises NotImplementedError)"
    except AssertionError as wrong:
        line = f"Exercise {exercise}: not yet: {str(wrong).splitlines()[0] if str(wrong) else 'wrong answer'}"
    else:
        print(f"Exercise {exercise}: {RIGHT}")
        return True
    print(line)
    if grading():
        raise CheckFailed(line) from None
    return False


@dataclass(frozen=True)
class Choice:
    """One answer of a quiz question: its text, whether it is right, and why."""

    text: str
    correct: bool
    why: str


def quiz_html(question: str, choices: list[Choice]) -> str:
    """The quiz as static HTML, for pages without a kernel (the course site): the question, then each choice as a
    ``<details>`` that opens to say whether it is right and why."""
    answers = "".join(
        f"<details><summary>{html.escape(choice.text)}</summary>"
        f"<b>{'Right.' if choice.correct else 'Not quite.'}</b> {html.escape(choice.why)}</details>"
        for choice in choices
    )
    return f"<div class='gptnb-quiz'><p><b>{html.escape(question)}</b></p>{answers}</div>"


def quiz(question: str, choices: list[Choice]):
    """A multiple-choice question: click a choice to be told whether it is right and why.

    Renders with ipywidgets (JupyterLab, Colab, VS Code), with `quiz_html`'s static form beside it for a page
    without a kernel, the course site (`gptnb.widgets.display_with_static_form`). Returns the widget.
    """
    import ipywidgets as widgets

    from ..widgets import display_with_static_form

    if sum(choice.correct for choice in choices) < 1:
        raise ValueError(f"quiz {question!r} has no right choice")
    feedback = widgets.HTML()
    buttons = []
    for choice in choices:
        button = widgets.Button(description=choice.text, layout=widgets.Layout(width="auto"))

        def show(_, choice=choice):
            verdict = "Right" if choice.correct else "Not quite"
            colour = "#1a7f37" if choice.correct else "#b35900"
            feedback.value = f"<b style='color:{colour}'>{verdict}.</b> {html.escape(choice.why)}"

        button.on_click(show)
        buttons.append(button)
    box = widgets.VBox([widgets.HTML(f"<b>{html.escape(question)}</b>"), *buttons, feedback])
    display_with_static_form(box, quiz_html(question, choices))
    return box
