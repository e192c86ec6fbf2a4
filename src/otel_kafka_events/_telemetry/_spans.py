"""PRODUCER spans around publishing, following the messaging conventions.

Two shapes (`TelemetryOptions.producer_spans`):

- ``"event"`` (or True): a ``send {topic}`` span per event, a child of the
  caller's span, from ``publish`` until the broker's answer; the record's
  ``traceparent`` names it. The request's own trace shows how long each of
  its events took to reach Kafka, at the price of one SDK span per event.
- ``"batch"``: one ``send {topic}`` span per batch sent to a partition,
  from the moment the batch leaves until the broker's answer, with a link
  to the caller's span of each of its events (the events' creation
  context, which their ``traceparent`` headers carry). One span covers
  hundreds of events: broker latency and errors stay visible, found from
  a request through the links, for a cost per event close to nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from .._encoding._keys import key_text
from ._logs import KEY_ATTRIBUTE

__all__ = ["MAX_BATCH_LINKS", "BatchSpans", "ProducerSpans", "end_producer_span"]

MAX_BATCH_LINKS = 128
"""Links a batch span carries at most (the SDK's default link limit): one
per distinct caller span, in the order of the batch's events."""

# A batch belongs to no request: its span starts a trace of its own. (An
# empty Context would make the SDK fall back to the current one.)
_NO_PARENT = trace.set_span_in_context(trace.INVALID_SPAN)


class _SendSpans:
    """What both shapes of span share: tracer, name and attributes.

    Parameters
    ----------
    topic
        The destination topic.
    tracer_provider
        The TracerProvider; the global one when None.
    """

    def __init__(self, topic: str, tracer_provider: Any = None) -> None:
        from .._version import __version__

        self._tracer = trace.get_tracer(
            "otel_kafka_events", __version__, tracer_provider=tracer_provider
        )
        self._name = f"send {topic}"
        self._attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        }


class ProducerSpans(_SendSpans):
    """Starts a ``send {topic}`` PRODUCER span per event."""

    def start(
        self, context: Context, event_id: str, start_ns: int, key: bytes | None = None
    ) -> Span:
        """Start the span of one event as a child of the caller's context.

        Every attribute known now is given at the start, where the SDK
        checks them once, rather than set one by one afterwards. The record
        key, when the event has one, is ``messaging.kafka.message.key``
        (see `key_text` for keys that are not UTF-8).
        """
        attributes = {**self._attributes, "messaging.message.id": event_id}
        if key is not None:
            attributes[KEY_ATTRIBUTE] = key_text(key)
        return self._tracer.start_span(
            self._name,
            context=context,
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            start_time=start_ns,
        )


class BatchSpans(_SendSpans):
    """Starts a ``send {topic}`` PRODUCER span per batch."""

    def start(
        self, partition: int, count: int, contexts: Iterable[SpanContext | None]
    ) -> Span:
        """Start the span of a batch of ``count`` events for ``partition``,
        linked to the distinct valid span ``contexts`` of its events."""
        links: list[Link] = []
        seen: set[tuple[int, int]] = set()
        last: SpanContext | None = None
        for context in contexts:
            # Events of one request share one context object.
            if context is None or context is last:
                continue
            last = context
            key = (context.trace_id, context.span_id)
            if key in seen:
                continue
            seen.add(key)
            links.append(Link(context))
            if len(links) == MAX_BATCH_LINKS:
                break
        return self._tracer.start_span(
            self._name,
            context=_NO_PARENT,
            kind=SpanKind.PRODUCER,
            attributes={
                **self._attributes,
                "messaging.destination.partition.id": str(partition),
                "messaging.batch.message_count": count,
            },
            links=links,
        )


def end_producer_span(
    span: Span,
    *,
    partition: int | None = None,
    offset: int | None = None,
    error: BaseException | None = None,
) -> None:
    """End a producer span with the delivery outcome (for a batch span, the
    offset is its first event's)."""
    if error is not None:
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, str(error)))
    else:
        attributes: dict[str, Any] = {}
        if partition is not None:
            attributes["messaging.destination.partition.id"] = str(partition)
        if offset is not None:
            attributes["messaging.kafka.offset"] = offset
        if attributes:
            span.set_attributes(attributes)
    span.end()
