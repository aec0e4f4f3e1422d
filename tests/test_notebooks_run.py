"""Every notebook runs top to bottom in the tiny profile: what nbval checks (`make test-bf16`, `make test-cpu`), here
from each notebook's one execution per `make test` (conftest's `executed_notebooks`)."""

import nbformat
import pytest
from conftest import NOTEBOOKS, errors, execute
from nbformat.v4 import new_code_cell, new_notebook


def failures(notebook) -> str:
    """Each error of `notebook` with the end of its traceback, for the assertion message."""
    return "\n".join(errors(notebook, traceback=3))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_of_the_notebook_runs_without_an_error(executed_notebooks, path):
    notebook = executed_notebooks[2][path.stem]
    assert not errors(notebook), f"{path.name} in the tiny profile:\n{failures(notebook)}"
    unrun = [
        index + 1 for index, cell in enumerate(notebook.cells) if cell.cell_type == "code" and not cell.execution_count
    ]
    assert not unrun, f"{path.name}: cells {unrun} did not run"


def test_a_cell_that_raises_is_reported_with_its_number(tmp_path):
    notebook = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("x / 0"), new_code_cell("print(x)")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "broken.ipynb"
    nbformat.write(notebook, path)
    executed = execute(path)
    assert errors(executed) == ["cell 2: ZeroDivisionError: division by zero"]
    assert "ZeroDivisionError" in failures(executed) and executed.cells[2].outputs[0].text == "1\n"
