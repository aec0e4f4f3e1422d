import json
import subprocess
import sys

import pytest

from gptnb import cli


def test_info_json_lists_offline_models(offline, capsys):
    assert cli.main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["hub_reachable"] is False
    assert data["models"]["tiny-gpt2"].startswith("offline copy")
    assert data["models"]["tiny-gpt-neo"].startswith("offline copy")
    assert data["versions"]["torch"]


def test_console_script_runs():
    done = subprocess.run(
        [sys.executable, "-m", "gptnb.cli", "info"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "GPTNB_OFFLINE": "1"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "profile" in done.stdout and "smollm2-135m" in done.stdout


def test_help_loads_no_heavy_library():
    """``gptnb --help`` answers without importing torch, transformers or fastapi."""
    code = (
        "import sys\nfrom gptnb.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'fastapi') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "finetune" in done.stdout and done.stdout.strip().endswith("[]")


@pytest.mark.parametrize(
    "argv, first_words",
    [
        ([], "gptnb: error: the following arguments are required: command"),
        (["bogus"], "gptnb: error: argument command: invalid choice: 'bogus'"),
        (["serve", "--bogus"], "gptnb: error: unrecognized arguments: --bogus"),
        (["finetune", "--epochs", "abc"], "gptnb finetune: error: argument --epochs: invalid float value: 'abc'"),
        (["prepare-data", "x", "--max-tokens", "abc"], "gptnb prepare-data: error: argument --max-tokens: invalid int"),
        (["info", "--json", "extra"], "gptnb: error: unrecognized arguments: extra"),
    ],
)
def test_argument_errors_are_one_line_without_the_usage_block(capsys, argv, first_words):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and not out
    assert len(err.splitlines()) == 1 and err.startswith(first_words), err
    assert "usage:" not in err and err.rstrip().endswith("--help)")
