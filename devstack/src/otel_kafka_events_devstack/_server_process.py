"""The one base class of every server the devstack runs as a child process.

Brokers (Tansu, noida-db, Apache Kafka), Apicurio Registry, the
OpenTelemetry Collector and Redis are each one third-party program listening
on 127.0.0.1. `ServerProcess` is what they share: a work folder (temporary,
or one the caller keeps), the child's output in a log file instead of the
test output, free ports picked again while a start loses a port race and
kept once a start succeeded, readiness judged from the log (and, where
asked, by connecting), a graceful stop that falls back to ``SIGKILL``, a
crash-like `kill`, and a `restart` on the same ports. The child dies with
the process that started it, and whatever is left at interpreter exit is
killed (see `spawn_process`).
"""

from __future__ import annotations

import abc
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

from ._lifecycle import StartStop
from ._process import spawn_process, wait_for_port

__all__ = ["ServerProcess"]


class ServerProcess(StartStop):
    """A server child process on 127.0.0.1, started and stopped by its owner.

    Subclasses pick their ports in `_choose_ports`, give the command line in
    `_command`, and say when the server is ready: with `ready_marker` (text
    it logs once it serves), or by overriding `_is_ready`; ports listed by
    `_listening_ports` must also accept a connection. Use as a context
    manager, or call `start` and `stop`.

    Parameters
    ----------
    workdir
        Folder for the log, configuration and any data. By default a
        temporary folder is created at the first `start` and removed by
        `stop`; a folder given here is kept.
    start_timeout
        Seconds to wait for readiness.
    stop_timeout
        Seconds to wait for a graceful exit before ``SIGKILL``.
    """

    name = "server"
    """Names the log file, the temporary folder and the process in errors."""

    stop_signal: signal.Signals = signal.SIGTERM
    """What `stop` sends first."""

    ready_marker: str | None = None
    """Text the server logs once it serves. Checked before any port, because
    a port can accept connections from someone else's socket."""

    _START_ATTEMPTS = 3
    _LOG_TAIL_BYTES = 4000
    _POLL_SECONDS = 0.02

    def __init__(
        self,
        *,
        workdir: str | os.PathLike[str] | None = None,
        start_timeout: float,
        stop_timeout: float,
    ) -> None:
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._given_workdir = Path(workdir) if workdir is not None else None
        self._workdir: Path | None = None
        self._remove_workdir: weakref.finalize[..., object] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        # Set by the first successful start: from then on a client may have
        # seen the addresses, so every later start reuses them.
        self._ports_fixed = False
        # restart() runs the stop and the start under the same lock.
        self._lock = threading.RLock()

    # -- subclass hooks ---------------------------------------------------------

    @abc.abstractmethod
    def _choose_ports(self) -> None:
        """Pick the ports of the next start attempt.

        Called before each attempt until a start succeeds; after that the
        ports are kept for the object's lifetime.
        """

    @abc.abstractmethod
    def _command(self, workdir: Path) -> list[str]:
        """The argv of the server, writing any configuration into ``workdir``."""

    def _environment(self) -> dict[str, str] | None:
        """The child's environment; `None` inherits this process's."""
        return None

    def _is_ready(self, log: str) -> bool:
        """Whether the server serves, judged from what this start logged."""
        return self.ready_marker is None or self.ready_marker in log

    def _listening_ports(self) -> Sequence[int]:
        """Ports that must accept a connection once `_is_ready` holds."""
        return ()

    def _start_attempts(self) -> int:
        """How many starts to try, each on fresh ports, before giving up."""
        return 1 if self._ports_fixed else self._START_ATTEMPTS

    # -- public -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The current or most recent child process (kept after it exits)."""
        return self._process

    @property
    def workdir(self) -> Path | None:
        """The folder holding the log, configuration and data, once started."""
        return self._workdir

    @property
    def log_path(self) -> Path | None:
        """The file receiving the server's stdout and stderr, once started."""
        return None if self._workdir is None else self._workdir / f"{self.name}.log"

    def log_text(self) -> str:
        """Everything the server logged so far, across restarts."""
        path = self.log_path
        if path is None:
            return ""
        try:
            return path.read_bytes().decode(errors="replace")
        except OSError:
            return ""

    def start(self) -> None:
        """Start the server and return once it is ready; no-op if running.

        Raises
        ------
        RuntimeError
            If it exits or is not ready in time, on every attempt (fresh
            ports each time, until a start has succeeded once); the message
            ends with the tail of its log.
        """
        with self._lock:
            if self.running:
                return
            workdir = self._ensure_workdir()
            attempts = self._start_attempts()
            for attempt in range(attempts):
                if not self._ports_fixed:
                    self._choose_ports()
                try:
                    self._start_once(workdir)
                except RuntimeError:
                    if attempt == attempts - 1:
                        if not self._ports_fixed:
                            # Never served: nothing in the folder to keep.
                            self._cleanup_workdir()
                        raise
                else:
                    self._ports_fixed = True
                    return

    def stop(self) -> None:
        """Stop gracefully (`stop_signal`, then ``SIGKILL`` after
        `stop_timeout`) and remove the temporary work folder. Idempotent."""
        with self._lock:
            self._terminate(graceful=True)
            self._cleanup_workdir()

    def kill(self) -> None:
        """``SIGKILL`` the server, as a crash would; the work folder is kept.

        `start` brings it back on the same ports with whatever data it had
        saved; `stop` (or the context manager) still removes the folder.
        """
        with self._lock:
            self._terminate(graceful=False)

    def restart(self) -> None:
        """Stop gracefully and start again on the same ports and folder."""
        with self._lock:
            self._terminate(graceful=True)
            self.start()

    # -- internals ----------------------------------------------------------------

    def _ensure_workdir(self) -> Path:
        if self._workdir is None:
            if self._given_workdir is not None:
                self._given_workdir.mkdir(parents=True, exist_ok=True)
                self._workdir = self._given_workdir
            else:
                self._workdir = Path(
                    tempfile.mkdtemp(prefix=f"otel-kafka-events-{self.name}-")
                )
                # Also removed if the object is dropped without stop().
                self._remove_workdir = weakref.finalize(
                    self, shutil.rmtree, self._workdir, ignore_errors=True
                )
        return self._workdir

    def _cleanup_workdir(self) -> None:
        if self._remove_workdir is not None:
            self._remove_workdir()
            self._remove_workdir = None
        self._workdir = None

    def _start_once(self, workdir: Path) -> None:
        log_path = workdir / f"{self.name}.log"
        argv = self._command(workdir)
        # Appended to, so that the log of a restarted server keeps its
        # history; readiness is judged on this start's part only.
        with log_path.open("ab") as log:
            log_start = log.tell()
            process = spawn_process(argv, log=log, env=self._environment(), cwd=workdir)
        self._process = process
        try:
            self._wait_ready(process, log_path, log_start)
        except RuntimeError as error:
            self._terminate(graceful=False)
            raise RuntimeError(
                f"{error}\n--- {log_path} (tail) ---\n"
                f"{self._log_tail(log_path, log_start)}"
            ) from None
        except BaseException:
            # E.g. Ctrl-C while waiting: no caller stops a server whose
            # start() did not return.
            self._terminate(graceful=False)
            raise

    def _wait_ready(
        self, process: subprocess.Popen[bytes], log_path: Path, log_start: int
    ) -> None:
        deadline = time.monotonic() + self.start_timeout
        what = f"{self.name} (pid {process.pid})"
        while not self._is_ready(self._read_log(log_path, log_start)):
            if process.poll() is not None:
                raise RuntimeError(
                    f"{what} exited with code {process.returncode} before it was ready"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} was not ready within {self.start_timeout} s"
                )
            time.sleep(self._POLL_SECONDS)
        for port in self._listening_ports():
            wait_for_port(
                port,
                max(deadline - time.monotonic(), 0.1),
                alive=lambda: process.poll() is None,
                what=what,
            )

    def _terminate(self, *, graceful: bool) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        if graceful:
            process.send_signal(self.stop_signal)
            try:
                process.wait(timeout=self.stop_timeout)
                return
            except subprocess.TimeoutExpired:
                pass
        process.kill()
        process.wait(timeout=self.stop_timeout)

    @staticmethod
    def _read_log(log_path: Path, offset: int) -> str:
        try:
            with log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    @classmethod
    def _log_tail(cls, log_path: Path, offset: int) -> str:
        text = cls._read_log(log_path, offset)[-cls._LOG_TAIL_BYTES :]
        return text.rstrip() or "(empty)"
