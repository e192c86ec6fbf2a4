"""A local broker behind a delaying proxy, run in a child process.

Scenario 9 needs a broker whose every connection crosses a `TcpProxy` that
holds each chunk for a while, as a network would. The proxy forwards in
threads; in the benchmark's own process those threads would wait for the
interpreter lock while the publish loop runs, and the delay would grow by up
to the lock's switch interval (5 ms) whenever the loop is busy. So the
broker and its proxy live in a child process of their own (``python -m
benchmarks._delayed_broker``), which prints one JSON line with the address
and stops the broker when its standard input closes.

The broker advertises the proxy's address, so clients reach the partition
leaders through it after bootstrap too (`TansuBroker` and
`ApacheKafkaBroker` with ``network_delay``; noida-db cannot advertise
another address than its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from otel_kafka_events_devstack import ApacheKafkaBroker, SubprocessBroker, TansuBroker

__all__ = ["DELAYABLE", "DelayedBroker", "delayed_broker"]

DELAYABLE = ("tansu", "kafka")
"""Broker kinds that can advertise a proxy's address."""

_ROOT = Path(__file__).resolve().parent.parent
_START_TIMEOUT = 180.0  # the first Apache Kafka start may fetch its jars
_STOP_TIMEOUT = 60.0


@dataclass(frozen=True)
class DelayedBroker:
    """What the child reports once its broker serves."""

    bootstrap_servers: str
    """The proxy's address (the one the broker advertises)."""
    broker_port: int
    """The broker's own listener, which clients must not use."""
    idempotence: bool
    name: str


def _make(kind: str, delay: float) -> SubprocessBroker:
    if kind == "tansu":
        return TansuBroker(network_delay=delay)
    if kind == "kafka":
        return ApacheKafkaBroker(network_delay=delay)
    raise _not_delayable(kind)


def _not_delayable(kind: str) -> ValueError:
    return ValueError(
        f"a {kind} broker cannot advertise a proxy's address;"
        f" use one of {', '.join(DELAYABLE)}"
    )


@contextlib.asynccontextmanager
async def delayed_broker(kind: str, delay: float) -> AsyncIterator[DelayedBroker]:
    """Start a ``kind`` broker behind a ``delay``-second proxy in a child
    process; stop both on exit.

    Raises
    ------
    ValueError
        If ``kind`` cannot advertise a proxy (noida-db).
    RuntimeError
        If the child fails to start the broker.
    """
    if kind not in DELAYABLE:
        raise _not_delayable(kind)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_ROOT), environment.get("PYTHONPATH", "")) if p
    )
    # A file, not a pipe: nobody reads the child's errors while it runs, and
    # a full pipe would block it.
    with tempfile.TemporaryFile() as errors:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks._delayed_broker",
            "--broker",
            kind,
            "--delay",
            repr(delay),
            cwd=_ROOT,
            env=environment,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), _START_TIMEOUT)
            if not line:
                await process.wait()
                errors.seek(0)
                tail = errors.read().decode(errors="replace").strip().splitlines()
                raise RuntimeError(
                    f"the delayed broker did not start: {' | '.join(tail[-5:])}"
                )
            yield DelayedBroker(**json.loads(line))
        finally:
            # Closing its input tells the child to stop the broker and exit.
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()


def main() -> None:
    """Child process: start the broker, report it, serve until stdin closes."""
    parser = argparse.ArgumentParser(description="A broker behind a delaying proxy.")
    parser.add_argument("--broker", choices=DELAYABLE, required=True)
    parser.add_argument("--delay", type=float, required=True)
    args = parser.parse_args()
    broker = _make(args.broker, args.delay)
    with broker:
        report = DelayedBroker(
            bootstrap_servers=broker.bootstrap_servers,
            broker_port=broker.port,
            idempotence=broker.capabilities.idempotent_producer,
            name=f"{broker.name} behind a {args.delay * 1000:g} ms proxy",
        )
        print(json.dumps(dataclasses.asdict(report)), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
