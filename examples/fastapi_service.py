"""A FastAPI service publishing events to Kafka and to OpenTelemetry.

The service sells things. Each ``POST /checkout`` publishes one
``checkout_completed`` event, which ends up in three places that all share
one trace id:

* Kafka, as Avro, with the trace ids in the event's metadata and a W3C
  ``traceparent`` header for consumers;
* the OTLP endpoint, as an OTel log record named
  ``{topic}.checkout_completed`` (``METRICS_OTEL_LOGS``, forced on here);
* the service's own structlog lines, through `add_trace_context`.

Handlers get their publishers from an `EventDependency` (Safir's pattern:
declare them in an `EventMaker`, create them in the lifespan).

Configuration is Safir's: ``METRICS_APPLICATION``,
``METRICS_EVENTS_TOPIC_PREFIX``, ``KAFKA_BOOTSTRAP_SERVERS``,
``SCHEMA_MANAGER_REGISTRY_URL`` (or ``METRICS_ENABLED=false`` for no Kafka)
plus ``OTEL_EXPORTER_OTLP_ENDPOINT`` (an OTLP/HTTP collector, e.g.
``http://localhost:4318``) and ``OTEL_SERVICE_NAME``. From the repository
root, with a local stack in another terminal printing those settings::

    otel-kafka-events stack --otlp --application shop --env-file .env.local
    set -a; . ./.env.local; set +a
    uvicorn --app-dir examples fastapi_service:app

then ``curl -X POST localhost:8000/checkout -H 'content-type: application/json'
-d '{"items": 2, "total": "19.90"}'`` and ``otel-kafka-events tail
lsst.square.metrics.events.shop`` shows the event.

``python examples/fastapi_service.py`` runs `main` instead: a local broker,
schema registry and OTLP receiver of its own, one request, and checks that
the event reached Kafka and OTLP in the same trace.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import structlog
from fastapi import Depends, FastAPI, Request, Response
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, Field

from otel_kafka_events import (
    EventManager,
    EventPayload,
    EventPublisher,
    KafkaMetricsConfiguration,
    MetricsConfiguration,
    TelemetryOptions,
    decode,
    metrics_configuration_factory,
)
from otel_kafka_events.config import KafkaConnectionSettings, SchemaManagerSettings
from otel_kafka_events.fastapi import EventDependency, EventMaker
from otel_kafka_events.otel import add_trace_context

if TYPE_CHECKING:
    from otel_kafka_events_devstack import LocalKafkaStack

# -- the event -----------------------------------------------------------------


Amount = Annotated[Decimal, Field(max_digits=10, decimal_places=2)]
"""Euros and cents: what the event's Avro decimal can hold."""


class CheckoutCompleted(EventPayload):
    """A customer paid for an order."""

    order_id: str = Field(description="The order's id.")
    items: int = Field(description="Number of items bought.")
    total: Amount = Field(description="Amount paid, in euros.")


class ShopEvents(EventMaker):
    """The service's event publishers, handed to handlers by `EventDependency`."""

    checkout_completed: EventPublisher[CheckoutCompleted]

    async def initialize(self, manager: EventManager) -> None:
        """Create the publishers (at startup, once the manager is ready)."""
        self.checkout_completed = await manager.create_publisher(
            "checkout_completed", CheckoutCompleted
        )


class CheckoutRequest(BaseModel):
    """Body of ``POST /checkout``.

    Its fields are validated as the event's are, so a request the event
    could not carry (a total of 1.999) is refused with 422 before anything
    is published, rather than failing inside the handler with a 500.
    """

    items: int = Field(ge=0)
    total: Amount


class CheckoutResponse(BaseModel):
    """What ``POST /checkout`` answers."""

    order_id: str
    event_id: str
    trace_id: str


# -- telemetry -----------------------------------------------------------------

# Log lines carry the same trace_id / span_id as the events.
log = structlog.wrap_logger(
    structlog.PrintLogger(),
    processors=[
        structlog.processors.add_log_level,
        add_trace_context,
        structlog.processors.JSONRenderer(),
    ],
)


@dataclass
class Services:
    """What the lifespan builds and the handlers use."""

    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    events: EventManager


def setup_telemetry(endpoint: str) -> tuple[TracerProvider, LoggerProvider]:
    """Build SDK providers that export spans and logs over OTLP/HTTP.

    A service usually also makes them global (``trace.set_tracer_provider``,
    ``set_logger_provider``) so that instrumentation libraries find them;
    that can only be done once per process, so this example passes them
    around instead, which works just as well for the event manager.
    """
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", "shop")}
    )
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"))
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{endpoint}/v1/logs"))
    )
    return tracer_provider, logger_provider


# -- the application -----------------------------------------------------------


def create_app(
    metrics: MetricsConfiguration | None = None,
    *,
    otlp_endpoint: str | None = None,
    manager_options: Mapping[str, Any] | None = None,
) -> FastAPI:
    """Build the service.

    Parameters
    ----------
    metrics
        Events configuration; read from the environment at startup when None.
    otlp_endpoint
        OTLP/HTTP base URL; ``OTEL_EXPORTER_OTLP_ENDPOINT`` when None.
    manager_options
        Extra keyword arguments for the event manager.
    """
    # One per application: its publishers belong to this app's manager.
    shop_events = EventDependency(ShopEvents())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        endpoint = otlp_endpoint or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"
        )
        tracer_provider, logger_provider = setup_telemetry(endpoint.rstrip("/"))
        config = metrics or metrics_configuration_factory()
        # The settings say what to enable (METRICS_TRACE_CONTEXT,
        # METRICS_PRODUCER_SPANS...); the providers come from here.
        telemetry = config.telemetry.model_copy(
            update={
                "logs": True,
                "logger_provider": logger_provider,
                "tracer_provider": tracer_provider,
            }
        )
        events = config.make_manager(telemetry=telemetry, **(manager_options or {}))
        await events.initialize()
        await shop_events.initialize(events)
        app.state.services = Services(tracer_provider, logger_provider, events)
        try:
            yield
        finally:
            # Delivers pending events and flushes the log records (in a
            # worker thread, so the loop keeps serving other shutdowns).
            await events.aclose()
            await asyncio.to_thread(tracer_provider.shutdown)
            await asyncio.to_thread(logger_provider.shutdown)

    app = FastAPI(title="shop", lifespan=lifespan)

    @app.middleware("http")
    async def trace_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # A SERVER span per request, continuing the caller's trace. (The
        # FastAPI instrumentation package does this and more.)
        services: Services = request.app.state.services
        tracer = services.tracer_provider.get_tracer("shop")
        with tracer.start_as_current_span(
            f"{request.method} {request.url.path}",
            context=propagate.extract(request.headers),
            kind=SpanKind.SERVER,
        ) as span:
            response = await call_next(request)
            span.set_attribute("http.response.status_code", response.status_code)
            return response

    @app.post("/checkout", status_code=201)
    async def checkout(
        body: CheckoutRequest,
        # Not Annotated[...]: FastAPI reads string annotations (this module
        # has postponed evaluation) in module scope, where shop_events is not.
        publishers: ShopEvents = Depends(shop_events),  # noqa: B008
    ) -> CheckoutResponse:
        order_id = f"order-{uuid.uuid4().hex[:8]}"
        # Publishing captures the current span: the event, its Kafka header
        # and its log record all point at this request's trace.
        event = await publishers.checkout_completed.publish(
            CheckoutCompleted(order_id=order_id, items=body.items, total=body.total)
        )
        log.info("checkout completed", order_id=order_id, event_id=str(event.id))
        trace_id = trace.get_current_span().get_span_context().trace_id
        return CheckoutResponse(
            order_id=order_id, event_id=str(event.id), trace_id=f"{trace_id:032x}"
        )

    return app


app = create_app()
"""For ``uvicorn fastapi_service:app``; configured from the environment."""


# -- end to end, against local services ----------------------------------------


async def main(stack: LocalKafkaStack | None = None) -> None:
    """Run one checkout against a local stack and check where it went.

    Parameters
    ----------
    stack
        A started local broker and registry; a new one when None.

    Raises
    ------
    AssertionError
        If the event is missing from Kafka or OTLP, or the trace ids differ.
    """
    # An in-process OTLP receiver stands in for an OTel Collector.
    from otel_kafka_events_devstack import LocalKafkaStack, OtlpReceiver

    async with AsyncExitStack() as resources:
        if stack is None:
            stack = await resources.enter_async_context(LocalKafkaStack())
        receiver = resources.enter_context(OtlpReceiver())
        application = f"shop_{uuid.uuid4().hex[:8]}"
        config = KafkaMetricsConfiguration(
            application=application,
            kafka=KafkaConnectionSettings(bootstrap_servers=stack.bootstrap_servers),
            schema_manager=SchemaManagerSettings(registry_url=stack.registry_url),
            telemetry=TelemetryOptions(producer_spans=True),
        )
        topic = f"{config.events.topic_prefix}.{application}"
        await stack.create_topic(topic)
        service = create_app(
            config,
            otlp_endpoint=receiver.endpoint,
            manager_options={
                "enable_idempotence": stack.broker.capabilities.idempotent_producer
            },
        )

        # The caller's trace, as an upstream service would send it.
        caller_trace = uuid.uuid4().hex
        traceparent = f"00-{caller_trace}-{uuid.uuid4().hex[:16]}-01"
        # ASGITransport runs no lifespan: enter it by hand, like a server.
        async with (
            service.router.lifespan_context(service),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=service), base_url="http://shop"
            ) as client,
        ):
            response = await client.post(
                "/checkout",
                json={"items": 2, "total": "19.90"},
                headers={"traceparent": traceparent},
            )
            # A total the event cannot carry is refused before publishing.
            refused = await client.post(
                "/checkout", json={"items": 1, "total": "1.999"}
            )
        assert refused.status_code == 422, refused.text
        # The lifespan has ended: events delivered, telemetry flushed.
        assert response.status_code == 201, response.text
        answer = CheckoutResponse.model_validate(response.json())
        assert answer.trace_id == caller_trace

        [record] = await stack.consume(topic, 1, timeout=30)
        event = await decode(record.value, stack.registry_url)
        assert str(event["id"]) == answer.event_id
        assert event["trace_id"] == caller_trace
        assert event["total"] == Decimal("19.90")

        [log_record] = await asyncio.to_thread(receiver.wait_for_logs, 1)
        assert log_record.event_name == f"{topic}.checkout_completed"
        assert log_record.trace_id == caller_trace
        assert log_record.span_id == event["span_id"]
        assert log_record.attributes["order_id"] == answer.order_id

        # Two server spans (the refused request has its own trace) and a send.
        spans = await asyncio.to_thread(receiver.wait_for_spans, 3)
        by_name = {span.name: span for span in spans if span.trace_id == caller_trace}
        server, send = by_name["POST /checkout"], by_name[f"send {topic}"]
        assert server.trace_id == send.trace_id == caller_trace
        # The event names the request's span; the Kafka header the send span.
        assert event["span_id"] == server.span_id
        assert dict(record.headers)["traceparent"].decode().split("-")[2] == (
            send.span_id
        )
        print(
            f"event {answer.event_id} of trace {caller_trace}: on Kafka topic"
            f" {topic} (partition {record.partition}, offset {record.offset})"
            f" and in OTLP as {log_record.event_name}"
        )


if __name__ == "__main__":
    asyncio.run(main())
