"""Finding a Java runtime of at least a given release on this machine.

Apache Kafka runs on Java 17, Apicurio Registry 3 needs 21 or newer. A
machine often has several JDKs, and the one on ``PATH`` is not always the
newest, so `find_java_at_least` looks at ``$JAVA_HOME``, then ``PATH``, then
every JDK under the usual installation folders, and picks the first that is
new enough.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "JVM_DIRECTORIES",
    "JavaRuntime",
    "describe_java_search",
    "find_java_at_least",
    "java_candidates",
]

JVM_DIRECTORIES: tuple[Path, ...] = (
    Path("/usr/lib/jvm"),
    Path("/usr/java"),
    Path("/opt/java"),
    Path("/Library/Java/JavaVirtualMachines"),
)
"""Where operating system packages and vendor installers put JDKs."""

# "17.0.2", "21", "25.0.3+9-LTS", or the old "1.8.0_392" form.
_RELEASE_VERSION = re.compile(r'^JAVA_VERSION="(?:1\.)?(\d+)', re.MULTILINE)
_VERSION_OUTPUT = re.compile(r'version "(?:1\.)?(\d+)')


@dataclass(frozen=True)
class JavaRuntime:
    """A ``java`` executable and its feature release (17, 21, 25...)."""

    executable: str
    release: int


def _release_of(executable: Path) -> int | None:
    """The feature release of ``executable``, or `None` if it will not say.

    Reads the ``release`` file beside ``bin/`` (instant), else runs
    ``java -version`` (a fraction of a second).
    """
    release_file = executable.resolve().parent.parent / "release"
    try:
        match = _RELEASE_VERSION.search(release_file.read_text())
    except OSError:
        match = None
    if match is not None:
        return int(match.group(1))
    try:
        result = subprocess.run(
            [str(executable), "-version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = _VERSION_OUTPUT.search(result.stderr + result.stdout)
    return int(found.group(1)) if found else None


def java_candidates() -> list[Path]:
    """Every ``java`` executable worth trying, best guesses first.

    ``$JAVA_HOME/bin/java``, the ``java`` on ``PATH``, then the JDKs under
    `JVM_DIRECTORIES` (newest-looking names first), without duplicates.
    """
    found: list[Path] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        found.append(Path(java_home) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        found.append(Path(on_path))
    for directory in JVM_DIRECTORIES:
        try:
            homes = sorted(directory.iterdir(), reverse=True)
        except OSError:
            continue
        for home in homes:
            # Linux layout, then the macOS bundle layout.
            found.append(home / "bin" / "java")
            found.append(home / "Contents" / "Home" / "bin" / "java")
    unique: list[Path] = []
    seen: set[Path] = set()
    for candidate in found:
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        real = candidate.resolve()
        if real not in seen:
            seen.add(real)
            unique.append(candidate)
    return unique


def find_java_at_least(release: int) -> JavaRuntime | None:
    """Return the first `java_candidates` entry of ``release`` or newer.

    Returns
    -------
    JavaRuntime or None
        `None` when no candidate is new enough; `describe_java_search` then
        says what was found.
    """
    for candidate in java_candidates():
        found = _release_of(candidate)
        if found is not None and found >= release:
            return JavaRuntime(str(candidate), found)
    return None


def describe_java_search(release: int) -> str:
    """A sentence for errors and skips: what is needed and what was found."""
    seen = [f"{path} ({_release_of(path) or '?'})" for path in java_candidates()]
    found = ", ".join(seen) if seen else "no java at all"
    places = ", ".join(str(d) for d in JVM_DIRECTORIES)
    return (
        f"needs Java {release} or newer (install a JDK {release}+, e.g. Temurin, "
        f"and set JAVA_HOME to it); looked at $JAVA_HOME, PATH and {places}, "
        f"found: {found}"
    )
