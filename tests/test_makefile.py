"""`make lab`, the README's first command, starts JupyterLab, as root too (containers and cloud VMs run as root);
learners' without nbgrader's instructor tools; the install stamp keeps `make` from reinstalling while the venv
satisfies pyproject.toml."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


INSTRUCTOR_PLUGINS = {"@jupyter/nbgrader:create-assignment", "@jupyter/nbgrader:formgrader"}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize(("target", "instructor"), [("lab", False), ("lab-instructor", True)])
def test_make_lab_starts_and_only_lab_instructor_has_the_instructor_tools(tmp_path, target, instructor):
    port = free_port()
    args = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token=gptnb-test --ServerApp.root_dir={ROOT}"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    lab = subprocess.Popen(
        ["make", "--no-print-directory", target, f"LAB_ARGS={args}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        answer = None
        while time.monotonic() < deadline and lab.poll() is None:
            try:
                answer = get(f"{base}/api/status?token=gptnb-test")[0]
                break
            except OSError:
                time.sleep(0.5)
        output = "" if lab.poll() is None else lab.stdout.read()
        assert answer == 200, f"JupyterLab did not answer on port {port}; make {target} printed:\n{output[-2000:]}"
        page = get(f"{base}/lab?token=gptnb-test")[1]
        config = json.loads(re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S).group(1))
        disabled = set(config["disabledExtensions"])
        assert (INSTRUCTOR_PLUGINS & disabled) == (set() if instructor else INSTRUCTOR_PLUGINS), disabled
        assert "@jupyter/nbgrader:validate-assignment" not in disabled
        assert (get(f"{base}/formgrader?token=gptnb-test")[0] == 200) == instructor
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)


@pytest.mark.parametrize(("uid", "allowed"), [("0", True), ("1000", False)])
def test_lab_passes_allow_root_only_to_root(tmp_path, uid, allowed):
    fake_id = tmp_path / "id"
    fake_id.write_text(f"#!/bin/sh\necho {uid}\n")
    fake_id.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "-W", "pyproject.toml", "lab"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lab_line = next(line for line in dry_run.splitlines() if "jupyter lab" in line)
    assert ("--allow-root" in lab_line) == allowed, lab_line


# --- the install stamp: a newer pyproject.toml alone installs nothing ---------------------------------------------

VENV = Path(sys.executable).parent.parent


def dry_run(folder: Path, stamp: Path, *args: str) -> subprocess.CompletedProcess:
    """`make -n assignments` in `folder`, with this venv and `stamp`: the commands it would run (the install check
    itself runs, as make runs lines that call $(MAKE))."""
    return subprocess.run(
        ["make", "--no-print-directory", "-n", *args, f"VENV={VENV}", f"STAMP={stamp}", "assignments"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    )


def record_stamp(stamp: Path, pyproject: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "gptnb" / "installed.py"), "write", str(stamp), "--pyproject", str(pyproject)],
        check=True,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_newer_pyproject_installs_nothing_while_the_venv_satisfies_it(tmp_path):
    stamp = tmp_path / "stamp"
    record_stamp(stamp, ROOT / "pyproject.toml")
    planned = dry_run(ROOT, stamp, "-W", "pyproject.toml")
    assert "installed.py check" in planned.stdout, planned.stdout
    assert "pip install" not in planned.stdout and "installing:" not in planned.stderr, planned.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_dependency_the_venv_does_not_satisfy_plans_the_install(tmp_path):
    (tmp_path / "gptnb").mkdir()
    shutil.copy(ROOT / "Makefile", tmp_path)
    shutil.copy(ROOT / "gptnb" / "installed.py", tmp_path / "gptnb")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch>=' in pyproject
    (tmp_path / "pyproject.toml").write_text(re.sub(r'"torch>=[^"]*"', '"torch>=999"', pyproject))
    stamp = tmp_path / "stamp"
    record_stamp(stamp, tmp_path / "pyproject.toml")
    planned = dry_run(tmp_path, stamp, "-W", "pyproject.toml")
    assert "pip install" in planned.stdout and "-m gptnb.offline_model" in planned.stdout, planned.stdout
    assert "installing: torch>=999 wanted, " in planned.stderr, planned.stderr


def test_the_stamp_check_names_what_is_missing(tmp_path):
    from gptnb.installed import packaging_digest, why_install

    project = {"project": {"name": "gptnb", "dependencies": ["packaging>=1", "pytest"]}}
    stamp = tmp_path / "stamp"
    assert why_install(stamp, project, []) == f"no install stamp {stamp}"
    stamp.write_text(packaging_digest(project) + "\n")
    assert why_install(stamp, project, []) is None
    project["project"]["dependencies"] += ["packaging>=999", "no-such-distribution-gptnb", "absent; python_version<'3'"]
    assert why_install(stamp, project, []).startswith("packaging>=999 wanted, ")
    assert why_install(stamp, project, []).endswith("installed (and 1 more)")
    project["project"]["scripts"] = {"gptnb-other": "gptnb.cli:main"}
    assert why_install(stamp, project, []) == "pyproject.toml's build system, scripts or package list changed"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_assignments_passes_the_grading_profile():
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", "assignments", "GRADING_PROFILE=cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "gptnb.exercises.assignments --out build/assignments --profile cpu " in planned, planned
