"""Published events as OpenTelemetry log records (the Logs API)."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber, get_logger
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext

from ._values import otel_value

__all__ = ["EventLogEmitter"]

_SCOPE = "otel_kafka_events"

# An empty Context is falsy and the SDK would fall back to the current
# context; an explicit invalid span says "no trace" instead.
_NO_TRACE = trace.set_span_in_context(NonRecordingSpan(trace.INVALID_SPAN_CONTEXT))


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
        from .. import __version__

        self._logger = get_logger(_SCOPE, __version__, logger_provider=logger_provider)
        self._body_mode = mode == "body"
        # (span context, OTel context) as one tuple, safe to read from threads.
        self._last: tuple[SpanContext | None, Context] = (None, _NO_TRACE)

    def emit(
        self,
        full_name: str,
        values: dict[str, Any],
        span_context: SpanContext | None,
        severity: SeverityNumber,
    ) -> None:
        """Emit the log record of one event.

        Parameters
        ----------
        full_name
            ``{topic}.{event name}``.
        values
            The event's field values (metadata and payload).
        span_context
            The caller's span context captured at publish time, or None.
        severity
            The record's severity.
        """
        cached_context, context = self._last
        if span_context is None:
            context = _NO_TRACE
        elif span_context is not cached_context:
            # Events of one request share its span, so this runs once per span.
            context = trace.set_span_in_context(NonRecordingSpan(span_context))
            self._last = (span_context, context)
        if self._body_mode:
            attributes: dict[str, Any] = {"event.name": full_name}
            body: Any = {key: otel_value(value) for key, value in values.items()}
        else:
            # The SDK keeps None attributes and OTLP sends them as empty
            # values; an absent field is what backends expect instead.
            attributes = {
                key: otel_value(value)
                for key, value in values.items()
                if value is not None
            }
            body = None
        self._logger.emit(
            timestamp=values["timestamp_ns"],
            context=context,
            severity_number=severity,
            severity_text=severity.name,
            body=body,
            attributes=attributes,
            event_name=full_name,
        )
