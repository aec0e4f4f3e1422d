"""gptnb runs on Windows too: none of its modules imports a POSIX-only part of the standard library.

(Blocking those modules in a Linux process cannot simulate Windows: psutil and transformers import `resource`
there themselves, and not on Windows.)
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POSIX_ONLY = {"resource", "fcntl", "termios", "tty", "pty", "pwd", "grp", "spwd", "crypt", "posix", "syslog"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_no_gptnb_module_imports_a_posix_only_module():
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_modules(path) & POSIX_ONLY)
        for path in (ROOT / "gptnb").rglob("*.py")
    }
    assert not {path: names for path, names in offenders.items() if names}


def test_the_scan_sees_imports_inside_functions_too(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def peak():\n    import resource\n    from fcntl import flock\n")
    assert imported_modules(module) & POSIX_ONLY == {"resource", "fcntl"}


# In a fresh process, so that nothing that ran before has already set a higher peak.
MEASURE_A_BLOCK = """
import psutil
from gptnb.memory import PeakMemory, peak_rss_gib
before = peak_rss_gib()
with PeakMemory() as measured:
    start = psutil.Process().memory_info().rss / 2**30
    block = bytearray(256 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touched, so that it is resident
held = peak_rss_gib()
del block  # a block this large goes back to the system at once
print(before, start, measured.gib, held, peak_rss_gib(), psutil.Process().memory_info().rss / 2**30)
"""


def test_the_peak_grows_by_a_known_block_and_stays_after_it_is_freed():
    done = subprocess.run([sys.executable, "-c", MEASURE_A_BLOCK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, start, inside, held, after, now = map(float, done.stdout.split())
    block = 256 / 1024
    assert held - before == pytest.approx(block, abs=0.05), done.stdout
    assert inside - start == pytest.approx(block, abs=0.05), done.stdout
    assert after == pytest.approx(held, abs=0.01) and now < after - 0.8 * block, "the peak, not the RSS now"
