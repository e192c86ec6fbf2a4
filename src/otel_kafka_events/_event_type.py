"""One registered event type: its models, schema and compiled encoder.

Everything that can be decided once per event type is decided here, at
registration, so that `EventType.enrich` (called per event) does only the
per-event work: id, clock, trace context, datum, encode.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanContext

from ._codec import EventEncoder, confluent_header
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

# Schema id 0 is never assigned by a registry; a value carrying it was encoded
# before registration finished and gets its real id before it is sent.
_PENDING_HEADER = confluent_header(0)


class _EventIds:
    """UUID4 event ids, drawn from a pool of system randomness.

    ``uuid.uuid4()`` makes one ``os.urandom`` call and parses its bytes per
    id; reading 4 KiB at a time and building the UUID from an integer costs
    about a third as much, with the same source of randomness.
    """

    _POOL = 4096
    _VERSION_MASK = ~(0xF000 << 64) & ~(0xC000 << 48)
    _VERSION_BITS = (0x4000 << 64) | (0x8000 << 48)

    def __init__(self) -> None:
        self._pool = b""
        self._offset = self._POOL

    def next(self) -> tuple[uuid.UUID, str]:
        """Return a new id and its canonical text form."""
        if self._offset >= len(self._pool):
            self._pool = os.urandom(self._POOL)
            self._offset = 0
        start = self._offset
        self._offset = start + 16
        number = int.from_bytes(self._pool[start : start + 16])
        number = (number & self._VERSION_MASK) | self._VERSION_BITS
        # The same two slot assignments uuid.UUID.__init__ ends with, minus
        # its argument parsing; ``number`` is a valid version 4 value.
        value = _new_object(uuid.UUID)
        _set_slot(value, "int", number)
        _set_slot(value, "is_safe", uuid.SafeUUID.unknown)
        text = "%032x" % number  # noqa: UP031 - faster than an f-string here
        return value, (
            f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
        )


_new_object = object.__new__
_set_slot = object.__setattr__
_event_ids = _EventIds()


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
        self.encoder = EventEncoder(name, self.schema)
        self.schema_id: int | None = None
        self._header = _PENDING_HEADER

    def set_schema_id(self, schema_id: int) -> None:
        """Record the id the registry gave this event type's schema."""
        self.schema_id = schema_id
        self._header = confluent_header(schema_id)

    def enrich(self, payload: P) -> EnrichedEvent:
        """Add metadata and trace context to a payload, and encode it.

        Raises
        ------
        EventPayloadError
            If the payload is not an instance of the registered model, or a
            value does not fit the schema (naming the field).
        """
        if not isinstance(payload, self.payload_model):
            raise EventPayloadError(
                self.name,
                f"payload must be a {self.payload_model.__name__},"
                f" got {type(payload).__name__}",
            )
        now_ns = time.time_ns()
        event_id, event_id_text = _event_ids.next()
        values = {
            "id": event_id,
            "application": self.application,
            "timestamp": datetime.fromtimestamp(now_ns / 1e9, UTC),
            "timestamp_ns": now_ns,
        }
        # Captured even without trace fields: the headers and the log record
        # still follow the caller's span.
        current = trace.get_current_span().get_span_context()
        span_context = current if current.is_valid else None
        if self.trace_context:
            if span_context is not None:
                values["trace_id"] = format(span_context.trace_id, "032x")
                values["span_id"] = format(span_context.span_id, "016x")
                values["trace_flags"] = int(span_context.trace_flags)
            else:
                values["trace_id"] = values["span_id"] = values["trace_flags"] = None
        values.update(payload.__dict__)
        event = construct_event(self.event_model, values)
        datum = dict(values)
        # The Avro field is microseconds; derive it from the exact nanoseconds
        # rather than from the float-based datetime.
        datum["timestamp"] = now_ns // 1000
        datum["id"] = event_id_text
        for field, converter in self._converters:
            value = datum[field]
            if value is not None:
                try:
                    datum[field] = converter(value)
                except (ValueError, TypeError, AttributeError) as exc:
                    raise EventPayloadError(
                        self.name, f"field {field!r}: {exc}"
                    ) from exc
        value = self.encoder.encode(datum, self._header)
        return EnrichedEvent(event, value, span_context)
