"""The structlog processor `add_trace_context`, through real structlog loggers."""

from __future__ import annotations

import json
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_kafka_events import EventPayload, decode
from otel_kafka_events.otel import add_trace_context
from otel_kafka_events_devstack import LocalKafkaStack

from ..conftest import ManagerFactory


class Search(EventPayload):
    """A small payload."""

    query: str


def json_logger() -> Any:
    """A structlog logger rendering JSON lines, returned by each call."""
    return structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[add_trace_context, structlog.processors.JSONRenderer()],
    )


def log_line(logger: Any, message: str, **fields: Any) -> dict[str, Any]:
    line: dict[str, Any] = json.loads(logger.info(message, **fields))
    return line


def ids_of(span_context: SpanContext) -> dict[str, Any]:
    return {
        "trace_id": f"{span_context.trace_id:032x}",
        "span_id": f"{span_context.span_id:016x}",
        "trace_flags": int(span_context.trace_flags),
    }


def test_adds_the_active_span_ids() -> None:
    tracer = TracerProvider().get_tracer("tests.structlog")
    logger = json_logger()
    with tracer.start_as_current_span("request") as span:
        line = log_line(logger, "handling")
    assert line == {"event": "handling", **ids_of(span.get_span_context())}


def test_adds_nothing_outside_a_span() -> None:
    assert not trace.get_current_span().get_span_context().is_valid
    assert log_line(json_logger(), "idle", user="ada") == {
        "event": "idle",
        "user": "ada",
    }


def test_non_recording_span_with_a_valid_context() -> None:
    context = SpanContext(
        trace_id=0x5B8EFFF798038103D269B633813FC60C,
        span_id=0xEEE19B7EC3C1B174,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.DEFAULT),
    )
    with trace.use_span(NonRecordingSpan(context)):
        line = log_line(json_logger(), "relayed")
    assert line["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert line["span_id"] == "eee19b7ec3c1b174"
    assert line["trace_flags"] == 0


def test_keeps_fields_the_caller_set() -> None:
    tracer = TracerProvider().get_tracer("tests.structlog")
    with tracer.start_as_current_span("request") as span:
        line = log_line(json_logger(), "explicit", trace_id="mine")
    assert line["trace_id"] == "mine"
    assert line["span_id"] == ids_of(span.get_span_context())["span_id"]


def test_works_with_structlog_configure() -> None:
    # The setup docs/opentelemetry.md recommends, including contextvars.
    tracer = TracerProvider().get_tracer("tests.structlog")
    try:
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                add_trace_context,
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.ReturnLoggerFactory(),
            cache_logger_on_first_use=False,
        )
        logger = structlog.get_logger()
        with tracer.start_as_current_span("request") as span:
            line = json.loads(logger.info("configured"))
    finally:
        structlog.reset_defaults()
    assert line == {"event": "configured", **ids_of(span.get_span_context())}


async def test_log_lines_and_events_share_ids(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    tracer = TracerProvider().get_tracer("tests.structlog")
    logger = json_logger()
    manager = await make_kafka_manager()
    publisher = await manager.create_publisher("search", Search)
    with tracer.start_as_current_span("search request"):
        before = log_line(logger, "searching")
        await publisher.publish(Search(query="otel"))
        after = log_line(logger, "searched")
    assert await manager.aclose(timeout=30) == 0
    [record] = await local_kafka_stack.consume(manager.topic, 1, timeout=30)
    decoded = await decode(record.value, local_kafka_stack.registry_url)
    event_ids = {k: decoded[k] for k in ("trace_id", "span_id", "trace_flags")}
    for line in (before, after):
        assert {k: line[k] for k in event_ids} == event_ids
