"""Pausing a broker's process (SIGSTOP) so that it answers nothing more.

``os.kill`` returns before the signal has stopped every thread of the
process: a multi-threaded broker (noida-db) can still answer a request
sent right after it, which a test of "the broker does not answer" must not
meet. `pause` returns once every thread is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

__all__ = ["pause", "thread_states"]


def thread_states(pid: int) -> list[str]:
    """The scheduler state of each thread of ``pid`` (``T``: stopped)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            # The state follows the command's closing parenthesis.
            stat = task.joinpath("stat").read_text()
            states.append(stat.rsplit(")", 1)[1].split()[0])
    return states


async def pause(pid: int) -> None:
    """Stop ``pid`` and wait until every thread of it has stopped."""
    os.kill(pid, signal.SIGSTOP)
    for _ in range(5000):
        if all(state in "tT" for state in thread_states(pid) or ["R"]):
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop: {thread_states(pid)}")
