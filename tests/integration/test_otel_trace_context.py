"""Trace context in the event metadata, with the real OTel SDK and broker.

Spans come from a private SDK ``TracerProvider`` (global providers can be
set only once per process); the library reads the current span through the
OTel context API, so spans of any provider count.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_kafka_events import (
    EventPayload,
    KafkaEventManager,
    NoopEventManager,
    TelemetryOptions,
    TracedEventMetadata,
    decode,
)
from otel_kafka_events_devstack import LocalKafkaStack

from ..conftest import ManagerFactory

TRACE_FIELDS = ("trace_id", "span_id", "trace_flags")


class Visit(EventPayload):
    """A small payload."""

    page: str
    count: int


@pytest.fixture
def tracer() -> trace.Tracer:
    """A tracer of a private SDK provider that samples everything."""
    return TracerProvider().get_tracer("tests.trace_context")


def ids_of(span: trace.Span) -> dict[str, Any]:
    """The metadata values a span's context should produce."""
    context = span.get_span_context()
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "trace_flags": int(context.trace_flags),
    }


async def consume_decoded(
    stack: LocalKafkaStack, manager: KafkaEventManager, count: int
) -> list[tuple[Any, dict[str, Any]]]:
    """Close the manager (delivering everything), then read its topic."""
    assert await manager.aclose(timeout=30) == 0
    records = await stack.consume(manager.topic, count, timeout=30)
    return [(r, await decode(r.value, stack.registry_url)) for r in records]


async def test_event_carries_the_active_span_ids(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    tracer: trace.Tracer,
) -> None:
    manager = await make_kafka_manager()
    publisher = await manager.create_publisher("visit", Visit)
    with tracer.start_as_current_span("request") as span:
        event = await publisher.publish(Visit(page="/home", count=1))
    expected = ids_of(span)
    # The SDK sets the W3C "random trace id" bit too: flags are 3, not 1.
    assert expected["trace_flags"] == int(span.get_span_context().trace_flags)
    assert expected["trace_flags"] & TraceFlags.SAMPLED
    assert isinstance(event, TracedEventMetadata)
    assert {f: getattr(event, f) for f in TRACE_FIELDS} == expected

    [(_, decoded)] = await consume_decoded(local_kafka_stack, manager, 1)
    assert {f: decoded[f] for f in TRACE_FIELDS} == expected
    assert decoded["id"] == event.id
    assert decoded["page"] == "/home"


async def test_outside_any_span_the_fields_are_null_and_no_header(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = await make_kafka_manager()
    publisher = await manager.create_publisher("visit", Visit)
    assert not trace.get_current_span().get_span_context().is_valid
    event = await publisher.publish(Visit(page="/", count=0))
    assert isinstance(event, TracedEventMetadata)
    assert (event.trace_id, event.span_id, event.trace_flags) == (None, None, None)

    [(record, decoded)] = await consume_decoded(local_kafka_stack, manager, 1)
    # Null, never all-zero ids that would look like a (broken) trace.
    assert {f: decoded[f] for f in TRACE_FIELDS} == dict.fromkeys(TRACE_FIELDS)
    keys = [key for key, _ in record.headers or ()]
    assert "traceparent" not in keys
    assert "tracestate" not in keys


async def test_trace_context_off_gives_safirs_metadata_shape(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    tracer: trace.Tracer,
) -> None:
    manager = await make_kafka_manager(telemetry=TelemetryOptions(trace_context=False))
    publisher = await manager.create_publisher("visit", Visit)
    names = [f["name"] for f in publisher.avro_schema["fields"]]
    assert names == ["id", "application", "timestamp", "timestamp_ns", "page", "count"]
    with tracer.start_as_current_span("request") as span:
        event = await publisher.publish(Visit(page="/a", count=2))
    assert not isinstance(event, TracedEventMetadata)
    for field in TRACE_FIELDS:
        assert not hasattr(event, field)

    [(record, decoded)] = await consume_decoded(local_kafka_stack, manager, 1)
    # The registered writer schema has no trace fields either.
    assert list(decoded) == names
    # Headers are a separate option: the trace still reaches consumers.
    headers = dict(record.headers or ())
    ids = ids_of(span)
    assert headers["traceparent"].decode() == (
        f"00-{ids['trace_id']}-{ids['span_id']}-{ids['trace_flags']:02x}"
    )


async def test_context_is_captured_at_publish_time(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    tracer: trace.Tracer,
) -> None:
    manager = await make_kafka_manager()
    publisher = await manager.create_publisher("visit", Visit)

    async def handler(page: str) -> dict[str, Any]:
        # Each task has its own span; delivery happens later, elsewhere.
        with tracer.start_as_current_span(f"handle {page}") as span:
            await asyncio.sleep(0)
            await publisher.publish(Visit(page=page, count=0))
            await asyncio.sleep(0)
        return ids_of(span)

    expected = dict(
        zip(
            ["/a", "/b", "/c"],
            await asyncio.gather(handler("/a"), handler("/b"), handler("/c")),
            strict=True,
        )
    )
    # The spans are over; close (and deliver) from inside an unrelated span.
    with tracer.start_as_current_span("shutdown") as shutdown:
        decoded = await consume_decoded(local_kafka_stack, manager, 3)
    assert len({ids["trace_id"] for ids in expected.values()}) == 3
    for _, event in decoded:
        assert {f: event[f] for f in TRACE_FIELDS} == expected[event["page"]]
        assert event["span_id"] != ids_of(shutdown)["span_id"]


async def test_non_recording_span_with_valid_context_counts(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    # A sampled-out SDK span: not recording, but its ids are real and must
    # still go into the event (downstream may sample differently).
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("tests")
    manager = await make_kafka_manager()
    publisher = await manager.create_publisher("visit", Visit)
    with unsampled.start_as_current_span("sampled out") as span:
        assert not span.is_recording()
        await publisher.publish(Visit(page="/x", count=3))
    expected = ids_of(span)
    assert not expected["trace_flags"] & TraceFlags.SAMPLED

    [(record, decoded)] = await consume_decoded(local_kafka_stack, manager, 1)
    assert {f: decoded[f] for f in TRACE_FIELDS} == expected
    assert (
        dict(record.headers or ())["traceparent"]
        .decode()
        .endswith(f"-{expected['trace_flags']:02x}")
    )


async def test_remote_parent_context_is_used_as_is() -> None:
    # A context extracted from an incoming request (no local span at all).
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    manager = NoopEventManager("ctx_app", "test.events")
    await manager.initialize()
    publisher = await manager.create_publisher("visit", Visit)
    with trace.use_span(NonRecordingSpan(remote)):
        event = await publisher.publish(Visit(page="/", count=0))
    await manager.aclose()
    assert isinstance(event, TracedEventMetadata)
    assert event.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert event.span_id == "b7ad6b7169203331"
    assert event.trace_flags == 1
