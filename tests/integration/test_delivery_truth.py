"""One test per defect of the delivery-truth issue, against real brokers.

Each of these failed before the delivery path was rebuilt around the ledger:
an outcome reported that did not happen, a close that could not finish, or a
crash on input the Kafka path accepts. See ``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import time
import traceback
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from pydantic import BaseModel
from structlog.testing import capture_logs

from otel_kafka_events import (
    BufferOptions,
    EventPayload,
    KafkaEventManager,
    MockEventManager,
    NoopEventManager,
    OverflowPolicy,
    TelemetryOptions,
    UnsupportedAvroSchemaError,
)
from otel_kafka_events._delivery._pipeline import ProducePipeline
from otel_kafka_events.errors import (
    EventDeliveryAbortedError,
    EventDroppedError,
    EventRejectedError,
    IncompatibleSchemaError,
)
from otel_kafka_events_devstack import LocalKafkaStack, LocalSchemaRegistry, TcpProxy

from ..broker_support import BROKER_KIND
from .test_reliability_delivery import (
    Managers,
    Numbered,
    connected_manager,
    dead_servers,
    managers,
    read_all,
    registry,
    wait_until,
)

__all__ = ["managers", "registry"]  # fixtures shared with the delivery tests


def sender_tasks() -> list[asyncio.Task[Any]]:
    """The event manager's background sender tasks still alive."""
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name() == "otel-kafka-events-sender" and not t.done()
    ]


# --- wait=True tells the truth --------------------------------------------------


async def test_wait_raises_for_an_event_the_policy_dropped(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    manager = managers.new(
        dead_servers(),
        registry.url,
        buffer=BufferOptions(max_events=1, overflow=OverflowPolicy.DROP_NEWEST),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    await publisher.publish(Numbered(kind="a", n=0))
    with pytest.raises(EventDroppedError) as caught:
        await publisher.publish(Numbered(kind="a", n=1), wait=True)
    assert "dropped" in str(caught.value)
    assert [(f.event_id, f.reason) for f in managers.failures] == [
        (caught.value.event_id, "dropped")
    ]


async def test_wait_raises_for_an_event_given_up_at_shutdown(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    # The buffer is full, so the second publish blocks for room; the manager
    # closes meanwhile.
    manager = managers.new(
        dead_servers(),
        registry.url,
        buffer=BufferOptions(max_events=1, block_timeout=30),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    await publisher.publish(Numbered(kind="a", n=0))
    blocked = asyncio.create_task(publisher.publish(Numbered(kind="a", n=1), wait=True))
    await asyncio.sleep(0.1)
    assert not blocked.done()
    # Both were published; neither was delivered.
    assert await manager.aclose(timeout=1) == 2
    with pytest.raises(EventDeliveryAbortedError):
        await blocked
    stats = manager.stats
    assert (stats.published, stats.failed, stats.buffered) == (2, 2, 0)
    assert {f.reason for f in managers.failures} == {"shutdown"}


# --- close ------------------------------------------------------------------------


async def test_a_cancelled_close_can_be_awaited_again(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    manager = managers.new(dead_servers(), registry.url)
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    await publisher.publish(Numbered(kind="a", n=0))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await manager.aclose(timeout=2)
    # The second call waits for the same close and gets its result.
    assert await manager.aclose(timeout=2) == 1
    assert sender_tasks() == []
    assert manager.stats.buffered == 0
    assert manager.stats.failed == 1


async def test_close_is_bounded_when_kafka_is_down(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    manager = managers.new(
        dead_servers(), registry.url, delivery_timeout=120, close_timeout=2
    )
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    for n in range(10):
        await publisher.publish(Numbered(kind="a", n=n))
    started = time.monotonic()
    assert await manager.aclose() == 10
    # close_timeout bounds it, not the 120 s delivery timeout.
    assert time.monotonic() - started <= 2 + 0.1
    assert manager.options.close_timeout == 2


async def test_close_is_bounded_when_the_otlp_endpoint_is_down(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    provider = LoggerProvider()
    provider.add_log_record_processor(
        BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=f"http://{dead_servers()}/v1/logs", timeout=10)
        )
    )
    manager = await connected_manager(
        managers,
        local_kafka_stack,
        telemetry=TelemetryOptions(logs=True, logger_provider=provider),
    )
    publisher = await manager.create_publisher("numbered", Numbered)
    for n in range(5):
        await publisher.publish(Numbered(kind="a", n=n))
    started = time.monotonic()
    await manager.aclose(timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed <= 1 + 0.1, f"aclose(timeout=1) took {elapsed:.2f} s"


# --- settlement survives raising observers ---------------------------------------


class ExplodingSpans(SpanProcessor):
    """A span processor whose on_end raises."""

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("span processor exploded")


async def test_a_raising_span_processor_cannot_block_settlement(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(ExplodingSpans())

    def exploding_callback(failure: Any) -> None:
        raise RuntimeError("callback exploded")

    manager = await connected_manager(
        managers,
        local_kafka_stack,
        telemetry=TelemetryOptions(
            producer_spans=True, tracer_provider=tracer_provider
        ),
        on_delivery_error=exploding_callback,
    )
    publisher = await manager.create_publisher("numbered", Numbered)
    for n in range(5):
        await publisher.publish(Numbered(kind="a", n=n))
    delivered = await publisher.publish(Numbered(kind="a", n=5), wait=True)
    assert delivered.n == 5  # type: ignore[attr-defined]
    assert manager.stats.delivered == 6
    async with asyncio.timeout(5):
        assert await manager.aclose(timeout=3) == 0


# --- registration failures ---------------------------------------------------------


class Colour(EventPayload):
    """Version 1 of an event."""

    colour: str


class Shade(EventPayload):
    """An incompatible version 2: a new field without a default."""

    colour: str
    shade: int


@contextlib.asynccontextmanager
async def conflicting_publisher(
    managers: Managers, stack: LocalKafkaStack, **options: Any
) -> AsyncIterator[tuple[KafkaEventManager, Any, TcpProxy]]:
    """A publisher of `Shade` whose registration waits in the background.

    A first manager registers `Colour` under the subject; a second one, whose
    registry is behind a switched-off proxy, creates the `Shade` publisher,
    so the conflict is found only once the proxy is switched on again.
    """
    first = await connected_manager(managers, stack)
    await first.create_publisher("colour", Colour)
    registry_port = int(stack.registry_url.rsplit(":", 1)[1].strip("/"))
    async with TcpProxy(registry_port) as proxy:
        second = managers.new(
            stack.bootstrap_servers,
            proxy.url,
            application=first.application,
            **options,
        )
        await second.initialize()
        proxy.switch_off()
        publisher = await second.create_publisher("colour", Shade)
        yield second, publisher, proxy


async def test_a_stored_registration_failure_is_raised_fresh_each_time(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    async with conflicting_publisher(managers, local_kafka_stack) as (
        second,
        publisher,
        proxy,
    ):
        proxy.switch_on()
        pending = await publisher.publish(Shade(colour="red", shade=1))
        await wait_until(lambda: second.stats.failed == 1)
    errors = []
    for n in range(3):
        with pytest.raises(IncompatibleSchemaError) as caught:
            await publisher.publish(Shade(colour="red", shade=n))
        errors.append(caught.value)
    assert errors[0] is not errors[1] is not errors[2]
    depths = [len(traceback.extract_tb(e.__traceback__)) for e in errors]
    assert depths[0] == depths[1] == depths[2]
    assert [f.event_id for f in managers.failures] == [str(pending.id)]


# --- cancellation ---------------------------------------------------------------------


async def test_a_publish_cancelled_at_its_yield_has_published_nothing(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = await connected_manager(managers, local_kafka_stack)
    publisher = await manager.create_publisher("numbered", Numbered)
    returned = 0
    cancelled = 0
    for n in range(200):
        task = asyncio.create_task(publisher.publish(Numbered(kind="a", n=n)))
        await asyncio.sleep(0)  # the task runs up to its first suspension
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            cancelled += 1
        else:
            returned += 1
    assert cancelled > 0  # every 128th publish yields before it starts
    assert manager.stats.published == returned
    await publisher.publish(Numbered(kind="a", n=999), wait=True)
    records = await read_all(local_kafka_stack.bootstrap_servers, manager.topic)
    assert len(records) == returned + 1


# --- lifecycle ------------------------------------------------------------------------


def producers_alive() -> int:
    gc.collect()
    return sum(
        isinstance(o, AIOKafkaProducer | ProducePipeline) for o in gc.get_objects()
    )


async def test_initialize_twice_starts_one_producer(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    before = producers_alive()
    manager = await connected_manager(managers, local_kafka_stack)
    await manager.initialize()
    await manager.initialize()
    assert producers_alive() == before + 1
    assert len(sender_tasks()) == 1
    # Each started client (the producer's and the admin's) keeps its
    # metadata fresh in a task of its own.
    synchronizers = [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__name__", "") == "_md_synchronizer"
    ]
    assert len(synchronizers) == 2
    await manager.aclose(timeout=2)
    assert sender_tasks() == []


async def test_a_failed_initialize_leaves_no_task(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    manager = managers.new(dead_servers(), registry.url, raise_on_error=True)
    with pytest.raises(Exception, match="Cannot connect to Kafka"):
        await manager.initialize()
    assert sender_tasks() == []
    tasks = {t.get_name() for t in asyncio.all_tasks()}
    assert not [name for name in tasks if "otel-kafka-events" in name]


# --- smaller defects ------------------------------------------------------------


async def test_producer_spans_without_an_sdk_write_no_zero_traceparent(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    # No SDK TracerProvider anywhere: the API's no-op tracer makes the spans.
    manager = await connected_manager(
        managers, local_kafka_stack, telemetry=TelemetryOptions(producer_spans=True)
    )
    publisher = await manager.create_publisher("numbered", Numbered)
    await publisher.publish(Numbered(kind="a", n=0), wait=True)
    (record,) = await read_all(local_kafka_stack.bootstrap_servers, manager.topic)
    assert not [h for h in record.headers if h[0] == "traceparent"]


async def test_delivery_metrics_of_two_managers_on_one_provider(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    options = TelemetryOptions(meter_provider=provider)
    first = await connected_manager(managers, local_kafka_stack, telemetry=options)
    second = await connected_manager(managers, local_kafka_stack, telemetry=options)
    for manager, count in ((first, 2), (second, 3)):
        publisher = await manager.create_publisher("numbered", Numbered)
        for n in range(count):
            await publisher.publish(Numbered(kind="a", n=n), wait=True)
    data = reader.get_metrics_data()
    assert data is not None
    delivered: dict[Any, Any] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "otel_kafka_events.events.delivered":
                    continue
                for point in metric.data.data_points:
                    assert isinstance(point, NumberDataPoint)
                    topic = dict(point.attributes or {})["messaging.destination.name"]
                    delivered[topic] = point.value
    assert delivered == {first.topic: 2, second.topic: 3}
    provider.shutdown()


class Blob(EventPayload):
    """A payload with raw bytes."""

    data: bytes


@pytest.mark.parametrize("manager_class", [NoopEventManager, MockEventManager])
async def test_noop_and_mock_accept_bytes_that_are_not_utf8(
    manager_class: type[NoopEventManager],
) -> None:
    manager = manager_class("bytes_app", "test.events")
    await manager.initialize()
    publisher = await manager.create_publisher("blob", Blob)
    event = await publisher.publish(Blob(data=b"\xff\x00\xfe"))
    assert event.data == b"\xff\x00\xfe"  # type: ignore[attr-defined]
    if isinstance(manager, MockEventManager):
        mock = await manager.create_publisher("blob2", Blob)
        await mock.publish(Blob(data=b"\xff"))
        mock.published.assert_published([{"data": "_w=="}])
    await manager.aclose()


class Base(EventPayload):
    """The registered payload model."""

    page: str


class Sneaky(Base):
    """A subclass with fields named like metadata."""

    id: str = "not-an-id"
    application: str = "not-the-app"


async def test_a_subclass_instance_cannot_overwrite_the_metadata(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = await connected_manager(managers, local_kafka_stack)
    publisher = await manager.create_publisher("visit", Base)
    event = await publisher.publish(Sneaky(page="/"), wait=True)
    assert str(event.id) != "not-an-id"
    assert event.application == manager.application
    assert event.page == "/"  # type: ignore[attr-defined]


def _twin_models() -> tuple[type[BaseModel], type[BaseModel]]:
    class Address(BaseModel):
        street: str

    first = Address

    class Address(BaseModel):  # type: ignore[no-redef]
        city: str

    return first, Address


class _FirstKind(enum.Enum):
    A = "a"


def _twin_enums() -> tuple[type[enum.Enum], type[enum.Enum]]:
    class Kind(enum.Enum):
        A = "a"

    first = Kind

    class Kind(enum.Enum):  # type: ignore[no-redef]
        B = "b"

    return first, Kind


@pytest.mark.parametrize(
    "twins", [_twin_models(), _twin_enums()], ids=["model", "enum"]
)
async def test_two_classes_with_one_name_are_reported(twins: Sequence[type]) -> None:
    first, second = twins
    payload = type(
        "Twins",
        (EventPayload,),
        {"__annotations__": {"home": first, "work": second}},
    )
    manager = NoopEventManager("twins_app", "test.events")
    await manager.initialize()
    with pytest.raises(UnsupportedAvroSchemaError) as caught:
        await manager.create_publisher("twins", payload)
    assert "work" in str(caught.value)
    assert "rename one" in str(caught.value)


@pytest.mark.skipif(BROKER_KIND != "tansu", reason="Tansu refuses idempotence")
async def test_default_idempotence_falls_back_on_a_broker_that_refuses_it(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    with capture_logs() as logs:
        manager = await connected_manager(
            managers, local_kafka_stack, enable_idempotence=None
        )
        publisher = await manager.create_publisher("numbered", Numbered)
        async with asyncio.timeout(10):
            await publisher.publish(Numbered(kind="a", n=0), wait=True)
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "InitProducerId" in warnings[0]["broker_answer"]
    assert "enable_idempotence" in warnings[0]["event"]
    assert not [e for e in logs if "unreachable" in str(e).lower()]


@pytest.mark.skipif(BROKER_KIND != "tansu", reason="Tansu refuses idempotence")
async def test_required_idempotence_refused_names_the_setting(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    from otel_kafka_events.errors import IdempotenceUnsupportedError

    strict = managers.new(
        local_kafka_stack.bootstrap_servers,
        local_kafka_stack.registry_url,
        enable_idempotence=True,
        raise_on_error=True,
    )
    with pytest.raises(IdempotenceUnsupportedError, match="METRICS_ENABLE_IDEMPOTENCE"):
        await strict.initialize()
    lenient = managers.new(
        local_kafka_stack.bootstrap_servers,
        local_kafka_stack.registry_url,
        enable_idempotence=True,
    )
    with capture_logs() as logs:
        await lenient.initialize()
    errors = [e for e in logs if e["log_level"] == "error"]
    assert errors
    assert "enable_idempotence" in errors[0]["event"]
    assert not [e for e in logs if "unreachable" in str(e).lower()]


@pytest.mark.parametrize("manager_class", [NoopEventManager, MockEventManager])
async def test_noop_and_mock_publishers_accept_wait(
    manager_class: type[NoopEventManager],
) -> None:
    # The README: the same service code runs with events disabled or mocked.
    manager = manager_class("wait_app", "test.events")
    await manager.initialize()
    publisher = await manager.create_publisher("blob", Blob)
    event = await publisher.publish(Blob(data=b"x"), wait=True)
    assert event.data == b"x"  # type: ignore[attr-defined]
    await manager.aclose()


async def test_a_publish_waiting_for_room_is_refused_when_its_type_fails(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    async with conflicting_publisher(
        managers,
        local_kafka_stack,
        buffer=BufferOptions(max_events=1, block_timeout=30),
    ) as (second, publisher, proxy):
        await publisher.publish(Shade(colour="red", shade=0))  # fills the buffer
        blocked = asyncio.create_task(
            publisher.publish(Shade(colour="red", shade=1), wait=True)
        )
        await asyncio.sleep(0.1)
        assert not blocked.done()
        proxy.switch_on()  # the background registration finds the conflict
        with pytest.raises(EventRejectedError) as caught:
            async with asyncio.timeout(10):
                await blocked
    assert isinstance(caught.value.__cause__, IncompatibleSchemaError)
    stats = second.stats
    assert (stats.published, stats.failed, stats.buffered) == (2, 2, 0)
