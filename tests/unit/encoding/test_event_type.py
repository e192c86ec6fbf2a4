"""Our split encoding writes exactly what fastavro writes for the whole record.

`EventType.enrich` writes the metadata fields itself and lets fastavro write
the payload fields after them. These tests encode the same event with
fastavro's ``schemaless_writer`` and the full (logical-type) schema and
compare the bytes, with and without trace context, inside and outside a span.
"""

from __future__ import annotations

import datetime as dt
import enum
import io
import uuid
from decimal import Decimal
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel, Field

from otel_kafka_events import EventPayload
from otel_kafka_events._encoding._codec import (
    avro_long,
    split_confluent_frame,
    write_long,
)
from otel_kafka_events._encoding._event_type import EventType


class Color(enum.Enum):
    """A plain Enum with int values (symbols are the member names)."""

    RED = 1
    GREEN = 2


class Point(BaseModel):
    """A nested record."""

    x: int
    y: float


class Rich(EventPayload):
    """A payload with converted and plain fields."""

    label: str
    count: int
    when: dt.datetime
    day: dt.date
    elapsed: dt.timedelta
    ref: uuid.UUID
    amount: Decimal = Field(max_digits=8, decimal_places=2)
    color: Color
    point: Point
    tags: list[str]
    extra: dict[str, int]
    maybe: int | None = None


PAYLOAD = Rich(
    label="héllo",
    count=-7,
    when=dt.datetime(2026, 11, 26, 12, 30, 1, 123456, tzinfo=dt.UTC),
    day=dt.date(2026, 11, 26),
    elapsed=dt.timedelta(seconds=1.5),
    ref=uuid.UUID("12345678-1234-4234-8234-123456789abc"),
    amount=Decimal("-123.45"),
    color=Color.GREEN,
    point=Point(x=3, y=-0.25),
    tags=["a", "b"],
    extra={"k": 1},
)


def _reference(event_type: EventType[Any], event: Any) -> bytes:
    """Encode ``event`` with fastavro and the full logical-type schema."""
    datum = dict(event.__dict__)
    datum["elapsed"] = datum["elapsed"].total_seconds()
    datum["color"] = datum["color"].name
    datum["point"] = dict(datum["point"].__dict__)
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(event_type.schema), datum)
    return out.getvalue()


@pytest.mark.parametrize("trace_context", [True, False])
@pytest.mark.parametrize("in_span", [True, False])
def test_enrich_matches_fastavro_whole_record(
    trace_context: bool, in_span: bool
) -> None:
    event_type = EventType(
        "rich", "test.events.app", "app", Rich, trace_context=trace_context
    )
    event_type.set_schema_id(42)
    tracer = TracerProvider().get_tracer("test")
    if in_span:
        with tracer.start_as_current_span("request"):
            enriched = event_type.enrich(PAYLOAD)
    else:
        enriched = event_type.enrich(PAYLOAD)
    schema_id, body = split_confluent_frame(bytes(enriched.value))
    assert schema_id == 42
    assert body == _reference(event_type, enriched.event)
    if trace_context:
        assert (enriched.event.trace_id is not None) == in_span


@pytest.mark.parametrize(
    "value",
    [0, 1, -1, 63, -64, 64, 2**31, -(2**31), 2**62, 2**63 - 1, -(2**63)],
)
def test_avro_long_matches_fastavro(value: int) -> None:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema("long"), value)
    assert avro_long(value) == out.getvalue()


@pytest.mark.parametrize(
    "value",
    [
        0,
        5,
        2**27 - 1,
        2**27,  # the first value with bits above the low 28 after zig-zag
        2**27 + 1,
        1_795_726_645_329_591,  # a clock in microseconds
        1_795_726_645_329_591_432,  # and in nanoseconds
        2**63 - 2,  # the largest whose neighbour is still an Avro long
        -1,
        -(2**40),
    ],
)
def test_write_long_matches_avro_long(value: int) -> None:
    out = bytearray(b"prefix")
    write_long(out, value)
    assert bytes(out) == b"prefix" + avro_long(value)


def test_write_long_follows_a_running_clock() -> None:
    start = 1_795_726_645_329_591_432
    for step in range(0, 2**30, 2**30 // 997):
        out = bytearray()
        write_long(out, start + step)
        assert bytes(out) == avro_long(start + step)
