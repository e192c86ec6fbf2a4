"""The Kafka event manager's own behaviour, with no broker and no socket.

A real `KafkaEventManager` runs end to end here (encoding, registration,
trace context, the ledger, settlement, telemetry) on `MemoryTransport` and
`MemorySchemaRegistry`: overflow policies, ``wait``, closing and starting
anew are each checked in milliseconds.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader
from opentelemetry.sdk.trace import TracerProvider

from otel_kafka_events import (
    BufferOptions,
    DeliveryFailure,
    EventManagerUninitializedError,
    EventPayload,
    KafkaEventManager,
    OverflowPolicy,
    TelemetryOptions,
)
from otel_kafka_events._encoding._codec import split_confluent_frame
from otel_kafka_events.errors import (
    EventBufferFullError,
    EventDeliveryAbortedError,
    EventDeliveryTimeoutError,
    EventManagerClosedError,
    EventRejectedError,
    EventTooLargeError,
    KafkaTopicError,
)
from otel_kafka_events.testing import (
    MemorySchemaRegistry,
    MemoryTransport,
    SendOutcome,
)


class Ping(EventPayload):
    """A small payload."""

    n: int


class Blob(EventPayload):
    """A payload whose size a test chooses."""

    data: str


def make_manager(
    transport: MemoryTransport | None = None,
    registry: MemorySchemaRegistry | None = None,
    **kwargs: Any,
) -> KafkaEventManager:
    kwargs.setdefault("retry_backoff", 0.01)
    kwargs.setdefault("backoff_interval", 0.05)
    return KafkaEventManager(
        application="shop",
        topic_prefix="events",
        transport=transport or MemoryTransport(),
        registry=registry or MemorySchemaRegistry(),
        **kwargs,
    )


async def test_events_go_end_to_end_inside_a_span() -> None:
    provider = TracerProvider()
    transport = MemoryTransport()
    registry = MemorySchemaRegistry()
    manager = make_manager(
        transport, registry, telemetry=TelemetryOptions(tracer_provider=provider)
    )
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    with provider.get_tracer("test").start_as_current_span("request") as span:
        events = [await publisher.publish(Ping(n=n)) for n in range(3)]
        trace_id = f"{span.get_span_context().trace_id:032x}"
    assert await manager.aclose() == 0
    schema = await registry.latest_schema("events.shop.ping")
    assert schema is not None
    parsed = parse_schema(schema)
    assert [r.topic for r in transport.records] == ["events.shop"] * 3
    for record, event in zip(transport.records, events, strict=True):
        traceparents = [v for k, v in record.headers if k == "traceparent"]
        assert len(traceparents) == 1
        assert traceparents[0].decode().split("-")[1] == trace_id
        _, body = split_confluent_frame(record.value)
        decoded = schemaless_reader(io.BytesIO(body), parsed, None)
        assert isinstance(decoded, dict)
        assert decoded["id"] == event.id
        assert decoded["trace_id"] == trace_id
    assert [r.offset for r in transport.records] == [0, 1, 2]


async def test_wait_returns_once_the_event_is_written() -> None:
    transport = MemoryTransport()
    manager = make_manager(transport)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    await publisher.publish(Ping(n=1), wait=True)
    assert len(transport.records) == 1
    assert manager.stats.delivered == 1
    await manager.aclose()


async def test_an_awaited_publish_hands_its_event_over_before_it_yields() -> None:
    transport = MemoryTransport()
    manager = make_manager(transport)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    waiting = asyncio.ensure_future(publisher.publish(Ping(n=1), wait=True))
    await asyncio.sleep(0)  # one step of the publish, to its wait
    assert len(transport.records) == 1  # written: no turn of the sender's
    assert not waiting.done()
    await waiting
    # Without wait, the event waits for the sender's turn (and whatever
    # else comes by then).
    await publisher.publish(Ping(n=2))
    assert len(transport.records) == 1
    await asyncio.sleep(0.05)
    assert len(transport.records) == 2
    assert manager.stats.delivered == 2
    await manager.aclose()


async def test_wait_raises_when_the_broker_refuses() -> None:
    transport = MemoryTransport()
    failures: list[DeliveryFailure] = []
    manager = make_manager(transport, on_delivery_error=failures.append)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    transport.fail_next(SendOutcome.REJECTED)
    with pytest.raises(EventRejectedError):
        await publisher.publish(Ping(n=1), wait=True)
    assert [f.reason for f in failures] == ["failed"]
    await manager.aclose()


async def test_wait_times_out_within_the_delivery_timeout() -> None:
    transport = MemoryTransport()
    transport.stalled = True
    manager = make_manager(transport, delivery_timeout=0.2)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    started = time.monotonic()
    with pytest.raises(EventDeliveryTimeoutError) as raised:
        await publisher.publish(Ping(n=1), wait=True)
    assert time.monotonic() - started < 0.2 + 1.0
    assert raised.value.waiting_for == "acknowledgement"
    await manager.aclose(timeout=1)


@pytest.mark.parametrize("policy", list(OverflowPolicy))
async def test_overflow_policies(policy: OverflowPolicy) -> None:
    transport = MemoryTransport()
    transport.stalled = True
    failures: list[DeliveryFailure] = []
    manager = make_manager(
        transport,
        buffer=BufferOptions(max_events=2, overflow=policy, block_timeout=0.05),
        on_delivery_error=failures.append,
    )
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    await publisher.publish(Ping(n=1))
    await publisher.publish(Ping(n=2))
    if policy is OverflowPolicy.RAISE:
        with pytest.raises(EventBufferFullError):
            await publisher.publish(Ping(n=3))
        assert manager.stats.published == 2
    else:
        await publisher.publish(Ping(n=3))
        assert manager.stats.dropped == 1
        assert [f.reason for f in failures] == ["dropped"]
    transport.release()
    await manager.aclose(timeout=1)
    assert len(transport.records) == 2


async def test_block_waits_for_room_and_then_accepts() -> None:
    transport = MemoryTransport()
    transport.stalled = True
    manager = make_manager(
        transport, buffer=BufferOptions(max_events=1, block_timeout=5)
    )
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    await publisher.publish(Ping(n=1))
    blocked = asyncio.ensure_future(publisher.publish(Ping(n=2)))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    transport.release()
    await asyncio.wait_for(blocked, 1)
    assert await manager.aclose(timeout=1) == 0
    assert len(transport.records) == 2


async def test_close_reports_what_it_could_not_deliver() -> None:
    transport = MemoryTransport()
    transport.stalled = True
    failures: list[DeliveryFailure] = []
    manager = make_manager(transport, on_delivery_error=failures.append)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    waiting = asyncio.ensure_future(publisher.publish(Ping(n=1), wait=True))
    await publisher.publish(Ping(n=2))
    await asyncio.sleep(0.02)
    started = time.monotonic()
    assert await manager.aclose(timeout=0.3) == 2
    assert time.monotonic() - started < 0.3 + 0.1
    with pytest.raises(EventDeliveryAbortedError):
        await waiting
    assert {f.reason for f in failures} == {"shutdown"}
    with pytest.raises(EventManagerClosedError):
        await publisher.publish(Ping(n=3))


async def test_a_second_close_keeps_its_own_timeout() -> None:
    transport = MemoryTransport()
    transport.stalled = True
    manager = make_manager(transport)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    await publisher.publish(Ping(n=1))
    first = asyncio.ensure_future(manager.aclose(timeout=15))
    await asyncio.sleep(0.05)
    first.cancel()
    started = time.monotonic()
    assert await manager.aclose(timeout=0.3) == 1
    assert time.monotonic() - started < 0.3 + 0.1


async def test_initialize_again_starts_anew() -> None:
    transport = MemoryTransport()
    manager = make_manager(transport)
    await manager.initialize()
    old = await manager.create_publisher("ping", Ping)
    await old.publish(Ping(n=1), wait=True)
    await manager.aclose()
    await manager.initialize()
    assert manager.stats.published == 0
    with pytest.raises(EventManagerUninitializedError):
        await old.publish(Ping(n=2))
    new = await manager.create_publisher("ping", Ping)
    await new.publish(Ping(n=3), wait=True)
    assert transport.starts == 2
    assert len(transport.records) == 2
    await manager.aclose()


async def test_close_while_initialize_is_connecting() -> None:
    transport = MemoryTransport()
    transport.reachable = False
    manager = make_manager(transport)
    await manager.initialize()  # goes on in the background
    transport.reachable = True
    assert await manager.aclose(timeout=1) == 0
    assert not transport.started


async def test_too_large_an_event_is_refused_at_publish() -> None:
    transport = MemoryTransport(max_request_size=2048)
    manager = make_manager(transport)
    await manager.initialize()
    publisher = await manager.create_publisher("blob", Blob)
    with pytest.raises(EventTooLargeError):
        await publisher.publish(Blob(data="x" * 2000))
    # One that fits with the request's framing is delivered.
    await publisher.publish(Blob(data="x" * 1500), wait=True)
    await manager.aclose()


async def test_a_missing_topic_is_refused_at_create_publisher() -> None:
    transport = MemoryTransport(auto_create_topics=False)
    manager = make_manager(transport)
    await manager.initialize()
    with pytest.raises(KafkaTopicError):
        await manager.create_publisher("ping", Ping)
    transport.create_topic("events.shop")
    await manager.create_publisher("ping", Ping)
    await manager.aclose()


async def test_an_unreachable_registry_registers_in_the_background() -> None:
    transport = MemoryTransport()
    registry = MemorySchemaRegistry()
    registry.available = False
    manager = make_manager(transport, registry)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    waiting = asyncio.ensure_future(publisher.publish(Ping(n=1), wait=True))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    registry.available = True
    await asyncio.wait_for(waiting, 2)
    assert len(transport.records) == 1
    await manager.aclose()


async def test_metrics_counters_never_go_backwards() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    manager = make_manager(telemetry=TelemetryOptions(meter_provider=provider))

    def published() -> int:
        data = reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "otel_kafka_events.events.published":
                        points: Any = metric.data.data_points
                        return int(sum(point.value for point in points))
        return 0

    for _ in range(2):
        await manager.initialize()
        publisher = await manager.create_publisher("ping", Ping)
        await publisher.publish(Ping(n=1), wait=True)
        await manager.aclose()
    assert published() == 2
    provider.shutdown()
