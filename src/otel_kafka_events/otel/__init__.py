"""OpenTelemetry helpers: consuming with trace context, structlog ids.

The producer side (trace fields, headers, spans, log records) is configured
on the event manager with `otel_kafka_events.TelemetryOptions`; this module
holds what services use on their own.
"""

from ._consumer import process_span
from ._propagation import extract_context, headers_to_carrier
from ._structlog import add_trace_context
from ._values import otel_value

__all__ = [
    "add_trace_context",
    "extract_context",
    "headers_to_carrier",
    "otel_value",
    "process_span",
]
