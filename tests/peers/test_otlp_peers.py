"""Events' log records judged by the OpenTelemetry Collector and by ours.

The SDK's OTLP exporters (HTTP and gRPC) send the records of published events
to a real collector, whose file exporter writes what it understood; the same
records over HTTP to `OtlpReceiver` must meet the same expectations. Every
payload value kind the library turns into OTLP values is in the payload, and
both log modes (attributes, body) are checked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel, Field

from otel_kafka_events import (
    EventMetadata,
    EventPayload,
    NoopEventManager,
    TelemetryOptions,
)
from otel_kafka_events_devstack import OtlpReceiver
from otel_kafka_events_devstack._otlp import ReceivedLog

from ..conftest import TOPIC_PREFIX, ManagerFactory, unique_application

# Flushes come from aclose only, never from the processor's timer.
NEVER = 3_600_000
PREFIX = TOPIC_PREFIX
APPLICATION = "shop"
RESOURCE = {"service.name": "otlp-peer-test", "deployment.environment": "ci"}


class Tier(enum.Enum):
    FREE = "free"
    PRO = "pro"


class Parcel(BaseModel):
    """A nested model with a list and a decimal of its own."""

    label: str
    kg: Annotated[Decimal, Field(max_digits=6, decimal_places=3)]
    tags: list[str]


class Shipment(EventPayload):
    """Every value kind the OTLP encoder cannot take as is, and some it can."""

    sent: dt.datetime
    tier: Tier
    price: Annotated[Decimal, Field(max_digits=10, decimal_places=2)]
    parcel: Parcel
    parcels: list[Parcel]
    counts: dict[str, int]
    took: dt.timedelta
    digest: bytes
    note: str | None = None
    urgent: bool = True
    ratio: float = 0.25


class Login(EventPayload):
    username: str
    attempts: int


def shipment() -> Shipment:
    return Shipment(
        sent=dt.datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=dt.UTC),
        tier=Tier.PRO,
        price=Decimal("19.99"),
        parcel=Parcel(label="box", kg=Decimal("1.250"), tags=["fragile"]),
        parcels=[Parcel(label="bag", kg=Decimal("0.500"), tags=[])],
        counts={"box": 1, "bag": 2},
        took=dt.timedelta(minutes=1, milliseconds=250),
        digest=b"\x00\xffsha",
    )


def shipment_values() -> dict[str, Any]:
    """The payload as OTLP values, written out by hand."""
    return {
        "sent": "2026-03-04T05:06:07.123456+00:00",
        "tier": "pro",
        "price": "19.99",
        "parcel": {"label": "box", "kg": "1.250", "tags": ["fragile"]},
        "parcels": [{"label": "bag", "kg": "0.500", "tags": []}],
        "counts": {"box": 1, "bag": 2},
        "took": 60.25,
        "digest": b"\x00\xffsha",
        "urgent": True,
        "ratio": 0.25,
    }


@dataclass
class Peer:
    """Where the exporter sends, and how to read what arrived."""

    exporter: LogRecordExporter
    wait_for_logs: Callable[[int, float], list[ReceivedLog]]


@pytest.fixture(params=["receiver-http", "collector-http", "collector-grpc"])
def peer(request: pytest.FixtureRequest) -> Iterator[Peer]:
    kind: str = request.param
    if kind == "receiver-http":
        with OtlpReceiver() as receiver:
            yield Peer(
                HttpLogExporter(endpoint=receiver.logs_endpoint, timeout=10),
                receiver.wait_for_logs,
            )
        assert receiver.errors == []
        return
    collector = request.getfixturevalue("otel_collector")
    exporter: LogRecordExporter
    if kind == "collector-http":
        exporter = HttpLogExporter(endpoint=collector.logs_endpoint, timeout=10)
    else:
        exporter = GrpcLogExporter(
            endpoint=collector.grpc_endpoint, insecure=True, timeout=10
        )
    yield Peer(exporter, collector.wait_for_logs)


async def publish_two(
    make_kafka_manager: ManagerFactory, peer: Peer, mode: str, application: str
) -> tuple[EventMetadata, EventMetadata, trace.SpanContext]:
    """Publish a Shipment and a Login (WARN) in one span; flush on aclose."""
    provider = LoggerProvider(resource=Resource.create(RESOURCE))
    provider.add_log_record_processor(
        BatchLogRecordProcessor(peer.exporter, schedule_delay_millis=NEVER)
    )
    tracer = TracerProvider().get_tracer("tests.otlp_peers")
    try:
        manager = await make_kafka_manager(
            application=application,
            telemetry=TelemetryOptions(
                logs=True,
                logger_provider=provider,
                log_mode="body" if mode == "body" else "attributes",
            ),
        )
        shipments = await manager.create_publisher("shipment", Shipment)
        logins = await manager.create_publisher(
            "login", Login, log_severity=SeverityNumber.WARN
        )
        with tracer.start_as_current_span("checkout") as span:
            shipped = await shipments.publish(shipment())
            logged = await logins.publish(Login(username="ada", attempts=3))
        assert await manager.aclose(timeout=30) == 0
    finally:
        provider.shutdown()
    return shipped, logged, span.get_span_context()


def metadata(event: EventMetadata, *, body: bool) -> dict[str, Any]:
    """The event's metadata in a record (all of it only in the body)."""
    values: dict[str, Any] = {"id": str(event.id), "application": event.application}
    if body:
        values["timestamp"] = event.timestamp.isoformat()
        values["timestamp_ns"] = event.timestamp_ns
        # The enriched event (a subclass) carries the trace context.
        for field in ("trace_id", "span_id", "trace_flags"):
            values[field] = getattr(event, field)
    return values


@pytest.mark.parametrize("mode", ["attributes", "body"])
async def test_peer_receives_every_value_kind(
    make_kafka_manager: ManagerFactory, peer: Peer, mode: str
) -> None:
    application = unique_application()
    shipped, logged, span = await publish_two(
        make_kafka_manager, peer, mode, application
    )
    received = await asyncio.to_thread(peer.wait_for_logs, 2, 10.0)

    check_two_records(received, application, shipped, logged, span, mode=mode)


def check_two_records(
    received: list[ReceivedLog],
    application: str,
    shipped: EventMetadata,
    logged: EventMetadata,
    span: trace.SpanContext,
    *,
    mode: str,
) -> None:
    """What `publish_two` must have produced, as a peer decoded it."""
    name = f"{PREFIX}.{application}"

    by_name = {r.event_name: r for r in received}
    assert sorted(by_name) == [f"{name}.{n}" for n in ("login", "shipment")]
    for record, event, severity in [
        (by_name[f"{name}.shipment"], shipped, SeverityNumber.INFO),
        (by_name[f"{name}.login"], logged, SeverityNumber.WARN),
    ]:
        assert record.time_unix_nano == event.timestamp_ns
        assert record.observed_time_unix_nano >= record.time_unix_nano
        assert (record.severity_number, record.severity_text) == (
            severity.value,
            severity.name,
        )
        assert record.trace_id == f"{span.trace_id:032x}"
        assert record.span_id == f"{span.span_id:016x}"
        assert record.flags & 0xFF == int(span.trace_flags)
        assert record.scope == "otel_kafka_events"
        assert {k: record.resource.get(k) for k in RESOURCE} == RESOURCE
        assert record.resource["telemetry.sdk.language"] == "python"

    shipment_record = by_name[f"{name}.shipment"]
    login_record = by_name[f"{name}.login"]
    if mode == "body":
        assert shipment_record.attributes == {"event.name": shipment_record.event_name}
        assert shipment_record.body == {
            **metadata(shipped, body=True),
            **shipment_values(),
            "note": None,
        }
        assert login_record.body == {
            **metadata(logged, body=True),
            "username": "ada",
            "attempts": 3,
        }
    else:
        assert shipment_record.body is None
        # A null field is left out rather than sent as an empty value.
        assert shipment_record.attributes == {
            **metadata(shipped, body=False),
            **shipment_values(),
        }
        assert login_record.attributes == {
            **metadata(logged, body=False),
            "username": "ada",
            "attempts": 3,
        }


async def test_peer_receives_records_without_trace(peer: Peer) -> None:
    provider = LoggerProvider(resource=Resource.create(RESOURCE))
    provider.add_log_record_processor(
        BatchLogRecordProcessor(peer.exporter, schedule_delay_millis=NEVER)
    )
    try:
        manager = NoopEventManager(
            APPLICATION,
            PREFIX,
            telemetry=TelemetryOptions(logs=True, logger_provider=provider),
        )
        await manager.initialize()
        logins = await manager.create_publisher("login", Login)
        event = await logins.publish(Login(username="bob", attempts=1))
        await manager.aclose()
    finally:
        provider.shutdown()
    [record] = await asyncio.to_thread(peer.wait_for_logs, 1, 10.0)

    assert (record.trace_id, record.span_id) == ("", "")
    assert record.time_unix_nano == event.timestamp_ns
    assert record.attributes == {
        **metadata(event, body=False),
        "username": "bob",
        "attempts": 1,
    }


async def test_noop_manager_publishes_any_bytes() -> None:
    manager = NoopEventManager(APPLICATION, PREFIX)
    await manager.initialize()
    publisher = await manager.create_publisher("shipment", Shipment)

    event = await publisher.publish(shipment())

    assert event.application == APPLICATION
