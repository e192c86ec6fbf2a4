"""The common interface of the local Kafka-protocol brokers.

`LocalBroker` is what a test or `LocalKafkaStack` relies on; `SubprocessBroker`
is a broker that is one child process on one port, a `ServerProcess` with a
bootstrap address.
"""

from __future__ import annotations

import abc
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from ._lifecycle import StartStop
from ._process import find_free_port
from ._server_process import ServerProcess

__all__ = ["BrokerCapabilities", "LocalBroker", "SubprocessBroker"]


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

    @property
    def replication_factor(self) -> int:
        """Replicas each topic created for tests gets: 1 on a single node."""
        return 1

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


class SubprocessBroker(ServerProcess, LocalBroker):
    """A `LocalBroker` that is one child process listening on one port.

    Subclasses provide the command line (`ServerProcess._command`, reading
    `port`) and usually a `ready_marker`. The base class picks the port,
    keeps it across `restart`, `kill` and `stop`, sends the child's output
    to `log_path`, waits until the marker is logged and the port accepts
    connections, and stops the child with `stop_signal` (``SIGINT`` unless
    a broker says otherwise), falling back to ``SIGKILL``.

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

    def __init__(
        self,
        *,
        port: int = 0,
        workdir: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            workdir=workdir, start_timeout=start_timeout, stop_timeout=stop_timeout
        )
        self._requested_port = port
        self._port = port

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1; 0 until the first `start`."""
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        if self._port == 0:
            raise RuntimeError(f"{self.name} broker has not been started")
        return f"127.0.0.1:{self._port}"

    # -- ServerProcess ------------------------------------------------------------

    def _choose_ports(self) -> None:
        self._port = self._requested_port or find_free_port()

    def _start_attempts(self) -> int:
        # A port the caller chose is not ours to replace.
        return 1 if self._requested_port else super()._start_attempts()

    def _listening_ports(self) -> Sequence[int]:
        return (self._port,)

    def _environment(self) -> dict[str, str]:
        """The child's environment; subclasses drop variables it would read."""
        return dict(os.environ)
