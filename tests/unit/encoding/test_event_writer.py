"""The generated writer writes what the field-by-field path writes.

`compile_event_writer` lays one event type's whole encoding out as a single
function. The reference here is the path it replaced: the metadata written
piece by piece, each payload value converted by its converter, then
`EventEncoder` writing the fields one by one. For every payload either both
write the same bytes, or both refuse it; a refusal from the generated
writer is an `EventPayloadError` naming the same field and reason as the
reference's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings

from otel_kafka_events import EventPayload
from otel_kafka_events._encoding import _codec
from otel_kafka_events._encoding._codec import avro_long, avro_string, write_long
from otel_kafka_events._encoding._event_type import EventType
from otel_kafka_events.errors import EventPayloadError

from ...payload_cases import Case, build, cases

TOPIC = "test.events.writer"
EVENT_ID = "6f1c2b8e-93a4-4d2a-8b1e-3c5d7e9f0a1b"
TIMESTAMP_NS = 1_796_212_800_123_456_789


PROPERTY_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def reference(
    event_type: EventType[Any], trace_avro: bytes, fields: dict[str, Any]
) -> bytes:
    """The value as the field-by-field path writes it (its error if not)."""
    out = bytearray(b"\x00\x00\x00\x00\x07")
    out += avro_long(36)
    out += EVENT_ID.encode()
    out += avro_string(event_type.application)
    write_long(out, TIMESTAMP_NS // 1000)
    write_long(out, TIMESTAMP_NS)
    out += trace_avro
    datum = dict(fields)
    for name, converter in event_type.converters:
        if datum[name] is not None:
            try:
                datum[name] = converter(datum[name])
            except (ValueError, TypeError, AttributeError) as exc:
                raise EventPayloadError(
                    event_type.name, f"field {name!r}: {exc}"
                ) from exc
    event_type.encoder.write(out, datum)
    return bytes(out)


def outcome(call: Any) -> Any:
    try:
        return bytes(call())
    except EventPayloadError as exc:
        # What names the fields must match; the library's own exception text
        # quoted at the end (its repr of the parsed schema) may differ.
        return ("refused", _QUOTED_CAUSE.sub("", str(exc)))


_QUOTED_CAUSE = re.compile(r" \((?:ValueError|TypeError|OverflowError): .*\)\Z", re.S)


def compare(event_type: EventType[Any], fields: dict[str, Any]) -> Any:
    """Both outcomes for one payload's fields, asserted equal."""
    event_type.set_schema_id(7)
    trace_avro = b"\x00\x00\x00"
    generated = outcome(
        lambda: event_type.encode(EVENT_ID, TIMESTAMP_NS, trace_avro, fields)
    )
    expected = outcome(lambda: reference(event_type, trace_avro, fields))
    assert generated == expected
    return generated


@PROPERTY_SETTINGS
@given(case=cases())
def test_validated_payloads_are_written_alike(case: Case) -> None:
    event_type = EventType(f"e{id(case)}", TOPIC, "writer", case.model)
    payload = build(case)
    if payload is None:
        return
    note(f"fields: {payload.__dict__!r}")
    compare(event_type, payload.__dict__)


@PROPERTY_SETTINGS
@given(case=cases())
def test_unvalidated_values_are_refused_alike(case: Case) -> None:
    # model_construct skips validation, so values of any type reach the
    # writer: out-of-range ints, naive datetimes, wrong types.
    event_type = EventType(f"u{id(case)}", TOPIC, "writer", case.model)
    payload = case.model.model_construct(**case.raw)
    note(f"fields: {payload.__dict__!r}")
    compare(event_type, payload.__dict__)


class Level(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Scalars(EventPayload):
    text: str
    number: int
    ratio: float
    flag: bool
    blob: bytes
    level: Level
    maybe: int | None = None
    maybe_text: str | None = None
    when: dt.datetime | None = None


GOOD = {
    "text": "x",
    "number": 1,
    "ratio": 0.5,
    "flag": True,
    "blob": b"\x00\xff",
    "level": Level.LOW,
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("number", 0),
        ("number", -1),
        ("number", 63),
        ("number", -64),
        ("number", 64),
        ("number", 8191),
        ("number", -8192),
        ("number", 8192),
        ("number", 2**63 - 1),
        ("number", -(2**63)),
        ("number", 2**63),
        ("number", -(2**63) - 1),
        ("number", True),
        ("number", 1.5),
        ("number", "1"),
        ("text", "é" * 40),
        ("text", "a" * 63),
        ("text", "a" * 64),
        ("text", "\ud800"),
        ("text", b"bytes"),
        ("text", 3),
        ("ratio", 1),
        ("ratio", float("nan")),
        ("ratio", "0.5"),
        ("flag", False),
        ("flag", 1),
        ("flag", None),
        ("blob", b""),
        ("blob", bytearray(b"ab")),
        ("blob", b"x" * 200),
        ("blob", "text"),
        ("level", Level.HIGH),
        ("level", "low"),
        ("level", "nope"),
        ("maybe", 5),
        ("maybe", 2**64),
        ("maybe", "5"),
        ("maybe_text", "set"),
        ("maybe_text", 5),
        ("when", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        ("when", dt.datetime(2026, 1, 1)),
        ("when", "2026-01-01"),
    ],
)
def test_each_inline_form_writes_and_refuses_alike(field: str, value: Any) -> None:
    event_type = EventType("scalars", TOPIC, "writer", Scalars)
    fields = {**GOOD, "maybe": None, "maybe_text": None, "when": None, field: value}
    compare(event_type, fields)


def test_a_refusal_names_the_field() -> None:
    event_type = EventType("scalars", TOPIC, "writer", Scalars)
    fields = {**GOOD, "maybe": None, "maybe_text": None, "when": None}
    fields["number"] = 2**64
    with pytest.raises(EventPayloadError, match="number") as caught:
        event_type.encode(EVENT_ID, TIMESTAMP_NS, b"", fields)
    assert caught.value.event == "scalars"


def test_types_of_one_shape_share_code_and_keep_their_own_values() -> None:
    first = EventType("scalars", TOPIC, "first_app", Scalars)
    second = EventType("scalars", TOPIC, "second_app", Scalars)
    assert first.writer.__code__ is second.writer.__code__
    fields = {**GOOD, "maybe": None, "maybe_text": None, "when": None}
    for event_type in (first, second):
        assert compare(event_type, fields) == reference(
            event_type, b"\x00\x00\x00", fields
        )
    assert compare(first, fields) != compare(second, fields)


# -- fastavro's C writer and its fallback ----------------------------------------


@contextlib.contextmanager
def public_fastavro_writer() -> Iterator[None]:
    """Inside, encoding uses fastavro's public writer only: what a fastavro
    release whose C writer `checked_c_writer` refuses gets."""
    saved = _codec._write_data
    _codec._write_data = None
    try:
        yield
    finally:
        _codec._write_data = saved


def both_writers(case: Case, fields: dict[str, Any]) -> None:
    """One payload through the C writer and through the public one: the
    same bytes, or the same refusal."""
    fast_type = EventType("writers", TOPIC, "writer", case.model)
    fast = compare(fast_type, fields)
    with public_fastavro_writer():
        plain_type = EventType("writers", TOPIC, "writer", case.model)
        assert "write_data" not in plain_type.writer.__code__.co_names
        plain = compare(plain_type, fields)
    assert plain == fast


def test_the_c_writer_is_used_with_the_installed_fastavro() -> None:
    # A fastavro release that moved it would fall back silently: this says so.
    assert _codec._write_data is not None
    assert _codec.checked_c_writer(_codec._write_data) is _codec._write_data
    event_type = EventType("scalars", TOPIC, "writer", Scalars)
    assert "write_data" in event_type.writer.__code__.co_names


@settings(PROPERTY_SETTINGS, max_examples=150)
@given(case=cases())
def test_the_public_fastavro_writer_writes_and_refuses_alike(case: Case) -> None:
    payload = build(case)
    if payload is not None:
        note(f"fields: {payload.__dict__!r}")
        both_writers(case, payload.__dict__)
    # Unvalidated values of any type: both writers refuse the same ones.
    unvalidated = case.model.model_construct(**case.raw)
    note(f"unvalidated fields: {unvalidated.__dict__!r}")
    both_writers(case, unvalidated.__dict__)
