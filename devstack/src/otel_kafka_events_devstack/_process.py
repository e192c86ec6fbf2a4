"""Child-process helpers shared by the local brokers.

Every server started for tests must die with the process that started it, even
when that process is killed without running its ``finally`` blocks. On Linux
the child asks the kernel for ``SIGKILL`` when its parent exits
(``PR_SET_PDEATHSIG``); everywhere, an ``atexit`` hook stops what is left.
"""

from __future__ import annotations

import atexit
import ctypes
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable

__all__ = ["find_free_port", "kill_with_parent", "track_process", "wait_for_port"]

_PR_SET_PDEATHSIG = 1
_live_processes: weakref.WeakSet[subprocess.Popen[bytes]] = weakref.WeakSet()


def kill_with_parent() -> None:
    """Ask the kernel to SIGKILL this (child) process when its parent exits.

    Meant as ``preexec_fn`` for `subprocess.Popen`; a no-op off Linux.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def track_process(process: subprocess.Popen[bytes]) -> None:
    """Register a child so that interpreter exit kills it if still running."""
    _live_processes.add(process)


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_live_processes):
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int,
    timeout: float,
    *,
    alive: Callable[[], bool] = lambda: True,
    what: str = "server",
) -> None:
    """Wait until something accepts TCP connections on ``127.0.0.1:port``.

    Raises
    ------
    RuntimeError
        If ``alive()`` turns false (the process died) or the timeout passes.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")
