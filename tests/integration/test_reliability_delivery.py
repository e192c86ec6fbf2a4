"""Delivery guarantees of `KafkaEventManager`, proved against real brokers.

Every event accepted by ``publish`` ends in exactly one state: delivered,
failed (reported, logged and counted) or dropped by the buffer policy; the
counters always satisfy ``published == delivered + failed + dropped +
buffered``. Brokers that must die are started per test; a "dead" broker is a
free port nothing listens on. See ``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from structlog.testing import capture_logs

from otel_kafka_events import (
    BufferOptions,
    DeliveryFailure,
    DeliveryStats,
    EventDecoder,
    EventDeliveryError,
    EventManagerUsageError,
    EventPayload,
    KafkaEventManager,
    OverflowPolicy,
)
from otel_kafka_events._delivery._aiokafka import DEFAULT_MAX_REQUEST_SIZE
from otel_kafka_events.errors import (
    EventBufferFullError,
    EventManagerClosedError,
    EventPayloadError,
    EventTooLargeError,
)
from otel_kafka_events_devstack import (
    LocalBroker,
    LocalKafkaStack,
    LocalSchemaRegistry,
    NoidaBroker,
    TansuBroker,
)

from ..broker_support import BROKER_KIND, capabilities, requires

TOPIC_PREFIX = "reliability"


class Numbered(EventPayload):
    """A test event: which stream it belongs to and its place in it."""

    kind: str
    n: int
    text: str = ""


# --- helpers ------------------------------------------------------------------


def new_broker(port: int = 0) -> LocalBroker:
    """A broker of this run's kind that this module may kill."""
    if BROKER_KIND == "noida":
        return NoidaBroker(port=port)
    if BROKER_KIND == "kafka":
        # Imported lazily, like the devstack does: it needs a JVM.
        from otel_kafka_events_devstack._apache_kafka import ApacheKafkaBroker

        return ApacheKafkaBroker(port=port)
    return TansuBroker(port=port)


def dead_servers() -> str:
    """``host:port`` where nothing listens: a broker that is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


def balanced(stats: DeliveryStats) -> bool:
    """The accounting invariant."""
    return (
        stats.published
        == stats.delivered + stats.failed + stats.dropped + stats.buffered
    )


async def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition``; fail the test if it stays false for ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition still false after {timeout} s")
        await asyncio.sleep(0.02)


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` (all partitions, up to the end offsets)."""
    # The admin client, because a consumer knows a topic's partitions only
    # after a metadata request naming it.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [
        TopicPartition(topic, p["partition"]) for p in description["partitions"]
    ]
    assert partitions, f"topic {topic} has no partitions"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while any([await consumer.position(p) < ends[p] for p in partitions]):
            if time.monotonic() > deadline:
                pytest.fail(f"could not read topic {topic} to its end")
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def decode_all(registry_url: str, records: list[Any]) -> list[dict[str, Any]]:
    """Decode records through the registry, in order."""
    decoder = EventDecoder(registry_url)
    return [await decoder.decode(record.value) for record in records]


def by_kind(values: list[dict[str, Any]]) -> dict[str, list[int]]:
    """The ``n`` of each decoded event, per ``kind``, in topic order."""
    streams: dict[str, list[int]] = {}
    for value in values:
        streams.setdefault(value["kind"], []).append(value["n"])
    return streams


class Managers:
    """Builds managers for one test and closes them at its end."""

    def __init__(self) -> None:
        self.created: list[KafkaEventManager] = []
        self.failures: list[DeliveryFailure] = []

    def new(
        self,
        bootstrap: str,
        registry_url: str,
        *,
        application: str | None = None,
        **kwargs: Any,
    ) -> KafkaEventManager:
        """A manager with short timeouts whose failures land in `failures`."""
        kwargs.setdefault("enable_idempotence", capabilities().idempotent_producer)
        kwargs.setdefault("delivery_timeout", 5.0)
        kwargs.setdefault("retry_backoff", 0.05)
        kwargs.setdefault("on_delivery_error", self.failures.append)
        manager = KafkaEventManager(
            application=application or f"app_{uuid.uuid4().hex[:12]}",
            topic_prefix=TOPIC_PREFIX,
            bootstrap_servers=bootstrap,
            registry_url=registry_url,
            **kwargs,
        )
        self.created.append(manager)
        return manager


@pytest_asyncio.fixture
async def managers() -> AsyncIterator[Managers]:
    factory = Managers()
    yield factory
    for manager in factory.created:
        await manager.aclose(timeout=1)


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalSchemaRegistry]:
    """A registry for the tests whose broker is a dead port."""
    with LocalSchemaRegistry() as registry:
        yield registry


@pytest.fixture
def own_stack() -> Iterator[LocalKafkaStack]:
    """A broker (of this run's kind) and registry this test may kill."""
    with LocalKafkaStack(new_broker()) as stack:
        yield stack


async def connected_manager(
    managers: Managers, stack: LocalKafkaStack, **kwargs: Any
) -> KafkaEventManager:
    """An initialized manager on a created topic of ``stack``."""
    manager = managers.new(stack.bootstrap_servers, stack.registry_url, **kwargs)
    await stack.create_topic(manager.topic, partitions=1)
    await manager.initialize()
    return manager


# --- publish and wait -----------------------------------------------------------


async def test_publish_returns_before_acknowledgement(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    # With no broker at all nothing can be acknowledged, so a publish that
    # returns proves it only enqueued.
    manager = managers.new(dead_servers(), registry.url)
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    event = await publisher.publish(Numbered(kind="a", n=0))
    assert isinstance(event.id, uuid.UUID)
    assert manager.stats == DeliveryStats(
        published=1,
        delivered=0,
        failed=0,
        dropped=0,
        buffered=1,
        buffered_bytes=manager.stats.buffered_bytes,
    )
    assert manager.stats.buffered_bytes > 0


async def test_every_event_delivered_in_order_and_counters_add_up(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = await connected_manager(managers, local_kafka_stack)
    first = await manager.create_publisher("first", Numbered)
    second = await manager.create_publisher("second", Numbered)
    violations: list[DeliveryStats] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            stats = manager.stats
            if not balanced(stats):
                violations.append(stats)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    count = 60
    for n in range(count):
        # Mix background and acknowledged publishes of both types.
        await first.publish(Numbered(kind="a", n=n), wait=n % 10 == 9)
        await second.publish(Numbered(kind="b", n=n))
    assert await manager.aclose(timeout=30) == 0
    stop.set()
    await watcher
    assert violations == []
    stats = manager.stats
    assert (stats.published, stats.delivered, stats.buffered) == (2 * count,) * 2 + (0,)
    assert (stats.failed, stats.dropped, stats.buffered_bytes) == (0, 0, 0)
    assert managers.failures == []
    records = await read_all(local_kafka_stack.bootstrap_servers, manager.topic)
    values = await decode_all(local_kafka_stack.registry_url, records)
    assert by_kind(values) == {"a": list(range(count)), "b": list(range(count))}


async def test_wait_returns_after_acknowledgement(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = await connected_manager(managers, local_kafka_stack)
    publisher = await manager.create_publisher("numbered", Numbered)
    event = await publisher.publish(Numbered(kind="a", n=1), wait=True)
    # Counted as delivered by the time publish returns: the ack was in.
    assert (manager.stats.delivered, manager.stats.buffered) == (1, 0)
    records = await local_kafka_stack.consume(manager.topic, 1)
    (value,) = await decode_all(local_kafka_stack.registry_url, records)
    assert value["id"] == event.id


async def test_wait_raises_when_the_broker_is_unreachable(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    manager = managers.new(dead_servers(), registry.url, delivery_timeout=0.5)
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    async with asyncio.timeout(30):
        with pytest.raises(EventDeliveryError) as caught:
            await publisher.publish(Numbered(kind="a", n=1), wait=True)
    assert caught.value.event_name == "numbered"
    assert [(f.event_id, f.event_name, f.reason) for f in managers.failures] == [
        (caught.value.event_id, "numbered", "failed")
    ]
    stats = manager.stats
    assert (stats.published, stats.failed, stats.buffered) == (1, 1, 0)


@pytest.mark.integration
async def test_wait_raises_within_delivery_timeout_when_the_broker_dies(
    managers: Managers, own_stack: LocalKafkaStack
) -> None:
    # aiokafka retries a sent batch until request_timeout_ms (40 s), and
    # forever with the idempotent producer; delivery_timeout must still hold.
    manager = await connected_manager(managers, own_stack, delivery_timeout=2.0)
    publisher = await manager.create_publisher("numbered", Numbered)
    await publisher.publish(Numbered(kind="a", n=0), wait=True)
    await asyncio.to_thread(own_stack.broker.kill)
    async with asyncio.timeout(20):
        with pytest.raises(EventDeliveryError) as caught:
            await publisher.publish(Numbered(kind="a", n=1), wait=True)
    assert caught.value.event_name == "numbered"
    assert [(f.event_id, f.reason) for f in managers.failures] == [
        (caught.value.event_id, "failed")
    ]
    stats = manager.stats
    assert (stats.published, stats.delivered, stats.failed) == (2, 1, 1)
    assert balanced(stats)


async def test_failures_are_reported_logged_and_counted(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    manager = managers.new(
        dead_servers(),
        registry.url,
        delivery_timeout=0.3,
    )
    with capture_logs() as logs:
        await manager.initialize()
        first = await manager.create_publisher("first", Numbered)
        second = await manager.create_publisher("second", Numbered)
        published = {
            (str((await first.publish(Numbered(kind="a", n=n))).id), "first")
            for n in range(3)
        } | {
            (str((await second.publish(Numbered(kind="b", n=n))).id), "second")
            for n in range(2)
        }
        await wait_until(lambda: manager.stats.failed == 5)
    assert {(f.event_id, f.event_name) for f in managers.failures} == published
    assert {f.reason for f in managers.failures} == {"failed"}
    assert all(isinstance(f.error, BaseException) for f in managers.failures)
    stats = manager.stats
    assert (stats.published, stats.failed, stats.buffered) == (5, 5, 0)
    reports = [e for e in logs if e["event"].startswith("Events not delivered")]
    assert reports
    assert all(e["log_level"] == "error" for e in reports)
    assert {e["event_name"] for e in reports} <= {"first", "second"}
    assert all(e["topic"] == manager.topic for e in reports)


# --- the bounded buffer ---------------------------------------------------------


async def test_drop_newest_drops_and_reports_the_excess(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    manager = managers.new(
        dead_servers(),
        registry.url,
        delivery_timeout=60,
        buffer=BufferOptions(max_events=3, overflow=OverflowPolicy.DROP_NEWEST),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    ids = [str((await publisher.publish(Numbered(kind="a", n=n))).id) for n in range(5)]
    stats = manager.stats
    assert (stats.published, stats.buffered, stats.dropped) == (5, 3, 2)
    assert balanced(stats)
    assert [(f.event_id, f.reason) for f in managers.failures] == [
        (ids[3], "dropped"),
        (ids[4], "dropped"),
    ]
    assert all(isinstance(f.error, EventBufferFullError) for f in managers.failures)


async def test_raise_policy_raises_when_full(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    manager = managers.new(
        dead_servers(),
        registry.url,
        delivery_timeout=60,
        buffer=BufferOptions(max_events=3, overflow=OverflowPolicy.RAISE),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    for n in range(3):
        await publisher.publish(Numbered(kind="a", n=n))
    with pytest.raises(EventBufferFullError):
        await publisher.publish(Numbered(kind="a", n=3))
    stats = manager.stats
    # The refused event was never accepted, so it is not counted.
    assert (stats.published, stats.buffered, stats.dropped) == (3, 3, 0)
    assert managers.failures == []


async def test_block_policy_waits_for_room(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    # Room appears when the first events fail after their delivery timeout;
    # the blocked publish must then be accepted, not dropped.
    manager = managers.new(
        dead_servers(),
        registry.url,
        delivery_timeout=0.5,
        buffer=BufferOptions(max_events=2, block_timeout=30),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    for n in range(3):
        await publisher.publish(Numbered(kind="a", n=n))
    stats = manager.stats
    assert (stats.published, stats.failed, stats.dropped, stats.buffered) == (
        3,
        2,
        0,
        1,
    )


async def test_block_policy_drops_after_block_timeout(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    manager = managers.new(
        dead_servers(),
        registry.url,
        delivery_timeout=60,
        buffer=BufferOptions(max_events=2, block_timeout=0.2),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    for n in range(2):
        await publisher.publish(Numbered(kind="a", n=n))
    dropped = await publisher.publish(Numbered(kind="a", n=2))
    stats = manager.stats
    assert (stats.published, stats.buffered, stats.dropped) == (3, 2, 1)
    assert [(f.event_id, f.reason) for f in managers.failures] == [
        (str(dropped.id), "dropped")
    ]


@pytest.mark.integration
async def test_block_policy_raises_with_raise_on_error(
    managers: Managers, own_stack: LocalKafkaStack
) -> None:
    # raise_on_error needs a reachable broker at start; it dies afterwards.
    manager = await connected_manager(
        managers,
        own_stack,
        raise_on_error=True,
        delivery_timeout=60,
        buffer=BufferOptions(max_events=2, block_timeout=0.2),
    )
    publisher = await manager.create_publisher("numbered", Numbered)
    await asyncio.to_thread(own_stack.broker.kill)
    for n in range(2):
        await publisher.publish(Numbered(kind="a", n=n))
    with pytest.raises(EventBufferFullError):
        await publisher.publish(Numbered(kind="a", n=2))
    stats = manager.stats
    assert (stats.published, stats.buffered, stats.dropped) == (2, 2, 0)


async def test_buffer_never_exceeds_its_bounds(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    max_events, max_bytes = 6, 4096
    manager = managers.new(
        dead_servers(),
        registry.url,
        delivery_timeout=60,
        buffer=BufferOptions(
            max_events=max_events,
            max_bytes=max_bytes,
            overflow=OverflowPolicy.DROP_NEWEST,
        ),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    dropped_by_bytes = dropped_by_count = 0
    # Small events, one too big for the bytes left, then past the count.
    for n, size in enumerate([10] * 5 + [3800, 10, 10, 3800]):
        before = manager.stats
        await publisher.publish(Numbered(kind="a", n=n, text="x" * size))
        stats = manager.stats
        assert stats.buffered <= max_events
        assert stats.buffered_bytes <= max_bytes
        assert balanced(stats)
        if stats.dropped > before.dropped:
            if before.buffered < max_events:
                dropped_by_bytes += 1
            else:
                dropped_by_count += 1
    assert (dropped_by_bytes, dropped_by_count) == (1, 2)
    assert manager.stats.buffered == max_events
    assert len(managers.failures) == manager.stats.dropped


async def test_oversized_event_refused_at_publish(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    # The broker is unreachable: the refusal cannot involve a round trip.
    manager = managers.new(
        dead_servers(),
        registry.url,
        kafka_options={"max_request_size": 10_000},
    )
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    with pytest.raises(EventTooLargeError) as caught:
        await publisher.publish(Numbered(kind="a", n=0, text="x" * 20_000))
    assert isinstance(caught.value, EventPayloadError)
    assert caught.value.event == "numbered"
    assert "max_request_size of 10000" in str(caught.value)
    assert manager.stats.published == 0
    # Just below the limit is accepted.
    await publisher.publish(Numbered(kind="a", n=1, text="x" * 9_000))
    assert manager.stats.published == 1


@pytest.mark.integration
@requires("enforces_message_size")
async def test_every_event_publish_accepts_fits_in_a_request(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    # An event of exactly max_request_size bytes used to pass publish, then
    # fail as rejected: the request's framing around it was not counted.
    manager = await connected_manager(managers, local_kafka_stack, delivery_timeout=30)
    publisher = await manager.create_publisher("numbered", Numbered)
    accepted = 0
    low, high = 1, 2 * DEFAULT_MAX_REQUEST_SIZE
    while low < high:  # the longest text publish accepts
        size = (low + high + 1) // 2
        try:
            await publisher.publish(Numbered(kind="a", n=0, text="x" * size))
        except EventTooLargeError:
            high = size - 1
        else:
            low = size
            accepted += 1
    await publisher.publish(Numbered(kind="a", n=0, text="x" * low), wait=True)
    with pytest.raises(EventTooLargeError):
        await publisher.publish(Numbered(kind="a", n=0, text="x" * (low + 1)))
    await wait_until(lambda: manager.stats.buffered == 0)
    stats = manager.stats
    assert (stats.delivered, stats.failed) == (accepted + 1, 0), managers.failures
    assert DEFAULT_MAX_REQUEST_SIZE - low < 1024  # and the framing is not overdone


# --- aclose ---------------------------------------------------------------------


async def test_aclose_keeps_its_deadline_with_the_broker_down(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    manager = managers.new(dead_servers(), registry.url, delivery_timeout=120)
    await manager.initialize()
    first = await manager.create_publisher("first", Numbered)
    second = await manager.create_publisher("second", Numbered)
    ids = {str((await first.publish(Numbered(kind="a", n=n))).id) for n in range(3)}
    ids.add(str((await second.publish(Numbered(kind="b", n=0))).id))
    started = time.monotonic()
    undelivered = await manager.aclose(timeout=1)
    assert time.monotonic() - started <= 1 + 0.1
    assert undelivered == 4
    assert {f.event_id for f in managers.failures} == ids
    assert {f.reason for f in managers.failures} == {"shutdown"}
    stats = manager.stats
    assert (stats.published, stats.failed, stats.buffered) == (4, 4, 0)


@pytest.mark.integration
async def test_aclose_keeps_its_deadline_with_batches_in_flight(
    managers: Managers, own_stack: LocalKafkaStack
) -> None:
    # Sent batches sit in aiokafka, which waits for them in stop(): up to
    # request_timeout_ms, or forever with the idempotent producer.
    manager = await connected_manager(managers, own_stack, delivery_timeout=120)
    publisher = await manager.create_publisher("numbered", Numbered)
    await publisher.publish(Numbered(kind="a", n=0), wait=True)
    await asyncio.to_thread(own_stack.broker.kill)
    ids = {str((await publisher.publish(Numbered(kind="a", n=n))).id) for n in (1, 2)}
    await asyncio.sleep(0.2)  # let the sender hand them to aiokafka
    started = time.monotonic()
    undelivered = await manager.aclose(timeout=1)
    assert time.monotonic() - started <= 1 + 0.1
    assert undelivered == 2
    assert {(f.event_id, f.reason) for f in managers.failures} == {
        (i, "shutdown") for i in ids
    }
    stats = manager.stats
    assert (stats.published, stats.delivered, stats.failed) == (3, 1, 2)


async def test_aclose_without_timeout_counts_events_failing_meanwhile(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    # Without a timeout aclose waits for the delivery timeout, so the events
    # fail with reason "failed"; they are still undelivered.
    manager = managers.new(dead_servers(), registry.url, delivery_timeout=0.5)
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    for n in range(3):
        await publisher.publish(Numbered(kind="a", n=n))
    async with asyncio.timeout(0.5 + 10):
        undelivered = await manager.aclose()
    assert undelivered == 3
    assert manager.stats.failed == 3
    assert len(managers.failures) == 3


async def test_aclose_delivers_what_is_pending(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = await connected_manager(managers, local_kafka_stack)
    publisher = await manager.create_publisher("numbered", Numbered)
    for n in range(20):
        await publisher.publish(Numbered(kind="a", n=n))
    assert await manager.aclose(timeout=30) == 0
    assert manager.stats.delivered == 20
    records = await read_all(local_kafka_stack.bootstrap_servers, manager.topic)
    assert len(records) == 20


async def test_closed_manager_refuses_publish(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    manager = managers.new(dead_servers(), registry.url)
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    await manager.aclose(timeout=0)
    with pytest.raises(EventManagerClosedError):
        await publisher.publish(Numbered(kind="a", n=0))
    with pytest.raises(EventManagerUsageError):
        await manager.create_publisher("other", Numbered)
    assert manager.stats.published == 0


async def test_publish_blocked_for_room_settles_when_the_manager_closes(
    managers: Managers, registry: LocalSchemaRegistry
) -> None:
    manager = managers.new(
        dead_servers(),
        registry.url,
        delivery_timeout=60,
        buffer=BufferOptions(max_events=1, block_timeout=30),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    await publisher.publish(Numbered(kind="a", n=0))
    blocked = asyncio.ensure_future(publisher.publish(Numbered(kind="a", n=1)))
    await asyncio.sleep(0.1)
    assert not blocked.done()
    async with asyncio.timeout(0.5 + 5):
        await manager.aclose(timeout=0.5)
        event = await blocked
    stats = manager.stats
    # Nothing may stay buffered with no sender left to settle it.
    assert (stats.published, stats.failed, stats.buffered) == (2, 2, 0)
    assert {(f.event_id, f.reason) for f in managers.failures} >= {
        (str(event.id), "shutdown")
    }
