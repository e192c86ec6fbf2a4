"""The delivery queue's own bookkeeping, without a broker.

Everything that reaches Kafka is tested against real brokers elsewhere; this
module checks the order the queue keeps, which decides when expiry sees an
event, with a partition lookup standing in for broker metadata.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from otel_kafka_events import BufferOptions, EventPayload
from otel_kafka_events._delivery import DeliveryFailure, DeliveryQueue, PendingEvent
from otel_kafka_events._event_type import EventType

TOPIC = "test.events.queue_app"


class Ping(EventPayload):
    """A payload for the event types of these tests."""

    n: int


async def _partition_zero(event_type: EventType[Any]) -> int:
    return 0


async def _no_producer() -> Any:
    raise AssertionError("these tests never send")


def pending(name: str, age: float) -> PendingEvent:
    """An event of type ``name`` queued ``age`` seconds ago."""
    value = bytearray(b"\0\0\0\0\x01payload")
    return PendingEvent(
        name, value, None, 0, f"{name}-{age}", len(value), time.monotonic() - age
    )


def make_queue(failures: list[DeliveryFailure]) -> DeliveryQueue:
    return DeliveryQueue(
        topic=TOPIC,
        producer=_no_producer,
        partitions=_partition_zero,
        buffer=BufferOptions(),
        delivery_timeout=10.0,
        retry_backoff=0.1,
        raise_on_error=False,
        on_failure=failures.append,
        logger=structlog.get_logger(),
    )


async def test_events_of_a_late_registered_type_expire_on_time() -> None:
    failures: list[DeliveryFailure] = []
    queue = make_queue(failures)
    early = EventType("early", TOPIC, "queue_app", Ping)
    late = EventType("late", TOPIC, "queue_app", Ping)
    # The late type's event waits 20 s for its schema (timeout 10 s) while
    # the early type, registered at once, queues fresh events on partition 0.
    assert queue.offer(late, pending("late", age=20.0))
    early.set_schema_id(1)
    assert queue.offer(early, pending("early", age=1.0))
    await queue._promote_registered()
    assert queue.offer(early, pending("early", age=0.0))
    late.set_schema_id(2)
    await queue._promote_registered()

    # The overdue event is due now, not after the fresh ones ahead of it.
    assert queue._next_expiry() == 0.0
    queue._expire()
    assert [f.event_id for f in failures] == ["late-20.0"]
    assert queue.stats.buffered == 2
    assert queue.stats.failed == 1


async def test_promotion_keeps_each_types_order() -> None:
    queue = make_queue([])
    first = EventType("first", TOPIC, "queue_app", Ping)
    second = EventType("second", TOPIC, "queue_app", Ping)
    for age in (5.0, 3.0, 1.0):
        assert queue.offer(second, pending("second", age))
    first.set_schema_id(1)
    for age in (4.0, 2.0):
        assert queue.offer(first, pending("first", age))
    await queue._promote_registered()
    second.set_schema_id(2)
    await queue._promote_registered()
    assert queue.offer(second, pending("second", 0.0))

    [partition] = queue._partitions.values()
    ids = [event.event_id for event in partition]
    assert ids == [
        "second-5.0",
        "first-4.0",
        "second-3.0",
        "first-2.0",
        "second-1.0",
        "second-0.0",
    ]
