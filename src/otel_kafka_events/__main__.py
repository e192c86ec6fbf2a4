"""Command line: ``python -m otel_kafka_events demo``.

The demo starts the local stack (a broker and `LocalSchemaRegistry` on
127.0.0.1), publishes a few events inside an OpenTelemetry span, reads them
back from Kafka, decodes them through the registry and prints them. It needs
the ``testing`` and ``otel`` extras and stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from . import EventDecoder, EventPayload, KafkaEventManager, TelemetryOptions
from .otel import extract_context

__all__ = ["main"]


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


async def run_demo(broker: str, count: int) -> int:
    """Publish ``count`` events through the local stack and print them back."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from .testing import LocalKafkaStack

    tracer = TracerProvider().get_tracer("otel_kafka_events.demo")
    async with LocalKafkaStack(broker) as stack:
        print(f"Broker {stack.broker.name} at {stack.bootstrap_servers}")
        print(f"Schema registry at {stack.registry_url}")
        manager = KafkaEventManager(
            application="demo",
            topic_prefix="otel_kafka_events.examples",
            bootstrap_servers=stack.bootstrap_servers,
            registry_url=stack.registry_url,
            enable_idempotence=stack.broker.capabilities.idempotent_producer,
            telemetry=TelemetryOptions(trace_context=True),
        )
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
        print(f"Published {count} events in trace {trace_id}")
        print(f"Undelivered: {undelivered}")
        print(f"Subject: {manager.subject_for('query_completed')}")
        records = await stack.consume(manager.topic, count, timeout=30)
        decoder = EventDecoder(stack.registry_url)
        for record in records:
            event = await decoder.decode(record.value)
            context_trace = trace.get_current_span(extract_context(record))
            header_trace = format(context_trace.get_span_context().trace_id, "032x")
            print(
                f"offset {record.offset}: traceparent trace {header_trace}\n"
                + json.dumps(event, default=_json_default, indent=2)
            )
        ok = len(records) == count and undelivered == 0
        print("Demo finished" if ok else "Demo FAILED")
        return 0 if ok else 1


def _json_default(value: Any) -> str:
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``otel-kafka-events`` command."""
    parser = argparse.ArgumentParser(prog="otel-kafka-events")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="publish and read back a few events")
    demo.add_argument(
        "--broker",
        default="tansu",
        choices=["tansu", "noida", "kafka"],
        help="local broker to start (default: tansu)",
    )
    demo.add_argument("--count", type=int, default=3, help="events to publish")
    args = parser.parse_args(argv)
    if args.command == "demo":
        try:
            return asyncio.run(run_demo(args.broker, args.count))
        except ImportError as exc:
            print(
                "The demo needs the testing and otel extras:"
                f" pip install 'otel-kafka-events[testing,otel]' ({exc})",
                file=sys.stderr,
            )
            return 2
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
