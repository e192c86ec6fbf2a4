"""OTLP log records on Kafka, judged by the OpenTelemetry Collector.

The Collector's own ``kafka`` receiver reads the topic our exporter (or the
event manager's `LogExport`) wrote, in both encodings, and its file exporter
shows what it understood; the expectations are those of
``tests/test_otlp_peers.py`` for the OTLP/HTTP and gRPC exporters. These
tests use the session's broker, so ``scripts/test`` runs them on Tansu,
noida-db and Apache Kafka.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanContext, TraceFlags

from otel_kafka_events import (
    EventManagerUsageError,
    EventMetadata,
    KafkaEventManager,
    LogExportOptions,
    NoopEventManager,
    TelemetryOptions,
)
from otel_kafka_events._telemetry._logs import EventLogEmitter
from otel_kafka_events.config import KafkaConnectionSettings, KafkaSecurityProtocol
from otel_kafka_events.otel import KafkaLogRecordExporter
from otel_kafka_events_devstack import OtlpReceiver, TansuBroker
from otel_kafka_events_devstack._otelcol import KafkaLogsSource, OtelCollector
from otel_kafka_events_devstack._process import find_free_port
from otel_kafka_events_devstack._stack import LocalKafkaStack

from ..conftest import ManagerFactory, unique_application
from ..peer_support import require_collector
from ..peers.test_otlp_peers import (
    NEVER,
    PREFIX,
    RESOURCE,
    Login,
    Shipment,
    check_two_records,
    shipment,
)

ENCODINGS = ["otlp_proto", "otlp_json"]


def sdk_provider(exporter: KafkaLogRecordExporter) -> LoggerProvider:
    provider = LoggerProvider(resource=Resource.create(RESOURCE))
    provider.add_log_record_processor(
        BatchLogRecordProcessor(exporter, schedule_delay_millis=NEVER)
    )
    return provider


async def publish_two(
    make_kafka_manager: ManagerFactory, telemetry: TelemetryOptions, application: str
) -> tuple[EventMetadata, EventMetadata, SpanContext, KafkaEventManager]:
    """A Shipment (INFO) and a Login (WARN) in one span, then aclose."""
    tracer = TracerProvider().get_tracer("tests.otlp_kafka")
    manager = await make_kafka_manager(application=application, telemetry=telemetry)
    shipments = await manager.create_publisher("shipment", Shipment)
    logins = await manager.create_publisher(
        "login", Login, log_severity=SeverityNumber.WARN
    )
    with tracer.start_as_current_span("checkout") as span:
        shipped = await shipments.publish(shipment())
        logged = await logins.publish(Login(username="ada", attempts=3))
    assert await manager.aclose(timeout=30) == 0
    return shipped, logged, span.get_span_context(), manager


def read_topic(
    stack: LocalKafkaStack, topic: str, encoding: str, count: int
) -> tuple[list[Any], list[dict[str, Any]]]:
    """The Collector's Kafka receiver on ``topic``: its `ReceivedLog`
    records and the raw OTLP/JSON documents its file exporter wrote."""
    source = KafkaLogsSource(stack.bootstrap_servers, topic, encoding=encoding)
    with OtelCollector(kafka=source) as collector:
        records = collector.wait_for_logs(count, 60.0)
        assert collector.output_path is not None
        lines = collector.output_path.read_text().splitlines()
    return records, [json.loads(line) for line in lines if line.strip()]


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_collector_reads_what_the_sdk_exporter_wrote(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    kafka_topic: str,
    encoding: str,
) -> None:
    require_collector()
    exporter = KafkaLogRecordExporter(
        local_kafka_stack.bootstrap_servers,
        topic=kafka_topic,
        encoding=encoding,  # type: ignore[arg-type]
    )
    provider = sdk_provider(exporter)
    application = unique_application()
    try:
        shipped, logged, span, _ = await publish_two(
            make_kafka_manager,
            TelemetryOptions(logs=True, logger_provider=provider),
            application,
        )
    finally:
        provider.shutdown()

    received, _ = await asyncio.to_thread(
        read_topic, local_kafka_stack, kafka_topic, encoding, 2
    )

    check_two_records(received, application, shipped, logged, span, mode="attributes")


@pytest.mark.parametrize(
    ("direct", "encoding", "mode"),
    [
        (False, "otlp_proto", "attributes"),
        (False, "otlp_json", "attributes"),
        (True, "otlp_proto", "attributes"),
        (True, "otlp_json", "attributes"),
        (True, "otlp_proto", "body"),
    ],
)
async def test_manager_log_export_reaches_the_collector(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    kafka_topic: str,
    direct: bool,
    encoding: str,
    mode: str,
) -> None:
    require_collector()
    application = unique_application()
    telemetry = TelemetryOptions(
        logs=True,
        log_mode="body" if mode == "body" else "attributes",
        # Only its resource is used.
        logger_provider=LoggerProvider(resource=Resource.create(RESOURCE)),
        log_export=LogExportOptions(
            kafka=True,
            topic=kafka_topic,
            encoding=encoding,
            direct=direct,
        ),
    )

    shipped, logged, span, manager = await publish_two(
        make_kafka_manager, telemetry, application
    )
    received, _ = await asyncio.to_thread(
        read_topic, local_kafka_stack, kafka_topic, encoding, 2
    )

    check_two_records(received, application, shipped, logged, span, mode=mode)
    [stats] = manager.log_export_stats.values()
    assert (stats.destination, stats.exported, stats.failed) == ("kafka", 2, 0)


def flatten(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every record of the file exporter's documents with its resource and
    scope, without the observed time (each path sets its own)."""
    flat = []
    for document in documents:
        for resource_logs in document["resourceLogs"]:
            for scope_logs in resource_logs["scopeLogs"]:
                for record in scope_logs["logRecords"]:
                    record = dict(record)
                    observed = record.pop("observedTimeUnixNano")
                    assert int(observed) >= int(record["timeUnixNano"])
                    flat.append(
                        {
                            "resource": resource_logs["resource"],
                            "resource_schema": resource_logs.get("schemaUrl"),
                            "scope": scope_logs["scope"],
                            "scope_schema": scope_logs.get("schemaUrl"),
                            "record": record,
                        }
                    )
    return sorted(flat, key=lambda r: r["record"]["eventName"])


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_direct_path_matches_the_sdk_path_record_for_record(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    encoding: str,
) -> None:
    """The same events as log records through both paths, each to a topic
    of its own; the Collector must write the same records for both."""
    require_collector()
    direct_topic = local_kafka_stack.unique_topic("test.otlp.direct")
    sdk_topic = local_kafka_stack.unique_topic("test.otlp.sdk")
    for topic in (direct_topic, sdk_topic):
        await local_kafka_stack.create_topic(topic, partitions=1)
    resource_provider = LoggerProvider(resource=Resource.create(RESOURCE))
    application = unique_application()
    shipped, logged, _, _ = await publish_two(
        make_kafka_manager,
        TelemetryOptions(
            logs=True,
            logger_provider=resource_provider,
            log_export=LogExportOptions(
                kafka=True,
                topic=direct_topic,
                encoding=encoding,
                direct=True,
            ),
        ),
        application,
    )
    # The SDK path, fed the same events as `publish` feeds it.
    provider = sdk_provider(
        KafkaLogRecordExporter(
            local_kafka_stack.bootstrap_servers,
            topic=sdk_topic,
            encoding=encoding,  # type: ignore[arg-type]
        )
    )
    emitter = EventLogEmitter(provider)
    for event, name, severity in [
        (shipped, "shipment", SeverityNumber.INFO),
        (logged, "login", SeverityNumber.WARN),
    ]:
        values = event.__dict__
        span = SpanContext(
            int(values["trace_id"], 16),
            int(values["span_id"], 16),
            is_remote=False,
            trace_flags=TraceFlags(values["trace_flags"]),
        )
        emitter.emit(
            f"{PREFIX}.{application}.{name}",
            values,
            str(event.id),
            span,
            severity,
            timestamp_ns=values["timestamp_ns"],
        )
    provider.shutdown()

    _, direct_documents = await asyncio.to_thread(
        read_topic, local_kafka_stack, direct_topic, encoding, 2
    )
    _, sdk_documents = await asyncio.to_thread(
        read_topic, local_kafka_stack, sdk_topic, encoding, 2
    )

    direct_records = flatten(direct_documents)
    assert len(direct_records) == 2
    assert direct_records == flatten(sdk_documents)


async def test_partition_by_trace_id_keys_records_by_trace(
    local_kafka_stack: LocalKafkaStack,
) -> None:
    topic = local_kafka_stack.unique_topic("test.otlp.keyed")
    await local_kafka_stack.create_topic(topic, partitions=3)
    exporter = KafkaLogRecordExporter(
        local_kafka_stack.bootstrap_servers, topic=topic, partition_by_trace_id=True
    )
    memory = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("tests")
    traces = [0x1, 0xABC, 0xABC, 0]
    for number, trace_id in enumerate(traces):
        context = trace.set_span_in_context(
            trace.NonRecordingSpan(
                SpanContext(trace_id, 7, False, TraceFlags(1))
                if trace_id
                else trace.INVALID_SPAN_CONTEXT
            )
        )
        logger.emit(event_name=f"e{number}", context=context)
    try:
        result = await asyncio.to_thread(exporter.export, memory.get_finished_logs())
    finally:
        exporter.shutdown()
        provider.shutdown()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=local_kafka_stack.bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10_000)
        records = [r for rs in batches.values() for r in rs]
        while len(records) < 3:
            more = await consumer.getmany(timeout_ms=10_000)
            assert more, f"only {len(records)} of 3 Kafka records"
            records += [r for rs in more.values() for r in rs]
    finally:
        await consumer.stop()
    by_key = {}
    for record in records:
        request = ExportLogsServiceRequest.FromString(record.value)
        logs = request.resource_logs[0].scope_logs[0].log_records
        by_key[record.key] = sorted(log.event_name for log in logs)

    assert result is LogRecordExportResult.SUCCESS
    assert by_key == {
        f"{0x1:032x}".encode(): ["e0"],
        f"{0xABC:032x}".encode(): ["e1", "e2"],
        None: ["e3"],
    }


def one_record() -> list[Any]:
    memory = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    provider.get_logger("tests").emit(event_name="lost", body="x")
    provider.shutdown()
    return list(memory.get_finished_logs())


@pytest.fixture
def tansu() -> Iterator[TansuBroker]:
    broker = TansuBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def timed_export(exporter: KafkaLogRecordExporter) -> tuple[Any, float]:
    started = time.monotonic()
    result = exporter.export(one_record())
    return result, time.monotonic() - started


def test_export_fails_within_its_timeout_without_a_broker() -> None:
    exporter = KafkaLogRecordExporter(f"127.0.0.1:{find_free_port()}", timeout=1.5)

    result, took = timed_export(exporter)
    started = time.monotonic()
    exporter.shutdown()
    shutdown_took = time.monotonic() - started

    assert result is LogRecordExportResult.FAILURE
    assert took < 1.5 + 1.0
    assert shutdown_took < 2.0
    assert not exporter._producer.running
    assert exporter.export(one_record()) is LogRecordExportResult.FAILURE


def test_export_fails_within_its_timeout_when_the_broker_goes_down(
    tansu: TansuBroker,
) -> None:
    exporter = KafkaLogRecordExporter(
        tansu.bootstrap_servers, topic="otlp_logs", timeout=2.0
    )
    try:
        first, _ = timed_export(exporter)
        tansu.kill()
        second, took = timed_export(exporter)
    finally:
        started = time.monotonic()
        exporter.shutdown()
        shutdown_took = time.monotonic() - started

    assert first is LogRecordExportResult.SUCCESS
    assert second is LogRecordExportResult.FAILURE
    assert took < 2.0 + 1.0
    assert shutdown_took < 2.0 + 1.5
    assert not exporter._producer.running


async def test_direct_export_failures_are_counted_and_delivery_goes_on(
    make_kafka_manager: ManagerFactory,
) -> None:
    dead = f"http://127.0.0.1:{find_free_port()}/v1/logs"
    manager = await make_kafka_manager(
        telemetry=TelemetryOptions(
            logs=True,
            log_export=LogExportOptions(
                kafka=False, otlp_endpoint=dead, direct=True, timeout=1.0
            ),
        )
    )
    logins = await manager.create_publisher("login", Login)

    for attempt in range(3):
        await logins.publish(Login(username="ada", attempts=attempt), wait=True)
    undelivered = await manager.aclose(timeout=10)

    assert undelivered == 0
    assert manager.stats.delivered == 3
    [stats] = manager.log_export_stats.values()
    assert (stats.destination, stats.exported, stats.failed) == ("otlp", 0, 3)


async def test_direct_path_sends_records_only_for_delivered_events(
    tmp_path: Path,
) -> None:
    # Nothing listens at the broker's address: the events time out.
    with OtlpReceiver() as receiver:
        manager = KafkaEventManager(
            application=unique_application(),
            topic_prefix=PREFIX,
            bootstrap_servers=f"127.0.0.1:{find_free_port()}",
            registry_url=f"http://127.0.0.1:{find_free_port()}",
            delivery_timeout=0.5,
            telemetry=TelemetryOptions(
                logs=True,
                log_export=LogExportOptions(
                    kafka=False, otlp_endpoint=receiver.logs_endpoint, direct=True
                ),
            ),
        )
        await manager.initialize()
        logins = await manager.create_publisher("login", Login)
        for attempt in range(2):
            await logins.publish(Login(username="ada", attempts=attempt))
        await manager.aclose(timeout=5)
        await asyncio.sleep(0.3)

        assert manager.stats.failed == 2
        assert receiver.logs == []
        [stats] = manager.log_export_stats.values()
        assert (stats.exported, stats.failed, stats.dropped) == (0, 0, 0)


def test_exporter_takes_the_managers_connection_settings() -> None:
    settings = KafkaConnectionSettings(
        bootstrap_servers="kafka-1:9092,kafka-2:9092",
        security_protocol=KafkaSecurityProtocol.SASL_PLAINTEXT,
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="otel",
        sasl_password="secret",
    )

    exporter = KafkaLogRecordExporter.from_settings(settings, encoding="otlp_json")

    options = exporter._producer._options
    assert exporter._producer._bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert (options["security_protocol"], options["sasl_mechanism"]) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-256",
    )
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "otel",
        "secret",
    )
    assert exporter.encoding == "otlp_json"
    exporter.shutdown()


def test_log_export_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="kafka=True, an otlp_endpoint"):
        LogExportOptions(kafka=False)
    with pytest.raises(ValueError, match="encoding"):
        LogExportOptions(encoding="raw")
    with pytest.raises(ValueError, match="needs logs=True"):
        TelemetryOptions(log_export=LogExportOptions(kafka=True))
    with pytest.raises(EventManagerUsageError, match="KafkaEventManager"):
        NoopEventManager(
            "shop",
            PREFIX,
            telemetry=TelemetryOptions(
                logs=True, log_export=LogExportOptions(kafka=True)
            ),
        )
