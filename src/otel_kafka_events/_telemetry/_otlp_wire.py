"""OTLP log messages written directly in the protobuf wire format.

The direct log path (`TelemetryOptions.log_export` with ``direct=True``)
turns delivered events into an ``ExportLogsServiceRequest`` without the
SDK's per-record objects and without building protobuf message objects:
each record is a few byte strings joined, with the parts that repeat
(severity, event name, trace ids of a span, resource, scope) encoded once.
The messages are the ones the SDK's OTLP encoder writes for the same
records, field for field (``tests/test_otlp_wire.py`` compares them).

Field numbers are those of ``opentelemetry/proto/logs/v1/logs.proto`` and
``common/v1/common.proto``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import SpanContext

__all__ = [
    "ATTRIBUTE",
    "EMPTY_BODY",
    "AttributePlan",
    "any_value",
    "attribute_plan",
    "attributes_field",
    "body_field",
    "event_attributes",
    "event_name_field",
    "logs_request",
    "observed_field",
    "resource_logs_prefix",
    "severity_fields",
    "time_field",
    "trace_fields",
    "varint",
]

_SMALL = [bytes((i,)) for i in range(128)]
_TAGGED_FIXED64 = struct.Struct("<BQ").pack
_FIXED32 = struct.Struct("<I").pack
_DOUBLE = struct.Struct("<d").pack
_INT64_MASK = (1 << 64) - 1

# Tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 bytes, 5 fixed32).
_STRING_VALUE = b"\x0a"  # AnyValue.string_value = 1
_BOOL_TRUE = b"\x10\x01"  # AnyValue.bool_value = 2
_BOOL_FALSE = b"\x10\x00"
_INT_VALUE = b"\x18"  # AnyValue.int_value = 3
_DOUBLE_VALUE = b"\x21"  # AnyValue.double_value = 4
_ARRAY_VALUE = b"\x2a"  # AnyValue.array_value = 5
_KVLIST_VALUE = b"\x32"  # AnyValue.kvlist_value = 6
_BYTES_VALUE = b"\x3a"  # AnyValue.bytes_value = 7
_VALUES = b"\x0a"  # ArrayValue.values = 1, KeyValueList.values = 1
_KEY_VALUE_VALUE = b"\x12"  # KeyValue.value = 2

EMPTY_BODY = _EMPTY_BODY = b"\x2a\x00"  # LogRecord.body = 5, an empty AnyValue
_BODY = b"\x2a"
ATTRIBUTE = _ATTRIBUTE = b"\x32"  # LogRecord.attributes = 6
_LOG_RECORD = b"\x12"  # ScopeLogs.log_records = 2
_SCOPE_LOGS = b"\x12"  # ResourceLogs.scope_logs = 2
_RESOURCE_LOGS = b"\x0a"  # ExportLogsServiceRequest.resource_logs = 1


def varint(value: int) -> bytes:
    """A non-negative integer as a protobuf varint."""
    if value < 128:
        return _SMALL[value]
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _sized(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field."""
    size = len(data)
    return tag + (_SMALL[size] if size < 128 else varint(size)) + data


_key_fields: dict[str, bytes] = {}


def _key_value(key: str, value: Any) -> bytes:
    """A ``KeyValue`` message."""
    prefix = _key_fields.get(key)
    if prefix is None:
        prefix = _sized(b"\x0a", key.encode())
        if len(_key_fields) < 4096:
            _key_fields[key] = prefix
    return prefix + _sized(_KEY_VALUE_VALUE, any_value(value))


def any_value(value: Any) -> bytes:
    """An ``AnyValue`` message, as the SDK's encoder writes ``value``.

    The same types in the same order as the SDK: None (an empty message),
    bool, str, int, float, bytes, sequences, mappings (keys as text).

    Raises
    ------
    TypeError
        For any other type (the SDK raises too).
    """
    kind = type(value)
    if kind is str:
        return _sized(_STRING_VALUE, value.encode())
    if value is None:
        return b""
    if isinstance(value, bool):
        return _BOOL_TRUE if value else _BOOL_FALSE
    if isinstance(value, str):
        return _sized(_STRING_VALUE, value.encode())
    if isinstance(value, int):
        return _INT_VALUE + varint(value & _INT64_MASK)
    if isinstance(value, float):
        return _DOUBLE_VALUE + _DOUBLE(value)
    if isinstance(value, bytes):
        return _sized(_BYTES_VALUE, value)
    if isinstance(value, Sequence):
        return _sized(
            _ARRAY_VALUE, b"".join([_sized(_VALUES, any_value(v)) for v in value])
        )
    if isinstance(value, Mapping):
        return _sized(
            _KVLIST_VALUE,
            b"".join(
                [_sized(_VALUES, _key_value(str(k), v)) for k, v in value.items()]
            ),
        )
    raise TypeError(f"Invalid type {kind} of value {value!r}")


_INT64_SIGN = 1 << 63
# The ``id`` attribute of a 36-character event id, up to the id's text.
_ID_36 = b"\x32\x2c\x0a\x02id\x12\x26\x0a\x24"

AttributePlan = tuple[tuple[str, bytes, int], ...]
"""The keys an event type's values become attributes under, each with its
encoded ``KeyValue.key`` field and that field's length, in order."""


def attribute_plan(keys: Iterable[str], skipped: frozenset[str]) -> AttributePlan:
    """The `AttributePlan` of values with ``keys``, leaving out ``skipped``."""
    plan = []
    for key in keys:
        if key not in skipped:
            field = _sized(b"\x0a", key.encode())
            plan.append((key, field, len(field)))
    return tuple(plan)


def event_attributes(
    event_id: str,
    values: Mapping[str, Any],
    plan: AttributePlan,
    convert: Any,
    plain: tuple[type, ...],
) -> bytes:
    """The attribute fields of an event's record in ``"attributes"`` mode:
    what `record_fields` builds, encoded as it goes.

    The common small cases (text, integers, floats and booleans whose
    fields are shorter than 128 bytes, so that every length is one byte)
    are written in one formatting step each; anything else goes through
    `any_value`.

    Parameters
    ----------
    event_id
        The ``id`` attribute, first.
    values
        The event's values; None values are left out.
    plan
        Which values, in which order (`attribute_plan`).
    convert
        Converts values whose type is not in ``plain`` (`otel_value`).
    plain
        Types carried as they are.
    """
    data = event_id.encode()
    fields = [
        _ID_36 + data
        if len(data) == 36
        else _sized(_ATTRIBUTE, _key_value("id", event_id))
    ]
    append = fields.append
    for key, field, size in plan:
        value = values[key]
        if value is None:
            continue
        kind = type(value)
        if kind is str:
            data = value.encode()
            length = len(data)
            # Key, value tag, value length, string tag, string length: all
            # lengths below 128 are one byte.
            total = size + length + 4
            if total < 128:
                append(b"2%c%b\x12%c\n%c%b" % (total, field, length + 2, length, data))
                continue
        elif kind is int:
            if 0 <= value < _INT64_SIGN:
                encoded = _INT_VALUE + (_SMALL[value] if value < 128 else varint(value))
                total = size + 2 + len(encoded)
                if total < 128:
                    append(b"2%c%b\x12%c%b" % (total, field, len(encoded), encoded))
                    continue
        elif kind is float:
            if size + 11 < 128:
                append(b"2%c%b\x12\x09!%b" % (size + 11, field, _DOUBLE(value)))
                continue
        elif kind is bool:
            append(b"2%c%b\x12\x02\x10%c" % (size + 4, field, value))
            continue
        if kind not in plain:
            value = convert(value)
        append(_sized(_ATTRIBUTE, _key_value(key, value)))
    return b"".join(fields)


def attributes_field(tag: bytes, attributes: Mapping[str, Any]) -> bytes:
    """A repeated ``KeyValue`` field (``tag`` says which) holding ``attributes``."""
    return b"".join(
        [_sized(tag, _key_value(key, value)) for key, value in attributes.items()]
    )


def severity_fields(severity: SeverityNumber) -> bytes:
    """``severity_number`` and ``severity_text`` of a record."""
    return b"\x10" + varint(severity.value) + _sized(b"\x1a", severity.name.encode())


def event_name_field(name: str) -> bytes:
    """``event_name`` of a record (field 12)."""
    return _sized(b"\x62", name.encode())


def trace_fields(span_context: SpanContext | None) -> bytes:
    """``flags``, ``trace_id`` and ``span_id`` of a record; nothing without a
    span (the SDK leaves them unset then, and its flags are 0)."""
    if span_context is None:
        return b""
    flags = int(span_context.trace_flags)
    out = b"\x45" + _FIXED32(flags) if flags else b""
    return (
        out
        + b"\x4a\x10"
        + span_context.trace_id.to_bytes(16, "big")
        + b"\x52\x08"
        + span_context.span_id.to_bytes(8, "big")
    )


def time_field(time_ns: int) -> bytes:
    """``time_unix_nano`` of a record."""
    return _TAGGED_FIXED64(0x09, time_ns)  # field 1, fixed64


def body_field(body: Any) -> bytes:
    """``body`` of a record: always written, empty for None, as the SDK's
    encoder does."""
    return _EMPTY_BODY if body is None else _sized(_BODY, any_value(body))


def observed_field(observed_ns: int) -> bytes:
    """``observed_time_unix_nano`` of a record."""
    return _TAGGED_FIXED64(0x59, observed_ns)  # field 11, fixed64


def resource_logs_prefix(
    resource_attributes: Mapping[str, Any],
    resource_schema_url: str,
    scope_name: str,
    scope_version: str | None,
) -> tuple[bytes, bytes, bytes]:
    """The constant parts of a request with one resource and one scope.

    Returns
    -------
    tuple
        The ``resource`` field, the ``scope`` field of the ``ScopeLogs``,
        and the ``schema_url`` field of the ``ResourceLogs`` (or empty).
    """
    resource = _sized(b"\x0a", attributes_field(b"\x0a", resource_attributes))
    scope = _sized(b"\x0a", scope_name.encode())
    if scope_version:
        scope += _sized(b"\x12", scope_version.encode())
    schema = (
        _sized(b"\x1a", resource_schema_url.encode()) if resource_schema_url else b""
    )
    return resource, _sized(b"\x0a", scope), schema


def logs_request(prefix: tuple[bytes, bytes, bytes], records: Iterable[bytes]) -> bytes:
    """An ``ExportLogsServiceRequest`` (which is also a ``LogsData``) holding
    ``records`` (``ScopeLogs.log_records`` fields) under one resource and
    scope."""
    resource, scope, schema = prefix
    scope_logs = _sized(_SCOPE_LOGS, scope + b"".join(records))
    return _sized(_RESOURCE_LOGS, resource + scope_logs + schema)
