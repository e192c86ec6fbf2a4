"""One registered event type: its models, schema and compiled writer.

Everything that can be decided once per event type is decided here, at
registration, so that `EventType.enrich` (called per event) does only the
per-event work: id, clock, trace context, writing the value, and an event
model instance whose values are filled in when first read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from time import time_ns as _time_ns
from typing import Any, Generic, NamedTuple, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.context import get_current as current_context
from opentelemetry.trace import SpanContext

from ..errors import (
    EventManagerUsageError,
    EventPayloadError,
    UnsupportedAvroSchemaError,
)
from ._codec import EventEncoder, avro_long, avro_string, confluent_header
from ._event_writer import compile_event_writer
from ._ids import event_ids, uuid_from_text
from ._keys import KeyFunction, RecordKeys
from ._lazy_event import new_lazy_event
from ._models import (
    METADATA_FIELDS,
    TRACE_FIELDS,
    EventPayload,
    build_event_model,
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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNION_SECOND = avro_long(1)
# trace_id, span_id, trace_flags, and their Avro encoding.
_TraceFields = tuple[str | None, str | None, int | None, bytes]
# Three ["null", X] unions on their null branch: index 0 each.
_NO_TRACE: _TraceFields = (None, None, None, avro_long(0) * 3)
_NO_TRACE_FIELDS = b""

# Schema id 0 is never assigned by a registry; a value carrying it was encoded
# before registration finished and gets its real id before it is sent.
_PENDING_HEADER = confluent_header(0)
# Every value starts with the header, then the length of the 36-character id.
_ID_LENGTH = avro_long(36)
_next_id = event_ids.next
_new_tuple = tuple.__new__


class EnrichedEvent(NamedTuple):
    """What one ``publish`` call produced before it reaches the sinks."""

    event: Any
    """The enriched event model instance returned to the caller (its values
    are made when first read)."""
    value: bytearray
    """The Confluent-framed Avro value. Its schema id is a placeholder while
    `EventType.schema_id` is None (registration still pending)."""
    span_context: SpanContext | None
    """The caller's valid span context at publish time, else None (captured
    whether or not the event has trace fields)."""
    event_id: str
    """The event id as text."""
    timestamp_ns: int
    """When the event happened, in nanoseconds since the epoch."""
    fields: dict[str, Any]
    """The payload's field values (a copy: the event's values are made
    from it), for log records that need only these."""


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
    key
        The record key: a payload field's name or a function of the payload
        (see `RecordKeys`); None for unkeyed events.
    spread
        Spread the type's unkeyed events over every partition of the topic
        (sticky per batch) instead of sending them all to one.
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
        key: str | KeyFunction | None = None,
        spread: bool = False,
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
        self.converters: tuple[tuple[str, Converter], ...] = tuple(
            (field, conv)
            for field, conv in compiled.converters.items()
            if field not in reserved
        )
        """Each payload field's converter to its Avro form."""
        # The metadata fields are encoded by `encode`, fastavro does the rest.
        metadata_fields = [f["name"] for f in self.schema["fields"][: len(reserved)]]
        if metadata_fields != list(_METADATA_ORDER[: len(reserved)]):
            raise AssertionError(f"unexpected metadata layout {metadata_fields}")
        payload_schema = {
            **self.schema,
            "fields": self.schema["fields"][len(reserved) :],
        }
        self.encoder = EventEncoder(name, payload_schema)
        """Writes the payload field by field: the reference for `_write`, and
        what names the field when a payload cannot be written."""
        self._application = avro_string(application)
        self.writer = compile_event_writer(
            name,
            self._application,
            [(f["name"], f["type"]) for f in self.encoder.parsed_fields],
            dict(self.converters),
            self.encoder.field_writers,
        )
        """Writes a whole value: the function generated for this type."""
        self.keys = (
            None if key is None else RecordKeys(name, payload_model, self.schema, key)
        )
        """Makes each event's record key, or None (unkeyed events)."""
        if not isinstance(spread, bool):
            raise EventManagerUsageError(
                f"spread of event {name!r} must be True or False, got {spread!r}"
            )
        self.spread = spread
        """Whether unkeyed events spread over every partition."""
        self.schema_id: int | None = None
        self._prefix = _PENDING_HEADER + _ID_LENGTH
        # (span context, its trace fields), replaced as one tuple so that
        # threads publishing at once never pair one span with another's ids.
        self._last_trace: tuple[SpanContext | None, _TraceFields] = (None, _NO_TRACE)
        # (OTel context, its valid span context or None), as one tuple too.
        self._last_context: tuple[Context | None, SpanContext | None] = (None, None)

    def set_schema_id(self, schema_id: int) -> None:
        """Record the id the registry gave this event type's schema."""
        self.schema_id = schema_id
        self._prefix = confluent_header(schema_id) + _ID_LENGTH

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

    def current_span_context(self) -> SpanContext | None:
        """The caller's valid span context, or None.

        An OTel context never changes, and a request publishes from the same
        one again and again: the span lookup runs once per context.
        """
        context = current_context()
        cached_context, span_context = self._last_context
        if context is not cached_context:
            current = trace.get_current_span(context).get_span_context()
            span_context = current if current.is_valid else None
            self._last_context = (context, span_context)
        return span_context

    def enrich(self, payload: P) -> EnrichedEvent:
        """Add metadata and trace context to a payload, and encode it.

        The returned event model instance makes its values (the `uuid.UUID`
        id, the `datetime` timestamp, the payload fields) only when first
        read; the payload's fields are copied now, so changing the payload
        afterwards changes neither the event nor what was encoded.

        Raises
        ------
        EventPayloadError
            If the payload is not an instance of the registered model, or a
            value does not fit the schema (naming the field).
        """
        return _new_tuple(EnrichedEvent, self.prepare(payload))

    def prepare(
        self, payload: P
    ) -> tuple[Any, bytearray, SpanContext | None, str, int, dict[str, Any]]:
        """`enrich`, as a plain tuple in the order of `EnrichedEvent`'s
        fields (the publish path unpacks it at once)."""
        # Pydantic model classes are ABCs, whose isinstance check runs in
        # Python; the exact class, the usual case, is checked first.
        if type(payload) is self.payload_model:
            fields = payload.__dict__.copy()
        elif isinstance(payload, self.payload_model):
            # A subclass's own fields are not in the schema, and one named
            # like a metadata field must not replace the metadata.
            values = payload.__dict__
            fields = {name: values[name] for name in self.payload_model.model_fields}
        else:
            raise EventPayloadError(
                self.name,
                f"payload must be a {self.payload_model.__name__},"
                f" got {type(payload).__name__}",
            )
        now_ns = _time_ns()
        event_id = _next_id()
        # Captured even without trace fields: the headers and the log record
        # still follow the caller's span. (`current_span_context`, inline.)
        context = current_context()
        cached_context, span_context = self._last_context
        if context is not cached_context:
            span_context = self.current_span_context()
        if self.trace_context:
            cached_span, trace_fields = self._last_trace
            if span_context is not cached_span:
                trace_fields = self._trace_fields(span_context)
            trace_avro = trace_fields[3]
        else:
            trace_fields = None
            trace_avro = _NO_TRACE_FIELDS
        try:
            value = self.writer(self._prefix, event_id, now_ns, trace_avro, fields)
        except Exception as exc:
            raise self._payload_error(fields, exc) from exc
        event = new_lazy_event(
            self.event_model, (self._values, fields, event_id, now_ns, trace_fields)
        )
        return event, value, span_context, event_id, now_ns, fields

    def _values(
        self,
        fields: dict[str, Any],
        event_id: str,
        timestamp_ns: int,
        trace_fields: _TraceFields | None,
    ) -> dict[str, Any]:
        """The values of an enriched event, metadata first (the model's
        field order)."""
        values: dict[str, Any] = {
            "id": uuid_from_text(event_id),
            "application": self.application,
            # Integer arithmetic, so the datetime is exactly the microseconds
            # written to Avro (a float timestamp can be off by one).
            "timestamp": _EPOCH + timedelta(0, 0, timestamp_ns // 1000),
            "timestamp_ns": timestamp_ns,
        }
        if trace_fields is not None:
            values["trace_id"], values["span_id"], values["trace_flags"] = trace_fields[
                :3
            ]
        values.update(fields)
        return values

    def _payload_error(
        self, fields: Mapping[str, Any], error: Exception
    ) -> EventPayloadError:
        """The error naming the field the generated writer failed on.

        The field-by-field path runs again: it converts and writes each
        field on its own and says which one fails, and why.
        """
        datum = dict(fields)
        for field, converter in self.converters:
            value = datum[field]
            if value is not None:
                try:
                    datum[field] = converter(value)
                except (ValueError, TypeError, AttributeError) as exc:
                    return EventPayloadError(self.name, f"field {field!r}: {exc}")
        try:
            self.encoder.write(bytearray(), datum)
        except EventPayloadError as exc:
            return exc
        return EventPayloadError(self.name, f"{type(error).__name__}: {error}")

    def encode(
        self,
        event_id: str,
        timestamp_ns: int,
        trace_avro: bytes,
        fields: Mapping[str, Any],
    ) -> bytearray:
        """Encode one event: Confluent header, metadata, then payload fields.

        Avro writes a record as its fields one after the other, so the whole
        value is written by one function generated for this event type
        (`compile_event_writer`): the metadata fields (always first, always
        the same types), then each payload field with its converter.

        Parameters
        ----------
        event_id
            The event id as text.
        timestamp_ns
            When the event happened, in nanoseconds.
        trace_avro
            The encoded trace fields (empty without trace context).
        fields
            The payload's field values, as the payload holds them.

        Raises
        ------
        EventPayloadError
            If a value does not fit the schema (naming the field).
        """
        try:
            return self.writer(self._prefix, event_id, timestamp_ns, trace_avro, fields)
        except Exception as exc:
            raise self._payload_error(fields, exc) from exc
