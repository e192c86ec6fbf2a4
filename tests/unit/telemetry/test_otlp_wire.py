"""The direct log path writes the messages the SDK's OTLP encoder writes.

Broker-free: the same event values go through `EventLogEmitter` into an SDK
LoggerProvider (and the SDK's ``encode_logs``) and through
`DirectLogRecords`; the two ``ExportLogsServiceRequest`` messages must be
equal once the observed timestamps (set by each path at its own moment) are
aligned. The Collector comparison is in ``tests/test_otlp_kafka.py``.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import pytest

# The otlp-kafka extra's packages: not in the lowest versions leg of
# scripts/test-versions, whose OpenTelemetry API predates the extra's pins.
pytest.importorskip("opentelemetry.exporter.otlp.proto.common")
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanContext, TraceFlags

from otel_kafka_events import LogExportOptions
from otel_kafka_events._telemetry import _otlp_wire as wire
from otel_kafka_events._telemetry._direct_logs import DirectLogRecords
from otel_kafka_events._telemetry._log_destinations import Counts, Destination
from otel_kafka_events._telemetry._logs import EventLogEmitter
from otel_kafka_events._telemetry._otlp_kafka import encode_message
from otel_kafka_events._telemetry._producer_thread import Message

RESOURCE = Resource.create({"service.name": "wire-test"})
# A real event id is 36 characters, which the direct path writes by a
# shortcut; the other id takes the general way.
FIRST_ID = "3f2c1d4e-5b6a-4789-8abc-def012345678"
SPAN = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(3))


class _Event:
    """What the reporter hands over: a `PendingEvent` has an ``event_id``."""

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id


def events() -> list[
    tuple[str, dict[str, Any], str, SpanContext | None, SeverityNumber]
]:
    base = {"application": "shop", "timestamp": "2026", "timestamp_ns": 0}
    return [
        (
            "t.shop.a",
            {
                **base,
                "id": "x",
                "timestamp_ns": 1_700_000_000_000_000_001,
                "trace_id": "0" * 32,
                "span_id": "0" * 16,
                "trace_flags": 3,
                "s": "héllo",
                "n": -5,
                "big": 2**63 - 1,
                "f": 0.0,
                "b": False,
                "raw": b"\x00\xff",
                "none": None,
                "nested": {"k": [1, "two", {"z": None}], "e": []},
                "empty": "",
            },
            FIRST_ID,
            SPAN,
            SeverityNumber.WARN,
        ),
        (
            "t.shop.b",
            {**base, "id": "y", "timestamp_ns": 5, "n": 1},
            "id-2",
            None,
            SeverityNumber.INFO,
        ),
    ]


# The first event has a record key that is not UTF-8 (an attribute of
# escapes on both paths), the second none (no attribute).
KEYS = [b"user-\xff7", None]


def emit_events(emit: Callable[..., None]) -> None:
    """Emit `events` the same way on either path."""
    for (name, values, event_id, span, severity), key in zip(
        events(), KEYS, strict=True
    ):
        emit(
            name,
            values,
            event_id,
            span,
            severity,
            trace_fields=name.endswith("a"),
            timestamp_ns=values["timestamp_ns"],
            key=key,
        )


def sdk_request(mode: str) -> ExportLogsServiceRequest:
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    emitter = EventLogEmitter(provider, mode)
    emit_events(emitter.emit)
    records = exporter.get_finished_logs()
    provider.shutdown()
    return encode_logs(records)


def direct_requests(
    mode: str, **export: Any
) -> list[tuple[bytes | None, ExportLogsServiceRequest]]:
    sent: list[Message] = []

    def send(messages: list[Message]) -> concurrent.futures.Future[None]:
        sent.extend(messages)
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.set_result(None)
        return future

    destination = Destination(Counts("kafka"), send, lambda timeout: None)
    direct = DirectLogRecords(
        LogExportOptions(**{"kafka": True, **export}),
        [destination],
        RESOURCE,
        body_mode=mode == "body",
        log=None,
    )
    emit_events(direct.emit)
    direct.delivered([_Event(FIRST_ID), _Event("unknown"), _Event("id-2")])
    assert destination.counts.snapshot().exported == 2
    return [(key, ExportLogsServiceRequest.FromString(value)) for key, value in sent]


def same_observed_time(
    request: ExportLogsServiceRequest, other: ExportLogsServiceRequest
) -> None:
    mine = request.resource_logs[0].scope_logs[0].log_records
    theirs = other.resource_logs[0].scope_logs[0].log_records
    for record, reference in zip(mine, theirs, strict=True):
        record.observed_time_unix_nano = reference.observed_time_unix_nano


@pytest.mark.parametrize("mode", ["attributes", "body"])
def test_direct_records_equal_the_sdk_encoders(mode: str) -> None:
    expected = sdk_request(mode)
    [(key, request)] = direct_requests(mode)
    same_observed_time(request, expected)

    assert key is None
    assert request == expected
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    attributes = {a.key: a.value.string_value for a in record.attributes}
    assert attributes["messaging.kafka.message.key"] == "user-\\xff7"
    second = request.resource_logs[0].scope_logs[0].log_records[1]
    assert "messaging.kafka.message.key" not in {a.key for a in second.attributes}
    assert record.trace_id == (0xABC).to_bytes(16, "big")
    assert record.flags == 3
    assert request.resource_logs[0].scope_logs[0].scope.name == "otel_kafka_events"


def test_partition_by_trace_id_keys_each_trace() -> None:
    sent = direct_requests("attributes", partition_by_trace_id=True)

    keys = [key for key, _ in sent]
    assert keys == [f"{0xABC:032x}".encode(), None]
    counts = [len(r.resource_logs[0].scope_logs[0].log_records) for _, r in sent]
    assert counts == [1, 1]


def test_json_has_hex_ids_and_numeric_enums() -> None:
    request = sdk_request("attributes").SerializeToString()

    text = encode_message(request, "otlp_json").decode()

    assert f'"traceId":"{0xABC:032x}"' in text
    assert f'"spanId":"{0xDEF:016x}"' in text
    assert '"severityNumber":13' in text
    assert '"eventName":"t.shop.a"' in text


def test_varint_and_values() -> None:
    assert wire.varint(300) == b"\xac\x02"
    assert wire.any_value(-1) == b"\x18" + b"\xff" * 9 + b"\x01"
    with pytest.raises(TypeError, match="Invalid type"):
        wire.any_value(object())
