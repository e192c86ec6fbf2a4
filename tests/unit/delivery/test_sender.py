"""The sender's timing rules, on the in-memory transport (no broker).

These are the rules a busy broker hides: an event times out by its own
deadline even while other partitions keep delivering, whether it is still
queued or already sent, and a retried batch keeps its order.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from otel_kafka_events import BufferOptions, DeliveryFailure
from otel_kafka_events._delivery._ledger import PendingEvent
from otel_kafka_events._delivery._listeners import DeliveryListener
from otel_kafka_events._delivery._session import DeliverySession
from otel_kafka_events._encoding._registry import SchemaRegistrar
from otel_kafka_events.errors import NotAcknowledgedError
from otel_kafka_events.testing import (
    MemorySchemaRegistry,
    MemoryTransport,
    SendError,
    SendOutcome,
)

TOPIC = "topic"


def event(name: str, n: int, timeout: float, waiter: Any = None) -> PendingEvent:
    value = bytearray(f"{name}:{n}".encode())
    return PendingEvent(
        name, value, None, 0, f"{name}-{n}", 10, time.monotonic() + timeout, waiter
    )


async def started_session(
    transport: MemoryTransport,
    failures: list[DeliveryFailure],
    *,
    partitions: int = 1,
    listeners: tuple[DeliveryListener, ...] = (),
) -> DeliverySession:
    transport.create_topic(TOPIC, partitions)
    session = DeliverySession(
        topic=TOPIC,
        transport=transport,
        registrar=SchemaRegistrar(MemorySchemaRegistry()),
        buffer=BufferOptions(),
        delivery_timeout=0.3,
        backoff=(0.01, 0.05),
        raise_on_error=False,
        listeners=listeners,
        on_delivery_error=failures.append,
        logger=structlog.get_logger(),
    )
    await session.start()
    return session


def values(transport: MemoryTransport, partition: int) -> list[bytes]:
    return [r.value for r in transport.records if r.partition == partition]


async def test_a_queued_event_times_out_while_another_partition_delivers() -> None:
    transport = MemoryTransport()
    transport.stalled_partitions.add(0)  # partition 0 never answers
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures, partitions=2)
    ledger, sender = session.ledger, session.sender
    ledger.register("slow", 0)
    ledger.register("fast", 1)
    ledger.accept(event("slow", 1, 0.5))  # goes out, never acknowledged
    sender.wake()
    await asyncio.sleep(0.05)
    # Queued behind it, with an earlier deadline (a shorter timeout).
    ledger.accept(event("slow", 2, 0.2))
    expired_at = None
    # Partition 1 keeps delivering the whole time.
    for n in range(60):
        ledger.accept(event("fast", n, 5))
        sender.wake()
        await asyncio.sleep(0.01)
        if expired_at is None and failures:
            expired_at = n
    assert [(f.event_id, type(f.error)) for f in failures] == [
        ("slow-2", TimeoutError),
        ("slow-1", NotAcknowledgedError),
    ]
    # It expired on time, with deliveries going on all along.
    assert expired_at is not None
    assert expired_at < 40
    assert ledger.stats.delivered == 60
    # The expired one was never handed to the transport.
    assert transport.held == 1
    await session.close(1.0)


async def test_each_event_of_a_sent_batch_fails_at_its_own_deadline() -> None:
    transport = MemoryTransport()
    transport.stalled = True
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    ledger = session.ledger
    ledger.register("t", 0)
    loop = asyncio.get_running_loop()
    old, young = loop.create_future(), loop.create_future()
    ledger.accept(event("t", 1, 0.1, old))
    ledger.accept(event("t", 2, 1.0, young))  # same batch
    session.sender.wake()
    started = time.monotonic()
    # The old event is reported at its own deadline, not the batch's.
    await asyncio.wait({old}, timeout=0.5)
    assert old.done()
    assert time.monotonic() - started < 0.3
    assert [f.event_id for f in failures] == ["t-1"]
    assert isinstance(failures[0].error, NotAcknowledgedError)
    # The broker answers after all: the young event is delivered.
    transport.release()
    await asyncio.wait_for(young, 1.0)
    assert ledger.stats.delivered == 1
    assert ledger.stats.failed == 1
    assert ledger.stats.buffered == 0
    await session.close(1.0)


async def test_a_retriable_failure_resends_in_order() -> None:
    transport = MemoryTransport(batch_size=8)
    transport.fail_next(SendOutcome.RETRIABLE)
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    session.ledger.register("t", 0)
    for n in range(5):
        session.ledger.accept(event("t", n, 5))
    session.sender.wake()
    await asyncio.sleep(0.2)
    assert values(transport, 0) == [f"t:{n}".encode() for n in range(5)]
    assert failures == []
    await session.close(1.0)


async def test_a_restart_retries_what_was_never_written() -> None:
    transport = MemoryTransport()
    transport.fail_next(SendOutcome.RESTART)
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    session.ledger.register("t", 0)
    for n in range(3):
        session.ledger.accept(event("t", n, 5))
    session.sender.wake()
    await asyncio.sleep(0.3)
    assert transport.starts == 2
    assert values(transport, 0) == [f"t:{n}".encode() for n in range(3)]
    assert failures == []
    await session.close(1.0)


async def test_no_answer_without_idempotence_is_not_resent() -> None:
    transport = MemoryTransport(idempotent=False)
    transport.fail_next(SendOutcome.NO_ANSWER, written=True)
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    session.ledger.register("t", 0)
    session.ledger.accept(event("t", 0, 5))
    session.sender.wake()
    await asyncio.sleep(0.1)
    # Written once, reported not acknowledged, never written twice.
    assert values(transport, 0) == [b"t:0"]
    assert [f.event_id for f in failures] == ["t-0"]
    assert session.ledger.stats.failed == 1
    # One type says "may be on the topic", whatever the transport answered.
    error = failures[0].error
    assert isinstance(error, NotAcknowledgedError)
    assert error.__cause__ is not None
    assert type(error.__cause__).__name__ in str(error)
    await session.close(1.0)


class _Batches(DeliveryListener):
    """Records every batch start and end."""

    name = "batches"

    def __init__(self) -> None:
        self.ended: list[tuple[int, int | None, BaseException | None]] = []

    def batch_started(self, partition: int, events: Any) -> Any:
        return len(events)

    def batch_ended(
        self,
        token: Any,
        partition: int,
        base_offset: int | None,
        error: BaseException | None,
    ) -> None:
        self.ended.append((token, base_offset, error))


async def test_batch_listeners_hear_how_each_send_ended() -> None:
    transport = MemoryTransport()
    transport.fail_next(SendOutcome.RETRIABLE)
    failures: list[DeliveryFailure] = []
    batches = _Batches()
    session = await started_session(transport, failures, listeners=(batches,))
    session.ledger.register("t", 0)
    for n in range(3):
        session.ledger.accept(event("t", n, 5))
    session.sender.wake()
    await asyncio.sleep(0.2)
    assert session.ledger.stats.delivered == 3
    (count, offset, error), (count2, offset2, error2) = batches.ended
    assert (count, offset) == (3, None)
    assert isinstance(error, SendError)
    assert (count2, offset2, error2) == (3, 0, None)
    await session.close(1.0)
