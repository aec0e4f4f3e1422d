"""`make lab`, the README's first command, starts JupyterLab, as root too (containers and cloud VMs run as root)."""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_lab_starts_and_answers_its_api(tmp_path):
    port = free_port()
    args = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token=gptnb-test --ServerApp.root_dir={ROOT}"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    lab = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"LAB_ARGS={args}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        answer = None
        while time.monotonic() < deadline and lab.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token=gptnb-test", timeout=2) as r:
                    answer = r.status
                    break
            except OSError:
                time.sleep(0.5)
        output = "" if lab.poll() is None else lab.stdout.read()
        assert answer == 200, f"JupyterLab did not answer on port {port}; make lab printed:\n{output[-2000:]}"
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
