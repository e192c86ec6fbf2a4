"""Redis for tests of arq workers: Debian's ``redis-server``, on 127.0.0.1.

Only the arq integration (`otel_kafka_events.arq`) needs it. Nothing is
written to disk: no RDB snapshots, no append-only file, and the server
stops with its owner.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ._process import find_free_port
from ._server_process import ServerProcess

__all__ = ["RedisServer", "redis_server_binary"]


def redis_server_binary() -> Path:
    """The ``redis-server`` executable on the ``PATH``.

    Raises
    ------
    RuntimeError
        If there is none (``apt-get install redis-server`` on Debian).
    """
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "no redis-server on PATH: install it (apt-get install redis-server)"
        )
    return Path(found)


class RedisServer(ServerProcess):
    """A throwaway Redis server on 127.0.0.1, on a free port.

    Parameters
    ----------
    start_timeout
        Seconds to wait until it accepts connections.
    stop_timeout
        Seconds to wait for it to exit before it is killed.

    Examples
    --------
    >>> with RedisServer() as redis:  # doctest: +SKIP
    ...     settings = arq.connections.RedisSettings(host=redis.host, port=redis.port)
    """

    name = "redis"
    ready_marker = "Ready to accept connections"

    def __init__(self, *, start_timeout: float = 20.0, stop_timeout: float = 5.0):
        super().__init__(start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.host = "127.0.0.1"
        self.port = 0

    def _choose_ports(self) -> None:
        self.port = find_free_port()

    def _command(self, workdir: Path) -> list[str]:
        return [
            str(redis_server_binary()),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--protected-mode",
            "yes",
        ]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT``."""
        return f"redis://{self.host}:{self.port}"
