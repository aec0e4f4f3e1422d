import json
import subprocess
import sys


def test_info_json_lists_offline_models(monkeypatch, capsys):
    monkeypatch.setenv("GPTNB_OFFLINE", "1")
    from gptnb import cli, models

    models.hub_reachable.cache_clear()
    try:
        assert cli.main(["info", "--json"]) == 0
    finally:
        models.hub_reachable.cache_clear()
    data = json.loads(capsys.readouterr().out)
    assert data["hub_reachable"] is False
    assert data["models"]["tiny-gpt2"].startswith("offline copy")
    assert data["models"]["tiny-gpt-neo"].startswith("offline copy")
    assert data["versions"]["torch"]


def test_console_script_runs():
    done = subprocess.run([sys.executable, "-m", "gptnb.cli", "info"], capture_output=True, text=True,
                          env={**__import__("os").environ, "GPTNB_OFFLINE": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "profile" in done.stdout and "smollm2-135m" in done.stdout
