"""The common interface of the local Kafka-protocol brokers."""

from __future__ import annotations

import abc
import concurrent.futures
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ._lifecycle import StartStop
from ._process import find_free_port, kill_with_parent, track_process, wait_for_port

__all__ = ["BrokerCapabilities", "LocalBroker", "SubprocessBroker", "spawn_process"]


@dataclass(frozen=True)
class BrokerCapabilities:
    """What a broker implementation can and cannot do.

    Tests consult these flags instead of the broker's name, so that the list of
    broker-specific skips lives in one place (`skip_reason`).
    """

    idempotent_producer: bool
    """Accepts aiokafka's ``enable_idempotence=True``."""

    auto_creates_topics: bool
    """Creates a topic whenever a metadata request names it."""

    enforces_message_size: bool
    """Rejects records larger than ``message.max.bytes``."""

    keeps_data_across_restart: bool
    """Records survive `LocalBroker.restart`."""

    keeps_acknowledged_writes: bool
    """Every write the broker acknowledged survives `LocalBroker.restart`,
    including those acknowledged while it was shutting down."""

    consumer_groups: bool
    """Consumer groups join quickly and rebalance correctly."""


class LocalBroker(StartStop):
    """A Kafka-protocol broker run as a child process on 127.0.0.1.

    Use as a context manager, or call `start` and `stop`. `restart` stops the
    process and starts a new one on the same port, for outage tests.
    """

    name: str
    capabilities: BrokerCapabilities

    @property
    @abc.abstractmethod
    def bootstrap_servers(self) -> str:
        """``host:port`` for clients; valid once started."""

    @property
    @abc.abstractmethod
    def running(self) -> bool:
        """Whether the broker process is alive."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the broker and wait for the process to exit. Idempotent."""

    def kill(self) -> None:
        """Stop abruptly (SIGKILL where it matters); defaults to `stop`."""
        self.stop()

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()


# --- Brokers that are one child process listening on one port ---------------


_spawner_pool: concurrent.futures.ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _spawner() -> concurrent.futures.ThreadPoolExecutor:
    """The thread that starts broker processes when not on the main thread.

    ``PR_SET_PDEATHSIG`` (see `kill_with_parent`) fires when the *thread* that
    forked the child exits, not the process. A broker started from a
    short-lived thread, such as an ``asyncio.to_thread`` worker whose event
    loop has since closed, would be killed under a running test. This one
    thread lives until interpreter exit.
    """
    global _spawner_pool
    with _spawner_lock:
        if _spawner_pool is None:
            _spawner_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="local-broker-spawner"
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


class SubprocessBroker(LocalBroker):
    """A `LocalBroker` that is one child process listening on one port.

    Subclasses provide the command line (`_command`). This class picks the
    port, keeps it across `restart`, sends the child's output to
    `log_path` instead of the test output, waits for readiness and stops the
    child with `stop_signal`, falling back to ``SIGKILL``.

    Parameters
    ----------
    port
        Port on 127.0.0.1; 0 picks a free one at the first `start` and keeps
        it for the object's lifetime.
    workdir
        Directory for the log and any broker data. By default a temporary
        directory is created at the first `start` and removed by `stop`; a
        directory given here is kept.
    start_timeout, stop_timeout
        Seconds to wait for readiness, and for exit before ``SIGKILL``.
    """

    stop_signal: signal.Signals = signal.SIGINT
    ready_marker: str | None = None
    """Text the broker logs once it listens. Checked before the port, because
    a port can accept connections from someone else's socket."""

    _AUTO_PORT_ATTEMPTS = 3
    _LOG_TAIL_BYTES = 4000

    def __init__(
        self,
        *,
        port: int = 0,
        workdir: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._port = port
        self._port_is_fixed = port != 0
        self._given_workdir = Path(workdir) if workdir is not None else None
        self._workdir: Path | None = None
        self._remove_workdir: weakref.finalize[..., object] | None = None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        # restart() runs stop() and start() under the same lock.
        self._lock = threading.RLock()

    # -- subclass hooks ---------------------------------------------------

    @abc.abstractmethod
    def _command(self, port: int, workdir: Path) -> list[str]:
        """The argv that runs the broker on ``port``."""

    def _environment(self) -> dict[str, str]:
        """The child's environment; subclasses drop variables it would read."""
        return dict(os.environ)

    # -- LocalBroker --------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1; 0 until the first `start`."""
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        if self._port == 0:
            raise RuntimeError(f"{self.name} broker has not been started")
        return f"127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The current or most recent broker process (kept after it exits)."""
        return self._process

    @property
    def workdir(self) -> Path | None:
        """The directory holding the log and broker data, once started."""
        return self._workdir

    @property
    def log_path(self) -> Path | None:
        """The file receiving the broker's stdout and stderr, once started."""
        return None if self._workdir is None else self._workdir / f"{self.name}.log"

    def start(self) -> None:
        """Start the broker and wait until it is ready; no-op if running.

        Raises
        ------
        RuntimeError
            If the broker exits or is not ready in time; the message ends with
            the tail of its log.
        """
        with self._lock:
            if self.running:
                return
            workdir = self._ensure_workdir()
            # A port picked by find_free_port can be taken by someone else
            # before the broker binds it: pick another, but only while no
            # client can have seen the first one.
            attempts = 1 if self._port_is_fixed else self._AUTO_PORT_ATTEMPTS
            for attempt in range(attempts):
                if not self._port_is_fixed:
                    self._port = find_free_port()
                try:
                    self._start_once(workdir)
                except RuntimeError:
                    if attempt == attempts - 1:
                        raise
                else:
                    self._port_is_fixed = True
                    return

    def stop(self) -> None:
        """Stop gracefully and remove the temporary work dir. Idempotent."""
        with self._lock:
            self._terminate(graceful=True)
            self._cleanup_workdir()

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; the work dir is kept.

        `start` brings it back with whatever data the broker had saved; `stop`
        (or the context manager) still removes the temporary work dir.
        """
        with self._lock:
            self._terminate(graceful=False)

    def restart(self) -> None:
        """Stop gracefully and start again on the same port and work dir."""
        with self._lock:
            self._terminate(graceful=True)
            self.start()

    # -- internals ------------------------------------------------------------

    def _ensure_workdir(self) -> Path:
        if self._workdir is None:
            if self._given_workdir is not None:
                self._given_workdir.mkdir(parents=True, exist_ok=True)
                self._workdir = self._given_workdir
            else:
                self._workdir = Path(
                    tempfile.mkdtemp(prefix=f"otel-kafka-events-{self.name}-")
                )
                # Also removes it if the object is dropped without stop().
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
        # Append, so that the log of a restarted broker keeps its history.
        with log_path.open("ab") as log:
            log_start = log.tell()
            process = spawn_process(
                self._command(self._port, workdir),
                log=log,
                env=self._environment(),
                cwd=workdir,
            )
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
            # E.g. Ctrl-C while waiting: no caller will stop a broker whose
            # start() did not return.
            self._terminate(graceful=False)
            raise

    def _wait_ready(
        self, process: subprocess.Popen[bytes], log_path: Path, log_start: int
    ) -> None:
        deadline = time.monotonic() + self.start_timeout
        what = f"{self.name} broker (pid {process.pid})"
        if self.ready_marker is not None:
            marker = self.ready_marker.encode()
            while marker not in self._read_log(log_path, log_start):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{what} exited with code {process.returncode} "
                        f"before it was ready on port {self._port}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{what} was not ready within {self.start_timeout} s"
                    )
                time.sleep(0.01)
        wait_for_port(
            self._port,
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
    def _read_log(log_path: Path, offset: int) -> bytes:
        with log_path.open("rb") as log:
            log.seek(offset)
            return log.read()

    @classmethod
    def _log_tail(cls, log_path: Path, offset: int) -> str:
        try:
            text = cls._read_log(log_path, offset)[-cls._LOG_TAIL_BYTES :]
        except OSError as error:
            return f"(log unreadable: {error})"
        return text.decode(errors="replace").rstrip() or "(empty)"
