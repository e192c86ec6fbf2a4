"""One generated function per event type that writes its whole Avro value.

`EventEncoder` (``_codec``) writes a payload with one small function per
field, called in a loop. Here the same writing is laid out as the source of
a single function, compiled once per event type at registration: the
Confluent header, the metadata fields, then every payload field with its
converter and its writer inlined, in schema order. What is left per event
is straight-line code on local variables, without a call or a loop per
field; types without an inline form (records, arrays, maps, unions of
several types) still call the field writer `EventEncoder` chose.

The generated function checks what the field writers check (ranges,
booleans, types) by letting Python fail on anything else, and does not say
which field failed: the caller runs the field-by-field path again to name
it (see `EventType.enrich`), so errors cost nothing until they happen.
``tests/test_event_writer.py`` checks that both write the same bytes and
refuse the same values.
"""

from __future__ import annotations

import functools
import struct
import types
from collections.abc import Callable, Mapping, Sequence
from types import CodeType
from typing import Any, cast

from ._codec import avro_long, long_writer_call
from ._schema import Converter

__all__ = ["EventWriter", "compile_event_writer"]

EventWriter = Callable[[bytes, str, int, bytes, Mapping[str, Any]], bytearray]
"""``write(prefix, event_id, timestamp_ns, trace_avro, fields)``: the
Confluent header and the id's length (``prefix``), the id, the
application, both clock fields, the encoded trace fields, then the payload
``fields`` (the payload's values before conversion)."""

_LONG = (-(2**63), 2**63)
_INT = (-(2**31), 2**31)
# One-byte lengths of short strings, as in `_codec`.
_SHORT_LENGTHS = tuple(avro_long(n) for n in range(64))


def compile_event_writer(
    event: str,
    application: bytes,
    fields: Sequence[tuple[str, Any]],
    converters: Mapping[str, Converter],
    fallback_writers: Mapping[str, Callable[[bytearray, Any], None]],
) -> EventWriter:
    """Generate and compile the value writer of one event type.

    Parameters
    ----------
    event
        The event name (names the generated code in tracebacks).
    application
        The application name, already Avro-encoded.
    fields
        The payload fields in schema order: name and physical Avro type.
    converters
        The payload fields' converters (see `compile_record`).
    fallback_writers
        A writer per field, for the types written out of line.
    """
    # Per event type: closure variables of its writer (the names the whole
    # process shares are the globals of every writer, `_GLOBALS`).
    namespace: dict[str, Any] = {"APPLICATION": application}
    # fastavro's C writer, or the plain one (`_codec.checked_c_writer`).
    write_long, long_names = long_writer_call("out", "v")
    _GLOBALS.update(long_names)
    micros, _ = long_writer_call("out", "timestamp_ns // 1000")
    nanos, _ = long_writer_call("out", "timestamp_ns")
    lines = [
        "    out = bytearray(prefix)",
        "    out += event_id.encode()",
        "    out += APPLICATION",
        f"    {micros}",
        f"    {nanos}",
        "    out += trace_avro",
    ]
    for index, (name, avro_type) in enumerate(fields):
        lines.append(f"    v = fields[{name!r}]")
        converter = converters.get(name)
        if converter is not None:
            namespace[f"convert_{index}"] = converter
            lines.append(f"    if v is not None: v = convert_{index}(v)")
        body = _inline(avro_type, index, namespace, write_long)
        if body is None:
            namespace[f"write_{index}"] = fallback_writers[name]
            body = [f"write_{index}(out, v)"]
        lines.extend("    " + line for line in body)
    lines.append("    return out")
    # The source is the same for every event type of one payload shape, so
    # those types share one code object and one globals dict, and differ
    # only in a few closure cells: a small working set when many event
    # types are published in turn (scenario 2x200 of the benchmarks).
    names = sorted(namespace)
    source = "\n".join(
        [
            f"def make({', '.join(names)}):",
            "  def write(prefix, event_id, timestamp_ns, trace_avro, fields):",
            *("  " + line for line in lines),
            "  return write",
        ]
    )
    scope = dict(_GLOBALS)
    exec(_compiled(source), scope)
    # Each writer's globals are the one shared dict, not its own copy.
    make = types.FunctionType(scope["make"].__code__, _GLOBALS, "make")
    writer = make(**namespace)
    writer.__qualname__ = f"write_{event}"
    return cast("EventWriter", writer)


# The names every writer uses; `compile_event_writer` adds those of the long
# writer it chose.
_GLOBALS: dict[str, Any] = {
    "__builtins__": __builtins__,
    "SHORT": _SHORT_LENGTHS,
    "avro_long": avro_long,
    "pack_double": struct.Struct("<d").pack,
    "pack_float": struct.Struct("<f").pack,
}


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> CodeType:
    """The compiled source of a writer factory, once per distinct source."""
    return compile(source, "<event writer>", "exec")


def _inline(
    avro_type: Any, index: int, namespace: dict[str, Any], write_long: str
) -> list[str] | None:
    """Statements writing ``v`` of ``avro_type`` to ``out``; None if the type
    has no inline form. ``write_long`` is the statement writing a long."""
    if isinstance(avro_type, dict) and avro_type.get("type") == "enum":
        table = {symbol: avro_long(i) for i, symbol in enumerate(avro_type["symbols"])}
        namespace[f"symbols_{index}"] = table
        return [f"out += symbols_{index}[v]"]
    if isinstance(avro_type, dict) and len(avro_type) == 1:
        avro_type = avro_type.get("type")
    if isinstance(avro_type, str):
        return _primitive(avro_type, write_long)
    if (
        isinstance(avro_type, list)
        and len(avro_type) == 2
        and avro_type[0] == "null"
        and (branch := _inline(avro_type[1], index, namespace, write_long)) is not None
    ):
        # Branch 0 is null; branch 1 is written as the zig-zag varint 2.
        return [
            "if v is None:",
            "    out.append(0)",
            "else:",
            "    out.append(2)",
            *("    " + line for line in branch),
        ]
    return None


def _primitive(avro_type: str, write_long: str) -> list[str] | None:
    if avro_type == "string":
        return ["b = v.encode()", *_sized("b")]
    if avro_type == "bytes":
        return [
            "if not isinstance(v, (bytes, bytearray)):",
            "    raise TypeError(f'expected bytes, got {type(v).__name__}')",
            *_sized("v"),
        ]
    if avro_type in ("long", "int"):
        low, high = _LONG if avro_type == "long" else _INT
        # A varint has no width: an out-of-range value must not be written.
        # Values of up to two varint bytes are written here, longer ones in C.
        return [
            f"if not {low} <= v < {high}:",
            "    raise ValueError(f'{v} is out of range')",
            "z = (v << 1) ^ (v >> 63)",
            "if z < 128:",
            "    out.append(z)",
            "elif z < 16384:",
            "    out.append((z & 127) | 128)",
            "    out.append(z >> 7)",
            "else:",
            f"    {write_long}",
        ]
    if avro_type == "double":
        return ["out += pack_double(v)"]
    if avro_type == "float":
        return ["out += pack_float(v)"]
    if avro_type == "boolean":
        # Identity: any other truthy value would be written as true.
        return [
            "if v is True:",
            "    out.append(1)",
            "elif v is False:",
            "    out.append(0)",
            "else:",
            "    raise TypeError(f'expected bool, got {type(v).__name__}')",
        ]
    return None


def _sized(name: str) -> list[str]:
    """Avro's length-prefixed form of the bytes in ``name``."""
    return [
        f"n = len({name})",
        "out += SHORT[n] if n < 64 else avro_long(n)",
        f"out += {name}",
    ]
