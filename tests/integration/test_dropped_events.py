"""An event the buffer drops is reported as dropped and never becomes a log."""

from __future__ import annotations

import socket

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)

from otel_kafka_events import (
    BufferOptions,
    DeliveryFailure,
    EventPayload,
    KafkaEventManager,
    OverflowPolicy,
    TelemetryOptions,
)


class Tick(EventPayload):
    """A minimal event."""

    n: int


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_dropped_events_are_reported_and_not_logged() -> None:
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    failures: list[DeliveryFailure] = []
    port = _dead_port()
    manager = KafkaEventManager(
        application="drops",
        topic_prefix="test.events",
        bootstrap_servers=f"127.0.0.1:{port}",
        registry_url=f"http://127.0.0.1:{port}",
        buffer=BufferOptions(max_events=1, overflow=OverflowPolicy.DROP_NEWEST),
        telemetry=TelemetryOptions(logs=True, logger_provider=provider),
        on_delivery_error=failures.append,
        retry_backoff=0.05,
    )
    await manager.initialize()
    publisher = await manager.create_publisher("tick", Tick)
    events = [await publisher.publish(Tick(n=n)) for n in range(3)]

    assert manager.stats.dropped == 2
    assert [f.reason for f in failures] == ["dropped", "dropped"]
    assert [f.event_id for f in failures] == [str(e.id) for e in events[1:]]
    logged = [r.log_record.attributes for r in exporter.get_finished_logs()]
    assert [dict(a or {})["n"] for a in logged] == [0]

    assert await manager.aclose(timeout=0.2) == 1
    stats = manager.stats
    assert stats.published == stats.delivered + stats.failed + stats.dropped == 3
