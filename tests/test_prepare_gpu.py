""".ci/prepare-gpu: what its bundle holds (its --list plan, nothing downloaded) and how .ci/gpu-notebooks reads it."""

import importlib.util
import json
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest

from gptnb.models import spec_for
from gptnb.offline_model import SMOLLM2_GGUF, SMOLLM2_WHEEL
from gptnb.profiles import PROFILES

tomllib = pytest.importorskip("tomllib", reason="the script needs Python 3.11 (tomllib)")
REPO = Path(__file__).resolve().parent.parent


def _script(name: str):
    """A script in .ci/ (no .py suffix) imported as a module."""
    loader = SourceFileLoader(name.replace("-", "_"), str(REPO / ".ci" / name))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


@pytest.fixture
def prepare(monkeypatch):
    """The script as a module, with every subprocess (pip, the cache build) refused: --list must need none."""
    module = _script("prepare-gpu")

    def refused(*args, **kwargs):
        raise AssertionError(f"ran {args[0]}")

    monkeypatch.setattr(module.subprocess, "run", refused)
    return module


def _listed(prepare, capsys, *argv: str) -> dict[str, str]:
    assert prepare.main(["--list", *argv]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert all(len(row) == 2 for row in rows), rows
    return dict(rows)


def test_the_list_names_every_wheel_the_gpu_machine_needs(prepare, capsys):
    listed = _listed(prepare, capsys, "--python", "3.12")
    paths = list(listed)
    assert paths[0] == "wheels/gptnb-*-py3-none-any.whl" and paths[-1] == "MANIFEST.txt"
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in declared + ["nbclient", "nbformat", "ipykernel"]:  # what .ci/gpu-notebooks imports
        name = prepare.requirement_name(requirement).replace("-", "_")
        assert f"wheels/{name}-*.whl" in listed, requirement
    assert "CUDA build" in listed["wheels/torch-*.whl"]
    assert "CPython 3.12 on Linux x86-64" in listed["wheels/transformers-*.whl"]


def test_no_torch_leaves_torch_out_of_the_list(prepare, capsys):
    listed = _listed(prepare, capsys, "--no-torch")
    assert "wheels/torch-*.whl" not in listed and "wheels/transformers-*.whl" in listed


def test_the_list_holds_the_cache_the_notebooks_read(prepare, capsys):
    listed = _listed(prepare, capsys)
    assert f"cache/wheels/{SMOLLM2_WHEEL.replace('==', '-')}/{SMOLLM2_GGUF}" in listed  # the GGUF
    assert "cache/tokenizers/gpt2/" in listed
    for profile in ("gpu", "tiny"):
        models = {PROFILES[profile].fallback_model, PROFILES[profile].finetune_model, PROFILES[profile].prompting_model}
        for name in models:
            if spec_for(name).offline:
                assert f"cache/models/{name}/" in listed, (profile, name)
    assert not [path for path in listed if path.startswith("hf/")]  # the hub's models only with --hub


def test_hub_adds_the_gpu_profiles_models_and_tweet_eval(prepare, capsys):
    listed = _listed(prepare, capsys, "--hub")
    gpu = PROFILES["gpu"]
    for name in (gpu.prompting_model, *gpu.generation_models, gpu.finetune_model, gpu.finetune_neo_model):
        assert f"hf/hub/models--{spec_for(name).hub_id.replace('/', '--')}/" in listed, name
    assert "hf/datasets/cardiffnlp___tweet_eval/" in listed


def test_pip_is_asked_for_the_targets_python_and_binary_wheels_only(prepare):
    args = prepare.parse(["/tmp/bundle", "--python", "3.12", "--torch-index", "https://example.invalid/cu126"])
    flags = prepare.target_flags(args)
    assert flags[:5] == ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
    assert "manylinux_2_28_x86_64" in flags and flags[-2:] == ["--extra-index-url", "https://example.invalid/cu126"]
    assert flags[flags.index("--find-links") + 1] == "/tmp/bundle/wheels"  # the wheels built here, e.g. future


def test_no_torch_drops_torch_and_its_cuda_wheels_from_the_resolved_set(prepare, monkeypatch):
    resolved = ["transformers", "torch", "nvidia-cublas-cu12", "triton", "cuda-bindings", "numpy", "nbclient"]

    def fake_pip(*args):
        report = Path(args[args.index("--report") + 1])
        install = [{"metadata": {"name": name, "version": "1.0"}} for name in resolved]
        report.write_text(json.dumps({"install": install}))

    monkeypatch.setattr(prepare, "pip", fake_pip)
    with_torch = prepare.resolve(prepare.parse(["b"]), ["transformers"])
    assert with_torch == [f"{name}==1.0" for name in resolved]
    without = prepare.resolve(prepare.parse(["b", "--no-torch"]), ["transformers"])
    assert without == ["transformers==1.0", "numpy==1.0", "nbclient==1.0"]


def test_install_from_a_folder_without_the_gptnb_wheel_says_what_to_do(prepare, tmp_path, capsys):
    assert prepare.main(["--install", str(tmp_path)]) == 2
    assert capsys.readouterr().out == (
        f"prepare-gpu: no gptnb wheel in {tmp_path / 'wheels'}; make the bundle first: .ci/prepare-gpu {tmp_path}\n"
    )


def test_no_bundle_folder_is_one_usage_error():
    done = subprocess.run([sys.executable, str(REPO / ".ci" / "prepare-gpu")], capture_output=True, text=True)
    assert done.returncode == 2 and "name the bundle folder" in done.stderr.splitlines()[-1]


def test_gpu_notebooks_reads_the_bundles_caches_and_stays_offline(tmp_path, monkeypatch):
    runner = _script("gpu-notebooks")
    for name in ("GPTNB_CACHE", "HF_HOME", "GPTNB_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "before")  # restored after the test
        monkeypatch.delenv(name)
    with pytest.raises(SystemExit, match="has no cache/ folder; make it with: .ci/prepare-gpu"):
        runner.use_bundle(tmp_path)
    (tmp_path / "cache").mkdir()
    (tmp_path / "hf").mkdir()
    runner.use_bundle(tmp_path)
    environ = runner.os.environ
    assert environ["GPTNB_CACHE"] == str(tmp_path / "cache") and environ["HF_HOME"] == str(tmp_path / "hf")
    assert environ["GPTNB_OFFLINE"] == environ["HF_HUB_OFFLINE"] == environ["HF_DATASETS_OFFLINE"] == "1"


def test_have_leaves_out_what_the_gpu_machine_has(prepare, capsys, tmp_path, monkeypatch):
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("# pip freeze\nTransformers==5.17.0\nscikit_learn==1.6.0\nnbclient @ file:///x\n-e /src\n")
    listed = _listed(prepare, capsys, "--have", str(freeze))
    assert {"wheels/transformers-*.whl", "wheels/scikit_learn-*.whl", "wheels/nbclient-*.whl"}.isdisjoint(listed)
    assert "wheels/datasets-*.whl" in listed and "wheels/torch-*.whl" in listed

    def fake_pip(*args):
        install = [{"metadata": {"name": name, "version": "1.0"}} for name in ("transformers", "scikit-learn", "gguf")]
        Path(args[args.index("--report") + 1]).write_text(json.dumps({"install": install}))

    monkeypatch.setattr(prepare, "pip", fake_pip)
    assert prepare.resolve(prepare.parse(["b", "--have", str(freeze)]), ["gguf"]) == ["gguf==1.0"]
