"""One third-party server run as a child process for the length of a test.

`ServerProcess` is the part that Apicurio Registry and the OpenTelemetry
Collector launchers share: a temporary work folder, a log file instead of the
test output, free ports picked again when a start loses a port race,
readiness judged by the subclass, and a graceful stop that falls back to
``SIGKILL``. The child dies with the process that started it (see
`spawn_process`).
"""

from __future__ import annotations

import abc
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path

from ._broker_base import spawn_process
from ._lifecycle import StartStop

__all__ = ["ServerProcess"]


class ServerProcess(StartStop):
    """A server child process on 127.0.0.1, started and stopped by its owner.

    Subclasses pick their ports in `_choose_ports`, give the command line in
    `_command` and say when the server is ready in `_is_ready`.

    Parameters
    ----------
    start_timeout
        Seconds to wait for readiness.
    stop_timeout
        Seconds to wait for a graceful exit before ``SIGKILL``.
    """

    name = "server"
    stop_signal: signal.Signals = signal.SIGTERM
    _START_ATTEMPTS = 3
    _LOG_TAIL_BYTES = 4000

    def __init__(self, *, start_timeout: float, stop_timeout: float) -> None:
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._remove_workdir: weakref.finalize[..., object] | None = None
        self._lock = threading.RLock()

    # -- subclass hooks ---------------------------------------------------------

    @abc.abstractmethod
    def _choose_ports(self) -> None:
        """Pick free ports for the next start attempt."""

    @abc.abstractmethod
    def _command(self, workdir: Path) -> list[str]:
        """The argv of the server, writing any configuration into ``workdir``."""

    @abc.abstractmethod
    def _is_ready(self, log: str) -> bool:
        """Whether the server serves, judged from its log so far (or a probe)."""

    def _environment(self) -> dict[str, str] | None:
        """The child's environment; `None` inherits this process's."""
        return None

    # -- public -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def workdir(self) -> Path | None:
        """The folder holding the log and configuration, while started."""
        return self._workdir

    @property
    def log_path(self) -> Path | None:
        """The file receiving the server's stdout and stderr, while started."""
        return None if self._workdir is None else self._workdir / f"{self.name}.log"

    def log_text(self) -> str:
        """Everything the server logged so far (empty before `start`)."""
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
            If it exits or is not ready in time, three times in a row (fresh
            ports each time); the message ends with the tail of its log.
        """
        with self._lock:
            if self.running:
                return
            if self._workdir is None:
                self._workdir = Path(
                    tempfile.mkdtemp(prefix=f"otel-kafka-events-{self.name}-")
                )
                # Also removed if the object is dropped without stop().
                self._remove_workdir = weakref.finalize(
                    self, shutil.rmtree, self._workdir, ignore_errors=True
                )
            for attempt in range(self._START_ATTEMPTS):
                self._choose_ports()
                try:
                    self._start_once(self._workdir)
                except RuntimeError:
                    if attempt == self._START_ATTEMPTS - 1:
                        self._cleanup()
                        raise
                else:
                    return

    def stop(self) -> None:
        """Stop the server (signal, then ``SIGKILL`` after `stop_timeout`) and
        remove its work folder. Idempotent."""
        with self._lock:
            self._terminate(graceful=True)
            self._cleanup()

    # -- internals ----------------------------------------------------------------

    def _cleanup(self) -> None:
        if self._remove_workdir is not None:
            self._remove_workdir()
            self._remove_workdir = None
        self._workdir = None

    def _start_once(self, workdir: Path) -> None:
        log_path = workdir / f"{self.name}.log"
        argv = self._command(workdir)
        with log_path.open("wb") as log:
            process = spawn_process(argv, log=log, env=self._environment(), cwd=workdir)
        self._process = process
        deadline = time.monotonic() + self.start_timeout
        what = f"{self.name} (pid {process.pid})"
        try:
            while not self._is_ready(self.log_text()):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{what} exited with code {process.returncode} before "
                        "it was ready"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{what} was not ready within {self.start_timeout} s"
                    )
                time.sleep(0.05)
        except RuntimeError as error:
            tail = self.log_text()[-self._LOG_TAIL_BYTES :].rstrip() or "(empty)"
            self._terminate(graceful=False)
            raise RuntimeError(f"{error}\n--- {log_path} (tail) ---\n{tail}") from None
        except BaseException:
            # Ctrl-C while waiting: no caller stops a server whose start failed.
            self._terminate(graceful=False)
            raise

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
