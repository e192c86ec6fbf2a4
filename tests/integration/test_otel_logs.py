"""Events as OpenTelemetry log records (``TelemetryOptions(logs=True)``).

Two sinks: the SDK's in-memory exporter (exact record fields) and the real
OTLP/HTTP exporter posting to `OtlpReceiver` (the records survive protobuf
encoding, whatever the payload holds).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import threading
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Annotated, Any

import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel, Field

from otel_kafka_events import (
    EventManager,
    EventMetadata,
    EventPayload,
    MockEventManager,
    NoopEventManager,
    TelemetryOptions,
    decode,
)
from otel_kafka_events_devstack import LocalKafkaStack, OtlpReceiver

from ..conftest import ManagerFactory

# Flushes must come from aclose, never from the processor's own timer.
NEVER = 3_600_000


class Login(EventPayload):
    """A flat payload."""

    username: str
    attempts: int


class Tier(enum.Enum):
    """An enum whose values are valid Avro symbols."""

    FREE = "free"
    PRO = "pro"


class Address(BaseModel):
    """A nested model."""

    city: str
    since: dt.datetime


class Purchase(EventPayload):
    """Every kind of value the OTLP encoder cannot take as is."""

    at: dt.datetime
    order: uuid.UUID
    tier: Tier
    amount: Annotated[Decimal, Field(max_digits=10, decimal_places=2)]
    address: Address
    items: list[str]
    quantities: dict[str, int]
    history: list[Address]
    took: dt.timedelta
    coupon: str | None = None
    gift: bool = False
    ratio: float = 0.5


@pytest.fixture
def tracer() -> trace.Tracer:
    return TracerProvider().get_tracer("tests.logs")


@pytest.fixture
def memory() -> Iterator[tuple[LoggerProvider, InMemoryLogRecordExporter]]:
    """A LoggerProvider exporting synchronously to memory."""
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def purchase() -> Purchase:
    moved = dt.datetime(2020, 5, 17, 8, 30, tzinfo=dt.UTC)
    return Purchase(
        at=dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
        order=uuid.UUID("12345678-1234-4678-9234-567812345678"),
        tier=Tier.PRO,
        amount=Decimal("12.34"),
        address=Address(city="Lyon", since=moved),
        items=["book", "pen"],
        quantities={"book": 1, "pen": 3},
        history=[Address(city="Nice", since=moved)],
        took=dt.timedelta(seconds=1, milliseconds=500),
    )


def purchase_values(event: Any, *, body: bool = False) -> dict[str, Any]:
    """What the attributes (or body) of a Purchase record must hold."""
    moved = "2020-05-17T08:30:00+00:00"
    return {
        **metadata_values(event, body=body),
        "at": "2026-01-02T03:04:05.678901+00:00",
        "order": "12345678-1234-4678-9234-567812345678",
        "tier": "pro",
        "amount": "12.34",
        "address": {"city": "Lyon", "since": moved},
        "items": ["book", "pen"],
        "quantities": {"book": 1, "pen": 3},
        "history": [{"city": "Nice", "since": moved}],
        "took": 1.5,
        "gift": False,
        "ratio": 0.5,
    }


def metadata_values(event: Any, *, body: bool = False) -> dict[str, Any]:
    """The metadata in a record: all of it in the body; as attributes, only
    what the record does not hold in its own timestamp and trace fields."""
    values = {"id": str(event.id), "application": event.application}
    if not body:
        return values
    values["timestamp"] = event.timestamp.isoformat()
    values["timestamp_ns"] = event.timestamp_ns
    for field in ("trace_id", "span_id", "trace_flags"):
        if getattr(event, field, None) is not None:
            values[field] = getattr(event, field)
    return values


def records_of(exporter: InMemoryLogRecordExporter) -> list[Any]:
    return [r.log_record for r in exporter.get_finished_logs()]


# -- the record's fields (in-memory exporter) ------------------------------------


async def test_log_record_mirrors_the_event(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    memory: tuple[LoggerProvider, InMemoryLogRecordExporter],
    tracer: trace.Tracer,
) -> None:
    provider, exporter = memory
    manager = await make_kafka_manager(
        telemetry=TelemetryOptions(logs=True, logger_provider=provider)
    )
    publisher = await manager.create_publisher("login", Login)
    with tracer.start_as_current_span("request") as span:
        event = await publisher.publish(Login(username="ada", attempts=2))
    assert await manager.aclose(timeout=30) == 0
    [record] = records_of(exporter)
    [message] = await local_kafka_stack.consume(manager.topic, 1, timeout=30)
    decoded = await decode(message.value, local_kafka_stack.registry_url)

    assert record.event_name == f"{manager.topic}.login"
    assert record.timestamp == event.timestamp_ns == decoded["timestamp_ns"]
    assert record.observed_timestamp is not None
    span_context = span.get_span_context()
    assert record.trace_id == span_context.trace_id
    assert record.span_id == span_context.span_id
    assert record.trace_flags == span_context.trace_flags
    assert f"{record.trace_id:032x}" == decoded["trace_id"]
    assert f"{record.span_id:016x}" == decoded["span_id"]
    assert record.severity_number is SeverityNumber.INFO
    assert record.severity_text == "INFO"
    assert record.body is None
    assert dict(record.attributes or {}) == {
        **metadata_values(event),
        "username": "ada",
        "attempts": 2,
    }
    assert dict(record.attributes or {})["id"] == str(decoded["id"])
    [finished] = exporter.get_finished_logs()
    assert finished.instrumentation_scope is not None
    assert finished.instrumentation_scope.name == "otel_kafka_events"


async def test_severity_is_set_per_event_type(
    make_kafka_manager: ManagerFactory,
    memory: tuple[LoggerProvider, InMemoryLogRecordExporter],
) -> None:
    provider, exporter = memory
    manager = await make_kafka_manager(
        telemetry=TelemetryOptions(logs=True, logger_provider=provider)
    )
    failed = await manager.create_publisher(
        "login_failed", Login, log_severity=SeverityNumber.WARN
    )
    succeeded = await manager.create_publisher("login", Login)
    await failed.publish(Login(username="eve", attempts=5))
    await succeeded.publish(Login(username="ada", attempts=1))
    severities = {
        r.event_name: (r.severity_number, r.severity_text) for r in records_of(exporter)
    }
    assert severities == {
        f"{manager.topic}.login_failed": (SeverityNumber.WARN, "WARN"),
        f"{manager.topic}.login": (SeverityNumber.INFO, "INFO"),
    }


async def test_outside_a_span_the_record_has_no_trace(
    make_kafka_manager: ManagerFactory,
    memory: tuple[LoggerProvider, InMemoryLogRecordExporter],
) -> None:
    provider, exporter = memory
    manager = await make_kafka_manager(
        telemetry=TelemetryOptions(logs=True, logger_provider=provider)
    )
    publisher = await manager.create_publisher("login", Login)
    event = await publisher.publish(Login(username="ada", attempts=1))
    [record] = records_of(exporter)
    assert not record.trace_id
    assert not record.span_id
    attributes = dict(record.attributes or {})
    # Null trace fields are left out rather than sent as empty values.
    assert "trace_id" not in attributes
    assert attributes == {**metadata_values(event), "username": "ada", "attempts": 1}


async def test_record_follows_the_span_without_trace_fields(
    memory: tuple[LoggerProvider, InMemoryLogRecordExporter],
    tracer: trace.Tracer,
) -> None:
    # trace_context=False only changes the schema: the log record is still
    # correlated with the caller's span, as any OTel log record is.
    provider, exporter = memory
    manager = NoopEventManager(
        "untraced_app",
        "test.events",
        telemetry=TelemetryOptions(
            trace_context=False, logs=True, logger_provider=provider
        ),
    )
    with tracer.start_as_current_span("request") as span:
        event = await publish_then_close(manager)
    [record] = records_of(exporter)
    assert record.trace_id == span.get_span_context().trace_id
    assert record.span_id == span.get_span_context().span_id
    assert dict(record.attributes or {}) == {
        **metadata_values(event),
        "username": "ada",
        "attempts": 1,
    }
    assert "trace_id" not in dict(record.attributes or {})


class SpanReport(EventPayload):
    """A payload whose own fields are named like the trace metadata."""

    trace_id: str
    span_id: int


async def test_without_trace_context_trace_named_fields_are_attributes(
    memory: tuple[LoggerProvider, InMemoryLogRecordExporter],
) -> None:
    # Only the metadata that the record carries itself is left out; without
    # trace context these names are the payload's own fields.
    provider, exporter = memory
    manager = NoopEventManager(
        "spans_app",
        "test.events",
        telemetry=TelemetryOptions(
            trace_context=False, logs=True, logger_provider=provider
        ),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("span_report", SpanReport)
    event = await publisher.publish(SpanReport(trace_id="order-123", span_id=7))
    await manager.aclose()
    [record] = records_of(exporter)
    assert dict(record.attributes or {}) == {
        **metadata_values(event),
        "trace_id": "order-123",
        "span_id": 7,
    }


async def test_body_mode_puts_the_event_in_the_body(
    make_kafka_manager: ManagerFactory,
    memory: tuple[LoggerProvider, InMemoryLogRecordExporter],
    tracer: trace.Tracer,
) -> None:
    provider, exporter = memory
    manager = await make_kafka_manager(
        telemetry=TelemetryOptions(logs=True, logger_provider=provider, log_mode="body")
    )
    publisher = await manager.create_publisher("purchase", Purchase)
    with tracer.start_as_current_span("checkout"):
        event = await publisher.publish(purchase())
    [record] = records_of(exporter)
    assert record.event_name == f"{manager.topic}.purchase"
    assert dict(record.attributes or {}) == {"event.name": record.event_name}
    assert record.body == {**purchase_values(event, body=True), "coupon": None}
    assert record.timestamp == event.timestamp_ns


# -- through the real OTLP/HTTP exporter ---------------------------------------


@pytest.mark.parametrize("mode", ["attributes", "body"])
async def test_otlp_export_of_every_value_kind(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    tracer: trace.Tracer,
    mode: str,
) -> None:
    with OtlpReceiver() as receiver:
        provider = LoggerProvider()
        provider.add_log_record_processor(
            BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=receiver.logs_endpoint, timeout=10),
                schedule_delay_millis=NEVER,
            )
        )
        try:
            manager = await make_kafka_manager(
                telemetry=TelemetryOptions(
                    logs=True,
                    logger_provider=provider,
                    log_mode="body" if mode == "body" else "attributes",
                )
            )
            purchases = await manager.create_publisher("purchase", Purchase)
            logins = await manager.create_publisher(
                "login", Login, log_severity=SeverityNumber.WARN
            )
            with tracer.start_as_current_span("checkout") as span:
                bought = await purchases.publish(purchase())
                logged = await logins.publish(Login(username="ada", attempts=1))
            assert receiver.logs == []
            # aclose alone delivers the batch (flushed in a worker thread).
            assert await manager.aclose(timeout=30) == 0
            received = await asyncio.to_thread(receiver.wait_for_logs, 2, 10)
        finally:
            provider.shutdown()
    assert receiver.errors == []
    by_name = {r.event_name: r for r in received}
    assert set(by_name) == {f"{manager.topic}.purchase", f"{manager.topic}.login"}
    span_context = span.get_span_context()
    for record, event, severity in [
        (by_name[f"{manager.topic}.purchase"], bought, SeverityNumber.INFO),
        (by_name[f"{manager.topic}.login"], logged, SeverityNumber.WARN),
    ]:
        assert record.time_unix_nano == event.timestamp_ns
        assert record.trace_id == f"{span_context.trace_id:032x}"
        assert record.span_id == f"{span_context.span_id:016x}"
        assert record.flags & 0xFF == int(span_context.trace_flags)
        assert record.severity_number == severity.value
        assert record.scope == "otel_kafka_events"
    purchase_record = by_name[f"{manager.topic}.purchase"]
    if mode == "body":
        assert purchase_record.attributes == {"event.name": purchase_record.event_name}
        assert purchase_record.body == {
            **purchase_values(bought, body=True),
            "coupon": None,
        }
    else:
        assert purchase_record.body is None
        assert purchase_record.attributes == purchase_values(bought)

    # The same ids travelled through Kafka.
    messages = await local_kafka_stack.consume(manager.topic, 2, timeout=30)
    for message in messages:
        decoded = await decode(message.value, local_kafka_stack.registry_url)
        assert decoded["trace_id"] == f"{span_context.trace_id:032x}"
        assert decoded["timestamp_ns"] in {r.time_unix_nano for r in received}


# -- flushing on aclose, and the Kafka-free managers ---------------------------


class ThreadRecordingExporter(LogRecordExporter):
    """Remembers the records and the threads that exported them."""

    def __init__(self) -> None:
        self.records: list[ReadableLogRecord] = []
        self.threads: set[int] = set()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.threads.add(threading.get_ident())
        self.records.extend(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def batched() -> tuple[LoggerProvider, ThreadRecordingExporter]:
    exporter = ThreadRecordingExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(
        BatchLogRecordProcessor(exporter, schedule_delay_millis=NEVER)
    )
    return provider, exporter


async def publish_then_close(manager: EventManager) -> EventMetadata:
    await manager.initialize()
    publisher = await manager.create_publisher("login", Login)
    event = await publisher.publish(Login(username="ada", attempts=1))
    await manager.aclose()
    return event


@pytest.mark.parametrize("kind", ["noop", "mock"])
async def test_kafka_free_managers_emit_and_flush(
    kind: str, tracer: trace.Tracer
) -> None:
    # OTel-only mode: no Kafka at all, the events still reach the pipeline.
    provider, exporter = batched()
    try:
        telemetry = TelemetryOptions(logs=True, logger_provider=provider)
        manager_class = NoopEventManager if kind == "noop" else MockEventManager
        manager = manager_class(f"{kind}_app", "test.events", telemetry=telemetry)
        with tracer.start_as_current_span("request") as span:
            event = await publish_then_close(manager)
        [readable] = exporter.records
    finally:
        provider.shutdown()
    record = readable.log_record
    assert record.event_name == f"test.events.{kind}_app.login"
    assert record.timestamp == event.timestamp_ns
    assert record.trace_id == span.get_span_context().trace_id
    assert dict(record.attributes or {})["username"] == "ada"
    assert threading.get_ident() not in exporter.threads


async def test_kafka_manager_flushes_in_a_worker_thread(
    make_kafka_manager: ManagerFactory,
) -> None:
    provider, exporter = batched()
    try:
        manager = await make_kafka_manager(
            telemetry=TelemetryOptions(logs=True, logger_provider=provider)
        )
        publisher = await manager.create_publisher("login", Login)
        await publisher.publish(Login(username="ada", attempts=1))
        assert exporter.records == []
        await manager.aclose(timeout=30)
        assert len(exporter.records) == 1
    finally:
        provider.shutdown()
    # force_flush blocks its thread until the export is done: never the
    # event loop's thread.
    assert threading.get_ident() not in exporter.threads


async def test_logs_off_emits_nothing(
    memory: tuple[LoggerProvider, InMemoryLogRecordExporter],
) -> None:
    provider, exporter = memory
    manager = NoopEventManager(
        "quiet_app", "test.events", telemetry=TelemetryOptions(logger_provider=provider)
    )
    await publish_then_close(manager)
    assert records_of(exporter) == []
