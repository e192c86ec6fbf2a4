"""W3C trace context on Kafka record headers, for producers and consumers.

Producers inject through the global propagator, so ``OTEL_PROPAGATORS`` is
honoured; a fast path formats ``traceparent`` directly when the global
propagator is the SDK's default (trace context and baggage), which gives the
same header for a fraction of the cost. Baggage is stripped unless allowed.

Telling the default apart reads ``CompositePropagator._propagators``, which
is not OpenTelemetry's API; so the fast path is also checked once per
global propagator: the propagator must inject exactly the headers the fast
path formats for a few span contexts. A propagator laid out or behaving
otherwise gets the plain path, ``inject``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["HeaderInjector", "extract_context", "headers_size", "headers_to_carrier"]

Headers = tuple[tuple[str, bytes], ...]

# The span contexts the fast path is checked with: sampled and not, with and
# without a trace state.
_PROBE_SPANS = (
    SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=TraceFlags(1),
    ),
    SpanContext(
        0x1,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(0),
        trace_state=TraceState([("vendor", "t61rcWkgMzE"), ("other", "b")]),
    ),
)


def _is_default_propagator(propagator: Any) -> bool:
    """Whether the propagator is trace context (plus optionally baggage)
    only, and injects what the fast path formats."""
    return _default_kinds(propagator) and _injects_as_formatted(propagator)


def _default_kinds(propagator: Any) -> bool:
    """Whether the propagator is made of trace context (plus optionally
    baggage) only. A composite whose parts are not where OpenTelemetry
    keeps them is not."""
    if isinstance(propagator, TraceContextTextMapPropagator):
        return True
    if isinstance(propagator, CompositePropagator):
        parts = getattr(propagator, "_propagators", None)
        if not isinstance(parts, list | tuple):
            return False
        kinds = {type(p) for p in parts}
        return kinds <= {TraceContextTextMapPropagator, W3CBaggagePropagator} and (
            TraceContextTextMapPropagator in kinds
        )
    return False


def _injects_as_formatted(propagator: Any) -> bool:
    """Whether ``propagator`` injects, without baggage, exactly the headers
    `HeaderInjector` formats on its fast path."""
    try:
        for span_context in _PROBE_SPANS:
            context = trace.set_span_in_context(NonRecordingSpan(span_context))
            carrier: dict[str, str] = {}
            propagator.inject(carrier, context=baggage.clear(context))
            formatted = HeaderInjector.format(span_context)
            if carrier != {key: value.decode() for key, value in formatted}:
                return False
    except Exception:
        return False
    return True


class HeaderInjector:
    """Builds the propagation headers of one Kafka record.

    Parameters
    ----------
    allow_baggage
        Whether baggage may be propagated at all.
    baggage_keys
        When baggage is allowed, the keys let through (None for all).
    """

    def __init__(
        self, *, allow_baggage: bool, baggage_keys: frozenset[str] | None
    ) -> None:
        self._allow_baggage = allow_baggage
        self._baggage_keys = baggage_keys
        self._checked: Any = None
        self.fast = False
        """Whether the global propagator, as of the last `headers`, is the
        default one: its headers are then formatted here, not injected,
        unless baggage is allowed."""
        # (span context, its headers, their size) as one tuple, safe to read
        # from threads.
        self._last: tuple[trace.SpanContext | None, Headers | None, int] = (
            None,
            None,
            0,
        )

    def headers(
        self, span_context: trace.SpanContext | None, span: trace.Span | None = None
    ) -> tuple[Headers | None, int]:
        """The headers of a record whose ``traceparent`` names a span, and
        their size in bytes (keys and values, as Kafka counts them).

        Parameters
        ----------
        span_context
            The span the ``traceparent`` names (the caller's, or the producer
            span); None when there is no valid span.
        span
            The producer span, if any: made current in the context handed to
            a non-default propagator (the caller's context otherwise).
        """
        propagator = propagate.get_global_textmap()
        if propagator is not self._checked:
            self._checked = propagator
            self.fast = _is_default_propagator(propagator)
        if self.fast and not self._allow_baggage:
            if span_context is None:
                return None, 0
            cached_context, headers, size = self._last
            if span_context is cached_context:
                # Every event published inside one span carries the same
                # headers; sharing the (never mutated) tuple saves building
                # it and keeps one less object alive per queued event.
                return headers, size
            headers = self.format(span_context)
            size = headers_size(headers)
            self._last = (span_context, headers, size)
            return headers, size
        context = otel_context.get_current()
        if span is not None:
            context = trace.set_span_in_context(span, context)
        headers = self._generic(context, propagator)
        return headers, headers_size(headers)

    @staticmethod
    def format(span_context: trace.SpanContext) -> Headers:
        """``traceparent`` (and ``tracestate``) for a span context."""
        traceparent = "00-%032x-%016x-%02x" % (  # noqa: UP031 - fastest form
            span_context.trace_id,
            span_context.span_id,
            span_context.trace_flags,
        )
        if span_context.trace_state:
            return (
                ("traceparent", traceparent.encode()),
                ("tracestate", span_context.trace_state.to_header().encode()),
            )
        return (("traceparent", traceparent.encode()),)

    def _generic(self, context: Context, propagator: Any) -> Headers | None:
        if not self._allow_baggage:
            context = baggage.clear(context)
        elif self._baggage_keys is not None:
            for key in list(baggage.get_all(context)):
                if key not in self._baggage_keys:
                    context = baggage.remove_baggage(key, context)
        carrier: dict[str, str] = {}
        propagator.inject(carrier, context=context)
        if not carrier:
            return None
        # A dict carrier guarantees one header per key.
        return tuple((key, value.encode()) for key, value in carrier.items())


def headers_size(headers: Headers | None) -> int:
    """Bytes the keys and values of ``headers`` take in a Kafka record."""
    if not headers:
        return 0
    return sum(len(key) + len(value) for key, value in headers)


def headers_to_carrier(
    headers: Iterable[tuple[str, bytes | None]] | None,
) -> dict[str, str]:
    """Turn Kafka record headers into a propagation carrier.

    When a key repeats, the last value wins, as with the Java client's
    ``Headers.lastHeader``; values that are not UTF-8 are skipped.
    """
    carrier: dict[str, str] = {}
    for key, value in headers or ():
        if value is None:
            continue
        try:
            carrier[key.lower()] = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            continue
    return carrier


def extract_context(record: Any, context: Context | None = None) -> Context:
    """Return the trace context a Kafka record carries.

    Parameters
    ----------
    record
        An aiokafka ``ConsumerRecord``, or anything with a ``headers``
        attribute holding ``(key, bytes)`` pairs, or such a sequence itself.
    context
        The context to extend; the current one when None.

    Returns
    -------
    Context
        Use it as the parent (or a link) of the span that processes the
        record, so the consumer continues the producer's trace.
    """
    headers: Sequence[tuple[str, bytes | None]] | None
    headers = getattr(record, "headers", record)
    return propagate.extract(headers_to_carrier(headers), context=context)
