"""PRODUCER spans (``producer_spans=True``) with the real SDK and broker."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from otel_kafka_events import (
    BufferOptions,
    EventDeliveryError,
    EventPayload,
    KafkaEventManager,
    KafkaEventPublisher,
    OverflowPolicy,
    TelemetryOptions,
    decode,
)
from otel_kafka_events.errors import EventBufferFullError, EventTooLargeError
from otel_kafka_events_devstack import LocalKafkaStack

from ..conftest import TOPIC_PREFIX, ManagerFactory, unique_application


class Upload(EventPayload):
    """A small payload."""

    name: str
    size: int


class Note(EventPayload):
    """A second event type (it may land on another partition)."""

    text: str


class Sdk:
    """A private TracerProvider recording finished spans in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests.spans")

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


@pytest.fixture
def sdk() -> Sdk:
    return Sdk()


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest_asyncio.fixture
async def unreachable_manager(
    local_kafka_stack: LocalKafkaStack, sdk: Sdk
) -> AsyncIterator[Callable[..., Awaitable[KafkaEventManager]]]:
    """Build managers whose broker address is a closed port."""
    managers: list[KafkaEventManager] = []

    async def factory(**kwargs: Any) -> KafkaEventManager:
        manager = KafkaEventManager(
            application=unique_application(),
            topic_prefix=TOPIC_PREFIX,
            bootstrap_servers=f"127.0.0.1:{closed_port()}",
            registry_url=local_kafka_stack.registry_url,
            raise_on_error=False,
            retry_backoff=0.05,
            telemetry=TelemetryOptions(
                producer_spans=True, tracer_provider=sdk.provider
            ),
            **kwargs,
        )
        managers.append(manager)
        await manager.initialize()
        return manager

    yield factory
    for manager in managers:
        await manager.aclose(timeout=5)


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_producer_span_follows_the_messaging_conventions(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack, sdk: Sdk
) -> None:
    manager = await make_kafka_manager(
        partitions=3,
        telemetry=TelemetryOptions(producer_spans=True, tracer_provider=sdk.provider),
    )
    uploads = await manager.create_publisher("upload", Upload)
    notes = await manager.create_publisher("note", Note)
    events = []
    with sdk.tracer.start_as_current_span("request") as caller:
        for index in range(3):
            events.append(await uploads.publish(Upload(name=f"f{index}", size=index)))
        events.append(await notes.publish(Note(text="hello")))
    assert await manager.aclose(timeout=30) == 0

    records = await local_kafka_stack.consume(manager.topic, 4, timeout=30)
    delivered = {}
    for record in records:
        decoded = await decode(record.value, local_kafka_stack.registry_url)
        delivered[str(decoded["id"])] = record
    spans = sdk.finished(f"send {manager.topic}")
    assert len(spans) == 4
    caller_context = caller.get_span_context()
    for span in spans:
        attributes = attributes_of(span)
        event_id = attributes["messaging.message.id"]
        record = delivered[event_id]
        assert span.kind is SpanKind.PRODUCER
        assert attributes["messaging.system"] == "kafka"
        assert attributes["messaging.operation.name"] == "send"
        assert attributes["messaging.operation.type"] == "send"
        assert attributes["messaging.destination.name"] == manager.topic
        # The real outcome of the delivery, not a guess made before sending.
        assert attributes["messaging.destination.partition.id"] == str(record.partition)
        assert attributes["messaging.kafka.offset"] == record.offset
        assert span.status.status_code is StatusCode.UNSET
        assert span.parent is not None
        assert span.parent.span_id == caller_context.span_id
        assert span.context is not None
        assert span.context.trace_id == caller_context.trace_id
    assert {attributes_of(s)["messaging.message.id"] for s in spans} == {
        str(e.id) for e in events
    }


async def test_header_names_the_producer_span_metadata_the_caller(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack, sdk: Sdk
) -> None:
    manager = await make_kafka_manager(
        telemetry=TelemetryOptions(producer_spans=True, tracer_provider=sdk.provider)
    )
    publisher = await manager.create_publisher("upload", Upload)
    assert isinstance(publisher, KafkaEventPublisher)
    with sdk.tracer.start_as_current_span("request") as caller:
        event = await publisher.publish(Upload(name="a", size=1), wait=True)
    [record] = await local_kafka_stack.consume(manager.topic, 1, timeout=30)
    decoded = await decode(record.value, local_kafka_stack.registry_url)
    [producer] = sdk.finished(f"send {manager.topic}")
    assert producer.context is not None
    caller_context = caller.get_span_context()

    # Metadata: the span that caused the event (the caller's).
    assert decoded["span_id"] == f"{caller_context.span_id:016x}"
    assert decoded["trace_id"] == f"{caller_context.trace_id:032x}"
    assert getattr(event, "span_id", None) == decoded["span_id"]
    # Header: the hop to Kafka (the producer span), in the same trace.
    _, trace_id, span_id, flags = (
        dict(record.headers)["traceparent"].decode().split("-")
    )
    assert trace_id == decoded["trace_id"]
    assert span_id == f"{producer.context.span_id:016x}"
    assert int(flags, 16) == int(producer.context.trace_flags)
    assert span_id != decoded["span_id"]


async def test_no_producer_spans_by_default(
    make_kafka_manager: ManagerFactory, sdk: Sdk
) -> None:
    manager = await make_kafka_manager(
        telemetry=TelemetryOptions(tracer_provider=sdk.provider)
    )
    publisher = await manager.create_publisher("upload", Upload)
    assert isinstance(publisher, KafkaEventPublisher)
    with sdk.tracer.start_as_current_span("request"):
        await publisher.publish(Upload(name="a", size=1), wait=True)
    assert [s.name for s in sdk.exporter.get_finished_spans()] == ["request"]


async def test_failed_delivery_marks_the_span(
    unreachable_manager: Callable[..., Awaitable[KafkaEventManager]], sdk: Sdk
) -> None:
    manager = await unreachable_manager(delivery_timeout=0.5)
    publisher = await manager.create_publisher("upload", Upload)
    assert isinstance(publisher, KafkaEventPublisher)
    with (
        sdk.tracer.start_as_current_span("request"),
        pytest.raises(EventDeliveryError) as raised,
    ):
        await publisher.publish(Upload(name="lost", size=0), wait=True)
    [span] = sdk.finished(f"send {manager.topic}")
    attributes = attributes_of(span)
    cause = raised.value.__cause__
    assert cause is not None
    assert attributes["error.type"] == type(cause).__qualname__
    assert span.status.status_code is StatusCode.ERROR
    assert "messaging.kafka.offset" not in attributes
    assert "messaging.destination.partition.id" not in attributes
    assert manager.stats.failed == 1


async def test_event_refused_by_a_full_buffer_ends_its_span(
    unreachable_manager: Callable[..., Awaitable[KafkaEventManager]], sdk: Sdk
) -> None:
    manager = await unreachable_manager(
        buffer=BufferOptions(max_events=1, overflow=OverflowPolicy.RAISE),
    )
    publisher = await manager.create_publisher("upload", Upload)
    await publisher.publish(Upload(name="kept", size=0))
    with pytest.raises(EventBufferFullError):
        await publisher.publish(Upload(name="refused", size=0))
    [span] = sdk.finished(f"send {manager.topic}")
    assert attributes_of(span)["error.type"] == "EventBufferFullError"
    assert span.status.status_code is StatusCode.ERROR
    # The buffered one ends (as failed) when the manager gives up on it.
    assert await manager.aclose(timeout=0.1) == 1
    spans = sdk.finished(f"send {manager.topic}")
    assert len(spans) == 2
    assert all(s.status.status_code is StatusCode.ERROR for s in spans)


async def test_too_large_event_ends_its_span_with_the_error(
    make_kafka_manager: ManagerFactory, sdk: Sdk
) -> None:
    manager = await make_kafka_manager(
        kafka_options={"max_request_size": 4096},
        telemetry=TelemetryOptions(producer_spans=True, tracer_provider=sdk.provider),
    )
    publisher = await manager.create_publisher("upload", Upload)
    with pytest.raises(EventTooLargeError):
        await publisher.publish(Upload(name="x" * 10_000, size=0))
    [span] = sdk.finished(f"send {manager.topic}")
    assert attributes_of(span)["error.type"] == "EventTooLargeError"
    assert span.status.status_code is StatusCode.ERROR
    assert not trace.get_current_span().get_span_context().is_valid


async def test_batch_spans_link_the_callers_of_their_events(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack, sdk: Sdk
) -> None:
    manager = await make_kafka_manager(
        partitions=2,
        telemetry=TelemetryOptions(
            producer_spans="batch", tracer_provider=sdk.provider
        ),
    )
    uploads = await manager.create_publisher("upload", Upload)
    callers = []
    for request in range(2):
        with sdk.tracer.start_as_current_span(f"request {request}") as caller:
            callers.append(caller.get_span_context())
            for index in range(50):
                await uploads.publish(Upload(name=f"{request}-{index}", size=index))
    assert await manager.aclose(timeout=30) == 0

    records = await local_kafka_stack.consume(manager.topic, 100, timeout=30)
    spans = sdk.finished(f"send {manager.topic}")
    assert spans, "no batch span"
    # One span per batch: together they count every event once.
    assert sum(attributes_of(s)["messaging.batch.message_count"] for s in spans) == 100
    first_offsets = set()
    for span in spans:
        attributes = attributes_of(span)
        assert span.kind is SpanKind.PRODUCER
        assert span.parent is None  # a batch belongs to no request
        assert span.status.status_code is StatusCode.UNSET
        assert attributes["messaging.system"] == "kafka"
        assert attributes["messaging.operation.type"] == "send"
        assert attributes["messaging.destination.name"] == manager.topic
        partition = attributes["messaging.destination.partition.id"]
        first_offsets.add((int(partition), attributes["messaging.kafka.offset"]))
        linked = {(link.context.trace_id, link.context.span_id) for link in span.links}
        assert linked <= {(c.trace_id, c.span_id) for c in callers}
        assert linked
    # Each batch's offset is where its first event was written.
    on_topic = {(r.partition, r.offset) for r in records}
    assert first_offsets <= on_topic
    # The records name the caller's span: no per-event span exists.
    parents = {dict(r.headers)["traceparent"].decode().split("-")[2] for r in records}
    assert parents == {f"{c.span_id:016x}" for c in callers}
    assert not [s for s in sdk.exporter.get_finished_spans() if s.parent is not None]
