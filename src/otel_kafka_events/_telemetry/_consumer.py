"""Continuing the producer's trace when consuming an event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from ._propagation import extract_context

__all__ = ["process_span"]


@asynccontextmanager
async def process_span(
    record: Any,
    *,
    tracer_provider: Any = None,
    consumer_group: str | None = None,
) -> AsyncIterator[Span]:
    """Process a consumed record inside a CONSUMER span of the event's trace.

    The span (``process {topic}``) is a child of the context in the record's
    headers and also links to it, as the messaging conventions suggest, and
    it is the current span inside the block. An exception escaping the block
    marks the span as failed and propagates.

    Parameters
    ----------
    record
        An aiokafka ``ConsumerRecord``.
    tracer_provider
        The TracerProvider; the global one when None.
    consumer_group
        The consumer group, recorded as ``messaging.consumer.group.name``.

    Examples
    --------
    >>> async for record in consumer:  # doctest: +SKIP
    ...     async with process_span(record):
    ...         handle(record)
    """
    from .._version import __version__

    tracer = trace.get_tracer(
        "otel_kafka_events", __version__, tracer_provider=tracer_provider
    )
    parent = extract_context(record)
    producer = trace.get_current_span(parent).get_span_context()
    links = [Link(producer)] if producer.is_valid else []
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": record.offset,
    }
    if consumer_group:
        attributes["messaging.consumer.group.name"] = consumer_group
    with tracer.start_as_current_span(
        f"process {record.topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
        record_exception=True,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise
