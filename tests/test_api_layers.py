"""The server's layers import one way, and the lesson side imports no server (imports read with ast, none run).

`gptnb.serve.engine`: decode → batcher → pool (reference, for the tests, over decode and batcher); no module of
gptnb imports one that imports it back; the lesson modules (everything outside `gptnb.serve` and its old name
`gptnb.api`) never import the server, except the two that start it on request (`cli`, `openai_lesson`).
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gptnb"
STARTS_THE_SERVER = {"gptnb.cli", "gptnb.openai_lesson"}  # inside a function, when asked to
ENGINE_ORDER = ["decode", "batcher", "pool"]  # each may import only those before it


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, name: str | None = None) -> set[str]:
    """The gptnb modules `path` (the module `name`) imports anywhere in it (functions included), as absolute names."""
    name, found = name or module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("gptnb")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            if not base.startswith("gptnb"):
                continue
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}")}
    return found


def _is_module(name: str) -> bool:
    path = ROOT / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    """Module -> the gptnb modules it imports, its own parent packages left out (Python imports them first anyway:
    ``from .. import __version__`` is no cycle)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {i for i in imports(path) if not name.startswith(i + ".")} & set(modules)
        for name, path in modules.items()
    }


def is_server(name: str) -> bool:
    return name.startswith(("gptnb.serve", "gptnb.api"))


def test_the_engine_layers_import_one_way():
    edges = graph()
    for i, layer in enumerate(ENGINE_ORDER):
        later = {f"gptnb.serve.engine.{other}" for other in ENGINE_ORDER[i + 1 :]} | {"gptnb.serve.engine.reference"}
        assert not edges[f"gptnb.serve.engine.{layer}"] & later, f"engine.{layer} imports a layer above it"
    production = {name for name in edges if is_server(name)}
    users = sorted(name for name in production if "gptnb.serve.engine.reference" in edges[name])
    assert users == ["gptnb.serve.engine.reference"] or not users, f"the reference loops are for tests: {users}"


def test_no_gptnb_module_imports_itself_back():
    edges = graph()
    for start in edges:
        seen, stack = set(), [(start, (start,))]
        while stack:
            name, path = stack.pop()
            for target in edges[name]:
                if target == start:
                    raise AssertionError("import cycle: " + " -> ".join((*path, target)))
                if target not in seen:
                    seen.add(target)
                    stack.append((target, (*path, target)))


def test_the_lesson_side_imports_no_server():
    edges = graph()
    lesson = {name for name in edges if not is_server(name) and name not in STARTS_THE_SERVER}
    offenders = {name: sorted(filter(is_server, edges[name])) for name in lesson}
    assert not {name: found for name, found in offenders.items() if found}


def test_the_scan_sees_a_server_import_inside_a_function(tmp_path):
    module = tmp_path / "formats.py"
    module.write_text(
        "import json\n\n\ndef f():\n    from ..serve import app\n    from ..serve.engine.pool import ModelPool\n"
    )
    found = imports(module, "gptnb.datacheck.formats")
    assert {"gptnb.serve.app", "gptnb.serve.engine.pool"} <= found and is_server("gptnb.serve.app")


def test_a_model_loads_outside_the_pool_lock(monkeypatch):
    """While one model loads (an ``ft:`` model takes seconds), a model already loaded is served at once."""
    from gptnb.serve.engine import pool

    release, started = threading.Event(), threading.Event()

    def load(base, adapter):
        if base == "slow":
            started.set()
            assert release.wait(60)
        return object(), object()

    monkeypatch.setattr(pool, "_load", load)
    monkeypatch.setattr(pool, "Batcher", lambda loaded, **limits: object())
    models = pool.ModelPool(lambda name: (name, None))
    fast = models.get("fast")
    loading = threading.Thread(target=models.get, args=("slow",))
    loading.start()
    try:
        assert started.wait(60)
        answered = []
        getter = threading.Thread(target=lambda: answered.append(models.get("fast")))
        getter.start()
        getter.join(10)
        assert answered == [fast], "a loaded model waited for another model's load"
    finally:
        release.set()
        loading.join(60)
    assert models.get("slow") is models.get("slow")


def test_the_old_name_starts_the_same_server():
    import gptnb.api
    import gptnb.datacheck.prepare
    import gptnb.serve

    assert gptnb.api.local_server is gptnb.serve.local_server
    assert gptnb.api.prepare_data is gptnb.datacheck.prepare.prepare_data


MAX_FUNCTION_LINES, MAX_MODULE_LINES = 80, 300
SAYS_WHY = "over 300 lines"  # what a longer module's opening docstring says, with its reason


def size_problems(path: Path) -> list[str]:
    """Functions over 80 lines, and the module if it is over 300 lines and its docstring does not say why."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    problems = [
        f"{path.name}:{node.lineno} {node.name} has {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES and SAYS_WHY not in " ".join((ast.get_docstring(tree) or "").lower().split()):
        problems.append(f'{path.name} has {lines} lines and its docstring does not say why ("Over 300 lines: ...")')
    return problems


def test_no_function_over_80_lines_and_every_long_module_says_why():
    assert not [problem for path in sorted(PACKAGE.rglob("*.py")) for problem in size_problems(path)]


def test_the_size_check_sees_a_long_function_and_an_unexplained_long_module(tmp_path):
    module = tmp_path / "long.py"
    module.write_text('"""A module."""\n\n\ndef f():\n' + "    x = 1\n" * 81 + "\n" * 220)
    assert [problem.split(" has ")[0] for problem in size_problems(module)] == ["long.py:4 f", "long.py"]
    module.write_text('"""A module. Over 300 lines: a reason."""\n' + "x = 1\n" * 301)
    assert size_problems(module) == []
