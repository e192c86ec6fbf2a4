"""Published events as OpenTelemetry log records (the Logs API)."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber, get_logger
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext

from .._encoding._keys import key_text
from ._values import PLAIN_TYPES, otel_value

__all__ = ["KEY_ATTRIBUTE", "SCOPE", "EventLogEmitter", "not_copied", "record_fields"]

KEY_ATTRIBUTE = "messaging.kafka.message.key"
"""The attribute (of producer spans and log records) holding the record key,
as the messaging semantic conventions name it; absent for unkeyed events."""

SCOPE = "otel_kafka_events"
"""The instrumentation scope of every record."""

# Metadata the record holds in its own fields (timestamp, trace context): as
# attributes they would only repeat it, at a cost per attribute in the SDK.
# The id is not copied either: it is written first, as text. Without trace
# context the trace names are ordinary payload fields and stay.
_NOT_COPIED = frozenset({"id", "timestamp", "timestamp_ns"})
_NOT_COPIED_WITH_TRACE = _NOT_COPIED | {"trace_id", "span_id", "trace_flags"}

# An empty Context is falsy and the SDK would fall back to the current
# context; an explicit invalid span says "no trace" instead.
_NO_TRACE = trace.set_span_in_context(NonRecordingSpan(trace.INVALID_SPAN_CONTEXT))


def not_copied(trace_fields: bool) -> frozenset[str]:
    """The event values that do not become attributes (metadata the record
    holds in its own fields)."""
    return _NOT_COPIED_WITH_TRACE if trace_fields else _NOT_COPIED


def record_fields(
    full_name: str,
    values: dict[str, Any],
    event_id: str,
    *,
    body_mode: bool,
    trace_fields: bool,
    key: bytes | None = None,
) -> tuple[dict[str, Any], Any]:
    """The attributes and body of an event's log record.

    Every path that turns events into log records (the SDK's and the direct
    one) builds them here, so that they carry the same values.

    Parameters
    ----------
    full_name
        ``{topic}.{event name}``.
    values
        The event's field values (metadata and payload).
    event_id
        The event id as text.
    body_mode
        The event as a map in the body (`TelemetryOptions.log_mode`
        ``"body"``) rather than in attributes.
    trace_fields
        Whether ``values`` has the trace metadata fields.
    key
        The record key, as `KEY_ATTRIBUTE` (last) when there is one.

    Returns
    -------
    tuple
        The attributes, and the body (None in attributes mode).
    """
    if body_mode:
        named: dict[str, Any] = {"event.name": full_name}
        if key is not None:
            named[KEY_ATTRIBUTE] = key_text(key)
        return named, {name: otel_value(value) for name, value in values.items()}
    # The SDK keeps None attributes and OTLP sends them as empty values; an
    # absent field is what backends expect instead.
    attributes: dict[str, Any] = {"id": event_id}
    skipped = _NOT_COPIED_WITH_TRACE if trace_fields else _NOT_COPIED
    for name, value in values.items():
        if value is not None and name not in skipped:
            attributes[name] = (
                value if type(value) in PLAIN_TYPES else otel_value(value)
            )
    if key is not None:
        attributes[KEY_ATTRIBUTE] = key_text(key)
    return attributes, None


class EventLogEmitter:
    """Emits one log record per published event.

    The record's ``event_name`` is the event's Avro full name, its timestamp
    the event's own ``timestamp_ns``, and its context the caller's span, so
    the record carries the same trace and span ids as the event.

    Parameters
    ----------
    logger_provider
        The LoggerProvider to use; the global one when None.
    mode
        ``"attributes"`` or ``"body"``; see `TelemetryOptions.log_mode`.
    """

    def __init__(self, logger_provider: Any = None, mode: str = "attributes") -> None:
        from .._version import __version__

        self._logger = get_logger(SCOPE, __version__, logger_provider=logger_provider)
        self._body_mode = mode == "body"
        # (span context, OTel context) as one tuple, safe to read from threads.
        self._last: tuple[SpanContext | None, Context] = (None, _NO_TRACE)

    def emit(
        self,
        full_name: str,
        values: dict[str, Any],
        event_id: str,
        span_context: SpanContext | None,
        severity: SeverityNumber,
        *,
        trace_fields: bool = True,
        timestamp_ns: int,
        key: bytes | None = None,
    ) -> None:
        """Emit the log record of one event.

        Parameters
        ----------
        full_name
            ``{topic}.{event name}``.
        values
            The event's field values: all of them (metadata and payload) in
            ``"body"`` mode; in ``"attributes"`` mode the application and the
            payload fields are enough, since the other metadata is held by
            the record's own fields.
        event_id
            The event id as text.
        span_context
            The caller's span context captured at publish time, or None.
        severity
            The record's severity.
        trace_fields
            Whether the event type has trace context on (its trace fields
            are then metadata, not payload).
        timestamp_ns
            When the event happened: the record's timestamp.
        key
            The event's record key, or None.
        """
        cached_context, context = self._last
        if span_context is None:
            context = _NO_TRACE
        elif span_context is not cached_context:
            # Events of one request share its span, so this runs once per span.
            context = trace.set_span_in_context(NonRecordingSpan(span_context))
            self._last = (span_context, context)
        attributes, body = record_fields(
            full_name,
            values,
            event_id,
            body_mode=self._body_mode,
            trace_fields=trace_fields,
            key=key,
        )
        self._logger.emit(
            timestamp=timestamp_ns,
            context=context,
            severity_number=severity,
            severity_text=severity.name,
            body=body,
            attributes=attributes,
            event_name=full_name,
        )
