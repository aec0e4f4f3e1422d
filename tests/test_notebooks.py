"""House rules for the notebooks: stored clean, with the same title and setup conventions."""
import json
import re
from pathlib import Path

import pytest

pytest.importorskip("tomllib")
import tomllib  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REPO_URL = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell):
    return "".join(cell["source"])


def test_the_lessons_are_all_there():
    assert [path.name for path in NOTEBOOKS] == [
        "01_gpt_family.ipynb", "02_prompting.ipynb", "03_generation.ipynb",
        "04_finetuning.ipynb", "05_openai_api.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path):
    for cell in cells(path):
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None, source(cell)[:80]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_title_cell_conventions(path):
    first = cells(path)[0]
    text = source(first)
    assert first["cell_type"] == "markdown" and text.startswith("# ")
    assert "What you will learn" in text
    assert all(profile in text for profile in ("tiny", "cpu", "gpu")), "run time per profile"
    badge = re.search(r"colab\.research\.google\.com/github/(\S+?)/blob/main/notebooks/(\S+?\.ipynb)", text)
    assert badge, "Open in Colab badge"
    assert badge.group(2) == path.name
    assert REPO_URL.endswith(badge.group(1))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell_installs_on_colab_from_the_one_repo_url(path):
    setup = source(cells(path)[1])
    assert "google.colab" in setup and f'REPO_URL = "{REPO_URL}"' in setup


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_prints_device_profile_and_ends_with_a_summary(path):
    code = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "code")
    assert "gptnb.start(" in code
    last_markdown = [source(c) for c in cells(path) if c["cell_type"] == "markdown"][-1]
    assert re.search(r"summary|what you learned|recap", last_markdown, re.I)
