"""OpenTelemetry helpers: consuming with trace context, structlog ids, OTLP
log records on Kafka.

The producer side (trace fields, headers, spans, log records) is configured
on the event manager with `otel_kafka_events.TelemetryOptions`; this module
holds what services use on their own. `KafkaLogRecordExporter` needs the
``otlp-kafka`` extra and is imported on first use.
"""

from typing import TYPE_CHECKING, Any

from .._telemetry._consumer import process_span
from .._telemetry._propagation import extract_context, headers_to_carrier
from .._telemetry._structlog import add_trace_context
from .._telemetry._values import otel_value

if TYPE_CHECKING:
    from .._telemetry._otlp_kafka import KafkaLogRecordExporter

__all__ = [
    "KafkaLogRecordExporter",
    "add_trace_context",
    "extract_context",
    "headers_to_carrier",
    "otel_value",
    "process_span",
]


def __getattr__(name: str) -> Any:
    # The exporter imports the OpenTelemetry SDK, which the core package
    # does not require.
    if name == "KafkaLogRecordExporter":
        from .._telemetry._otlp_kafka import KafkaLogRecordExporter

        return KafkaLogRecordExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
