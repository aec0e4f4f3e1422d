"""A non-editable install (pip install ., pip install git+...) carries everything gptnb reads at run time."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def test_every_gptnb_package_is_listed_for_setuptools():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "gptnb").rglob("__init__.py")}
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in pyproject.toml"


@pytest.fixture(scope="module")
def installed_copy(tmp_path_factory):
    """gptnb built as a wheel and installed (no deps: they are this environment's) into a folder of its own."""
    wheels = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(wheels.glob("gptnb-*.whl"))
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    return wheel, target


def test_the_wheel_carries_the_data_files_and_the_licence(installed_copy):
    wheel, _ = installed_copy
    names = zipfile.ZipFile(wheel).namelist()
    for csv in (ROOT / "data").glob("*.csv"):
        assert f"gptnb/datafiles/{csv.name}" in names
    assert any(name.endswith("licenses/LICENSE") for name in names)


def test_notebook_01_runs_from_another_folder_on_the_installed_copy(installed_copy, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    _, target = installed_copy
    env = {**os.environ, "PYTHONPATH": str(target), "GPTNB_PROFILE": "tiny"}
    env.pop("GPTNB_DATA", None)
    where = subprocess.run(
        [sys.executable, "-c", "import gptnb, gptnb.paths as p; print(gptnb.__file__); print(p.data_dir())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    module_file, data = where.stdout.split()
    assert module_file.startswith(str(target)) and data.startswith(str(target)), where.stdout
    notebook = nbformat.read(ROOT / "notebooks" / "01_gpt_family.ipynb", as_version=4)
    old_env = dict(os.environ)
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        nbclient.NotebookClient(
            notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(old_env)
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "profile: tiny" in printed
