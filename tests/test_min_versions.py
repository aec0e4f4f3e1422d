"""`.ci/min-versions.txt` (what `make test-min` tests against) pins each dependency at the floor pyproject declares."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
# Declared, but tested at a later release: the header of .ci/min-versions.txt says why.
NOT_EXERCISED = {"torch"}


def pins() -> dict[str, Version]:
    """name -> pinned version of each `name==version` line of .ci/min-versions.txt."""
    pinned = {}
    for line in (ROOT / ".ci" / "min-versions.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f".ci/min-versions.txt: {line!r} is not name==version"
            pinned[canonicalize_name(name)] = Version(version)
    return pinned


def floors() -> dict[str, Version]:
    """name -> the `>=` floor of each of pyproject.toml's [project] dependencies."""
    declared = {}
    for text in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(text)
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert len(lower) == 1, f"pyproject.toml: {text!r} needs one >= floor"
        declared[canonicalize_name(requirement.name)] = Version(lower[0])
    return declared


def test_every_dependency_is_pinned_at_its_declared_floor():
    pinned = pins()
    for name, floor in floors().items():
        assert name in pinned, f"{name} is a dependency but has no line in .ci/min-versions.txt"
        if name in NOT_EXERCISED:
            assert pinned[name] >= floor, f"{name}: pinned {pinned[name]} is below its floor {floor}"
        else:
            assert pinned[name] == floor, (
                f"{name}: pyproject's floor is {floor}, .ci/min-versions.txt pins {pinned[name]}"
            )
