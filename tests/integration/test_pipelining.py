"""Several batches of a partition in flight, on each broker of the suite.

A batch span (``producer_spans="batch"``) starts when its batch is handed
to the producer and ends with its answer, so batch spans of one partition
that overlap in time are batches in flight together. Where the broker has
Kafka's idempotent producer (Apache Kafka, noida-db), they do; where it has
not (Tansu), a ``max_in_flight`` above one is lowered to one with a warning
and no two batches of the partition are ever in flight together
(``enable_idempotence=False`` with it is a configuration error). Either
way, every event is on the topic once, in publish order.

A broker too old for the pipeline's requests gets aiokafka's producer
instead, with a warning, and every event still arrives. A log record and
an event batch of one partition handed over together both arrive (Apache
Kafka writes one batch per partition of a request: sharing one, a record
reported written was lost).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from structlog.testing import capture_logs

from otel_kafka_events import EventPayload, TelemetryOptions
from otel_kafka_events._delivery import _pipeline
from otel_kafka_events._delivery._aiokafka import AiokafkaTransport
from otel_kafka_events._encoding._codec import EventDecoder
from otel_kafka_events_devstack import LocalKafkaStack

from ..broker_support import capabilities
from ..conftest import ManagerFactory
from .test_reliability_delivery import read_all

pytestmark = pytest.mark.integration

EVENTS = 3000


class Step(EventPayload):
    """One numbered event."""

    n: int


def overlapping(spans: list[ReadableSpan]) -> int:
    """How many spans start before the one started before them ended."""
    ordered = sorted(spans, key=lambda span: span.start_time or 0)
    return sum(
        1
        for earlier, later in itertools.pairwise(ordered)
        if (later.start_time or 0) < (earlier.end_time or 0)
    )


async def test_a_partition_has_batches_in_flight_together_where_order_allows(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    idempotent = capabilities().idempotent_producer
    with capture_logs() as logs:
        manager = await make_kafka_manager(
            max_in_flight=5,
            # Unset: the idempotent producer where the broker has it, else
            # the fallback (asking for both would be a configuration error).
            enable_idempotence=None,
            # Small batches: a burst of events makes many of them.
            kafka_options={"max_batch_size": 2048},
            telemetry=TelemetryOptions(
                producer_spans="batch", tracer_provider=provider
            ),
        )
        publisher = await manager.create_publisher("step", Step)
        for n in range(EVENTS):
            await publisher.publish(Step(n=n))
        assert await manager.aclose(timeout=60) == 0
    assert manager.stats.delivered == EVENTS
    spans = [
        span
        for span in exporter.get_finished_spans()
        if span.name == f"send {manager.topic}"
    ]
    assert len(spans) > 20, "the events did not make many batches"
    lowered = [entry for entry in logs if "max_in_flight=5 lowered" in entry["event"]]
    if idempotent:
        assert overlapping(spans) > 0
        assert lowered == []
    else:
        assert overlapping(spans) == 0
        assert len(lowered) == 1
        assert "idempotent producer" in lowered[0]["event"]
    decoder = EventDecoder(local_kafka_stack.registry_url)
    records = await read_all(local_kafka_stack.bootstrap_servers, manager.topic)
    numbers = [(await decoder.decode(record.value))["n"] for record in records]
    assert numbers == list(range(EVENTS))


async def test_a_broker_too_old_for_the_pipeline_gets_aiokafkas_producer(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An aiokafka before 0.13 cannot make the pipeline's requests for a
    # broker older than Kafka 0.11. No such broker runs here: the check
    # says the broker is one.
    monkeypatch.setattr(_pipeline, "requests_supported", lambda client: False)
    with capture_logs() as logs:
        manager = await make_kafka_manager(enable_idempotence=None)
        transport = manager.transport
        assert isinstance(transport, AiokafkaTransport)
        assert transport.uses_pipeline is False
        assert transport.max_in_flight == 1
        assert isinstance(transport.producer, AIOKafkaProducer)
        publisher = await manager.create_publisher("step", Step)
        for n in range(200):
            await publisher.publish(Step(n=n))
        assert await manager.aclose(timeout=60) == 0
    assert manager.stats.delivered == 200
    too_old = [entry for entry in logs if "too old" in entry["event"]]
    assert len(too_old) == 1
    assert too_old[0]["log_level"] == "warning"
    assert "0.11" in too_old[0]["reason"]
    decoder = EventDecoder(local_kafka_stack.registry_url)
    records = await read_all(local_kafka_stack.bootstrap_servers, manager.topic)
    numbers = [(await decoder.decode(record.value))["n"] for record in records]
    assert numbers == list(range(200))


async def test_a_log_record_and_an_event_batch_of_one_partition_both_arrive(
    local_kafka_stack: LocalKafkaStack,
) -> None:
    # The log export may write to the events' topic: a record of `produce`
    # and an event batch of the same partition, handed over in one turn,
    # must not share a request (a broker writes one batch per partition of
    # a request, and answers once for it).
    topic = f"pipelining.shared-{uuid.uuid4().hex[:8]}"
    await local_kafka_stack.create_topic(topic, partitions=1)
    transport = AiokafkaTransport(bootstrap_servers=local_kafka_stack.bootstrap_servers)
    assert transport.uses_pipeline
    answers: list[tuple[int | None, BaseException | None]] = []
    answered = asyncio.Event()

    def done(offset: int | None, error: BaseException | None) -> None:
        answers.append((offset, error))
        answered.set()

    await transport.start()
    try:
        for n in range(20):
            record = asyncio.ensure_future(transport.produce(topic, None, b"log"))
            await asyncio.sleep(0)  # the record is handed over first
            batch = transport.new_batch()
            assert batch.append(None, bytearray(b"event"), 0, [])
            await transport.send(batch, topic, 0, done)
            async with asyncio.timeout(30):
                await record
                while len(answers) <= n:
                    answered.clear()
                    await answered.wait()
        assert [error for _, error in answers] == [None] * 20
    finally:
        await transport.stop(5.0, abandoned=False)
    values = [
        bytes(r.value)
        for r in await read_all(local_kafka_stack.bootstrap_servers, topic)
    ]
    # Everything reported written is on the topic.
    assert sorted(values) == [b"event"] * 20 + [b"log"] * 20
