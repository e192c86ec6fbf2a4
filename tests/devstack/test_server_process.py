"""`ServerProcess`, the one base of every launcher, with a stand-in server.

The stand-in is a few lines of Python that binds its port, says so in its
log and exits on SIGTERM, or misbehaves on request; the brokers, Apicurio,
the Collector and Redis get the same behaviour from the base (their own
tests run the real programs).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_kafka_events_devstack import ServerProcess
from otel_kafka_events_devstack._process import (
    find_free_port,
    find_free_ports_below_ephemeral,
)

pytestmark = pytest.mark.timeout(60)

_SERVER = textwrap.dedent(
    """
    import signal, socket, sys, time

    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "exit":
        print("bad configuration", flush=True)
        sys.exit(3)
    if mode == "slow":
        time.sleep(60)
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))  # fails if the port is taken
    sock.listen()

    def stop(*_):
        print("stopping", flush=True)
        sys.exit(0)

    signal.signal(
        signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else stop
    )
    print(f"serving on {port}", flush=True)
    while True:
        time.sleep(1)
    """
)


class StandIn(ServerProcess):
    """A server that serves on one port once it logged ``serving on``."""

    name = "stand-in"
    ready_marker = "serving on"

    def __init__(
        self,
        script: Path,
        mode: str = "serve",
        *,
        ports: Iterator[int] | None = None,
        workdir: Path | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        super().__init__(
            workdir=workdir, start_timeout=start_timeout, stop_timeout=stop_timeout
        )
        self.script = script
        self.mode = mode
        self.ports = ports
        self.port = 0
        self.chosen: list[int] = []

    def _choose_ports(self) -> None:
        self.port = next(self.ports) if self.ports is not None else find_free_port()
        self.chosen.append(self.port)

    def _command(self, workdir: Path) -> list[str]:
        return [sys.executable, str(self.script), str(self.port), self.mode]

    def _listening_ports(self) -> list[int]:
        return [self.port]


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "server.py"
    path.write_text(_SERVER)
    return path


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_start_serves_and_stop_cleans_up(script: Path) -> None:
    server = StandIn(script)
    with server:
        process, workdir = server.process, server.workdir
        assert server.running
        assert accepts_connections(server.port)
        assert workdir is not None
        assert f"serving on {server.port}" in server.log_text()
    server.stop()  # idempotent

    assert process is not None
    assert process.returncode == 0  # SIGTERM stopped it, not the SIGKILL
    assert not server.running
    assert not workdir.exists()
    assert server.log_text() == ""


def test_restart_keeps_ports_folder_and_log_history(script: Path) -> None:
    with StandIn(script) as server:
        first = server.process
        port, workdir = server.port, server.workdir

        server.restart()

        assert server.running
        assert server.process is not first
        assert (server.port, server.workdir) == (port, workdir)
        assert server.chosen == [port]
        log = server.log_text()
        assert log.count(f"serving on {port}") == 2
        assert log.count("stopping") == 1


def test_kill_is_a_crash_and_start_comes_back(script: Path) -> None:
    with StandIn(script) as server:
        process, port, workdir = server.process, server.port, server.workdir
        assert process is not None

        server.kill()

        assert process.returncode == -signal.SIGKILL
        assert server.workdir == workdir
        assert workdir is not None
        assert workdir.is_dir()
        server.start()
        assert server.port == port
        assert accepts_connections(port)


def test_a_lost_port_race_is_retried_on_a_fresh_port(script: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        free = find_free_port()

        with StandIn(script, ports=iter([busy, free])) as server:
            assert server.chosen == [busy, free]
            assert server.port == free
            # The failed attempt's output stays in the log.
            assert "Address already in use" in server.log_text()


def test_a_server_that_exits_fails_with_its_log_and_leaves_nothing(
    script: Path,
) -> None:
    server = StandIn(script, "exit")

    with pytest.raises(RuntimeError) as failure:
        server.start()

    message = str(failure.value)
    assert "stand-in (pid " in message
    assert "exited with code 3 before it was ready" in message
    assert message.rstrip().endswith("bad configuration")
    assert len(server.chosen) == 3  # three attempts, fresh ports each
    assert not server.running
    assert server.workdir is None  # the temporary folder is gone


def test_a_server_not_ready_in_time_is_killed(script: Path) -> None:
    server = StandIn(script, "slow", start_timeout=0.3)

    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"was not ready within 0\.3 s"):
        server.start()

    assert time.monotonic() - started < 10
    assert server.process is not None
    assert server.process.returncode == -signal.SIGKILL


def test_stop_falls_back_to_sigkill(script: Path) -> None:
    server = StandIn(script, "stubborn", stop_timeout=0.3)
    server.start()
    process = server.process

    server.stop()

    assert process is not None
    assert process.returncode == -signal.SIGKILL


def test_a_given_workdir_is_kept(script: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "kept"
    with StandIn(script, workdir=workdir) as server:
        assert server.log_path == workdir / "stand-in.log"

    assert (workdir / "stand-in.log").is_file()


_LEAVES_IT_RUNNING = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from test_server_process import StandIn
    from pathlib import Path

    server = StandIn(Path(sys.argv[2]))
    server.start()
    print(server.process.pid, server.port, flush=True)
    # Exits without stop(): the exit hook must not leave the child behind.
    """
)


def test_a_child_left_running_is_killed_at_exit(script: Path) -> None:
    here = Path(__file__).resolve().parent
    result = subprocess.run(
        [sys.executable, "-c", _LEAVES_IT_RUNNING, str(here), str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pid, port = (int(field) for field in result.stdout.split())

    assert not Path(f"/proc/{pid}").exists()
    assert not accepts_connections(port)


def test_ports_below_the_ephemeral_range_are_free_and_distinct() -> None:
    ephemeral = int(
        Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
    )

    ports = find_free_ports_below_ephemeral(6)

    assert len(set(ports)) == 6
    for port in ports:
        assert 20000 <= port < ephemeral
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
