"""Which events become OpenTelemetry log records.

Through the SDK, those ``publish`` accepted: an event that ``publish``
refuses with an exception (a payload that cannot be encoded, one too large,
a full buffer under the ``raise`` policy, a closed manager) was never
accepted, so it has no log record either. On the direct path, only those
Kafka acknowledged.
"""

from __future__ import annotations

import datetime as dt

import pytest

if not hasattr(
    pytest.importorskip("opentelemetry.sdk._logs.export"), "InMemoryLogRecordExporter"
):
    pytest.skip(
        "the SDK's in-memory log exporter needs opentelemetry-sdk 1.39 or newer"
        " (the otel extra pins 1.45.1)",
        allow_module_level=True,
    )

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)

from otel_kafka_events import (
    BufferOptions,
    EventPayload,
    KafkaEventManager,
    LogExportOptions,
    NoopEventManager,
    OverflowPolicy,
    TelemetryOptions,
)
from otel_kafka_events.errors import (
    EventBufferFullError,
    EventManagerClosedError,
    EventPayloadError,
    EventRejectedError,
    EventTooLargeError,
)
from otel_kafka_events.testing import MemorySchemaRegistry, MemoryTransport, SendOutcome


class Note(EventPayload):
    """A payload whose size and time a test chooses."""

    text: str
    when: dt.datetime


NOW = dt.datetime.now(dt.UTC)


async def test_only_accepted_events_have_a_log_record() -> None:
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    transport = MemoryTransport(max_request_size=2048)
    transport.stalled = True  # nothing leaves the buffer
    manager = KafkaEventManager(
        application="shop",
        topic_prefix="events",
        transport=transport,
        registry=MemorySchemaRegistry(),
        buffer=BufferOptions(max_events=1, overflow=OverflowPolicy.RAISE),
        telemetry=TelemetryOptions(logs=True, logger_provider=provider),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("note", Note)

    with pytest.raises(EventPayloadError):
        await publisher.publish(Note(text="naive", when=dt.datetime(2024, 1, 1)))
    with pytest.raises(EventTooLargeError):
        await publisher.publish(Note(text="x" * 4000, when=NOW))
    await publisher.publish(Note(text="accepted", when=NOW))
    with pytest.raises(EventBufferFullError):
        await publisher.publish(Note(text="no room", when=NOW))

    transport.release()
    assert await manager.aclose(timeout=1) == 0
    with pytest.raises(EventManagerClosedError):
        await publisher.publish(Note(text="closed", when=NOW))

    texts = [
        dict(log.log_record.attributes or {})["text"]
        for log in exporter.get_finished_logs()
    ]
    assert texts == ["accepted"]


def texts_on(transport: MemoryTransport, topic: str) -> list[str]:
    """The ``text`` attribute of every OTLP log record written to ``topic``."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )

    texts = []
    for record in transport.records_for(topic):
        request = ExportLogsServiceRequest.FromString(record.value)
        for resource_logs in request.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                for log in scope_logs.log_records:
                    attributes = {a.key: a.value for a in log.attributes}
                    texts.append(attributes["text"].string_value)
    return texts


# A close whose time ran out before the log records' turn must not leave
# that step's coroutine unawaited (a RuntimeWarning, an error under -W error).
@pytest.mark.filterwarnings("error")
async def test_the_direct_path_writes_records_only_for_delivered_events() -> None:
    transport = MemoryTransport(max_request_size=2048)
    manager = KafkaEventManager(
        application="shop",
        topic_prefix="events",
        transport=transport,
        registry=MemorySchemaRegistry(),
        buffer=BufferOptions(max_events=1, overflow=OverflowPolicy.DROP_NEWEST),
        telemetry=TelemetryOptions(
            logs=True, log_export=LogExportOptions(kafka=True, direct=True)
        ),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("note", Note)

    with pytest.raises(EventPayloadError):
        await publisher.publish(Note(text="naive", when=dt.datetime(2024, 1, 1)))
    with pytest.raises(EventTooLargeError):
        await publisher.publish(Note(text="x" * 4000, when=NOW))
    await publisher.publish(Note(text="delivered", when=NOW), wait=True)
    transport.fail_next(SendOutcome.REJECTED)
    with pytest.raises(EventRejectedError):
        await publisher.publish(Note(text="rejected", when=NOW), wait=True)
    transport.stalled = True
    await publisher.publish(Note(text="never sent", when=NOW))
    await publisher.publish(Note(text="dropped", when=NOW))
    assert manager.stats.dropped == 1
    assert await manager.aclose(timeout=0.5) == 1

    assert texts_on(transport, "otlp_logs") == ["delivered"]
    assert manager.log_export_stats["kafka"].exported == 1


async def test_log_records_carry_the_record_key_when_there_is_one() -> None:
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    telemetry = TelemetryOptions(logs=True, logger_provider=provider)
    manager = KafkaEventManager(
        application="shop",
        topic_prefix="events",
        transport=MemoryTransport(),
        registry=MemorySchemaRegistry(),
        telemetry=telemetry,
    )
    await manager.initialize()
    publisher = await manager.create_publisher("note", Note, key="text")
    await publisher.publish(Note(text="keyed", when=NOW))
    await publisher.publish(Note(text="given", when=NOW), key=b"\x00\xff")
    await manager.aclose()
    # Managers without Kafka emit the same attribute.
    noop = NoopEventManager("shop", "events", telemetry=telemetry)
    await noop.initialize()
    noop_publisher = await noop.create_publisher("note", Note, key="text")
    await noop_publisher.publish(Note(text="noop", when=NOW))
    await noop.aclose()

    keys = [
        dict(log.log_record.attributes or {}).get("messaging.kafka.message.key")
        for log in exporter.get_finished_logs()
    ]
    # NUL is UTF-8; 0xff is not, and reads as an escape.
    assert keys == ["keyed", "\x00\\xff", "noop"]
