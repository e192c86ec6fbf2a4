"""What one leg of ``scripts/test-versions`` installs, from pyproject.toml.

    python3 ci/versions/requirements.py lowest    # one requirement a line

The requirements the unit layer needs besides the leg's own file
(``ci/versions/LEG.txt``): the runtime dependencies, the ``cli`` and
``fastapi`` extras, the ``testing`` extra's own packages (not the
devstack, which the tests import from ``devstack/src``) and the test tools
of the ``dev`` extra, all with the specifiers pyproject.toml gives them.
For the lowest leg it first checks that ``lowest.txt`` pins every runtime
dependency at its floor, so that raising a floor cannot leave the leg
testing the old one. Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

EXTRAS = ("cli", "fastapi", "testing")
"""Extras whose packages the unit layer imports."""

TEST_TOOLS = ("pytest", "pytest-asyncio", "pytest-timeout", "hypothesis", "httpx")
"""What the unit layer runs with, taken from the ``dev`` extra."""

_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)")


def name_of(requirement: str) -> str:
    """The normalised distribution name of a requirement string."""
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def release(version: str) -> tuple[int, ...]:
    """``2.8`` and ``2.8.0`` alike, for comparing pins with floors."""
    parts = [int(part) for part in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def floor_of(requirement: str) -> str | None:
    """The version after ``>=`` in a requirement, if any."""
    match = re.search(r">=\s*([0-9][0-9.]*)", requirement)
    return match.group(1) if match else None


def pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file, by name."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[name_of(name)] = version.strip()
    return found


def check_floors(project: dict[str, Any], lowest: Path) -> list[str]:
    """Every runtime dependency whose floor ``lowest`` does not pin."""
    pinned = pins(lowest)
    problems = []
    requirement: str
    for requirement in project["dependencies"]:
        name, floor = name_of(requirement), floor_of(requirement)
        if floor is None:
            problems.append(f"{requirement!r} in pyproject.toml has no >= floor")
        elif name not in pinned:
            problems.append(f"{lowest.name} does not pin {name} (floor {floor})")
        elif release(pinned[name]) != release(floor):
            problems.append(
                f"{lowest.name} pins {name}=={pinned[name]}, but pyproject.toml's"
                f" floor is {floor}"
            )
    return problems


def requirements(project: dict[str, Any]) -> list[str]:
    """The unit layer's requirements common to both legs."""
    extras: dict[str, list[str]] = project["optional-dependencies"]
    wanted: list[str] = list(project["dependencies"])
    for extra in EXTRAS:
        wanted += [
            r for r in extras[extra] if not name_of(r).startswith("otel-kafka-events")
        ]
    tools = [r for r in extras["dev"] if name_of(r) in TEST_TOOLS]
    missing = set(TEST_TOOLS) - {name_of(r) for r in tools}
    if missing:
        raise SystemExit(f"the dev extra lacks {', '.join(sorted(missing))}")
    return wanted + tools


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not (HERE / f"{argv[0]}.txt").is_file():
        print("usage: requirements.py lowest|newest", file=sys.stderr)
        return 2
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    if argv[0] == "lowest":
        problems = check_floors(project, HERE / "lowest.txt")
        if problems:
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            return 1
    print("\n".join(requirements(project)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
