"""Kafka records decoded into events, with where they sit and their trace.

`RecordDecoder` is what ``otel-kafka-events tail`` and the pytest helper
``consume_events`` share: it turns a consumed record into a `DecodedRecord`
that keeps the record's coordinates (topic, partition, offset), its headers
and the trace id next to the decoded fields, so a reader can go from a trace
to its events and back. A record that cannot be decoded still yields a
`DecodedRecord`, with ``error`` saying why, so one bad record does not hide
the others.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from fastavro import schemaless_reader

from ._codec import EventDecoder, split_confluent_frame
from ._keys import key_text

__all__ = ["DecodedRecord", "RecordDecoder", "json_value", "trace_id_of"]


@dataclass(frozen=True)
class DecodedRecord:
    """One Kafka record and the event it carries.

    Attributes
    ----------
    topic
        The topic the record was read from.
    partition
        Its partition.
    offset
        Its offset in the partition.
    timestamp
        The record's Kafka timestamp (UTC).
    key
        The record key as text, if it had one (bytes that are not UTF-8 as
        ``\\xNN`` escapes, as in span and log attributes).
    headers
        Record headers, values decoded as UTF-8 (invalid bytes replaced).
    schema_id
        The registry id of the writer schema, or None if the value is not
        Confluent-framed.
    event
        The event name (the Avro record name of the writer schema), or None.
    value
        The decoded fields, or None when ``error`` is set.
    trace_id
        The trace id from the event's ``trace_id`` field, else from its
        ``traceparent`` header; None if it has neither.
    error
        Why the value could not be decoded, or None.
    """

    topic: str
    partition: int
    offset: int
    timestamp: dt.datetime
    key: str | None
    headers: dict[str, str]
    schema_id: int | None
    event: str | None
    value: dict[str, Any] | None
    trace_id: str | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready values (see `json_value`)."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp.isoformat(),
            "key": self.key,
            "event": self.event,
            "schema_id": self.schema_id,
            "trace_id": self.trace_id,
            "headers": self.headers,
            "value": json_value(self.value),
            **({"error": self.error} if self.error is not None else {}),
        }


def json_value(value: Any) -> Any:
    """Convert decoded Avro values into JSON-ready ones.

    Datetimes and dates become ISO 8601 strings, `Decimal` and `UUID` their
    string form (a decimal as a string keeps its exact digits), bytes base64.
    """
    if isinstance(value, Mapping):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def trace_id_of(
    value: Mapping[str, Any] | None, headers: Mapping[str, str]
) -> str | None:
    """The trace id an event belongs to: its field, else its W3C header."""
    if value is not None and isinstance(value.get("trace_id"), str):
        return str(value["trace_id"])
    parts = headers.get("traceparent", "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1]
    return None


class RecordDecoder:
    """Decodes consumed records through a schema registry.

    Writer schemas are fetched by id once and cached.

    Parameters
    ----------
    registry
        A registry URL, an ``AsyncSchemaRegistryClient`` or a
        `SchemaRegistry`.
    """

    def __init__(self, registry: Any) -> None:
        self._decoder = EventDecoder(registry)

    async def decode(self, record: Any) -> DecodedRecord:
        """Decode one aiokafka ``ConsumerRecord``.

        Raises
        ------
        SchemaRegistryError
            If the registry cannot be asked for the writer schema; a value
            that is not Confluent-framed, or whose schema id the registry
            does not know, gives a record with ``error`` set instead.
        """
        headers = {
            str(key): bytes(raw or b"").decode("utf-8", "replace")
            for key, raw in (record.headers or ())
        }
        key = None if record.key is None else key_text(bytes(record.key))
        timestamp = dt.datetime.fromtimestamp(record.timestamp / 1000, tz=dt.UTC)
        base = {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": timestamp,
            "key": key,
            "headers": headers,
        }
        try:
            schema_id, body = split_confluent_frame(bytes(record.value or b""))
        except ValueError as exc:
            return DecodedRecord(
                **base,
                schema_id=None,
                event=None,
                value=None,
                trace_id=trace_id_of(None, headers),
                error=f"not a Confluent-framed Avro value: {exc}",
            )
        writer = await self._decoder.writer_schema(schema_id)
        if writer is None:
            return DecodedRecord(
                **base,
                schema_id=schema_id,
                event=None,
                value=None,
                trace_id=trace_id_of(None, headers),
                error=f"schema id {schema_id} is unknown to the registry",
            )
        try:
            name, parsed = writer
            value = schemaless_reader(io.BytesIO(body), parsed, None)
        except Exception as exc:
            return DecodedRecord(
                **base,
                schema_id=schema_id,
                event=name,
                value=None,
                trace_id=trace_id_of(None, headers),
                error=f"Avro body does not match schema {schema_id}: {exc}",
            )
        fields = value if isinstance(value, dict) else {"value": value}
        return DecodedRecord(
            **base,
            schema_id=schema_id,
            event=name,
            value=fields,
            trace_id=trace_id_of(fields, headers),
        )
