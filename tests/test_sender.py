"""The sender's timing rules, on the in-memory transport (no broker).

These are the rules a busy broker hides: an event times out by its own
deadline even while other partitions keep delivering, and a batch is waited
for until the deadline of its youngest event, not its oldest.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from structlog import get_logger

from otel_kafka_events import BufferOptions, DeliveryFailure, NotAcknowledgedError
from otel_kafka_events._delivery._ledger import Ledger, PendingEvent
from otel_kafka_events._delivery._ratelimit import RateLimitedLog
from otel_kafka_events._delivery._sender import Sender
from otel_kafka_events._delivery._settle import Reporter
from otel_kafka_events._delivery._transport import Transport

from .fake_transport import FakeTransport, RetriableSendError


def event(name: str, n: int, timeout: float, waiter: Any = None) -> PendingEvent:
    value = bytearray(f"{name}:{n}".encode())
    return PendingEvent(
        name, value, None, 0, f"{name}-{n}", 10, time.monotonic() + timeout, waiter
    )


def make_sender(
    transport: FakeTransport, failures: list[DeliveryFailure]
) -> tuple[Ledger, Sender]:
    ledger = Ledger(BufferOptions())
    reporter = Reporter("topic", failures.append, RateLimitedLog(get_logger(), 10))

    def replace(_: Transport) -> None:
        raise AssertionError("no producer to replace here")

    sender = Sender(
        ledger,
        reporter,
        topic="topic",
        transport=lambda: transport,
        replace_transport=replace,
        retry_backoff=0.01,
        delivery_timeout=0.3,
    )
    return ledger, sender


async def test_an_event_times_out_while_another_partition_delivers() -> None:
    transport = FakeTransport(partitions=2)
    transport.stalled.add(0)  # partition 0 never answers
    failures: list[DeliveryFailure] = []
    ledger, sender = make_sender(transport, failures)
    ledger.register("slow", 0)
    ledger.register("fast", 1)
    sender.start()
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
    assert all(b"slow:2" not in h.batch.records for h in transport.held)
    await sender.stop(TimeoutError(), TimeoutError())


async def test_a_batch_waits_for_its_youngest_event() -> None:
    transport = FakeTransport(partitions=1)
    transport.stalled.add(0)
    failures: list[DeliveryFailure] = []
    ledger, sender = make_sender(transport, failures)
    ledger.register("t", 0)
    ledger.accept(event("t", 1, 0.1))  # old
    ledger.accept(event("t", 2, 1.0))  # young, same batch
    sender.start()
    await asyncio.sleep(0.3)
    # Past the old event's deadline, but the batch is still out.
    assert failures == []
    transport.release()
    await asyncio.sleep(0.05)
    assert ledger.stats.delivered == 2
    assert failures == []
    await sender.stop(TimeoutError(), TimeoutError())


async def test_a_retriable_failure_resends_in_order() -> None:
    transport = FakeTransport(partitions=1, capacity=2)
    transport.failures.append(RetriableSendError("lost"))
    failures: list[DeliveryFailure] = []
    ledger, sender = make_sender(transport, failures)
    ledger.register("t", 0)
    for n in range(5):
        ledger.accept(event("t", n, 5))
    sender.start()
    await asyncio.sleep(0.2)
    assert transport.logs[0] == [f"t:{n}".encode() for n in range(5)]
    assert failures == []
    await sender.stop(TimeoutError(), TimeoutError())


async def test_batch_spans_end_with_the_outcome_of_each_send() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )
    from opentelemetry.trace import StatusCode

    from otel_kafka_events._telemetry._spans import BatchSpans

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    transport = FakeTransport(partitions=1, capacity=10)
    transport.failures.append(RetriableSendError("lost"))
    failures: list[DeliveryFailure] = []
    ledger = Ledger(BufferOptions())
    reporter = Reporter("topic", failures.append, RateLimitedLog(get_logger(), 10))
    sender = Sender(
        ledger,
        reporter,
        topic="topic",
        transport=lambda: transport,
        replace_transport=lambda _: None,
        retry_backoff=0.01,
        delivery_timeout=1,
        batch_spans=BatchSpans("topic", provider),
    )
    ledger.register("t", 0)
    for n in range(3):
        ledger.accept(event("t", n, 5))
    sender.start()
    await asyncio.sleep(0.2)
    assert ledger.stats.delivered == 3
    await sender.stop(TimeoutError(), TimeoutError())
    lost, sent = exporter.get_finished_spans()
    # The first send failed (and was retried): its span says so.
    assert lost.status.status_code is StatusCode.ERROR
    assert (lost.attributes or {})["error.type"] == "RetriableSendError"
    assert sent.status.status_code is StatusCode.UNSET
    assert (sent.attributes or {})["messaging.kafka.offset"] == 0
    assert (sent.attributes or {})["messaging.batch.message_count"] == 3
