"""Behaviour of `KafkaEventManager` through broker and registry outages.

Brokers and registries here are started per test because the tests stop,
kill and restart them; ports are kept across restarts so clients reconnect
to the same address. See ``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from otel_kafka_events import (
    DuplicateEventError,
    EventDecoder,
    EventManagerUsageError,
    EventPayload,
    KafkaEventPublisher,
    UnsupportedAvroSchemaError,
)
from otel_kafka_events.errors import (
    BrokerUnavailableError,
    EventManagerClosedError,
    EventPayloadError,
    EventTooLargeError,
    IncompatibleSchemaError,
    SchemaRegistryError,
)
from otel_kafka_events_devstack import LocalKafkaStack, LocalSchemaRegistry

from ..broker_support import requires
from .test_reliability_delivery import (
    Managers,
    Numbered,
    balanced,
    dead_servers,
    new_broker,
    read_all,
    wait_until,
)

# --- helpers ------------------------------------------------------------------


async def read_streams(stack: LocalKafkaStack, topic: str) -> dict[str, list[int]]:
    """The ``n`` of each event on ``topic``, per ``kind``, in topic order."""
    decoder = EventDecoder(stack.registry_url)
    streams: dict[str, list[int]] = {}
    for record in await read_all(stack.bootstrap_servers, topic):
        value = await decoder.decode(record.value)
        streams.setdefault(value["kind"], []).append(value["n"])
    return streams


def stream_faults(streams: dict[str, list[int]], counts: dict[str, int]) -> str:
    """What differs from each kind's ``0..count-1``: for a failure message."""
    faults = []
    for kind, count in counts.items():
        seen = streams.get(kind, [])
        repeated = sorted({n for n in seen if seen.count(n) > 1})
        missing = sorted(set(range(count)) - set(seen))
        backwards = [b for a, b in itertools.pairwise(seen) if b <= a]
        faults.append(
            f"{kind}: {len(seen)} of {count}, repeated {repeated[:10]},"
            f" missing {missing[:10]}, out of order at {backwards[:10]}"
        )
    return "; ".join(faults)


@pytest_asyncio.fixture
async def managers() -> AsyncIterator[Managers]:
    factory = Managers()
    yield factory
    for manager in factory.created:
        await manager.aclose(timeout=1)


@pytest.fixture
def own_stack() -> Iterator[LocalKafkaStack]:
    """A broker (of this run's kind) and registry this test may kill."""
    with LocalKafkaStack(new_broker()) as stack:
        yield stack


@pytest.fixture
def own_registry() -> Iterator[LocalSchemaRegistry]:
    """A registry this test may stop; it keeps its port and schemas."""
    with LocalSchemaRegistry() as registry:
        yield registry


async def publish_through_outage(
    publishers: dict[str, KafkaEventPublisher[Numbered]],
    outage: Callable[[], None],
    recovery: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Publish before, during and after ``outage`` (run in a thread).

    ``recovery``, if given, runs once the outage is over, on the event
    loop's thread: nothing of the manager's runs until it returns.
    Returns how many events of each kind were published.
    """
    counts = dict.fromkeys(publishers, 0)

    async def publish_round(wait: bool = False) -> None:
        for kind, publisher in publishers.items():
            await publisher.publish(Numbered(kind=kind, n=counts[kind]), wait=wait)
            counts[kind] += 1

    for _ in range(30):
        await publish_round()
    # Acknowledged batches before the outage: the idempotent producer's
    # sequence numbers are past zero when the broker goes away.
    await publish_round(wait=True)
    task = asyncio.ensure_future(asyncio.to_thread(outage))
    while not task.done():
        await publish_round()
        await asyncio.sleep(0.01)
    await task
    if recovery is not None:
        recovery()
    for _ in range(30):
        await publish_round()
    return counts


# --- broker outages -------------------------------------------------------------


async def test_initialize_raises_when_broker_unreachable_with_raise_on_error(
    managers: Managers, own_registry: LocalSchemaRegistry
) -> None:
    manager = managers.new(dead_servers(), own_registry.url, raise_on_error=True)
    with pytest.raises(BrokerUnavailableError):
        await manager.initialize()


@pytest.mark.integration
async def test_events_buffer_until_the_broker_comes_up(
    managers: Managers, own_stack: LocalKafkaStack
) -> None:
    # The topic is made while the broker is up; the broker is then killed
    # (keeping its port) before the manager ever connects.
    manager = managers.new(
        own_stack.bootstrap_servers, own_stack.registry_url, delivery_timeout=60
    )
    await own_stack.create_topic(manager.topic, partitions=1)
    await asyncio.to_thread(own_stack.broker.kill)
    await manager.initialize()
    first = await manager.create_publisher("first", Numbered)
    second = await manager.create_publisher("second", Numbered)
    for n in range(5):
        await first.publish(Numbered(kind="a", n=n))
        await second.publish(Numbered(kind="b", n=n))
    assert (manager.stats.buffered, manager.stats.delivered) == (10, 0)
    await asyncio.to_thread(own_stack.broker.start)
    await wait_until(lambda: manager.stats.delivered == 10, timeout=60)
    assert balanced(manager.stats)
    assert managers.failures == []
    streams = await read_streams(own_stack, manager.topic)
    assert streams == {"a": list(range(5)), "b": list(range(5))}


@pytest.mark.integration
@requires("keeps_acknowledged_writes")
async def test_broker_restart_while_publishing_delivers_each_event_once_in_order(
    managers: Managers, own_stack: LocalKafkaStack
) -> None:
    manager = managers.new(
        own_stack.bootstrap_servers, own_stack.registry_url, delivery_timeout=60
    )
    await own_stack.create_topic(manager.topic, partitions=1)
    await manager.initialize()
    publishers = {
        "a": await manager.create_publisher("first", Numbered),
        "b": await manager.create_publisher("second", Numbered),
    }
    counts = await publish_through_outage(publishers, own_stack.broker.restart)
    assert await manager.aclose(timeout=60) == 0
    stats = manager.stats
    assert stats.delivered == stats.published == sum(counts.values())
    assert managers.failures == []
    streams = await read_streams(own_stack, manager.topic)
    assert streams == {kind: list(range(count)) for kind, count in counts.items()}, (
        stream_faults(streams, counts)
    )


@pytest.mark.integration
async def test_broker_crash_while_publishing_loses_nothing_unreported(
    managers: Managers, own_stack: LocalKafkaStack
) -> None:
    # A crashed broker may lose what it had acknowledged (Tansu always does,
    # noida-db loses recent writes); what arrives must still be in order and
    # without duplicates, and nothing may fail silently or stay stuck. With
    # the idempotent producer the restarted broker may have forgotten the
    # producer id, which makes aiokafka's producer unusable: the manager
    # must replace it.
    manager = managers.new(
        own_stack.bootstrap_servers, own_stack.registry_url, delivery_timeout=60
    )
    await own_stack.create_topic(manager.topic, partitions=1)
    await manager.initialize()
    publishers = {
        "a": await manager.create_publisher("first", Numbered),
        "b": await manager.create_publisher("second", Numbered),
    }
    broker = own_stack.broker

    def crash() -> None:
        broker.kill()
        time.sleep(0.3)

    def come_back() -> None:
        # Tansu comes back without the topic, yet takes produce requests for
        # it, and creating the topic after one resets its offsets (the next
        # write then fails with UnknownError): so the topic is back before
        # the producer can reach the broker.
        broker.start()
        create = own_stack.create_topic(manager.topic, partitions=1, exist_ok=True)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, create).result()

    counts = await publish_through_outage(publishers, crash, come_back)
    after = await manager.create_publisher("after", Numbered)
    for n in range(5):
        await after.publish(Numbered(kind="after", n=n), wait=True)
    assert await manager.aclose(timeout=60) == 0
    stats = manager.stats
    assert stats.published == sum(counts.values()) + 5
    assert stats.delivered == stats.published
    assert managers.failures == []
    streams = await read_streams(own_stack, manager.topic)
    assert streams.pop("after") == list(range(5))
    for kind, numbers in streams.items():
        assert numbers == sorted(set(numbers)), f"{kind}: duplicates or disorder"
        assert set(numbers) <= set(range(counts[kind]))


# --- registry outages -----------------------------------------------------------


async def test_create_publisher_raises_when_registry_down_with_raise_on_error(
    managers: Managers,
    local_kafka_stack: LocalKafkaStack,
    own_registry: LocalSchemaRegistry,
) -> None:
    manager = managers.new(
        local_kafka_stack.bootstrap_servers, own_registry.url, raise_on_error=True
    )
    await local_kafka_stack.create_topic(manager.topic)
    await manager.initialize()
    own_registry.stop()
    with pytest.raises(SchemaRegistryError):
        await manager.create_publisher("numbered", Numbered)


async def test_events_buffer_until_the_registry_comes_back(
    managers: Managers,
    local_kafka_stack: LocalKafkaStack,
    own_registry: LocalSchemaRegistry,
) -> None:
    manager = managers.new(
        local_kafka_stack.bootstrap_servers, own_registry.url, delivery_timeout=60
    )
    await local_kafka_stack.create_topic(manager.topic)
    await manager.initialize()
    own_registry.stop()
    publisher = await manager.create_publisher("numbered", Numbered)
    for n in range(5):
        await publisher.publish(Numbered(kind="a", n=n))
    # Nothing can be sent before the schema has an id.
    assert (manager.stats.buffered, manager.stats.delivered) == (5, 0)
    own_registry.start()
    await wait_until(lambda: manager.stats.delivered == 5)
    assert managers.failures == []
    decoder = EventDecoder(own_registry.url)
    records = await read_all(local_kafka_stack.bootstrap_servers, manager.topic)
    values = [await decoder.decode(r.value) for r in records]
    assert [v["n"] for v in values] == list(range(5))


async def test_incompatible_schema_refused_and_old_publisher_keeps_working(
    managers: Managers, local_kafka_stack: LocalKafkaStack
) -> None:
    class NumberedV2(EventPayload):
        kind: str
        n: int
        text: str = ""
        shard: int  # new and required: old records have no value for it

    application = f"app_{uuid.uuid4().hex[:12]}"
    old = managers.new(
        local_kafka_stack.bootstrap_servers,
        local_kafka_stack.registry_url,
        application=application,
    )
    await local_kafka_stack.create_topic(old.topic)
    await old.initialize()
    publisher = await old.create_publisher("numbered", Numbered)
    await publisher.publish(Numbered(kind="a", n=0), wait=True)

    new = managers.new(
        local_kafka_stack.bootstrap_servers,
        local_kafka_stack.registry_url,
        application=application,
        schema_compatibility="BACKWARD",
    )
    await new.initialize()
    with pytest.raises(IncompatibleSchemaError) as caught:
        await new.create_publisher("numbered", NumberedV2)
    assert "shard" in str(caught.value)
    assert caught.value.subject == old.subject_for("numbered")

    await publisher.publish(Numbered(kind="a", n=1), wait=True)
    streams = await read_streams(local_kafka_stack, old.topic)
    assert streams == {"a": [0, 1]}


# --- logs and usage errors -------------------------------------------------------


async def test_error_logs_are_rate_limited_during_an_outage(
    managers: Managers, own_registry: LocalSchemaRegistry
) -> None:
    count = 40
    manager = managers.new(dead_servers(), own_registry.url, delivery_timeout=0.2)
    with capture_logs() as logs:
        await manager.initialize()
        publisher = await manager.create_publisher("numbered", Numbered)
        # Spread out, so that events fail in many separate rounds.
        for n in range(count):
            await publisher.publish(Numbered(kind="a", n=n))
            await asyncio.sleep(0.05)
        await wait_until(lambda: manager.stats.failed == count)
    assert len(managers.failures) == count
    errors = [e for e in logs if e["log_level"] == "error"]
    failed = [
        e for e in errors if e["event"] == "Events not delivered to Kafka (failed)"
    ]
    assert 1 <= len(failed) <= 2
    assert len(errors) <= 8
    repeated = [e for e in errors if "still" in e["event"] or e in failed]
    assert repeated
    assert all("suppressed_since_last" in e for e in repeated)


async def test_usage_errors_raise_even_without_raise_on_error(
    managers: Managers, own_registry: LocalSchemaRegistry
) -> None:
    class Other(EventPayload):
        value: int

    class Unsupported(EventPayload):
        callback: Callable[[], None]

    manager = managers.new(
        dead_servers(),
        own_registry.url,
        raise_on_error=False,
        kafka_options={"max_request_size": 10_000},
    )
    await manager.initialize()
    publisher = await manager.create_publisher("numbered", Numbered)
    wrong: Any = Other(value=1)
    with pytest.raises(EventPayloadError):
        await publisher.publish(wrong)
    with pytest.raises(EventTooLargeError):
        await publisher.publish(Numbered(kind="a", n=0, text="x" * 20_000))
    with pytest.raises(UnsupportedAvroSchemaError):
        await manager.create_publisher("unsupported", Unsupported)
    with pytest.raises(DuplicateEventError):
        await manager.create_publisher("numbered", Numbered)
    assert manager.stats.published == 0
    await manager.aclose(timeout=0)
    with pytest.raises(EventManagerClosedError):
        await publisher.publish(Numbered(kind="a", n=1))
    with pytest.raises(EventManagerUsageError):
        await manager.create_publisher("later", Numbered)
