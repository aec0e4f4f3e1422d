"""gptnb runs on Windows too: none of its modules imports a POSIX-only part of the standard library.

(Blocking those modules in a Linux process cannot simulate Windows: psutil and transformers import `resource`
there themselves, and not on Windows.)
"""

import ast
from pathlib import Path

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


def test_peak_memory_is_measured_portably():
    from gptnb.memory import PeakMemory, peak_rss_gib

    with PeakMemory() as measured:
        block = bytearray(64 * 2**20)  # 64 MiB, touched so that it is resident
        block[::4096] = b"x" * len(block[::4096])
    assert 0 < peak_rss_gib() < 64
    assert measured.gib >= 0.06
