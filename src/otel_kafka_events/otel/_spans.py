"""PRODUCER spans around publishing, following the messaging conventions."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

__all__ = ["ProducerSpans", "end_producer_span"]


class ProducerSpans:
    """Starts ``send {topic}`` PRODUCER spans.

    Parameters
    ----------
    topic
        The destination topic.
    tracer_provider
        The TracerProvider; the global one when None.
    """

    def __init__(self, topic: str, tracer_provider: Any = None) -> None:
        from .. import __version__

        self._tracer = trace.get_tracer(
            "otel_kafka_events", __version__, tracer_provider=tracer_provider
        )
        self._name = f"send {topic}"
        self._attributes = {
            "messaging.system": "kafka",
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        }

    def start(self, context: Context, event_id: str, start_ns: int) -> Span:
        """Start the span of one event as a child of the caller's context."""
        span = self._tracer.start_span(
            self._name,
            context=context,
            kind=SpanKind.PRODUCER,
            attributes=self._attributes,
            start_time=start_ns,
        )
        span.set_attribute("messaging.message.id", event_id)
        return span


def end_producer_span(
    span: Span,
    *,
    partition: int | None = None,
    offset: int | None = None,
    error: BaseException | None = None,
) -> None:
    """End a producer span with the delivery outcome."""
    if error is not None:
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, str(error)))
    else:
        if partition is not None:
            span.set_attribute("messaging.destination.partition.id", str(partition))
        if offset is not None:
            span.set_attribute("messaging.kafka.offset", offset)
    span.end()
