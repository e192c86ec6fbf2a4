"""W3C propagation headers on Kafka records, and the consumer side.

Everything goes through a real broker: headers are read back from consumed
records, not from the library's internals. Global propagators are swapped
with ``set_global_textmap`` and always restored.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.propagation.tracecontext import (
    TraceContextTextMapPropagator,
)

from otel_kafka_events import (
    EventPayload,
    KafkaEventManager,
    KafkaEventPublisher,
    TelemetryOptions,
)
from otel_kafka_events.otel import extract_context, headers_to_carrier, process_span
from otel_kafka_events_devstack import LocalKafkaStack

from ..conftest import ManagerFactory


class Order(EventPayload):
    """A small payload."""

    order_id: str


class Sdk:
    """A private TracerProvider recording finished spans in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests.propagation")

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


@pytest.fixture
def sdk() -> Sdk:
    return Sdk()


@pytest.fixture
def restore_textmap() -> Iterator[None]:
    """Put the global propagator back after a test replaces it."""
    saved = propagate.get_global_textmap()
    try:
        yield
    finally:
        propagate.set_global_textmap(saved)


@contextmanager
def baggage_entries(**entries: str) -> Iterator[None]:
    """Make ``entries`` the current baggage inside the block."""
    context: Context = otel_context.get_current()
    for key, value in entries.items():
        context = baggage.set_baggage(key, value, context)
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def traceparent_of(span_context: SpanContext) -> str:
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
        f"-{int(span_context.trace_flags):02x}"
    )


def header_list(record: Any) -> list[tuple[str, bytes]]:
    return [(key, bytes(value)) for key, value in record.headers or ()]


def header_keys(record: Any) -> list[str]:
    return [key for key, _ in header_list(record)]


def parse_baggage(value: bytes) -> dict[str, object]:
    context = W3CBaggagePropagator().extract({"baggage": value.decode()})
    return dict(baggage.get_all(context))


async def publish_and_consume(
    manager: KafkaEventManager,
    stack: LocalKafkaStack,
    sdk: Sdk,
    *,
    span_name: str = "caller",
) -> tuple[SpanContext, Any]:
    """Publish one event inside a new span; return that span and the record."""
    publisher = await manager.create_publisher("order", Order)
    assert isinstance(publisher, KafkaEventPublisher)
    with sdk.tracer.start_as_current_span(span_name) as span:
        await publisher.publish(Order(order_id="o-1"), wait=True)
    [record] = await stack.consume(manager.topic, 1, timeout=30)
    return span.get_span_context(), record


# -- traceparent / tracestate --------------------------------------------------


async def test_traceparent_names_the_callers_span(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack, sdk: Sdk
) -> None:
    manager = await make_kafka_manager()
    caller, record = await publish_and_consume(manager, local_kafka_stack, sdk)
    headers = dict(header_list(record))
    assert headers["traceparent"].decode() == traceparent_of(caller)
    # The header parses back (with the SDK's own propagator) to the same ids.
    parsed = trace.get_current_span(
        TraceContextTextMapPropagator().extract(headers_to_carrier(record.headers))
    ).get_span_context()
    assert (parsed.trace_id, parsed.span_id) == (caller.trace_id, caller.span_id)
    assert parsed.trace_flags == caller.trace_flags
    assert "tracestate" not in headers
    assert "baggage" not in headers


async def test_tracestate_is_propagated_when_present(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack, sdk: Sdk
) -> None:
    # An incoming request's context with a vendor entry; the SDK's child span
    # inherits the trace state.
    remote = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "opaque-1"), ("other", "x")]),
    )
    manager = await make_kafka_manager()
    with trace.use_span(NonRecordingSpan(remote)):
        caller, record = await publish_and_consume(manager, local_kafka_stack, sdk)
    assert caller.trace_id == remote.trace_id
    headers = dict(header_list(record))
    assert headers["traceparent"].decode() == traceparent_of(caller)
    assert headers["tracestate"].decode() == "vendor=opaque-1,other=x"


# -- baggage -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        pytest.param(False, None, id="off-by-default"),
        pytest.param(True, {"tenant": "acme", "user": "bob"}, id="all"),
        pytest.param({"tenant"}, {"tenant": "acme"}, id="allow-list"),
        pytest.param({"nothing-matches"}, None, id="allow-list-empty"),
    ],
)
async def test_baggage_header(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    sdk: Sdk,
    option: bool | set[str],
    expected: dict[str, str] | None,
) -> None:
    telemetry = (
        TelemetryOptions() if option is False else TelemetryOptions(baggage=option)
    )
    manager = await make_kafka_manager(telemetry=telemetry)
    with baggage_entries(tenant="acme", user="bob"):
        caller, record = await publish_and_consume(manager, local_kafka_stack, sdk)
    headers = dict(header_list(record))
    assert headers["traceparent"].decode() == traceparent_of(caller)
    if expected is None:
        assert "baggage" not in headers
    else:
        assert parse_baggage(headers["baggage"]) == expected
    # The caller's own baggage is untouched by the filtering.
    assert len(header_keys(record)) == len(set(header_keys(record)))


async def test_baggage_without_a_span(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    # Baggage is independent of tracing: it travels even with no span, and
    # no traceparent is made up for it.
    manager = await make_kafka_manager(telemetry=TelemetryOptions(baggage={"tenant"}))
    publisher = await manager.create_publisher("order", Order)
    assert isinstance(publisher, KafkaEventPublisher)
    with baggage_entries(tenant="acme", secret="s"):
        await publisher.publish(Order(order_id="o-2"), wait=True)
    [record] = await local_kafka_stack.consume(manager.topic, 1, timeout=30)
    headers = dict(header_list(record))
    assert "traceparent" not in headers
    assert parse_baggage(headers["baggage"]) == {"tenant": "acme"}


# -- the global propagator (OTEL_PROPAGATORS) ----------------------------------


class TraceEchoPropagator(TextMapPropagator):
    """A custom propagator writing the trace id to ``x-trace-echo``."""

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        span_context = trace.get_current_span(context).get_span_context()
        if span_context.is_valid:
            setter.set(carrier, "x-trace-echo", f"{span_context.trace_id:032x}")

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        return context if context is not None else Context()

    @property
    def fields(self) -> set[str]:
        return {"x-trace-echo"}


@pytest.mark.usefixtures("restore_textmap")
@pytest.mark.parametrize("producer_spans", [False, True])
async def test_headers_follow_the_global_propagator(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    sdk: Sdk,
    producer_spans: bool,
) -> None:
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), TraceEchoPropagator()])
    )
    manager = await make_kafka_manager(
        telemetry=TelemetryOptions(
            producer_spans=producer_spans, tracer_provider=sdk.provider
        )
    )
    caller, record = await publish_and_consume(manager, local_kafka_stack, sdk)
    assert sorted(header_keys(record)) == ["traceparent", "x-trace-echo"]
    headers = dict(header_list(record))
    assert headers["x-trace-echo"].decode() == f"{caller.trace_id:032x}"
    named = headers["traceparent"].decode().split("-")[2]
    if producer_spans:
        [producer] = sdk.finished(f"send {manager.topic}")
        assert producer.context is not None
        assert named == f"{producer.context.span_id:016x}"
    else:
        assert named == f"{caller.span_id:016x}"


@pytest.mark.usefixtures("restore_textmap")
async def test_a_propagator_without_trace_context_writes_no_traceparent(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack, sdk: Sdk
) -> None:
    propagate.set_global_textmap(TraceEchoPropagator())
    manager = await make_kafka_manager()
    _, record = await publish_and_consume(manager, local_kafka_stack, sdk)
    assert header_keys(record) == ["x-trace-echo"]


_ENV_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from opentelemetry import baggage, context
    from opentelemetry.sdk.trace import TracerProvider
    from otel_kafka_events import EventPayload, KafkaEventManager, TelemetryOptions

    class Order(EventPayload):
        order_id: str

    async def main(bootstrap, registry, application, idempotent):
        manager = KafkaEventManager(
            application=application, topic_prefix="test.events",
            bootstrap_servers=bootstrap, registry_url=registry,
            enable_idempotence=idempotent == "1",
            telemetry=TelemetryOptions(baggage=True), raise_on_error=True,
        )
        await manager.initialize()
        publisher = await manager.create_publisher("order", Order)
        tracer = TracerProvider().get_tracer("script")
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            with tracer.start_as_current_span("caller") as span:
                await publisher.publish(Order(order_id="o"), wait=True)
        finally:
            context.detach(token)
        await manager.aclose()
        trace_id = format(span.get_span_context().trace_id, "032x")
        print(json.dumps({"trace_id": trace_id}))

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_otel_propagators_environment_variable_is_honoured(
    local_kafka_stack: LocalKafkaStack,
) -> None:
    # OTEL_PROPAGATORS is read when opentelemetry.propagate is first
    # imported, so this needs a fresh interpreter.
    from ..broker_support import capabilities
    from ..conftest import TOPIC_PREFIX, unique_application

    application = unique_application()
    await local_kafka_stack.create_topic(f"{TOPIC_PREFIX}.{application}")
    env = dict(os.environ, OTEL_PROPAGATORS="baggage")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _ENV_SCRIPT,
        local_kafka_stack.bootstrap_servers,
        local_kafka_stack.registry_url,
        application,
        "1" if capabilities().idempotent_producer else "0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    [record] = await local_kafka_stack.consume(
        f"{TOPIC_PREFIX}.{application}", 1, timeout=30
    )
    # Only the baggage propagator is configured: no traceparent at all.
    assert header_keys(record) == ["baggage"]
    assert parse_baggage(dict(header_list(record))["baggage"]) == {"tenant": "acme"}
    assert json.loads(stdout.decode().strip().splitlines()[-1])["trace_id"]


# -- one header per key, with and without the aiokafka instrumentation -------


@pytest.mark.parametrize("producer_spans", [False, True])
@pytest.mark.parametrize("instrumented", [False, True])
async def test_exactly_one_header_per_key(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    sdk: Sdk,
    instrumented: bool,
    producer_spans: bool,
) -> None:
    instrumentor = AIOKafkaInstrumentor()
    if instrumented:
        instrumentor.instrument(tracer_provider=sdk.provider)
    try:
        manager = await make_kafka_manager(
            telemetry=TelemetryOptions(
                baggage=True,
                producer_spans=producer_spans,
                tracer_provider=sdk.provider,
            )
        )
        publisher = await manager.create_publisher("order", Order)
        assert isinstance(publisher, KafkaEventPublisher)
        control = AIOKafkaProducer(
            bootstrap_servers=local_kafka_stack.bootstrap_servers
        )
        await control.start()
        try:
            with (
                baggage_entries(tenant="acme"),
                sdk.tracer.start_as_current_span("caller") as caller,
            ):
                await publisher.publish(Order(order_id="o-3"), wait=True)
                # A plain send through the same (maybe instrumented) client
                # class: proves the instrumentation is really active.
                await control.send_and_wait(manager.topic, b"control", partition=0)
        finally:
            await control.stop()
    finally:
        if instrumented:
            instrumentor.uninstrument()
    ours, plain = await local_kafka_stack.consume(manager.topic, 2, timeout=30)
    assert plain.value == b"control"
    if instrumented:
        assert "traceparent" in header_keys(plain)
        assert sdk.finished(f"{manager.topic} send")
    else:
        assert header_keys(plain) == []

    keys = header_keys(ours)
    assert sorted(keys) == ["baggage", "traceparent"]
    headers = dict(header_list(ours))
    named = headers["traceparent"].decode().split("-")
    assert named[1] == f"{caller.get_span_context().trace_id:032x}"
    if producer_spans:
        [producer] = sdk.finished(f"send {manager.topic}")
        assert producer.context is not None
        assert named[2] == f"{producer.context.span_id:016x}"
    else:
        assert named[2] == f"{caller.get_span_context().span_id:016x}"


# -- consumer side -------------------------------------------------------------


@pytest.mark.parametrize("producer_spans", [False, True])
async def test_extract_context_and_process_span(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    sdk: Sdk,
    producer_spans: bool,
) -> None:
    manager = await make_kafka_manager(
        telemetry=TelemetryOptions(
            producer_spans=producer_spans, tracer_provider=sdk.provider
        )
    )
    caller, record = await publish_and_consume(manager, local_kafka_stack, sdk)
    if producer_spans:
        [producer_span] = sdk.finished(f"send {manager.topic}")
        assert producer_span.context is not None
        upstream = producer_span.context
    else:
        upstream = caller

    extracted = trace.get_current_span(extract_context(record)).get_span_context()
    assert extracted.trace_id == caller.trace_id
    assert extracted.span_id == upstream.span_id
    assert extracted.is_remote

    consumer = Sdk()
    async with process_span(
        record, tracer_provider=consumer.provider, consumer_group="billing"
    ) as span:
        assert trace.get_current_span() is span
        inside = span.get_span_context()
    [processed] = consumer.finished(f"process {manager.topic}")
    assert processed.kind is SpanKind.CONSUMER
    assert processed.context is not None
    assert processed.context.span_id == inside.span_id
    assert processed.context.trace_id == caller.trace_id
    assert processed.parent is not None
    assert processed.parent.span_id == upstream.span_id
    [link] = processed.links
    assert (link.context.trace_id, link.context.span_id) == (
        upstream.trace_id,
        upstream.span_id,
    )
    attributes = dict(processed.attributes or {})
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == manager.topic
    assert attributes["messaging.destination.partition.id"] == str(record.partition)
    assert attributes["messaging.kafka.offset"] == record.offset
    assert attributes["messaging.consumer.group.name"] == "billing"
    assert processed.status.status_code is StatusCode.UNSET


async def test_process_span_records_a_failure(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack, sdk: Sdk
) -> None:
    manager = await make_kafka_manager()
    _, record = await publish_and_consume(manager, local_kafka_stack, sdk)
    consumer = Sdk()
    with pytest.raises(ValueError, match="bad record"):
        async with process_span(record, tracer_provider=consumer.provider):
            raise ValueError("bad record")
    [processed] = consumer.finished(f"process {manager.topic}")
    assert processed.status.status_code is StatusCode.ERROR
    assert dict(processed.attributes or {})["error.type"] == "ValueError"
    assert [e.name for e in processed.events] == ["exception"]


def test_extract_context_without_headers_has_no_span() -> None:
    context = extract_context([])
    assert not trace.get_current_span(context).get_span_context().is_valid


def test_repeated_headers_last_one_wins() -> None:
    first = "00-11111111111111111111111111111111-1111111111111111-01"
    last = "00-22222222222222222222222222222222-2222222222222222-01"
    headers = [
        ("traceparent", first.encode()),
        ("Traceparent", last.encode()),
        ("bad", b"\xff\xfe"),
    ]
    assert headers_to_carrier(headers) == {"traceparent": last}
    extracted = trace.get_current_span(extract_context(headers)).get_span_context()
    assert extracted.trace_id == 0x22222222222222222222222222222222
