"""Shared fixtures: an isolated gptnb cache per test session, built offline models reused."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest


@pytest.fixture(scope="session", autouse=True)
def _offline_cache(tmp_path_factory):
    """Tests use GPTNB_CACHE when set (CI sets it so models are built once); else a temp folder."""
    if not os.environ.get("GPTNB_CACHE"):
        os.environ["GPTNB_CACHE"] = str(tmp_path_factory.mktemp("gptnb-cache"))
    yield


@pytest.fixture
def offline(monkeypatch):
    """No hub for one test, whatever the machine (``GPTNB_OFFLINE=1``); afterwards the hub library's offline
    switch, which `gptnb.hub.go_offline` turns on for the whole process, is as it was before the test."""
    from huggingface_hub import constants

    from gptnb import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # recorded, so that `go_offline`'s "1" is undone afterwards
    if (before := os.environ.get("HF_HUB_OFFLINE")) is not None:
        monkeypatch.setenv("HF_HUB_OFFLINE", before)
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("GPTNB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    yield
    hub.hub_reachable.cache_clear()


@pytest.fixture(scope="session")
def tiny_gpt2():
    """(model, tokenizer) of the tiny random GPT-2 with the real GPT-2 tokenizer."""
    import gptnb

    return gptnb.load_model("tiny-gpt2", device="cpu")


@pytest.fixture(scope="session")
def tiny_untied():
    """tiny-gpt2 with an output layer of its own (untied, random): the tied one's greedy tokens repeat the last input
    token whatever came before, so a loop that loses the context or the positions would still match generate."""
    import copy

    import torch

    import gptnb

    model, tokenizer = gptnb.load_model("tiny-gpt2", profile="tiny", device="cpu")
    model = copy.deepcopy(model)
    torch.manual_seed(0)
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.02)  # as initialised
    return model, tokenizer


@pytest.fixture(scope="session")
def make_tiny_llama():
    """A function making a random two-layer Llama over a tokenizer: SmolLM2's architecture (rotary positions,
    grouped heads), each call a fresh model with the same weights."""
    return _tiny_llama


def _tiny_llama(tokenizer):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


# --- the local server: one for the session, and the helpers the API test modules share -------------------------

KEY = "test-key-not-secret"
MODEL = "tiny-gpt2"
DONE = ("succeeded", "failed", "cancelled")
PAIRS = [json.dumps({"prompt": f"Tweet: example {i}\nSentiment:", "completion": " positive"}) for i in range(6)]


# A test module that needs a server of its own (other limits, a corrupt data folder, long jobs) defines its own
# `server`, `client` or `data_dir` fixture, which takes the place of these for that module.


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The data folder of the session's server."""
    return tmp_path_factory.mktemp("api-data")


@pytest.fixture(scope="session")
def server(data_dir):
    """One local server (tiny-gpt2, the API key KEY, the tiny profile's job sizes) for the API tests: started once
    per session (per worker under xdist), stopped at its end."""
    from gptnb.serve import local_server

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GPTNB_PROFILE", "tiny")  # read once, as the server starts: the job runner's sizes
        running = local_server(MODEL, data_dir=data_dir, api_key=KEY)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def client(server):
    """An openai client of the session's server: no retries, 60 s a request."""
    return server.client(max_retries=0, timeout=60)


def wait_for(condition, seconds: float = 60) -> None:
    """Return once `condition()` is true (asked every 10 ms); fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def upload(client, lines, name="train.jsonl"):
    """Upload `lines` as one fine-tuning file; return the SDK's file object."""
    return client.files.create(file=(name, io.BytesIO("\n".join(lines).encode())), purpose="fine-tune")


def wait(client, job_id, until=DONE, timeout=120):
    """The job once its status is one of `until`, polled every 0.2 s for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in until:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout} s")


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(data_dir, port, log, timeout=180):
    """A real `gptnb serve` process (tiny-gpt2, KEY) writing to `log`: (process, openai client) once it answers."""
    import openai

    env = {**os.environ, "GPTNB_PROFILE": "tiny", "GPTNB_API_KEY": KEY}
    command = [sys.executable, "-m", "gptnb.cli", "serve", "--model", MODEL, "--port", str(port)]
    process = subprocess.Popen([*command, "--data-dir", str(data_dir)], stdout=log, stderr=subprocess.STDOUT, env=env)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=30)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "gptnb serve exited"
        try:
            client.models.list()
            return process, client
        except openai.APIConnectionError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError("gptnb serve did not start")


# --- the notebooks, each executed once per session ----------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def cells(path: Path) -> list:
    """The cells of the notebook at `path`."""
    return nbformat.read(path, as_version=4).cells


def is_check(cell) -> bool:
    """Whether `cell` is an exercise's check cell (graded, not a solution)."""
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("grade") and not meta.get("solution"))


def errors(notebook, *, checks: bool = True, traceback: int = 0) -> list[str]:
    """'cell N: Name: value' for each error output (in check cells too unless `checks` is False), followed by the
    last `traceback` lines of its traceback."""
    return [
        "\n".join(
            [
                f"cell {index + 1}: {output.ename}: {output.evalue}",
                *(output.traceback[-traceback:] if traceback else []),
            ]
        )
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (checks or not is_check(cell))
        for output in cell.outputs
        if output.output_type == "error"
    ]


def execute(path: Path, notebook=None):
    """Run a notebook (`path`'s, or `notebook` in `path`'s folder) top to bottom in the python3 kernel, errors
    recorded and the run going on (as nbgrader runs it when NBGRADER_EXECUTION is set); return it with its outputs."""
    from nbclient import NotebookClient

    notebook = notebook or nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=1800,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    return notebook


def both_ways(copy: Path, source: Path):
    """The student copy with, after each check cell, the source's answer cell, the check again and the copy's
    placeholder answer back: one run of it checks the untouched copy, the reference answers and every other cell.

    Returns (notebook, student, answered): `student[i]` is where the copy's cell i stands in the notebook,
    `answered[i]` where the source's answer or check cell i does (the checks take only their own answer).
    """
    student, answers = cells(copy), cells(source)
    assert len(student) == len(answers), f"{copy.name}: the copy and the source differ in cells"
    run, where, answered = [], [], {}
    for index, cell in enumerate(student):
        where.append(len(run))
        run.append(cell)
        if is_check(cell):
            answered[index - 1], answered[index] = len(run), len(run) + 1
            run += [answers[index - 1], answers[index], student[index - 1]]
    notebook = nbformat.read(copy, as_version=4)
    notebook.cells = [nbformat.from_dict(dict(cell, id=f"run-{k}")) for k, cell in enumerate(run)]
    return notebook, where, answered


def executed_as(path: Path, run, places: dict[int, int]):
    """`path`'s notebook with the outputs its cells got in `run` (cell i's from run.cells[places[i]])."""
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            cell.outputs = run.cells[places[index]].outputs
            cell.execution_count = run.cells[places[index]].execution_count
    return notebook


@pytest.fixture(scope="session")
def executed_notebooks(tmp_path_factory):
    """Every notebook executed once in the tiny profile, the one execution of each per `make test`: its nbgrader
    student copy run top to bottom with the source's answers and checks run beside the copy's (`both_ways`), with
    NBGRADER_EXECUTION set as `nbgrader autograde` sets it (only check cells behave otherwise under it).

    Returns (course folder, {stem: executed untouched student copy}, {stem: executed source}); the executed sources
    are what nbval would see (tests/test_notebooks_run.py), the site's pages (tests/test_site.py) and the instructor's
    submission (tests/test_assignments.py).
    """
    from gptnb.exercises.assignments import build

    course = tmp_path_factory.mktemp("course")
    executed, sources = {}, {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GPTNB_PROFILE", "tiny")
        patch.setenv("GPTNB_RESULTS", str(tmp_path_factory.mktemp("results")))
        patch.setenv("NBGRADER_EXECUTION", "autograde")
        for copy, source in zip(build(NOTEBOOKS, course), NOTEBOOKS):
            notebook, student, answered = both_ways(copy, source)
            run = execute(copy, notebook)
            executed[copy.stem] = executed_as(copy, run, dict(enumerate(student)))
            sources[copy.stem] = executed_as(source, run, {**dict(enumerate(student)), **answered})
    return course, executed, sources
