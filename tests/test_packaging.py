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


# What notebook 01 reads at run time (make test executes the notebook itself once; not again here).
FROM_THE_COPY = """
import gptnb, gptnb.paths as paths
from gptnb.family import family_csv, load_family_table
from gptnb.exercises import nb01, quiz
profile = gptnb.start()
table = load_family_table()
model, tokenizer = gptnb.load_model("tiny-gpt2")
print(gptnb.__file__, paths.data_dir(), family_csv(), len(table), sep="\\n")
"""


def test_what_notebook_01_reads_comes_from_the_installed_copy_in_another_folder(installed_copy, tmp_path):
    _, target = installed_copy
    env = {**os.environ, "PYTHONPATH": str(target), "GPTNB_PROFILE": "tiny"}
    env.pop("GPTNB_DATA", None)
    done = subprocess.run(
        [sys.executable, "-c", FROM_THE_COPY], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *_, module_file, data, family, rows = done.stdout.splitlines()
    assert all(path.startswith(str(target)) for path in (module_file, data, family)), done.stdout
    assert int(rows) > 0 and "profile tiny" in done.stdout
