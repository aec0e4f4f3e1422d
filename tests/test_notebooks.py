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
        "01_gpt_family.ipynb",
        "02_prompting.ipynb",
        "03_generation.ipynb",
        "04_finetuning.ipynb",
        "05_openai_api.ipynb",
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
    assert len(text.split()) <= 150, f"the title cell has {len(text.split())} words; at most 150"
    assert all(profile in text for profile in ("tiny", "cpu", "gpu")), "run time per profile"
    badge = re.search(r"colab\.research\.google\.com/github/(\S+?)/blob/main/notebooks/(\S+?\.ipynb)", text)
    assert badge, "Open in Colab badge"
    assert badge.group(2) == path.name
    assert REPO_URL.endswith(badge.group(1))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_code_cell_is_over_20_lines(path):
    code = [source(cell).splitlines() for cell in cells(path) if cell["cell_type"] == "code"]
    long = [f"{lines[0]!r}: {len(lines)} lines" for lines in code if len(lines) > 20]
    assert not long, f"split these cells (at most 20 lines each): {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_title_cell_links_once_to_what_every_notebook_shares(path):
    links = re.findall(r"\]\(([^)]*README\.md[^)]*)\)", source(cells(path)[0]))
    assert links == ["../README.md#how-the-notebooks-work"], links


def setup_cells():
    return {path.name: source(cells(path)[1]) for path in NOTEBOOKS}


def test_every_notebook_has_the_same_setup_cell_with_the_one_repo_url():
    setups = setup_cells()
    assert len(set(setups.values())) == 1, "the setup cells differ: keep them identical"
    assert f'REPO_URL = "{REPO_URL}"' in next(iter(setups.values()))


class FakeColab:
    """Runs the setup cell as Colab would: a `google.colab` module, gptnb missing until pip installs it."""

    def __init__(self, monkeypatch, installed=False):
        import importlib.metadata
        import importlib.util
        import subprocess
        import sys
        import types

        self.installed, self.commands = installed, []
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: real_find_spec(name, *a) if name != "gptnb" or self.installed else None,
        )
        monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0-test")
        monkeypatch.setattr(subprocess, "run", self.run)

    def run(self, command, **kwargs):
        self.commands.append(command)
        self.installed = True


def test_setup_cell_on_colab_installs_once_and_can_run_again(monkeypatch, capsys):
    colab = FakeColab(monkeypatch)
    cell = next(iter(setup_cells().values()))
    exec(cell, {})
    exec(cell, {})  # "Run all" again, or after restarting the runtime: the package is still installed
    assert len(colab.commands) == 1 and f"gptnb @ git+{REPO_URL}" in colab.commands[0]
    first, second = capsys.readouterr().out.strip().splitlines()
    assert first.startswith("setup: installed gptnb") and second.startswith("setup: gptnb 0.0-test is installed")


def test_setup_cell_without_gptnb_outside_colab_says_what_to_run(monkeypatch):
    import sys

    FakeColab(monkeypatch)
    monkeypatch.delitem(sys.modules, "google.colab")
    with pytest.raises(ModuleNotFoundError, match="make lab.*pip install 'gptnb @ git\\+"):
        exec(next(iter(setup_cells().values())), {})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_prints_device_profile_and_ends_with_a_summary(path):
    code = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "code")
    assert "gptnb.start(" in code
    last_markdown = [source(c) for c in cells(path) if c["cell_type"] == "markdown"][-1]
    assert re.search(r"summary|what you learned|recap", last_markdown, re.I)
