"""One registered event type: its models, schema and compiled encoder.

Everything that can be decided once per event type is decided here, at
registration, so that `EventType.enrich` (called per event) does only the
per-event work: id, clock, trace context, datum, encode.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanContext

from ._codec import (
    EventEncoder,
    avro_long,
    avro_string,
    confluent_header,
    write_long,
)
from ._exceptions import EventPayloadError, UnsupportedAvroSchemaError
from ._models import (
    METADATA_FIELDS,
    TRACE_FIELDS,
    EventPayload,
    build_event_model,
    construct_event,
)
from ._schema import Converter, compile_record, validate_avro_name, validate_namespace

__all__ = ["EnrichedEvent", "EventType"]

P = TypeVar("P", bound=EventPayload)

_METADATA_ORDER = (
    "id",
    "application",
    "timestamp",
    "timestamp_ns",
    "trace_id",
    "span_id",
    "trace_flags",
)
_UUID_TEXT_LENGTH = avro_long(36)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNION_SECOND = avro_long(1)
# trace_id, span_id, trace_flags, and their Avro encoding.
_TraceFields = tuple[str | None, str | None, int | None, bytes]
# Three ["null", X] unions on their null branch: index 0 each.
_NO_TRACE: _TraceFields = (None, None, None, avro_long(0) * 3)

# Schema id 0 is never assigned by a registry; a value carrying it was encoded
# before registration finished and gets its real id before it is sent.
_PENDING_HEADER = confluent_header(0)


class _EventIds:
    """UUID4 event ids, drawn a few hundred at a time.

    ``uuid.uuid4()`` makes one ``os.urandom`` call per id, and its text form
    is built again by ``str()``. Here one read of system randomness serves a
    batch, and each id's integer and text are made together, which costs
    about half as much per id from the same source of randomness.

    A batch holds ``(int, str)`` pairs: tuples of plain values, which the
    garbage collector stops tracking, so a waiting batch costs it nothing.
    ``list.pop`` is atomic, so two threads never take the same id; the lock
    only keeps them from refilling at once.
    """

    _BATCH = 256

    def __init__(self) -> None:
        self._ready: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def discard(self) -> None:
        """Forget the ids made so far (a forked child must not reuse them).

        The lock is replaced too: a thread of the parent may have held it at
        the fork, and in the child nothing would ever release it.
        """
        self._ready = []
        self._lock = threading.Lock()

    def next(self) -> tuple[uuid.UUID, str]:
        """Return a new id and its canonical text form."""
        while True:
            try:
                number, text = self._ready.pop()
                break
            except IndexError:
                with self._lock:
                    if not self._ready:
                        self._ready = self._make_batch()
        value = _new_object(uuid.UUID)
        # The two slots uuid.UUID.__init__ sets, minus its argument parsing.
        _set_slot(value, "int", number)
        _set_slot(value, "is_safe", _SAFE_UNKNOWN)
        return value, text

    def _make_batch(self) -> list[tuple[int, str]]:
        count = self._BATCH
        random = bytearray(os.urandom(16 * count))
        # RFC 9562 version 4: the version nibble of byte 6 is 4, the variant
        # bits of byte 8 are 10.
        random[6::16] = bytes((b & 0x0F) | 0x40 for b in random[6::16])
        random[8::16] = bytes((b & 0x3F) | 0x80 for b in random[8::16])
        digits = random.hex().encode()
        # All texts at once: hex digit ``d`` of every id goes to its place in
        # the dashed 36-character form with one strided copy per digit.
        texts = bytearray(b"-" * (36 * count))
        for digit, place in enumerate(_TEXT_PLACES):
            texts[place::36] = digits[digit::32]
        text = texts.decode()
        return [
            (int.from_bytes(random[16 * i : 16 * i + 16]), text[36 * i : 36 * i + 36])
            for i in range(count)
        ]


# Where each of the 32 hex digits of a UUID sits in its 8-4-4-4-12 text form.
_TEXT_PLACES = tuple(
    d + (d >= 8) + (d >= 12) + (d >= 16) + (d >= 20) for d in range(32)
)
_new_object = object.__new__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown  # an Enum member lookup costs per call
_set_slot = object.__setattr__
_event_ids = _EventIds()
# A child process starts with a copy of the parent's ready ids; without this,
# parent and child would publish events with the same ids.
os.register_at_fork(after_in_child=_event_ids.discard)


@dataclass(slots=True)
class EnrichedEvent:
    """What one ``publish`` call produced before it reaches the sinks."""

    event: Any
    """The enriched event model instance returned to the caller."""
    value: bytearray
    """The Confluent-framed Avro value. Its schema id is a placeholder while
    `EventType.schema_id` is None (registration still pending)."""
    span_context: SpanContext | None
    """The caller's valid span context at publish time, else None (captured
    whether or not the event has trace fields)."""
    event_id: str
    """The event id as text (kept for reports: a str costs the garbage
    collector nothing while the event waits in the buffer)."""


class EventType(Generic[P]):
    """A registered event type.

    Parameters
    ----------
    name
        The event name (Avro record name).
    topic
        The Kafka topic (Avro namespace).
    application
        Application name put in every event's metadata.
    payload_model
        The user's payload class.
    trace_context
        Whether events carry the caller's trace ids.
    flat_payloads
        Accept only scalar payload fields, as Safir does.
    """

    def __init__(
        self,
        name: str,
        topic: str,
        application: str,
        payload_model: type[P],
        *,
        trace_context: bool = True,
        flat_payloads: bool = False,
    ) -> None:
        validate_avro_name("event name", name)
        validate_namespace(topic)
        reserved = METADATA_FIELDS | (TRACE_FIELDS if trace_context else frozenset())
        clashes = sorted(reserved & set(payload_model.model_fields))
        if clashes:
            raise UnsupportedAvroSchemaError(
                name,
                [
                    f"{c}: payload field collides with the metadata field"
                    for c in clashes
                ],
            )
        self.name = name
        self.topic = topic
        self.full_name = f"{topic}.{name}"
        self.application = application
        self.payload_model = payload_model
        self.trace_context = trace_context
        self.event_model: type[P] = build_event_model(
            name, payload_model, trace_context=trace_context
        )
        compiled = compile_record(
            self.event_model,
            name=name,
            namespace=topic,
            event=name,
            flat=flat_payloads,
            reserved=reserved,
        )
        self.schema = compiled.schema
        self._converters: tuple[tuple[str, Converter], ...] = tuple(
            (field, conv)
            for field, conv in compiled.converters.items()
            if field not in reserved
        )
        # The metadata fields are encoded by `encode`, fastavro does the rest.
        metadata_fields = [f["name"] for f in self.schema["fields"][: len(reserved)]]
        if metadata_fields != list(_METADATA_ORDER[: len(reserved)]):
            raise AssertionError(f"unexpected metadata layout {metadata_fields}")
        payload_schema = {
            **self.schema,
            "fields": self.schema["fields"][len(reserved) :],
        }
        self.encoder = EventEncoder(name, payload_schema)
        self._application = avro_string(application)
        self.schema_id: int | None = None
        self._header = _PENDING_HEADER
        # (span context, its trace fields), replaced as one tuple so that
        # threads publishing at once never pair one span with another's ids.
        self._last_trace: tuple[SpanContext | None, _TraceFields] = (None, _NO_TRACE)

    def set_schema_id(self, schema_id: int) -> None:
        """Record the id the registry gave this event type's schema."""
        self.schema_id = schema_id
        self._header = confluent_header(schema_id)

    def _trace_fields(self, span_context: SpanContext | None) -> _TraceFields:
        """The trace fields for a span context (None: all null), and their
        Avro encoding.

        Remembered for the last span, since a request usually publishes its
        events from one span.
        """
        if span_context is None:
            return _NO_TRACE
        cached_context, fields = self._last_trace
        if span_context is not cached_context:
            trace_id = "%032x" % span_context.trace_id  # noqa: UP031 - fastest
            span_id = "%016x" % span_context.span_id  # noqa: UP031
            flags = int(span_context.trace_flags)
            # Each field is a ["null", X] union: branch index 1, then X.
            encoded = b"".join(
                (
                    _UNION_SECOND,
                    avro_string(trace_id),
                    _UNION_SECOND,
                    avro_string(span_id),
                    _UNION_SECOND,
                    avro_long(flags),
                )
            )
            fields = (trace_id, span_id, flags, encoded)
            self._last_trace = (span_context, fields)
        return fields

    def enrich(self, payload: P) -> EnrichedEvent:
        """Add metadata and trace context to a payload, and encode it.

        Raises
        ------
        EventPayloadError
            If the payload is not an instance of the registered model, or a
            value does not fit the schema (naming the field).
        """
        # Pydantic model classes are ABCs, whose isinstance check runs in
        # Python; the exact class, the usual case, is checked first.
        fields = payload.__dict__
        if type(payload) is not self.payload_model:
            if not isinstance(payload, self.payload_model):
                raise EventPayloadError(
                    self.name,
                    f"payload must be a {self.payload_model.__name__},"
                    f" got {type(payload).__name__}",
                )
            # A subclass's own fields are not in the schema, and one named
            # like a metadata field must not replace the metadata.
            fields = {name: fields[name] for name in self.payload_model.model_fields}
        now_ns = time.time_ns()
        event_id, event_id_text = _event_ids.next()
        # Captured even without trace fields: the headers and the log record
        # still follow the caller's span.
        current = trace.get_current_span().get_span_context()
        span_context = current if current.is_valid else None
        micros = now_ns // 1000
        # Integer arithmetic, so the datetime is exactly the microseconds
        # written to Avro (a float timestamp can be off by one).
        timestamp = _EPOCH + timedelta(0, 0, micros)  # days, seconds, micros
        if self.trace_context:
            trace_id, span_id, trace_flags, trace_avro = self._trace_fields(
                span_context
            )
            values = {
                "id": event_id,
                "application": self.application,
                "timestamp": timestamp,
                "timestamp_ns": now_ns,
                "trace_id": trace_id,
                "span_id": span_id,
                "trace_flags": trace_flags,
                **fields,
            }
        else:
            trace_avro = b""
            values = {
                "id": event_id,
                "application": self.application,
                "timestamp": timestamp,
                "timestamp_ns": now_ns,
                **fields,
            }
        event = construct_event(self.event_model, values)
        datum = fields
        if self._converters and datum is payload.__dict__:
            datum = datum.copy()
        for field, converter in self._converters:
            value = datum[field]
            if value is not None:
                try:
                    datum[field] = converter(value)
                except (ValueError, TypeError, AttributeError) as exc:
                    raise EventPayloadError(
                        self.name, f"field {field!r}: {exc}"
                    ) from exc
        value = self.encode(event_id_text, now_ns, trace_avro, datum)
        return EnrichedEvent(event, value, span_context, event_id_text)

    def encode(
        self,
        event_id: str,
        timestamp_ns: int,
        trace_avro: bytes,
        payload: Mapping[str, Any],
    ) -> bytearray:
        """Encode one event: Confluent header, metadata, then payload fields.

        Avro writes a record as its fields one after the other, so the
        metadata fields (always first, always the same types) are written
        here directly and fastavro writes only the payload fields after them:
        the bytes are those of the whole record, for less work.

        Parameters
        ----------
        event_id
            The event id as text.
        timestamp_ns
            When the event happened, in nanoseconds.
        trace_avro
            The encoded trace fields (empty without trace context).
        payload
            The payload fields, already converted to their Avro form.
        """
        out = bytearray(self._header)
        out += _UUID_TEXT_LENGTH
        out += event_id.encode()
        out += self._application
        write_long(out, timestamp_ns // 1000)
        write_long(out, timestamp_ns)
        out += trace_avro
        self.encoder.write(out, payload)
        return out
