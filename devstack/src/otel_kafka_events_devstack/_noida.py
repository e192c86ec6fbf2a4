"""noida-db, a Rust binary that emulates Kafka (among others), run for tests.

It behaves closer to Apache Kafka than Tansu: idempotent and transactional
producers, message size limits, and topic data that survives a graceful
restart in the same data directory.
"""

from __future__ import annotations

import signal
import stat
from importlib.resources import as_file, files
from pathlib import Path

from ._broker_base import BrokerCapabilities, SubprocessBroker

__all__ = ["NoidaBroker", "noida_binary"]


def noida_binary() -> Path:
    """Return the path of the real ``noida-db`` executable in ``noida_db``.

    The ``noida-db`` console script is a Python wrapper that runs this binary
    as its child without forwarding signals, so stopping the wrapper would
    orphan the broker; hence the binary is run directly.

    Raises
    ------
    RuntimeError
        If ``noida-db`` is not installed or its wheel has no binary.
    """
    try:
        resource = files("noida_db") / "noida-db"
    except ModuleNotFoundError:
        raise RuntimeError(
            "the noida-db broker needs the noida-db package: "
            "pip install 'otel-kafka-events[testing]'"
        ) from None
    with as_file(resource) as path:
        binary = Path(path)
    if not binary.is_file():
        raise RuntimeError(f"noida-db has no binary at {binary}")
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:
        # The wrapper chmods the binary before every run for the same reason.
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


class NoidaBroker(SubprocessBroker):
    """noida-db with only its Kafka service, on 127.0.0.1.

    The data directory is `workdir`: a graceful `stop` or `restart` (SIGINT)
    makes noida-db save its topics there (``kafka.json``), and the next start
    loads them. `kill` sends SIGKILL, so nothing is saved. The temporary
    work dir is removed by `stop`. On start the binary logs a harmless
    ``GLIBC_2.39 not found`` warning.

    Consumer groups are marked unsupported: two aiokafka consumers of one group
    with ``enable_auto_commit=True`` never finish rebalancing.

    Parameters
    ----------
    port, workdir, start_timeout, stop_timeout
        See `SubprocessBroker`. Pass ``workdir`` to keep the data after `stop`.
    """

    name = "noida"
    capabilities = BrokerCapabilities(
        idempotent_producer=True,
        auto_creates_topics=True,
        enforces_message_size=True,
        keeps_data_across_restart=True,
        # It acknowledges produce requests during its shutdown save and
        # loses them: measured with aiokafka alone (idempotent, acks=all,
        # send_and_wait in a loop across a restart), 6 of 7 restarts lost the
        # last one or two acknowledged records, and the next send got
        # OutOfOrderSequenceNumber.
        keeps_acknowledged_writes=False,
        consumer_groups=False,
    )
    stop_signal = signal.SIGINT
    # Logged once every service listens; a port in use makes noida-db exit 1.
    ready_marker = "press Ctrl-C to stop"

    def _command(self, workdir: Path) -> list[str]:
        return [
            str(noida_binary()),
            "start",
            "--only",
            "kafka",
            "--host",
            "127.0.0.1",
            "--kafka-port",
            str(self.port),
            "--data-dir",
            str(workdir),
        ]
