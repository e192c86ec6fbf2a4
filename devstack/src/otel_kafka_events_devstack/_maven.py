"""Running Maven to fetch the Java peers (Apache Kafka, Apicurio Registry).

Both launchers resolve artifacts from Maven Central into a cache folder
outside the source tree; this module holds what they share: the pinned
dependency plugin, the lock that keeps concurrent test runs out of one
folder, and a time-limited run whose failure shows the end of Maven's output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["DEPENDENCY_PLUGIN", "locked", "output_tail", "run_maven"]

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
"""Pinned: Maven 3.8 would otherwise pick version 2.8 (2013)."""

_MAVEN_TIMEOUT = 900.0  # seconds one Maven run may take

_OUTPUT_TAIL_LINES = 40
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path``, so that concurrent test runs
    do not run Maven into the same folder at once."""
    if sys.platform == "win32":  # pragma: no cover - no flock; best effort
        yield
        return
    import fcntl

    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_maven(
    argv: Sequence[str], cwd: Path, task: str
) -> subprocess.CompletedProcess[str]:
    """Run Maven, its output captured, within ``_MAVEN_TIMEOUT`` seconds.

    Parameters
    ----------
    argv
        The command line.
    cwd
        Where to run it.
    task
        What Maven was asked to do, for the error (``"fetch Apicurio ..."``).

    Raises
    ------
    RuntimeError
        If Maven runs out of time, with the end of its output.
    """
    try:
        return subprocess.run(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=_MAVEN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        output = error.output if isinstance(error.output, str) else ""
        raise RuntimeError(
            f"Maven did not {task} within {_MAVEN_TIMEOUT:.0f} s:\n"
            f"{output_tail(output)}"
        ) from None


def output_tail(text: str, lines: int = _OUTPUT_TAIL_LINES) -> str:
    """The last ``lines`` lines of a tool's output, without colour codes."""
    # Maven 3.8 emits colour resets even in batch mode with colour off.
    text = _ANSI_ESCAPE.sub("", text)
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(no output)"
