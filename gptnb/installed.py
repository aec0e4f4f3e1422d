"""Whether a virtual environment still satisfies pyproject.toml: the Makefile's install stamp.

``python gptnb/installed.py check STAMP [--extra dev ...]`` exits 0 when nothing needs installing: the stamp exists,
the packaging part of pyproject.toml (build system, scripts, setuptools' package list) is the one the stamp recorded,
and the installed distributions satisfy every requirement of ``[project] dependencies`` and the named extras.
Otherwise it prints one line saying why and exits 1, and the Makefile installs (pip then installs only what is
missing or too old). ``write STAMP`` records the packaging part after an install. So a ``git pull`` or a copy that
only makes pyproject.toml newer, or changes its description, installs nothing.

Run as a script, before gptnb itself may be installed: it needs only the standard library and ``packaging``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pip's own copy of tomli
    from pip._vendor import tomli as tomllib

from packaging.requirements import Requirement

# What an editable install reads besides the requirements: when it changes, pip must run again.
PACKAGING_KEYS = ("name", "dynamic", "requires-python", "scripts", "gui-scripts", "entry-points")


def requirements(pyproject: dict, extras: list[str]) -> list[Requirement]:
    """The [project] dependencies and those of `extras`, as `Requirement`s."""
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"pyproject.toml has no extra {unknown[0]!r} (it has: {', '.join(optional)})")
    texts = list(project.get("dependencies", [])) + [text for extra in extras for text in optional[extra]]
    return [Requirement(text) for text in texts]


def unsatisfied(wanted: list[Requirement]) -> list[str]:
    """One phrase for each requirement the installed distributions do not satisfy (markers that do not apply are
    skipped; a requirement's own extras are not followed)."""
    missing = []
    for requirement in wanted:
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(f"{requirement} wanted, not installed")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{requirement} wanted, {version} installed")
    return missing


def packaging_digest(pyproject: dict) -> str:
    """A hash of the parts of pyproject.toml, other than requirements, that an editable install depends on."""
    project = pyproject["project"]
    part = {
        "build-system": pyproject.get("build-system"),
        "project": {key: project.get(key) for key in PACKAGING_KEYS},
        "setuptools": pyproject.get("tool", {}).get("setuptools"),
    }
    return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()


def why_install(stamp: Path, pyproject: dict, extras: list[str]) -> str | None:
    """Why an install is needed, in one phrase, or None when the environment satisfies pyproject.toml."""
    if not stamp.is_file():
        return f"no install stamp {stamp}"
    recorded = stamp.read_text().strip()
    # An empty stamp is the one older Makefiles touched: it records an install, not its packaging part.
    if recorded and recorded != packaging_digest(pyproject):
        return "pyproject.toml's build system, scripts or package list changed"
    if not _installed(pyproject["project"]["name"]):
        return f"{pyproject['project']['name']} itself is not installed"
    missing = unsatisfied(requirements(pyproject, extras))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        return f"{missing[0]}{more}"
    return None


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Command line: ``check STAMP`` (exit 1 with the reason when an install is needed) or ``write STAMP``."""
    parser = argparse.ArgumentParser(prog="python gptnb/installed.py", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["check", "write"])
    parser.add_argument("stamp", type=Path)
    parser.add_argument("--extra", action="append", default=[], help="an optional-dependencies group to check too")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args(argv)
    pyproject = tomllib.loads(args.pyproject.read_text())
    if args.action == "write":
        args.stamp.write_text(packaging_digest(pyproject) + "\n")
        return 0
    reason = why_install(args.stamp, pyproject, args.extra)
    if reason:
        print(f"installing: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
