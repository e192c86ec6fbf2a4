"""Child-process helpers shared by every local server.

Every server started for tests must die with the process that started it, even
when that process is killed without running its ``finally`` blocks. On Linux
the child asks the kernel for ``SIGKILL`` when its parent exits
(``PR_SET_PDEATHSIG``); everywhere, an ``atexit`` hook stops what is left.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = [
    "find_free_port",
    "find_free_ports_below_ephemeral",
    "kill_with_parent",
    "spawn_process",
    "track_process",
    "wait_for_port",
]

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


_spawner_pool: concurrent.futures.ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _spawner() -> concurrent.futures.ThreadPoolExecutor:
    """The thread that starts child processes when not on the main thread.

    ``PR_SET_PDEATHSIG`` (see `kill_with_parent`) fires when the *thread* that
    forked the child exits, not the process. A server started from a
    short-lived thread, such as an ``asyncio.to_thread`` worker whose event
    loop has since closed, would be killed under a running test. This one
    thread lives until interpreter exit.
    """
    global _spawner_pool
    with _spawner_lock:
        if _spawner_pool is None:
            _spawner_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="devstack-spawner"
            )
        return _spawner_pool


def spawn_process(
    argv: Sequence[str],
    *,
    log: IO[bytes],
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child that dies with this process and is killed at exit.

    Output goes to ``log``. The child gets its own session so that a Ctrl-C in
    the terminal reaches only the test runner, which then stops it in order.
    """

    def popen() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            preexec_fn=kill_with_parent,
            start_new_session=True,
        )
        track_process(process)
        return process

    if threading.current_thread() is threading.main_thread():
        return popen()
    return _spawner().submit(popen).result()


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Linux's default when /proc cannot be read; also what most other systems use.
_EPHEMERAL_START = 32768
# The lowest port handed out below the ephemeral range: clear of the
# well-known and most registered services' ports.
_LOW_PORT_START = 20000


def _ephemeral_start() -> int:
    """The first port the kernel may pick for an outgoing connection."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return _EPHEMERAL_START


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def find_free_ports_below_ephemeral(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports of 127.0.0.1, free right now, that
    the kernel never picks as the local port of an outgoing connection.

    For servers that are killed and started again on the same port while
    clients keep reconnecting to it: any free port from `find_free_port` is
    in the ephemeral range, where one of those reconnecting clients may be
    given it as its own local port, and the restarted server then fails to
    bind. Ports are drawn at random between 20000 and the start of the
    ephemeral range, so parallel runs rarely meet.

    Raises
    ------
    RuntimeError
        If that range has no ``count`` free ports (or is too small).
    """
    low, high = _LOW_PORT_START, _ephemeral_start()
    if high - low < count:
        raise RuntimeError(
            f"no room for {count} ports between {low} and the ephemeral range"
            f" (from {high})"
        )
    chosen: list[int] = []
    for port in random.sample(range(low, high), k=min(high - low, 50 * count)):
        if _bindable(port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"found {len(chosen)} of {count} free ports below {high}")


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
