"""Exercises and `make assignments`: the conventions in the notebooks, the nbgrader student copies, autograding."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import NOTEBOOKS, cells, errors, execute, is_check
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from gptnb.exercises import NOT_ANSWERED, RIGHT
from gptnb.exercises.assignments import STUDENT_EXERCISES, ConventionError, build, exercises, nbgrader, student_title

INSTRUCTOR, UNTOUCHED = "instructor", "untouched"


def submit(course: Path, student: str, notebook: Path) -> None:
    """Put `notebook` where nbgrader looks for `student`'s submission of the assignment named like it."""
    folder = course / "submitted" / student / notebook.stem
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, folder / notebook.name)


def scores(course: Path, stem: str) -> dict[str, tuple[float, float]]:
    """(score, max score) of each student's autograded submission, from nbgrader's gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        return {
            student: (found.score, found.max_score)
            for student in (INSTRUCTOR, UNTOUCHED)
            for found in [gradebook.find_submission(stem, student)]
        }


def printed(cell) -> str:
    return "".join(output.text for output in cell.outputs if output.get("name") == "stdout")


def check_cells(notebook) -> list:
    return [cell for cell in notebook.cells if is_check(cell)]


# --- the conventions, over the real notebooks ------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_exercises_and_quizzes_that_follow_the_conventions(path):
    number = path.name[:2]
    found, notebook = exercises(path), cells(path)
    assert len(found) >= 3, f"{path.name}: {len(found)} exercises, at least 3 wanted"
    quizzes = [cell for cell in notebook if cell.cell_type == "code" and "quiz(" in cell.source]
    assert 2 <= len(quizzes) <= 3, f"{path.name}: {len(quizzes)} quiz cells, 2-3 wanted"
    checks = importlib.import_module(f"gptnb.exercises.nb{number}")
    for exercise in found:
        answer, check = notebook[exercise.answer], notebook[exercise.check]
        where = f"{path.name}, exercise {exercise.number}"
        assert exercise.number.split(".")[0] == str(int(number)), where
        assert answer.metadata.get("jupyter", {}).get("source_hidden") is True, f"{where}: answer not collapsed"
        assert answer.metadata.get("cellView") == "form", f"{where}: answer cell not a Colab form"
        k = exercise.number.split(".")[1]
        assert answer.metadata.nbgrader["grade_id"] == f"ex{number}-{k}-answer", where
        assert check.metadata.nbgrader["grade_id"] == f"ex{number}-{k}-check", where
        assert check.metadata.nbgrader.get("locked") is True, f"{where}: check cell not locked"
        assert check.metadata.nbgrader["points"] > 0, where
        called = re.search(rf"\bnb{number}\.(check_\w+)\(", check.source)
        assert called and callable(getattr(checks, called.group(1), None)), f"{where}: {check.source!r}"


def test_at_least_15_exercises_in_all():
    assert sum(len(exercises(path)) for path in NOTEBOOKS) >= 15


# --- the builder, on a tiny notebook made here ------------------------------------------------------------------

CHECKS = """\
import warnings

from gptnb.exercises import call_answer, report


def check_double(double):
    def check():
        warnings.warn("a library deprecates something", FutureWarning)  # to stderr, which nbgrader counts as failed
        got = call_answer(double, 21)
        assert got == 42, f"double(21) returned {got!r}, not twice 21"
    report("9.1", check)


def check_shout(shout):
    def check():
        got = call_answer(shout, "hi")
        assert got == "HI!", f"shout('hi') returned {got!r}"
    report("9.2", check)
"""


def exercise_cells(k: int, function: str, solution: str) -> list:
    answer = new_code_cell(
        f"#@title Exercise 9.{k}: answer cell (reference answer inside, collapsed; try the task first)\n"
        f'def {function}(x):\n    """The task\'s function."""\n'
        f"    ### BEGIN SOLUTION\n    {solution}\n    ### END SOLUTION",
        metadata={
            "jupyter": {"source_hidden": True},
            "cellView": "form",
            "nbgrader": {
                "grade": False,
                "grade_id": f"ex99-{k}-answer",
                "locked": False,
                "schema_version": 3,
                "solution": True,
                "task": False,
            },
        },
    )
    check = new_code_cell(
        f"check_{function}({function})",
        metadata={
            "nbgrader": {
                "grade": True,
                "grade_id": f"ex99-{k}-check",
                "locked": True,
                "points": 1,
                "schema_version": 3,
                "solution": False,
                "task": False,
            }
        },
    )
    return [new_markdown_cell(f"### Exercise 9.{k}: {function}\nWrite `{function}(x)`."), answer, check]


def write_lesson(folder: Path) -> Path:
    """A source notebook with two exercises (answers: `double`, `shout`) and a last cell that must still run."""
    notebook = new_notebook(
        cells=[
            new_markdown_cell("# A tiny lesson"),
            new_code_cell(CHECKS),
            *exercise_cells(1, "double", "return 2 * x"),
            *exercise_cells(2, "shout", 'return x.upper() + "!"'),
            new_code_cell('print("the last cell ran")'),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    path = folder / "99_tiny.ipynb"
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


@pytest.fixture
def source(tmp_path) -> Path:
    return write_lesson(tmp_path / "notebooks")


@pytest.fixture(scope="module")
def tiny_course(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(course folder, source notebook, student copy): the tiny lesson built once for the tests below."""
    folder = tmp_path_factory.mktemp("tiny")
    source = write_lesson(folder / "notebooks")
    [copy] = build([source], folder / "course")
    return folder / "course", source, copy


def test_student_copy_has_open_placeholder_answers_and_no_solution(tiny_course):
    course, source, copy = tiny_course
    assert copy == course / "release" / "99_tiny" / "99_tiny.ipynb"
    assert (course / "source" / "99_tiny" / "99_tiny.ipynb").read_text() == source.read_text()
    student = cells(copy)
    assert "return 2 * x" not in copy.read_text() and "upper()" not in copy.read_text()
    assert "SOLUTION" not in copy.read_text()
    for index, k, function in ((3, 1, "double"), (6, 2, "shout")):
        answer = student[index]
        assert answer.source.splitlines()[0] == f"#@title Exercise 9.{k}: your answer"
        assert f"def {function}(x):" in answer.source and "raise NotImplementedError()" in answer.source
        assert "jupyter" not in answer.metadata and "cellView" not in answer.metadata
        check = student[index + 1]
        assert check.source == f"check_{function}({function})" and check.metadata.get("editable") is False


def test_tiny_student_copy_runs_and_autogrades_to_zero_the_source_to_full_marks(tiny_course):
    course, source, copy = tiny_course
    executed = execute(copy)
    assert not errors(executed)
    assert [printed(cell).strip() for cell in check_cells(executed)] == [
        f"Exercise 9.{k}: {NOT_ANSWERED} (the answer cell still raises NotImplementedError)" for k in (1, 2)
    ]
    assert printed(executed.cells[-1]) == "the last cell ran\n"
    submit(course, UNTOUCHED, copy)
    submit(course, INSTRUCTOR, source)
    graded = nbgrader(course, "autograde", "99_tiny")
    assert graded.returncode == 0, graded.stderr[-3000:]
    assert "SAWarning" not in graded.stderr, graded.stderr[-3000:]
    assert scores(course, "99_tiny") == {UNTOUCHED: (0, 2), INSTRUCTOR: (2, 2)}


def break_markers(notebook):
    notebook.cells[6].source = notebook.cells[6].source.replace("### END SOLUTION", "")


def move_check(notebook):
    notebook.cells[4], notebook.cells[5] = notebook.cells[5], notebook.cells[4]


def duplicate_id(notebook):
    notebook.cells[7].metadata.nbgrader["grade_id"] = "ex99-1-check"


def drop_points(notebook):
    del notebook.cells[7].metadata.nbgrader["points"]


@pytest.mark.parametrize(
    "breaking, message",
    [
        (break_markers, "99_tiny.ipynb, cell 7: answer cell without ### BEGIN SOLUTION / ### END SOLUTION markers"),
        (move_check, "99_tiny.ipynb, cell 4: answer cell is not followed right away by its check cell"),
        (duplicate_id, "99_tiny.ipynb, cell 8: grade id 'ex99-1-check' is used twice"),
        (drop_points, "99_tiny.ipynb, cell 8: check cell without points"),
    ],
    ids=["markers", "check-moved", "duplicate-id", "no-points"],
)
def test_a_broken_convention_stops_the_build_with_one_line(source, tmp_path, breaking, message):
    notebook = nbformat.read(source, as_version=4)
    breaking(notebook)
    nbformat.write(notebook, source)
    with pytest.raises(ConventionError) as raised:
        build([source], tmp_path / "course")
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    assert not (tmp_path / "course").exists()


def test_a_lone_check_cell_is_named(source):
    notebook = nbformat.read(source, as_version=4)
    del notebook.cells[3]
    nbformat.write(notebook, source)
    with pytest.raises(ConventionError, match=r"99_tiny\.ipynb, cell 4: check cell is not right after its answer"):
        exercises(source)


def test_command_line_prints_the_one_line_and_exits_1(source, tmp_path):
    broken = json.loads(source.read_text())
    del broken["cells"][7]["metadata"]["nbgrader"]["points"]
    source.write_text(json.dumps(broken))
    done = subprocess.run(
        [sys.executable, "-m", "gptnb.exercises.assignments", str(source), "--out", str(tmp_path / "course")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        (
            "make assignments: 99_tiny.ipynb, cell 8: check cell without points "
            "(nbgrader points > 0) (see gptnb/exercises/__init__.py)"
        )
    ]


# --- the real notebooks: student copies run as is, and autograde -------------------------------------------------


@pytest.fixture(scope="module")
def course(executed_notebooks):
    """The five notebooks' two submissions autograded (tiny): the untouched student copy and the source, from their
    one execution (`executed_notebooks`, run as nbgrader grades), `nbgrader autograde`'s own execution and clearing
    turned off. (The tiny lesson above is run as a learner and by nbgrader's own execution.) Returns (course folder,
    {stem: executed untouched student copy}, {stem: executed source})."""
    course, executed, sources = executed_notebooks
    for stem in executed:
        for student_id, notebook in ((UNTOUCHED, executed[stem]), (INSTRUCTOR, sources[stem])):
            folder = course / "submitted" / student_id / stem
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, folder / f"{stem}.ipynb")
        graded = nbgrader(course, "autograde", stem, "--ClearOutput.enabled=False", "--Execute.enabled=False")
        assert graded.returncode == 0, graded.stderr[-3000:]
        assert "SAWarning" not in graded.stderr, graded.stderr[-3000:]
    return executed_notebooks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_copy_runs_top_to_bottom_with_every_check_not_answered(course, path):
    notebook = course[1][path.stem]
    checks = check_cells(notebook)
    assert len(checks) == len(exercises(path)) >= 3
    assert not errors(notebook, checks=False), errors(notebook)
    for cell in checks:
        where, line = cell.metadata.nbgrader["grade_id"], printed(cell).strip()
        assert NOT_ANSWERED in line, f"{where}: {line!r}"
        shown = [output.traceback for output in cell.outputs if output.output_type == "error"]
        assert shown == [[f"CheckFailed: {line}"]], f"{where}: grading shows {shown}, not the one line"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_reference_answers_pass_their_checks(course, path):
    for cell in check_cells(course[2][path.stem]):
        assert printed(cell).strip().endswith(RIGHT), f"{cell.metadata.nbgrader['grade_id']}: {printed(cell)!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_autograde_scores_untouched_copy_zero_and_source_full_marks(course, path):
    graded = scores(course[0], path.stem)
    notebook = cells(path)
    points = sum(notebook[exercise.check].metadata.nbgrader["points"] for exercise in exercises(path))
    assert points > 0
    assert graded == {UNTOUCHED: (0, points), INSTRUCTOR: (points, points)}


def test_config_pins_the_grading_profile(tiny_course):
    course = tiny_course[0]
    assert "os.environ[\"GPTNB_PROFILE\"] = 'tiny'" in (course / "nbgrader_config.py").read_text()


def test_student_title_describes_empty_answer_cells():
    source = "# Title\n\n**Exercises.** the answer cells hold a reference answer, collapsed.\n\n**Run time** 1 s"
    assert student_title(source) == f"# Title\n\n{STUDENT_EXERCISES}\n\n**Run time** 1 s"
    assert student_title("# Title\n\nSee the README.") == f"# Title\n\nSee the README.\n\n{STUDENT_EXERCISES}"
    assert "empty answer cell" in STUDENT_EXERCISES
    linked = "# T\n\nExercises and quizzes: see\n[How the notebooks work](../README.md#how-the-notebooks-work).\n\nEnd"
    assert student_title(linked) == (
        f"# T\n\n{STUDENT_EXERCISES} More: [How the notebooks work](../README.md#how-the-notebooks-work).\n\nEnd"
    )


def test_a_failed_check_under_grading_shows_one_line(monkeypatch):
    from gptnb.exercises import CheckFailed, report

    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")

    def wrong():
        raise AssertionError("double(21) returned 41")

    with pytest.raises(CheckFailed) as raised:
        report("9.1", wrong)
    assert raised.value._render_traceback_() == ["CheckFailed: Exercise 9.1: not yet: double(21) returned 41"]
