"""Trace context headers: the fast path and the propagator's own ``inject``
give the same headers.

`HeaderInjector` formats ``traceparent`` itself when the global propagator
is OpenTelemetry's default, which it tells by reading the composite
propagator's parts (not OpenTelemetry's API) and by checking that the
propagator injects what it would format. Here a propagator laid out or
behaving otherwise gets the plain path, with the same headers where the
propagator means the same, and the fast path is taken with the installed
OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_kafka_events._telemetry._propagation import HeaderInjector

SPANS = [
    SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1)),
    SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(0),
        trace_state=TraceState([("congo", "t61rcWkgMzE")]),
    ),
]


class PartsElsewhere(CompositePropagator):
    """A composite of the default parts, kept where this package does not
    look: what a release that renamed ``_propagators`` would look like."""

    def __init__(self, parts: list[TextMapPropagator]) -> None:
        self.parts = parts

    def inject(
        self,
        carrier: CarrierT,
        context: otel_context.Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        for part in self.parts:
            part.inject(carrier, context, setter)

    def extract(
        self,
        carrier: CarrierT,
        context: otel_context.Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> otel_context.Context:
        for part in self.parts:
            context = part.extract(carrier, context, getter)
        return context if context is not None else otel_context.get_current()

    @property
    def fields(self) -> set[str]:
        return {field for part in self.parts for field in part.fields}


@pytest.fixture
def global_propagator() -> Iterator[Any]:
    """Sets the global propagator for one test, then puts back the one
    before."""
    before = propagate.get_global_textmap()
    yield propagate.set_global_textmap
    propagate.set_global_textmap(before)


def headers_in_span(injector: HeaderInjector, span_context: SpanContext) -> Any:
    """The headers of a record published inside a span that has baggage."""
    context = trace.set_span_in_context(NonRecordingSpan(span_context))
    context = baggage.set_baggage("user", "someone", context)
    token = otel_context.attach(context)
    try:
        return injector.headers(span_context)
    finally:
        otel_context.detach(token)


def new_injector() -> HeaderInjector:
    return HeaderInjector(allow_baggage=False, baggage_keys=None)


@pytest.mark.parametrize(
    "parts",
    [
        [TraceContextTextMapPropagator(), W3CBaggagePropagator()],
        [TraceContextTextMapPropagator()],
    ],
    ids=["trace context and baggage", "trace context"],
)
def test_the_fast_path_is_taken_with_the_installed_opentelemetry(
    global_propagator: Any, parts: list[TextMapPropagator]
) -> None:
    global_propagator(CompositePropagator(parts))
    injector = new_injector()
    for span_context in SPANS:
        headers, size = headers_in_span(injector, span_context)
        assert injector.fast
        assert headers == HeaderInjector.format(span_context)
        assert size == sum(len(k) + len(v) for k, v in headers)


def test_the_default_global_propagator_takes_the_fast_path() -> None:
    # OTEL_PROPAGATORS unset: OpenTelemetry's default, trace context and
    # baggage.
    injector = new_injector()
    headers_in_span(injector, SPANS[0])
    assert injector.fast


def test_a_composite_laid_out_otherwise_gets_inject_with_the_same_headers(
    global_propagator: Any,
) -> None:
    fast = new_injector()
    global_propagator(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    expected = [headers_in_span(fast, span_context) for span_context in SPANS]
    assert fast.fast

    global_propagator(
        PartsElsewhere([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    plain = new_injector()
    found = [headers_in_span(plain, span_context) for span_context in SPANS]

    assert not plain.fast
    assert found == expected
    # Baggage is stripped on both paths.
    assert all(key != "baggage" for headers, _ in found for key, _ in headers)


def test_a_default_propagator_that_injects_otherwise_is_not_bypassed(
    global_propagator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = TraceContextTextMapPropagator.inject

    def inject_upper_case(self: Any, carrier: Any, *args: Any, **kwargs: Any) -> None:
        original(self, carrier, *args, **kwargs)
        carrier["traceparent"] = carrier["traceparent"].upper()

    monkeypatch.setattr(TraceContextTextMapPropagator, "inject", inject_upper_case)
    global_propagator(CompositePropagator([TraceContextTextMapPropagator()]))
    injector = new_injector()

    headers, _ = headers_in_span(injector, SPANS[0])

    assert not injector.fast
    upper = f"00-{0xABC:032x}-{0xDEF:016x}-01".upper()
    assert headers == (("traceparent", upper.encode()),)
