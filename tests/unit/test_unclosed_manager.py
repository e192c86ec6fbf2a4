"""A manager that is never closed says how many events it did not deliver.

Forgetting ``await manager.aclose()`` loses the events still buffered. When
such a manager is garbage-collected, or is still open when the interpreter
exits, it logs a warning naming the application and the count, and issues
a `ResourceWarning` (shown under ``python -X dev``). A closed manager, or one
with nothing pending, says nothing.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import structlog

from otel_kafka_events import EventPayload, KafkaEventManager
from otel_kafka_events.testing import MemorySchemaRegistry, MemoryTransport

WARNING = (
    "KafkaEventManager of application 'shop' was not closed: 3 events accepted"
    " by publish() were never delivered; await manager.aclose() before the event"
    " loop stops (it delivers pending events within close_timeout)"
)


class Ping(EventPayload):
    """A small payload."""

    n: int


async def open_manager_with_pending(count: int) -> KafkaEventManager:
    """A manager whose transport holds every send: events stay pending."""
    transport = MemoryTransport()
    transport.create_topic("events.shop")
    transport.stalled = True
    manager = KafkaEventManager(
        application="shop",
        topic_prefix="events",
        transport=transport,
        registry=MemorySchemaRegistry(),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    for n in range(count):
        await publisher.publish(Ping(n=n))
    return manager


def forget(managers: list[KafkaEventManager]) -> None:
    """Drop the last references to the managers, and collect them."""
    managers.clear()
    gc.collect()


async def test_a_collected_manager_reports_its_undelivered_events() -> None:
    managers = [await open_manager_with_pending(3)]
    assert managers[0].stats.buffered == 3
    with (
        structlog.testing.capture_logs() as logs,
        pytest.warns(ResourceWarning) as caught,
    ):
        forget(managers)
    [entry] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert entry["event"] == WARNING
    assert (entry["application"], entry["undelivered"]) == ("shop", 3)
    assert [str(warning.message) for warning in caught] == [WARNING]


async def test_a_closed_manager_reports_nothing() -> None:
    manager = await open_manager_with_pending(3)
    assert await manager.aclose(timeout=0.1) == 3  # failed, and said so
    with structlog.testing.capture_logs() as logs, warnings.catch_warnings():
        warnings.simplefilter("error")
        del manager
        gc.collect()
    assert logs == []


async def test_a_manager_with_nothing_pending_reports_nothing() -> None:
    manager = await open_manager_with_pending(0)
    with structlog.testing.capture_logs() as logs, warnings.catch_warnings():
        warnings.simplefilter("error")
        del manager
        gc.collect()
    assert logs == []


# A program that forgets aclose(): its manager is still referenced (a module
# global) when the interpreter exits.
FORGETFUL = textwrap.dedent(
    """
    import asyncio

    from otel_kafka_events import EventPayload, KafkaEventManager
    from otel_kafka_events.testing import MemorySchemaRegistry, MemoryTransport


    class Ping(EventPayload):
        n: int


    transport = MemoryTransport()
    transport.create_topic("events.shop")
    transport.stalled = True
    manager = KafkaEventManager(
        application="shop",
        topic_prefix="events",
        transport=transport,
        registry=MemorySchemaRegistry(),
    )


    async def main():
        await manager.initialize()
        publisher = await manager.create_publisher("ping", Ping)
        for n in range(3):
            await publisher.publish(Ping(n=n))


    asyncio.run(main())
    print("main returned")
    """
)


@pytest.mark.parametrize("dev_mode", [False, True], ids=["plain", "dev-mode"])
def test_a_manager_open_at_exit_reports_its_undelivered_events(
    tmp_path: Path, dev_mode: bool
) -> None:
    script = tmp_path / "forgetful.py"
    script.write_text(FORGETFUL)
    flags = ["-X", "dev"] if dev_mode else []
    done = subprocess.run(
        [sys.executable, *flags, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out_lines = done.stdout.splitlines()
    assert out_lines[0] == "main returned"
    # The log line (structlog's default output), after main returned.
    assert WARNING in done.stdout.split("main returned", 1)[1]
    assert (f"ResourceWarning: {WARNING}" in done.stderr) is dev_mode
