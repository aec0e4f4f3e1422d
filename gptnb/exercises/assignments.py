"""Student copies of the notebooks, made with nbgrader: ``python -m gptnb.exercises.assignments [NOTEBOOK ...]``.

``notebooks/`` holds nbgrader's source versions (the conventions are in ``gptnb.exercises``). This builds an
nbgrader course folder, ``build/assignments/`` by default: ``nbgrader_config.py``, ``source/<stem>/<stem>.ipynb``
and, from ``nbgrader generate_assignment``, ``release/<stem>/<stem>.ipynb``, the student copies: answer cells hold
nbgrader's placeholder and are shown open, check cells are read-only autograded tests. The conventions are
checked first; a broken one stops the build with one line naming the notebook and the cell.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from gptnb.paths import REPO_ROOT

TITLE = re.compile(r"^#@title Exercise (\d+\.\d+):.*$", re.MULTILINE)
CONFIG = """\
# nbgrader's configuration for the gptnb course (written by `make assignments`).
import os

c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "gptnb"
# The checks build their reference answers with the same model as the notebook: grade in the tiny profile
# (seconds a notebook; one submission of 02 takes ~30 minutes in the cpu profile). To grade in another profile,
# change this line or rebuild with `make assignments GRADING_PROFILE=cpu`.
os.environ["GPTNB_PROFILE"] = {profile!r}
# Notebooks 04 and 05 train models: a cell may take minutes outside the tiny profile.
c.Execute.timeout = 1800
# Without SQLAlchemy 2's three "SAWarning: Object of type <Submitted...> not in session" per new submission.
from gptnb.exercises.assignments import add_submissions_without_autoflush  # noqa: E402

add_submissions_without_autoflush()
"""
# The student copy's title-cell paragraph on exercises: the paragraph of the source's title cell that speaks of
# collapsed reference answers is replaced by it (or it is added at the end of the title cell).
STUDENT_EXERCISES = (
    "**Exercises (student copy).** Each exercise has a task, an empty answer cell and a check that says "
    '"right" or what is wrong. Write your answer in the answer cell (it starts with '
    "`raise NotImplementedError()`: replace that line with your code), then run the check cell under it. "
    "The checks run and print a line even while answers are missing, so the notebook runs top to bottom."
)


class ConventionError(ValueError):
    """A notebook breaks the exercise conventions; the message is one line naming the notebook and cell."""


@dataclass(frozen=True)
class Exercise:
    """One exercise of a notebook: its number ("4.2") and the positions of its answer and check cells."""

    number: str
    answer: int
    check: int


def exercises(path: Path) -> list[Exercise]:
    """The exercises of a source notebook, in order; `ConventionError` where a convention is broken."""
    cells = nbformat.read(path, as_version=4).cells
    found, grade_ids = [], set()

    def broken(index: int, what: str) -> ConventionError:
        return ConventionError(f"{path.name}, cell {index + 1}: {what} (see gptnb/exercises/__init__.py)")

    for index, cell in enumerate(cells):
        meta = cell.metadata.get("nbgrader", {})
        is_answer = meta.get("solution", False)
        is_check = meta.get("grade", False) and not is_answer
        if "BEGIN SOLUTION" in cell.source and not is_answer:
            raise broken(index, "has solution markers but is not an answer cell (nbgrader solution: true)")
        if meta.get("grade_id") in grade_ids:
            raise broken(index, f"grade id {meta['grade_id']!r} is used twice")
        if meta.get("grade_id"):
            grade_ids.add(meta["grade_id"])
        if is_answer:
            title = TITLE.match(cell.source)
            if cell.cell_type != "code" or not title:
                raise broken(index, "an answer cell must be code starting with '#@title Exercise N.K: ...'")
            if "### BEGIN SOLUTION" not in cell.source or "### END SOLUTION" not in cell.source:
                raise broken(index, "answer cell without ### BEGIN SOLUTION / ### END SOLUTION markers")
            after = cells[index + 1].metadata.get("nbgrader", {}) if index + 1 < len(cells) else {}
            if not after.get("grade") or after.get("solution"):
                raise broken(index, "answer cell is not followed right away by its check cell")
            found.append(Exercise(title.group(1), index, index + 1))
        elif is_check:
            if not found or found[-1].check != index:
                raise broken(index, "check cell is not right after its answer cell")
            if not meta.get("points"):
                raise broken(index, "check cell without points (nbgrader points > 0)")
    return found


def student_title(source: str) -> str:
    """The title cell's text for a student copy: the exercises paragraph describes empty answer cells, and keeps
    the links the paragraphs it replaces had (the README's "How the notebooks work")."""
    paragraphs = source.split("\n\n")
    about = [i for i, text in enumerate(paragraphs) if "reference answer" in text or "Exercises" in text[:40]]
    if about:
        links = dict.fromkeys(re.findall(r"\[[^\]]+\]\([^)\s]+\)", "\n".join(paragraphs[i] for i in about)))
        paragraphs[about[0]] = STUDENT_EXERCISES + (f" More: {', '.join(links)}." if links else "")
        for i in reversed(about[1:]):
            del paragraphs[i]
    else:
        paragraphs.append(STUDENT_EXERCISES)
    return "\n\n".join(paragraphs)


def open_answer_cells(path: Path) -> None:
    """Rewrite a student copy: answer cells shown open, titled 'Exercise N.K: your answer'; its title cell's
    exercises paragraph describes empty answer cells."""
    from nbgrader.utils import compute_checksum

    notebook = nbformat.read(path, as_version=4)
    if notebook.cells and notebook.cells[0].cell_type == "markdown":
        notebook.cells[0].source = student_title(notebook.cells[0].source)
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.metadata.get("jupyter", {}).pop("source_hidden", None)
            if cell.metadata.get("jupyter") == {}:
                del cell.metadata["jupyter"]
            cell.metadata.pop("cellView", None)
            cell.source = TITLE.sub(r"#@title Exercise \1: your answer", cell.source, count=1)
            cell.metadata.nbgrader["checksum"] = compute_checksum(cell)
    nbformat.write(notebook, path)


def add_submissions_without_autoflush() -> None:
    """Make nbgrader's ``Gradebook.add_submission`` run with the session's autoflush off.

    nbgrader 0.9.6 builds a submission's rows (assignment, notebooks, grades, comments) before it adds them to the
    session; the lookups it makes meanwhile autoflush, and SQLAlchemy 2, which no longer cascades along backrefs,
    warns three times that the rows are not in the session yet. With autoflush off they are added and committed
    together, as nbgrader means. ``nbgrader_config.py`` calls this; calling it again changes nothing.
    """
    from nbgrader.api import Gradebook

    original = Gradebook.add_submission
    if getattr(original, "without_autoflush", False):
        return

    @functools.wraps(original)
    def add_submission(self, *args, **kwargs):
        with self.db.no_autoflush:
            return original(self, *args, **kwargs)

    add_submission.without_autoflush = True
    Gradebook.add_submission = add_submission


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``nbgrader *args`` in the course folder, with this Python's scripts on PATH (nbgrader calls alembic)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PATH": path},
    )


def build(notebooks: list[Path], course: Path, *, profile: str = "tiny") -> list[Path]:
    """Check `notebooks`, put them into the nbgrader course folder `course`, and return the student copies.

    An existing course folder is updated in place, so its gradebook (``gradebook.db``) and submissions stay.
    `profile` is the GPTNB_PROFILE that ``nbgrader_config.py`` pins for grading.
    """
    for path in notebooks:
        exercises(path)
    course.mkdir(parents=True, exist_ok=True)
    (course / "nbgrader_config.py").write_text(CONFIG.format(profile=profile))
    copies = []
    for path in notebooks:
        (course / "source" / path.stem).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, course / "source" / path.stem / path.name)
        done = nbgrader(course, "generate_assignment", path.stem, "--force")
        if done.returncode:
            raise RuntimeError(f"nbgrader generate_assignment {path.stem} failed:\n{done.stderr[-3000:]}")
        copy = course / "release" / path.stem / path.name
        open_answer_cells(copy)
        copies.append(copy)
    return copies


def main(argv: list[str] | None = None) -> None:
    """Command line: build the student copies of the given notebooks (default: all of notebooks/)."""
    parser = argparse.ArgumentParser(prog="python -m gptnb.exercises.assignments", description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="source notebooks (default: notebooks/NN_*.ipynb)")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "build" / "assignments",
        help="the nbgrader course folder (default: build/assignments)",
    )
    parser.add_argument(
        "--profile",
        default="tiny",
        choices=["tiny", "cpu", "gpu"],
        help="the GPTNB_PROFILE nbgrader grades in (default: tiny, seconds a notebook)",
    )
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(path) for path in notebooks if not path.is_file()]
    if missing:
        sys.exit(f"make assignments: no such notebook: {', '.join(missing)}")
    try:
        copies = build(notebooks, args.out, profile=args.profile)
    except (ConventionError, RuntimeError) as error:  # RuntimeError: nbgrader's own log follows the first line
        sys.exit(f"make assignments: {error}")
    for copy in copies:
        print(f"student copy: {copy}")
    print(
        f"Hand out release/<name>/; collect into submitted/<student>/<name>/, then `nbgrader autograde <name>` "
        f"in {args.out}"
    )


if __name__ == "__main__":
    main()
