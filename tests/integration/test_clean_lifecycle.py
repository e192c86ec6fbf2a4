"""A manager's lifecycle leaves nothing behind, under ``python -X dev -W error``.

Development mode turns on asyncio's debug checks and ResourceWarnings;
``-W error`` makes any warning fatal. Each scenario runs in its own
interpreter with a broker and registry of its own (the outage pauses the
broker with batches in flight; the cancelled initializes are cancelled at
every stage of connecting; the close while initializing comes from another
task). Its stderr must not mention a destroyed task, an exception never
retrieved, or a warning, and no task may be left.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from ..broker_support import BROKER_KIND

SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, os, signal, sys
    from otel_kafka_events import EventPayload, KafkaEventManager
    from otel_kafka_events_devstack import LocalKafkaStack, make_broker

    class Ping(EventPayload):
        n: int

    async def scenario(bootstrap, registry, name):
        def new_manager():
            return KafkaEventManager(
                application="lifecycle", topic_prefix="clean",
                bootstrap_servers=bootstrap, registry_url=registry,
                delivery_timeout=30, retry_backoff=0.05,
                raise_on_error=name == "failed-initialize",
            )
        if name == "cancelled-initialize":
            # Cancelled at every stage of connecting: before the producer
            # starts, while it bootstraps, while the admin client starts.
            for delay in (0.0, 0.005, 0.02, 0.05, 0.1, 0.2):
                manager = new_manager()
                starting = asyncio.ensure_future(manager.initialize())
                await asyncio.sleep(delay)
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                await manager.aclose(timeout=2)
                gc.collect()
            print("cancelled initializes: 6")
            return
        if name == "closed-while-initializing":
            # aclose from another task while initialize is connecting.
            for delay in (0.0, 0.005, 0.02, 0.05):
                manager = new_manager()
                starting = asyncio.ensure_future(manager.initialize())
                await asyncio.sleep(delay)
                await manager.aclose(timeout=2)
                outcome = (await asyncio.gather(starting, return_exceptions=True))[0]
                print("initialize:", type(outcome).__name__)
                gc.collect()
            return
        manager = new_manager()
        if name == "failed-initialize":
            try:
                await manager.initialize()
            except Exception as exc:
                print("initialize failed:", type(exc).__name__)
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            print("tasks after a failed initialize:", len(others))
            await manager.aclose(timeout=2)
            return
        await manager.initialize()
        publisher = await manager.create_publisher("ping", Ping)
        await publisher.publish(Ping(n=0), wait=True)
        if name == "outage":
            # The broker stops answering with batches in flight.
            os.kill(pid, signal.SIGSTOP)
        for n in range(1, 51):
            await publisher.publish(Ping(n=n))
        if name == "normal":
            await publisher.publish(Ping(n=51), wait=True)
        print("undelivered:", await manager.aclose(timeout=2))
        if name == "outage":
            os.kill(pid, signal.SIGCONT)

    async def main(kind, name):
        global pid
        with LocalKafkaStack(make_broker(kind)) as stack:
            pid = stack.broker.process.pid
            await stack.create_topic("clean.lifecycle")
            bootstrap = stack.bootstrap_servers
            if name == "failed-initialize":
                bootstrap = "127.0.0.1:9"  # nothing listens there
            await scenario(bootstrap, stack.registry_url, name)
        # Whatever the manager left behind shows now: tasks still running,
        # and futures whose exception nobody read (reported when collected).
        await asyncio.sleep(0.2)
        gc.collect()
        await asyncio.sleep(0)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        print("leftover tasks:", len(leftover), [t.get_coro() for t in leftover])

    asyncio.run(main(*sys.argv[1:]))
    """
)

FORBIDDEN = (
    "Task was destroyed",
    "never retrieved",
    "ResourceWarning",
    "RuntimeWarning",
    "Traceback",
    "Unclosed",
)


def run(kind: str, scenario: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-X", "dev", "-W", "error", "-c", SCRIPT]
    return subprocess.run(
        [*command, kind, scenario],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize(
    "scenario",
    [
        "normal",
        "failed-initialize",
        "outage",
        "cancelled-initialize",
        "closed-while-initializing",
    ],
)
async def test_lifecycle_is_clean_under_dev_mode(scenario: str) -> None:
    # Each run starts a stack of its own: the outage pauses its broker.
    result = await asyncio.to_thread(run, BROKER_KIND, scenario)
    assert result.returncode == 0, result.stderr
    for text in FORBIDDEN:
        assert text not in result.stderr, result.stderr
    expected = {
        "normal": "undelivered: 0",
        "failed-initialize": "initialize failed: BrokerUnavailableError",
        "outage": "undelivered: 50",
        "cancelled-initialize": "cancelled initializes: 6",
        "closed-while-initializing": "initialize:",
    }[scenario]
    assert expected in result.stdout
    if scenario == "closed-while-initializing":
        # Connected before the close, or refused by it: nothing else.
        outcomes = {
            line.split(": ", 1)[1]
            for line in result.stdout.splitlines()
            if line.startswith("initialize: ")
        }
        assert outcomes <= {"NoneType", "EventManagerClosedError"}, result.stdout
    if scenario == "failed-initialize":
        assert "tasks after a failed initialize: 0" in result.stdout
    assert "leftover tasks: 0 []" in result.stdout, result.stdout
