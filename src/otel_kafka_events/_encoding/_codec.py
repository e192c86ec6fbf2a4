"""Avro encoding of events in the Confluent wire format, and decoding.

A Confluent-framed value is one magic byte (0), the schema id as a 4-byte
big-endian integer, then the Avro binary body. An event encoded while its
schema is still being registered carries schema id 0, which no registry
assigns, and `set_schema_id` writes the real id into it before it is sent.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.validation import validate

from ..errors import EventPayloadError

__all__ = [
    "MAGIC_BYTE",
    "EventDecoder",
    "EventEncoder",
    "avro_long",
    "avro_string",
    "confluent_header",
    "decode",
    "long_writer_call",
    "physical_schema",
    "set_schema_id",
    "split_confluent_frame",
    "write_long",
]

MAGIC_BYTE = 0
_NO_NAMED_SCHEMAS: dict[str, Any] = {}
_WRITE_OPTIONS = {
    "strict": False,
    "strict_allow_default": False,
    "disable_tuple_notation": False,
}
_HEADER = struct.Struct(">BI")  # magic byte (unsigned), schema id

# What `checked_c_writer` writes with both writers before it trusts the C one:
# a long at each end of its range, and a record of every kind of field that
# `EventEncoder` leaves to fastavro (array, map, union, nested record, enum).
_PROBE_LONGS = (0, -1, 1, 300, -(2**63), 2**63 - 1)
_PROBE_SCHEMA = {
    "type": "record",
    "name": "Probe",
    "fields": [
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "counts", "type": {"type": "map", "values": "long"}},
        {"name": "either", "type": ["null", "long", "string"]},
        {
            "name": "inner",
            "type": {
                "type": "record",
                "name": "Inner",
                "fields": [{"name": "level", "type": "double"}],
            },
        },
        {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A", "B"]}},
        {"name": "again", "type": ["null", "Inner"]},
    ],
}
_PROBE_DATUM = {
    "tags": ["a", "é"],
    "counts": {"x": -(2**40), "y": 1},
    "either": "two",
    "inner": {"level": 0.5},
    "kind": "B",
    "again": {"level": -1.0},
}


def checked_c_writer(candidate: Any) -> Any:
    """``candidate`` (fastavro's Cython ``write_data``) if it writes what
    fastavro's public ``schemaless_writer`` writes, else None.

    ``schemaless_writer`` re-resolves the parsed schema and allocates a
    stream on every call, about half of its cost for a small record; the
    Cython function it wraps takes the parsed schema and a bytearray
    directly. That function is not fastavro's API, so before it is used it
    writes a few values, field type by field type, and must give the public
    writer's bytes; a release that moved, renamed or changed it (or a
    pure-Python build without it) makes the encoders use the public writer.
    """
    if not callable(candidate):
        return None
    try:
        for value in _PROBE_LONGS:
            out = bytearray()
            candidate(out, value, "long", {}, "", _WRITE_OPTIONS)
            if out != avro_long(value):
                return None
        named: dict[str, Any] = {}
        parsed = cast("dict[str, Any]", parse_schema(_PROBE_SCHEMA, named))
        out = bytearray()
        for field in parsed["fields"]:
            candidate(
                out,
                _PROBE_DATUM[field["name"]],
                field["type"],
                named,
                "",
                _WRITE_OPTIONS,
            )
        stream = io.BytesIO()
        schemaless_writer(stream, parse_schema(_PROBE_SCHEMA), _PROBE_DATUM)
    except Exception:
        return None
    return candidate if bytes(out) == stream.getvalue() else None


def _find_c_writer() -> Any:
    try:
        from fastavro._write import (  # type: ignore[attr-defined]
            write_data,
        )
    except ImportError:  # a pure-Python build of fastavro
        return None
    return checked_c_writer(write_data)


def confluent_header(schema_id: int) -> bytes:
    """Return the five bytes that precede the Avro body for ``schema_id``."""
    return _HEADER.pack(MAGIC_BYTE, schema_id)


def avro_long(value: int) -> bytes:
    """Avro's binary form of a ``long``: zig-zag, then a base-128 varint."""
    return _varint((value << 1) ^ (value >> 63))


def long_writer_call(out: str, value: str) -> tuple[str, dict[str, Any]]:
    """Source of a statement appending `avro_long` of ``value`` to ``out``,
    and the names it needs: fastavro's C writer called directly where it
    is usable (generated code saves the call of `write_long` itself)."""
    if _write_data is None:
        return f"write_long({out}, {value})", {"write_long": write_long}
    return (
        f"write_data({out}, {value}, 'long', NO_NAMED_SCHEMAS, '', WRITE_OPTIONS)",
        {
            "write_data": _write_data,
            "NO_NAMED_SCHEMAS": _NO_NAMED_SCHEMAS,
            "WRITE_OPTIONS": _WRITE_OPTIONS,
        },
    )


def write_long(out: bytearray, value: int) -> None:
    """Append `avro_long` of ``value`` to ``out``, in C when fastavro has it.

    Used per event for the two clock fields, where the Python varint loop
    of `avro_long` runs nine rounds for a nanosecond clock.
    """
    if _write_data is not None:
        _write_data(out, value, "long", _NO_NAMED_SCHEMAS, "", _WRITE_OPTIONS)
    else:
        out += avro_long(value)


def _varint(value: int) -> bytes:
    """Base-128 varint of a non-negative int, lowest 7 bits first."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# fastavro's Cython writer where it writes what the public writer writes,
# else None: the public writer (see `checked_c_writer`).
_write_data: Any = _find_c_writer()


def avro_string(value: str) -> bytes:
    """Avro's binary form of a ``string``: its UTF-8 length, then the bytes."""
    data = value.encode()
    return avro_long(len(data)) + data


def set_schema_id(value: bytearray, schema_id: int) -> None:
    """Write ``schema_id`` into the header of an encoded value, in place."""
    _HEADER.pack_into(value, 0, MAGIC_BYTE, schema_id)


def split_confluent_frame(value: bytes) -> tuple[int, bytes]:
    """Split a Confluent-framed value into ``(schema_id, avro_body)``.

    Raises
    ------
    ValueError
        If the value is too short or does not start with the magic byte.
    """
    if len(value) < _HEADER.size:
        raise ValueError(f"value of {len(value)} bytes is too short for the framing")
    magic, schema_id = _HEADER.unpack_from(value)
    if magic != MAGIC_BYTE:
        raise ValueError(f"unknown magic byte {magic} (expected {MAGIC_BYTE})")
    return schema_id, value[_HEADER.size :]


def physical_schema(schema: Any) -> Any:
    """Return a copy of ``schema`` without its logical type annotations.

    A logical type only annotates how to read a primitive (``timestamp-micros``
    is a ``long``, ``uuid`` a ``string``), so data written with this schema is
    byte for byte what the annotated schema describes. Our converters produce
    the primitives directly, which is cheaper than fastavro's per-value
    logical-type dispatch.
    """
    if isinstance(schema, dict):
        return {
            key: physical_schema(value)
            for key, value in schema.items()
            if key not in ("logicalType", "precision", "scale")
        }
    if isinstance(schema, list):
        return [physical_schema(item) for item in schema]
    return schema


FieldWriter = Callable[[bytearray, Any], None]
"""Appends the Avro form of one field value to the output."""

_LONG_RANGE = (-(2**63), 2**63)
_INT_RANGE = (-(2**31), 2**31)
# Lengths of short strings and bytes: one varint byte, looked up.
_SHORT_LENGTHS = tuple(avro_long(n) for n in range(64))
_pack_double = struct.Struct("<d").pack
_pack_float = struct.Struct("<f").pack


def _write_sized(out: bytearray, data: bytes | bytearray) -> None:
    """Avro's ``bytes`` form, also a string's: the length, then the data."""
    size = len(data)
    out += _SHORT_LENGTHS[size] if size < 64 else avro_long(size)
    out += data


def _write_string(out: bytearray, value: str) -> None:
    _write_sized(out, value.encode())


def _write_bytes(out: bytearray, value: bytes) -> None:
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    _write_sized(out, value)


def _integer_writer(low: int, high: int) -> FieldWriter:
    def write(out: bytearray, value: int) -> None:
        # A varint has no width: an out-of-range value must not be written.
        if not low <= value < high:
            raise ValueError(f"{value} is out of range")
        out += avro_long(value)

    return write


def _write_double(out: bytearray, value: float) -> None:
    out += _pack_double(value)


def _write_float(out: bytearray, value: float) -> None:
    out += _pack_float(value)


def _write_boolean(out: bytearray, value: bool) -> None:
    # Identity checks: any other truthy value would be written as true.
    if value is True:
        out.append(1)
    elif value is False:
        out.append(0)
    else:
        raise TypeError(f"expected bool, got {type(value).__name__}")


def _enum_writer(symbols: list[str]) -> FieldWriter:
    indexes = {symbol: avro_long(i) for i, symbol in enumerate(symbols)}

    def write(out: bytearray, value: str) -> None:
        out += indexes[value]

    return write


def _nullable(write_branch: FieldWriter) -> FieldWriter:
    """The writer of ``["null", X]``: branch index 0, or 1 and the value."""

    def write(out: bytearray, value: Any) -> None:
        if value is None:
            out.append(0)
        else:
            out.append(2)  # the zig-zag varint of branch index 1
            write_branch(out, value)

    return write


_PRIMITIVE_WRITERS: dict[str, FieldWriter] = {
    "string": _write_string,
    "bytes": _write_bytes,
    "long": _integer_writer(*_LONG_RANGE),
    "int": _integer_writer(*_INT_RANGE),
    "double": _write_double,
    "float": _write_float,
    "boolean": _write_boolean,
}


def _scalar_writer(avro_type: Any) -> FieldWriter | None:
    """Our writer for a primitive or enum type; None for anything else."""
    if isinstance(avro_type, str):
        return _PRIMITIVE_WRITERS.get(avro_type)
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "enum":
            return _enum_writer(list(avro_type["symbols"]))
        if avro_type.get("type") in _PRIMITIVE_WRITERS and len(avro_type) == 1:
            return _PRIMITIVE_WRITERS[avro_type["type"]]
    return None


class EventEncoder:
    """Writes the Avro body of one event type with a schema parsed once.

    Values must already be in their physical form (see `physical_schema`):
    the converters compiled in `compile_record` take care of that.

    An Avro record is its fields written one after the other, so each field
    gets its own writer, chosen once here: strings, numbers, booleans, bytes,
    enum symbols and their nullable forms are written by small functions of
    this module, which cost about half of fastavro's generic dispatch for
    such fields; any other type (records, arrays, maps, unions of several
    types) is written by fastavro's own writer for that field's schema.

    Parameters
    ----------
    event
        The event name, for error messages.
    schema
        The Avro record schema of the event.
    """

    def __init__(self, event: str, schema: Mapping[str, Any]) -> None:
        self.event = event
        self.schema = dict(schema)
        self._named_schemas: dict[str, Any] = {}
        self._parsed = parse_schema(physical_schema(self.schema), self._named_schemas)
        self._options = _WRITE_OPTIONS
        fields: list[dict[str, Any]] = cast("dict[str, Any]", self._parsed)["fields"]
        self.parsed_fields: tuple[dict[str, Any], ...] = tuple(fields)
        """The record's fields in the parsed physical schema, in order."""
        self._writers: tuple[tuple[str, FieldWriter], ...] = tuple(
            (field["name"], self._writer_for(field["type"])) for field in fields
        )
        self.field_writers: dict[str, FieldWriter] = dict(self._writers)
        """The writer of each field."""

    def _writer_for(self, avro_type: Any) -> FieldWriter:
        """The writer of one field's value."""
        scalar = _scalar_writer(avro_type)
        if scalar is not None:
            return scalar
        if (
            isinstance(avro_type, list)
            and len(avro_type) == 2
            and avro_type[0] == "null"
            and (branch := _scalar_writer(avro_type[1])) is not None
        ):
            return _nullable(branch)
        write_data = _write_data
        if write_data is None:
            return self._write_with_schemaless_writer(avro_type)
        named, options = self._named_schemas, self._options

        def write_with_fastavro(out: bytearray, value: Any) -> None:
            write_data(out, value, avro_type, named, "", options)

        return write_with_fastavro

    def _write_with_schemaless_writer(self, avro_type: Any) -> FieldWriter:
        """The plain path: fastavro's public writer, for one field's type."""
        parsed = parse_schema(avro_type, dict(self._named_schemas))

        def write(out: bytearray, value: Any) -> None:
            stream = io.BytesIO()
            schemaless_writer(stream, parsed, value)
            out += stream.getvalue()

        return write

    def encode(self, datum: Mapping[str, Any], header: bytes) -> bytearray:
        """Encode ``datum`` as Avro binary after ``header``.

        The header is normally `confluent_header` of the registered schema id;
        while the id is not known yet a placeholder of the same length is
        written and patched later with `set_schema_id`.

        Raises
        ------
        EventPayloadError
            If the datum does not fit the schema, naming the field.
        """
        out = bytearray(header)
        self.write(out, datum)
        return out

    def write(self, out: bytearray, datum: Mapping[str, Any]) -> None:
        """Append the Avro body of ``datum`` to ``out``.

        On error ``out`` is left with a partial body; callers discard it.

        Raises
        ------
        EventPayloadError
            If the datum does not fit the schema, naming the field.
        """
        name = ""
        try:
            for name, write in self._writers:
                write(out, datum[name])
        except Exception as exc:
            raise EventPayloadError(
                self.event, self._explain(datum, exc, name)
            ) from exc

    def _explain(self, datum: Mapping[str, Any], exc: Exception, field: str) -> str:
        # Only on the error path: fastavro's validator names the field path.
        try:
            validate(datum, self._parsed, raise_errors=True)
        except Exception as detail:
            return f"{detail} ({type(exc).__name__}: {exc})"
        if isinstance(exc, UnicodeEncodeError):
            # A lone surrogate passes validation (it is a str) but not UTF-8.
            path = _unencodable_path(datum, "")
            if path is not None:
                return f"field {path!r}: {type(exc).__name__}: {exc}"
        # Valid for fastavro too (a float beyond 32 bits, a missing field
        # with a default): the field being written is the one at fault.
        return f"field {self.event}.{field}: {type(exc).__name__}: {exc}"


def _unencodable_path(value: Any, path: str) -> str | None:
    """The path of the first string in ``value`` that UTF-8 cannot encode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "<value>"
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            found = _unencodable_path(key, where) or _unencodable_path(item, where)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _unencodable_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


class EventDecoder:
    """Decodes Confluent-framed Avro values using a schema registry.

    Writer schemas are fetched by id once and cached.

    Parameters
    ----------
    registry
        A registry URL, an ``AsyncSchemaRegistryClient``, or a
        `SchemaRegistry` (such as
        `otel_kafka_events.testing.MemorySchemaRegistry`).
    """

    def __init__(self, registry: Any) -> None:
        from ._registry import as_registry

        self._registry = as_registry(registry)
        self._schemas: dict[int, tuple[str, Any]] = {}

    async def writer_schema(self, schema_id: int) -> tuple[str, Any] | None:
        """The name and parsed form of the schema with id ``schema_id``, or
        None if the registry has none.

        Raises
        ------
        SchemaRegistryError
            If the registry cannot be asked.
        """
        found = self._schemas.get(schema_id)
        if found is None:
            raw = await self._registry.schema_by_id(schema_id)
            if raw is None:
                return None
            name = str(raw.get("name", "")) if isinstance(raw, dict) else str(raw)
            found = (name, parse_schema(raw))
            self._schemas[schema_id] = found
        return found

    async def decode(self, value: bytes) -> dict[str, Any]:
        """Decode one record value into a dict of field values.

        Raises
        ------
        ValueError
            If the value is not Confluent-framed or its schema id is unknown.
        SchemaRegistryError
            If the registry cannot be asked.
        """
        schema_id, body = split_confluent_frame(value)
        writer = await self.writer_schema(schema_id)
        if writer is None:
            raise ValueError(f"schema id {schema_id} is unknown to the registry")
        result = schemaless_reader(io.BytesIO(body), writer[1], None)
        if not isinstance(result, dict):
            raise ValueError(f"schema id {schema_id} is not a record schema")
        return result


async def decode(value: bytes, registry: Any) -> dict[str, Any]:
    """Decode one Confluent-framed Avro value through a schema registry.

    A convenience for scripts and tests; a consumer decoding many records
    should keep one `EventDecoder` so schemas are fetched once.

    Parameters
    ----------
    value
        The Kafka record value.
    registry
        A registry URL, an ``AsyncSchemaRegistryClient`` or a
        `SchemaRegistry`.
    """
    return await EventDecoder(registry).decode(value)
