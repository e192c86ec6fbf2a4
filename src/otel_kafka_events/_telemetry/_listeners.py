"""Telemetry as delivery listeners: spans, log records, the direct export.

Each class here is a `DeliveryListener`; the event manager registers the
ones its `TelemetryOptions` ask for with its delivery session, which calls
them through its guard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import Span, SpanContext

from .._delivery._ledger import PendingEvent, Settled, Settlement
from .._delivery._listeners import DeliveryListener
from .._encoding._event_type import EventType
from ._direct_logs import DirectLogRecords
from ._logs import EventLogEmitter
from ._spans import BatchSpans, end_producer_span

__all__ = [
    "BatchSpanListener",
    "DirectLogListener",
    "EventLogListener",
    "LogSource",
    "ProducerSpanListener",
    "emit_record",
    "log_values",
]


class LogSource(NamedTuple):
    """What a log record of a published event is made from (the ``source``
    a publisher passes with an accepted event)."""

    event_type: EventType[Any]
    event: Any
    """The enriched event model instance (its values made when read)."""
    fields: dict[str, Any]
    """The payload's field values."""
    span_context: SpanContext | None
    """The caller's span context at publish time."""
    timestamp_ns: int
    """When the event happened: the record's timestamp."""
    severity: SeverityNumber


def log_values(source: LogSource, body_mode: bool) -> dict[str, Any]:
    """The values an event's log record carries.

    In ``"body"`` mode the body holds every value, the event's own; in
    ``"attributes"`` mode the application and the payload fields are
    enough (the id is passed on its own and the other metadata is in the
    record's own fields), so the event's values need not be made.
    """
    if body_mode:
        values: dict[str, Any] = source.event.__dict__
        return values
    return {"application": source.event_type.application, **source.fields}


class EventLogListener(DeliveryListener):
    """Emits an event's log record, through the Logs SDK, when ``publish``
    accepts it.

    Parameters
    ----------
    emitter
        Emits the records.
    body_mode
        `TelemetryOptions.log_mode` is ``"body"``.
    """

    name = "log records"

    def __init__(self, emitter: EventLogEmitter, *, body_mode: bool) -> None:
        self._emitter = emitter
        self._body_mode = body_mode

    def accepted(self, event: PendingEvent, source: Any) -> None:
        emit_record(self._emitter, event.event_id, source, self._body_mode, event.key)


def emit_record(
    emitter: EventLogEmitter | DirectLogRecords,
    event_id: str,
    source: LogSource,
    body_mode: bool,
    key: bytes | None = None,
) -> None:
    """Hand one event's record to ``emitter`` (``key``: its record key)."""
    event_type = source.event_type
    emitter.emit(
        event_type.full_name,
        log_values(source, body_mode),
        event_id,
        source.span_context,
        source.severity,
        trace_fields=event_type.trace_context,
        timestamp_ns=source.timestamp_ns,
        key=key,
    )


class DirectLogListener(DeliveryListener):
    """The direct log path (`LogExportOptions.direct`): a record is written
    when ``publish`` accepts an event and exported once Kafka acknowledged
    the event; failed events get none.

    Parameters
    ----------
    records
        Keeps and exports the records.
    body_mode
        `TelemetryOptions.log_mode` is ``"body"``.
    """

    name = "log export"

    def __init__(self, records: DirectLogRecords, *, body_mode: bool) -> None:
        self._records = records
        self._body_mode = body_mode

    def accepted(self, event: PendingEvent, source: Any) -> None:
        emit_record(self._records, event.event_id, source, self._body_mode, event.key)

    def settled(self, settlement: Settlement) -> None:
        if settlement.outcome is Settled.DELIVERED:
            self._records.delivered(settlement.events)
        else:
            self._records.failed(settlement.events)

    async def closing(self, timeout: float) -> None:
        # Its Kafka records ride on the manager's transport: out before it
        # stops.
        await self._records.drained(timeout)


class ProducerSpanListener(DeliveryListener):
    """Ends each event's producer span (``producer_spans="event"``) with its
    outcome; the span was started at ``publish`` and rides on the event."""

    name = "producer spans"

    def refused(self, event: PendingEvent, error: BaseException) -> None:
        if event.attachment is not None:
            end_producer_span(event.attachment, error=error)

    def settled(self, settlement: Settlement) -> None:
        error = settlement.error
        if settlement.outcome is Settled.DELIVERED:
            partition = settlement.partition
            base = settlement.base_offset
            assert base is not None
            for index, event in enumerate(settlement.events):
                span: Span | None = event.attachment
                if span is not None:
                    end_producer_span(span, partition=partition, offset=base + index)
        else:
            for event in settlement.events:
                if event.attachment is not None:
                    end_producer_span(event.attachment, error=error)


class BatchSpanListener(DeliveryListener):
    """A producer span per batch sent (``producer_spans="batch"``), linked
    to the caller spans its events carry.

    Parameters
    ----------
    spans
        Starts the spans.
    """

    name = "batch spans"

    def __init__(self, spans: BatchSpans) -> None:
        self._spans = spans

    def batch_started(self, partition: int, events: Sequence[PendingEvent]) -> Any:
        return self._spans.start(
            partition, len(events), (event.attachment for event in events)
        )

    def batch_ended(
        self,
        token: Any,
        partition: int,
        base_offset: int | None,
        error: BaseException | None,
    ) -> None:
        if token is not None:
            end_producer_span(
                token, partition=partition, offset=base_offset, error=error
            )
