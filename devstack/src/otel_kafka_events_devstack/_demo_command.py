"""``otel-kafka-events demo``: publish a few events and read them back.

Starts the local stack (a broker and `LocalSchemaRegistry` on 127.0.0.1),
publishes events inside an OpenTelemetry span, reads them back from Kafka,
decodes them through the registry and prints them. It needs the OpenTelemetry
SDK (the ``otel`` extra of otel-kafka-events) and stops everything it
started.
"""

from __future__ import annotations

import enum
import json
from datetime import timedelta

import click
from pydantic import BaseModel

from otel_kafka_events import EventPayload, KafkaEventManager, TelemetryOptions
from otel_kafka_events._cli import CliError, err, out, run
from otel_kafka_events.testing import consume_events

from ._stack import BROKER_KINDS, LocalKafkaStack

__all__ = ["demo"]

DEMO_TOPIC_PREFIX = "otel_kafka_events.examples"
DEMO_APPLICATION = "demo"


class Outcome(enum.StrEnum):
    """How a demo query ended."""

    success = "success"
    failure = "failure"


class Client(BaseModel):
    """Who ran the demo query."""

    name: str
    version: str


class QueryCompleted(EventPayload):
    """A demo event: a query finished."""

    username: str
    outcome: Outcome
    duration: timedelta
    rows: int
    client: Client
    tags: list[str]


async def run_demo(broker: str, count: int) -> bool:
    """Publish ``count`` events through the local stack and print them back.

    Returns
    -------
    bool
        Whether every event was delivered and read back.
    """
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError as exc:
        raise CliError(
            f"the demo needs the OpenTelemetry SDK ({exc})",
            "pip install 'otel-kafka-events[testing,otel]'",
        ) from exc

    tracer = TracerProvider().get_tracer("otel_kafka_events.demo")
    with err.status(f"Starting a local {broker} broker and schema registry..."):
        stack = LocalKafkaStack(broker)
        await stack.__aenter__()
    try:
        out.print(f"Broker {stack.broker.name} at {stack.bootstrap_servers}")
        out.print(f"Schema registry at {stack.registry_url}")
        manager = KafkaEventManager(
            application=DEMO_APPLICATION,
            topic_prefix=DEMO_TOPIC_PREFIX,
            bootstrap_servers=stack.bootstrap_servers,
            registry_url=stack.registry_url,
            enable_idempotence=stack.broker.capabilities.idempotent_producer,
            telemetry=TelemetryOptions(trace_context=True),
        )
        out.print(f"Topic {manager.topic}")
        await stack.create_topic(manager.topic)
        await manager.initialize()
        publisher = await manager.create_publisher("query_completed", QueryCompleted)
        with tracer.start_as_current_span("demo request"):
            span_context = trace.get_current_span().get_span_context()
            trace_id = format(span_context.trace_id, "032x")
            for index in range(count):
                await publisher.publish(
                    QueryCompleted(
                        username=f"user{index}",
                        outcome=Outcome.success if index % 3 else Outcome.failure,
                        duration=timedelta(milliseconds=120 + index),
                        rows=index * 10,
                        client=Client(name="demo-cli", version="1.0"),
                        tags=["demo", f"batch{index // 2}"],
                    )
                )
        undelivered = await manager.aclose()
        out.print(f"Published {count} events in trace {trace_id}")
        out.print(f"Undelivered: {undelivered}")
        out.print(f"Subject: {manager.subject_for('query_completed')}")
        records = (
            await consume_events(stack, manager.topic, count, timeout=30)
            if count
            else []
        )
        for decoded in records:
            out.print(
                f"offset {decoded.offset}: trace {decoded.trace_id}\n"
                + json.dumps(decoded.to_json()["value"], indent=2),
                highlight=False,
            )
        out.print(f"Read back {len(records)} events", highlight=False)
        return len(records) == count and undelivered == 0
    finally:
        with err.status("Stopping the local stack..."):
            await stack.__aexit__(None, None, None)


@click.command()
@click.option(
    "--broker",
    type=click.Choice(BROKER_KINDS),
    default="tansu",
    show_default=True,
    help="Local broker to start.",
)
@click.option(
    "--count",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Events to publish.",
)
def demo(broker: str, count: int) -> None:
    """Publish a few events through a local stack and read them back."""
    ok = run(run_demo(broker, count))
    out.print("Demo finished" if ok else "Demo FAILED")
    if not ok:
        raise SystemExit(1)
