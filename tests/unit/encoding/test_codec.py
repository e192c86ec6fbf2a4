"""Unit tests of the Confluent framing, the encoder and the decoder.

The decoder tests use `LocalSchemaRegistry` over a real socket (it starts in
milliseconds and needs no broker), so ``decode`` is exercised exactly as a
consumer would use it.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_kafka_events import EventDecoder, EventPayload, decode
from otel_kafka_events._encoding import _codec
from otel_kafka_events._encoding._codec import (
    MAGIC_BYTE,
    EventEncoder,
    avro_long,
    checked_c_writer,
    confluent_header,
    set_schema_id,
    split_confluent_frame,
)
from otel_kafka_events._encoding._event_type import EventType
from otel_kafka_events.errors import EventPayloadError
from otel_kafka_events.testing import MemorySchemaRegistry

TOPIC = "test.events.codec_app"

RECORD: dict[str, Any] = {
    "type": "record",
    "name": "sample",
    "namespace": TOPIC,
    "fields": [
        {"name": "label", "type": "string"},
        {"name": "count", "type": "long"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


class Sample(EventPayload):
    """The payload of the decoder tests."""

    label: str
    count: int
    when: dt.datetime


# -- Framing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema_id", "expected"),
    [
        (1, b"\x00\x00\x00\x00\x01"),
        (0x01020304, b"\x00\x01\x02\x03\x04"),
        (2**32 - 1, b"\x00\xff\xff\xff\xff"),
    ],
)
def test_confluent_header(schema_id: int, expected: bytes) -> None:
    header = confluent_header(schema_id)
    assert header == expected
    assert header[0] == MAGIC_BYTE == 0


def test_split_confluent_frame() -> None:
    value = confluent_header(513) + b"avro body"
    assert split_confluent_frame(value) == (513, b"avro body")


def test_split_header_only_gives_empty_body() -> None:
    assert split_confluent_frame(confluent_header(9)) == (9, b"")


@pytest.mark.parametrize("value", [b"", b"\x00", b"\x00\x00\x00\x01"])
def test_split_too_short(value: bytes) -> None:
    with pytest.raises(ValueError, match=f"value of {len(value)} bytes is too short"):
        split_confluent_frame(value)


@pytest.mark.parametrize("magic", [1, 0x7F, 0xFF])
def test_split_bad_magic_byte(magic: int) -> None:
    value = bytes([magic]) + b"\x00\x00\x00\x01body"
    with pytest.raises(ValueError, match=f"unknown magic byte {magic} "):
        split_confluent_frame(value)


def test_set_schema_id_patches_in_place() -> None:
    value = bytearray(confluent_header(0) + b"body")
    set_schema_id(value, 4242)
    assert bytes(value) == confluent_header(4242) + b"body"


# -- Encoder ------------------------------------------------------------------


def read_body(value: bytes, record: dict[str, Any]) -> Any:
    """Read the Avro body after a Confluent header with ``record``."""
    _, body = split_confluent_frame(value)
    return schemaless_reader(io.BytesIO(body), parse_schema(record), None)


def test_encoder_writes_header_then_body() -> None:
    encoder = EventEncoder("sample", RECORD)
    value = encoder.encode({"label": "a", "count": 3, "note": None}, b"\x00\0\0\0\x05")
    assert isinstance(value, bytearray)
    assert split_confluent_frame(bytes(value))[0] == 5
    assert read_body(bytes(value), RECORD) == {"label": "a", "count": 3, "note": None}


def test_encoder_is_reusable() -> None:
    encoder = EventEncoder("sample", RECORD)
    header = confluent_header(1)
    values = [
        encoder.encode({"label": str(n), "count": n, "note": "x"}, header)
        for n in range(3)
    ]
    assert [read_body(bytes(v), RECORD)["count"] for v in values] == [0, 1, 2]


@pytest.mark.parametrize(
    ("datum", "field"),
    [
        ({"label": "a", "count": "three", "note": None}, "count"),
        ({"label": 7, "count": 1, "note": None}, "label"),
        ({"label": "a", "count": 1, "note": 5}, "note"),
    ],
)
def test_encoder_error_names_the_field(datum: dict[str, Any], field: str) -> None:
    encoder = EventEncoder("sample", RECORD)
    with pytest.raises(EventPayloadError) as caught:
        encoder.encode(datum, confluent_header(1))
    assert caught.value.event == "sample"
    assert f"sample.{field}" in caught.value.detail


def test_encoder_missing_field_refused() -> None:
    encoder = EventEncoder("sample", RECORD)
    with pytest.raises(EventPayloadError, match="label"):
        encoder.encode({"count": 1, "note": None}, confluent_header(1))


# -- Metadata written by an event type -----------------------------------------


def compiled(*, trace_context: bool = True) -> EventType[Sample]:
    """The event type of `Sample`, registered under a made-up id."""
    event_type = EventType(
        "sample", TOPIC, "codec_app", Sample, trace_context=trace_context
    )
    event_type.set_schema_id(11)
    return event_type


def test_value_before_registration_has_placeholder_id() -> None:
    event_type = EventType("sample", TOPIC, "codec_app", Sample)
    payload = Sample(label="x", count=1, when=dt.datetime.now(dt.UTC))
    assert split_confluent_frame(bytes(event_type.enrich(payload).value))[0] == 0
    event_type.set_schema_id(12)
    assert split_confluent_frame(bytes(event_type.enrich(payload).value))[0] == 12


def test_metadata_written_outside_a_span() -> None:
    event_type = compiled()
    when = dt.datetime(2024, 5, 6, 7, 8, 9, 123_456, tzinfo=dt.UTC)
    enriched = event_type.enrich(Sample(label="x", count=2, when=when))
    event = enriched.event
    assert enriched.span_context is None
    decoded = read_body(bytes(enriched.value), event_type.schema)
    assert decoded["id"] == event.id
    assert decoded["id"].version == 4
    assert decoded["application"] == "codec_app"
    assert decoded["timestamp_ns"] == event.timestamp_ns
    # Microseconds, taken from the exact nanoseconds.
    assert decoded["timestamp"] == dt.datetime.fromtimestamp(0, dt.UTC) + dt.timedelta(
        microseconds=event.timestamp_ns // 1000
    )
    assert decoded["timestamp"].tzinfo is not None
    assert abs(decoded["timestamp"] - event.timestamp) < dt.timedelta(microseconds=2)
    assert (decoded["trace_id"], decoded["span_id"], decoded["trace_flags"]) == (
        None,
        None,
        None,
    )
    assert (event.trace_id, event.span_id, event.trace_flags) == (None, None, None)
    assert (decoded["label"], decoded["count"], decoded["when"]) == ("x", 2, when)


def test_ids_are_unique_uuid4() -> None:
    event_type = compiled()
    payload = Sample(label="x", count=1, when=dt.datetime.now(dt.UTC))
    ids = [event_type.enrich(payload).event.id for _ in range(500)]
    assert len(set(ids)) == 500
    assert all(isinstance(i, uuid.UUID) and i.version == 4 for i in ids)
    assert all(uuid.UUID(str(i)) == i for i in ids)


def test_trace_context_of_the_active_span_is_written() -> None:
    event_type = compiled()
    context = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=TraceFlags(0x01),
    )
    payload = Sample(label="x", count=1, when=dt.datetime.now(dt.UTC))
    with trace.use_span(NonRecordingSpan(context)):
        enriched = event_type.enrich(payload)
    assert enriched.span_context == context
    decoded = read_body(bytes(enriched.value), event_type.schema)
    assert decoded["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert decoded["span_id"] == "00f067aa0ba902b7"
    assert decoded["trace_flags"] == 1
    assert enriched.event.trace_id == decoded["trace_id"]


def test_no_trace_fields_when_trace_context_is_off() -> None:
    event_type = compiled(trace_context=False)
    context = SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(1))
    payload = Sample(label="x", count=1, when=dt.datetime.now(dt.UTC))
    with trace.use_span(NonRecordingSpan(context)):
        enriched = event_type.enrich(payload)
    decoded = read_body(bytes(enriched.value), event_type.schema)
    assert "trace_id" not in decoded
    assert not hasattr(enriched.event, "trace_id")


# -- Decoder --------------------------------------------------------------------


async def registered(registry: MemorySchemaRegistry) -> EventType[Sample]:
    """`Sample`'s event type with its schema registered."""
    event_type = EventType("sample", TOPIC, "codec_app", Sample)
    schema_id = await registry.register(f"{TOPIC}.sample", event_type.schema)
    event_type.set_schema_id(schema_id)
    return event_type


async def test_decode_through_a_registry() -> None:
    registry = MemorySchemaRegistry()
    event_type = await registered(registry)
    when = dt.datetime(2020, 2, 2, 2, 2, 2, 2, tzinfo=dt.UTC)
    enriched = event_type.enrich(Sample(label="by registry", count=-1, when=when))
    decoded = await decode(bytes(enriched.value), registry)
    assert decoded["label"] == "by registry"
    assert decoded["count"] == -1
    assert decoded["when"] == when
    assert decoded["id"] == enriched.event.id


async def test_decoder_caches_writer_schemas() -> None:
    registry = MemorySchemaRegistry()
    event_type = await registered(registry)
    decoder = EventDecoder(registry)
    when = dt.datetime.now(dt.UTC)
    first = event_type.enrich(Sample(label="a", count=1, when=when))
    assert (await decoder.decode(bytes(first.value)))["label"] == "a"
    registry.available = False
    # The schema is not fetched again, so the registry is not needed.
    second = event_type.enrich(Sample(label="b", count=2, when=when))
    assert (await decoder.decode(bytes(second.value)))["label"] == "b"


async def test_decode_unknown_schema_id() -> None:
    with pytest.raises(ValueError, match="schema id 987654 is unknown"):
        await decode(confluent_header(987654) + b"\x00", MemorySchemaRegistry())


async def test_decode_non_record_schema() -> None:
    registry = MemorySchemaRegistry()
    schema_id = await registry.register("codec.plain_string", {"type": "string"})
    value = confluent_header(schema_id) + b"\x06abc"
    with pytest.raises(ValueError, match="not a record schema"):
        await decode(value, registry)


async def test_decode_unframed_value() -> None:
    with pytest.raises(ValueError, match="magic byte"):
        await decode(b'{"json": true}', MemorySchemaRegistry())


def test_encoder_names_the_field_fastavro_would_accept() -> None:
    # 1e300 does not fit a 32-bit float; fastavro's validator accepts it (and
    # its writer would write infinity), so the error names the field itself.
    record = {
        "type": "record",
        "name": "sample",
        "namespace": TOPIC,
        "fields": [
            {"name": "label", "type": "string"},
            {"name": "ratio", "type": "float"},
        ],
    }
    encoder = EventEncoder("sample", record)
    with pytest.raises(EventPayloadError) as caught:
        encoder.encode({"label": "a", "ratio": 1e300}, confluent_header(1))
    assert "sample.ratio" in caught.value.detail
    assert "OverflowError" in caught.value.detail


# -- fastavro's C writer, checked before use ---------------------------------


def test_the_installed_fastavro_c_writer_passes_the_check() -> None:
    from fastavro._write import write_data  # type: ignore[attr-defined]

    assert checked_c_writer(write_data) is write_data
    assert _codec._write_data is write_data


def _one_byte_more(out: bytearray, *args: Any) -> None:
    _codec._write_data(out, *args)
    out.append(0)


def _another_signature(out: bytearray, datum: Any, schema: Any) -> None:
    _codec._write_data(out, datum, schema, {}, "", {})


@pytest.mark.parametrize(
    "candidate",
    [_one_byte_more, _another_signature, None, "write_data"],
    ids=["other bytes", "other signature", "missing", "not callable"],
)
def test_a_c_writer_that_is_not_the_known_one_is_refused(candidate: Any) -> None:
    assert checked_c_writer(candidate) is None


def test_write_long_without_the_c_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    values = [0, -1, 63, 64, -(2**63), 2**63 - 1, 1_796_212_800_123_456_789]
    fast = bytearray()
    for value in values:
        _codec.write_long(fast, value)
    monkeypatch.setattr(_codec, "_write_data", None)
    plain = bytearray()
    for value in values:
        _codec.write_long(plain, value)
    assert plain == fast == b"".join(avro_long(v) for v in values)
