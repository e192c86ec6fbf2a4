"""Publishing to a 3-node Apache Kafka cluster while its nodes fail.

One `KafkaCluster` (replication factor 3, ``min.insync.replicas=2``, unclean
leader election off) serves the module; each test publishes steady traffic
over six partitions while the cluster loses a partition leader, loses its
write quorum for longer than a request timeout, or restarts node by node.
Each is then judged by reading the topic back with a plain consumer:

- nothing reported delivered is missing or doubled, and nothing is on the
  topic that was not published;
- within each partition, the sequence numbers in the payloads only grow;
- outcomes are true: an event reported failed before it was sent is not on
  the topic; one reported "not acknowledged" may be, once;
- every ``publish`` returned within its bound (the buffer's
  ``block_timeout``, plus ``delivery_timeout`` + 1 s when it waited).

The traffic is one event type keyed by ``Keyed.key``: six streams of
ordered events, whose keys hash to the six partitions, so the order checked
is per-key order (see `Traffic`).

Runs in the ``cluster`` leg of ``scripts/test`` (``BROKERS=cluster``).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiokafka.partitioner import murmur2

from otel_kafka_events import (
    BufferOptions,
    DeliveryFailure,
    EventDeliveryError,
    EventPayload,
    KafkaEventManager,
    OverflowPolicy,
)
from otel_kafka_events.errors import EventDeliveryTimeoutError, NotAcknowledgedError
from otel_kafka_events_devstack import KafkaCluster, LocalSchemaRegistry
from otel_kafka_events_devstack._apache_kafka import find_java

from ..broker_support import only_in_leg
from .test_reliability_delivery import decode_all, read_all

pytestmark = [
    pytest.mark.integration,
    pytest.mark.cluster,
    only_in_leg("cluster"),
    pytest.mark.skipif(find_java() is None, reason="needs java (17+) on PATH"),
    pytest.mark.timeout(600),
]

TOPIC_PREFIX = "cluster"
PARTITIONS = 6
# In half of the streams every tenth publish waits for its acknowledgement;
# the others never wait, so they keep publishing through an outage.
WAIT_EVERY = 10
# Pause between two publishes of one stream: about 600 events a second in
# all, which three JVMs and this test share two cores with.
PACE = 0.01
# What a publish may take beyond its documented bound: the scheduling of a
# loaded two-core machine running three Kafka nodes beside the test.
SLACK = 0.5
# aiokafka's request timeout, shorter than its 40 s so that the quorum test
# can outlast it several times.
REQUEST_TIMEOUT_MS = 2000


class Keyed(EventPayload):
    """One event of an ordered stream; ``key`` is its record key."""

    key: str
    seq: int


# --- the cluster --------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[KafkaCluster]:
    with KafkaCluster(3) as started:
        yield started


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalSchemaRegistry]:
    with LocalSchemaRegistry() as started:
        yield started


@pytest_asyncio.fixture
async def topic(cluster: KafkaCluster) -> AsyncIterator[str]:
    """A fresh topic of six partitions, three replicas each, all in sync;
    every node runs again after the test."""
    name = f"{TOPIC_PREFIX}.app_{uuid.uuid4().hex[:12]}"
    await cluster.create_topic(name, PARTITIONS)
    await cluster.wait_for_partitions(name)
    yield name
    await asyncio.to_thread(cluster.start)


# --- traffic ------------------------------------------------------------------


def stream_names(partitions: int) -> dict[str, int]:
    """One record key per partition: key -> the partition it goes to.

    The library puts a keyed event on the partition Kafka's default
    partitioner gives its key; computed here with aiokafka's own murmur2,
    independently of the library's.
    """
    found: dict[int, str] = {}
    for index in range(10_000):
        name = f"stream_{index}"
        partition = (murmur2(name.encode()) & 0x7FFFFFFF) % partitions
        found.setdefault(partition, name)
        if len(found) == partitions:
            return {name: partition for partition, name in found.items()}
    raise AssertionError("no keys for every partition")


@dataclass
class Published:
    """One publish: which event, whether it waited, when and how long."""

    stream: str
    seq: int
    waited: bool
    started: float
    seconds: float


@dataclass
class Traffic:
    """Several streams published at once, and everything the library said.

    Each stream is one record key of a single event type, on the partition
    its key hashes to.
    """

    manager: KafkaEventManager
    streams: dict[str, int]
    block_timeout: float
    failures: list[DeliveryFailure]
    events: dict[str, Published] = field(default_factory=dict)
    confirmed: set[str] = field(default_factory=set)
    raised: dict[str, EventDeliveryError] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Publish every stream until `stop` is set."""
        publisher = await self.manager.create_publisher("keyed", Keyed, key="key")
        await asyncio.gather(
            *(
                self._stream(name, publisher, waits=index % 2 == 0)
                for index, name in enumerate(self.streams)
            )
        )

    async def _stream(self, name: str, publisher: Any, *, waits: bool) -> None:
        seq = 0
        while not self.stop.is_set():
            seq += 1
            wait = waits and seq % WAIT_EVERY == 0
            started = time.monotonic()
            try:
                event = await publisher.publish(Keyed(key=name, seq=seq), wait=wait)
            except EventDeliveryError as error:
                event_id = error.event_id
                self.raised[event_id] = error
            else:
                event_id = str(event.id)
                if wait:
                    self.confirmed.add(event_id)
            self.events[event_id] = Published(
                name, seq, wait, started, time.monotonic() - started
            )
            await asyncio.sleep(random.uniform(0, 2 * PACE))

    def started_after(self, moment: float) -> list[str]:
        """The events whose publish started after ``moment``."""
        return [e for e, event in self.events.items() if event.started > moment]


def make_manager(
    cluster: KafkaCluster,
    registry: LocalSchemaRegistry,
    topic: str,
    failures: list[DeliveryFailure],
    *,
    delivery_timeout: float,
    buffer: BufferOptions,
) -> KafkaEventManager:
    application = topic.removeprefix(f"{TOPIC_PREFIX}.")
    return KafkaEventManager(
        application=application,
        topic_prefix=TOPIC_PREFIX,
        bootstrap_servers=cluster.bootstrap_servers,
        registry_url=registry.url,
        enable_idempotence=True,
        delivery_timeout=delivery_timeout,
        retry_backoff=0.05,
        buffer=buffer,
        on_delivery_error=failures.append,
        # Shorter than aiokafka's 40 s: the quorum test outlasts it.
        kafka_options={"request_timeout_ms": REQUEST_TIMEOUT_MS},
    )


async def start_traffic(
    cluster: KafkaCluster,
    registry: LocalSchemaRegistry,
    topic: str,
    *,
    delivery_timeout: float,
    buffer: BufferOptions,
) -> tuple[Traffic, asyncio.Task[None]]:
    failures: list[DeliveryFailure] = []
    manager = make_manager(
        cluster,
        registry,
        topic,
        failures,
        delivery_timeout=delivery_timeout,
        buffer=buffer,
    )
    await manager.initialize()
    traffic = Traffic(
        manager,
        stream_names(PARTITIONS),
        buffer.block_timeout,
        failures,
    )
    task = asyncio.create_task(traffic.run())
    return traffic, task


async def finish(traffic: Traffic, task: asyncio.Task[None]) -> int:
    """Stop publishing and close the manager; what `aclose` counted."""
    traffic.stop.set()
    await task
    return await traffic.manager.aclose(timeout=30)


# --- judging ------------------------------------------------------------------


@dataclass
class Verdict:
    """What the topic holds, next to what the library reported."""

    on_topic: Counter[str]
    delivered: set[str]
    failed: dict[str, DeliveryFailure]

    @property
    def not_acknowledged(self) -> set[str]:
        return {
            event_id
            for event_id, failure in self.failed.items()
            if isinstance(failure.error, NotAcknowledgedError)
        }


async def judge(
    traffic: Traffic,
    cluster: KafkaCluster,
    registry: LocalSchemaRegistry,
    topic: str,
    *,
    delivery_timeout: float,
) -> Verdict:
    """Read the topic back and check every promise; return what was found."""
    await cluster.wait_for_partitions(topic)
    records = await read_all(cluster.bootstrap_servers, topic)
    values = await decode_all(registry.url, records)
    stats = traffic.manager.stats
    events = traffic.events

    # Every event's fate is known exactly once.
    assert stats.buffered == 0
    assert stats.published == len(events)
    assert stats.published == stats.delivered + stats.failed + stats.dropped
    failure_ids = [failure.event_id for failure in traffic.failures]
    assert len(failure_ids) == len(set(failure_ids)), "an event failed twice"
    assert len(failure_ids) == stats.failed + stats.dropped
    failed = {failure.event_id: failure for failure in traffic.failures}
    delivered = set(events) - set(failed)
    assert len(delivered) == stats.delivered
    # publish(wait=True) told the same story as the counters.
    assert traffic.confirmed <= delivered
    assert set(traffic.raised) <= set(failed)
    for event_id, error in traffic.raised.items():
        assert error.__cause__ is failed[event_id].error

    # Nothing reported delivered is missing or doubled; nothing unpublished.
    on_topic = Counter(str(value["id"]) for value in values)
    assert set(on_topic) <= set(events), "records nobody published"
    missing = [e for e in delivered if on_topic[e] == 0]
    doubled = [e for e in delivered if on_topic[e] > 1]
    assert not missing, f"{len(missing)} delivered events are not on the topic"
    assert not doubled, f"{len(doubled)} delivered events are on it twice"
    # A failure is true: unsent events are absent; unacknowledged ones may
    # have been written, once.
    for event_id, failure in failed.items():
        if isinstance(failure.error, NotAcknowledgedError):
            assert on_topic[event_id] <= 1, failure
        else:
            assert on_topic[event_id] == 0, f"{failure} is on the topic"

    # Each stream under its record key, on its key's partition, its sequence
    # numbers only growing.
    sequences: dict[str, list[int]] = {}
    for record, value in zip(records, values, strict=True):
        stream = value["key"]
        assert record.key == stream.encode(), (stream, record)
        assert record.partition == traffic.streams[stream], (stream, record)
        sequences.setdefault(stream, []).append(value["seq"])
    for stream, seqs in sequences.items():
        out_of_order = [(a, b) for a, b in itertools.pairwise(seqs) if b <= a]
        assert not out_of_order, f"{stream}: {out_of_order[:5]}"

    # No publish blocked beyond its documented bound (docs/reliability.md):
    # the buffer's block_timeout, and when it waited for its acknowledgement,
    # delivery_timeout + 1 s more.
    for event_id, event in events.items():
        waited = delivery_timeout + 1.0 if event.waited else 0.0
        assert event.seconds <= traffic.block_timeout + waited + SLACK, (
            event_id,
            event,
        )
    return Verdict(on_topic, delivered, failed)


def report(name: str, traffic: Traffic, verdict: Verdict, **facts: object) -> None:
    """One line for the test log: what happened, for the record."""

    def slowest(waited: bool) -> float:
        times = [e.seconds for e in traffic.events.values() if e.waited == waited]
        return max(times, default=0.0)

    details = " ".join(f"{key}={value}" for key, value in facts.items())
    print(
        f"{name}: {traffic.manager.stats}; not acknowledged"
        f" {len(verdict.not_acknowledged)} (on the topic:"
        f" {sum(verdict.on_topic[e] for e in verdict.not_acknowledged)});"
        f" slowest publish {slowest(False) * 1000:.0f} ms, awaited"
        f" {slowest(True):.1f} s; {details}"
    )


# --- the tests ----------------------------------------------------------------


async def test_leader_killed_mid_publish_loses_nothing(
    cluster: KafkaCluster, registry: LocalSchemaRegistry, topic: str
) -> None:
    delivery_timeout = 60.0
    traffic, task = await start_traffic(
        cluster,
        registry,
        topic,
        delivery_timeout=delivery_timeout,
        buffer=BufferOptions(max_events=20_000, block_timeout=0.5),
    )
    await asyncio.sleep(3)
    victim_partition = next(iter(traffic.streams.values()))
    victim = await cluster.leader(topic, victim_partition)
    assert victim is not None
    killed_at = time.monotonic()
    await asyncio.to_thread(cluster.kill_node, victim)
    moved = await cluster.wait_for_partitions(
        topic, lambda p: p.leader is not None and p.leader != victim
    )
    failover = time.monotonic() - killed_at
    published_before = len(traffic.events)
    await asyncio.sleep(3)
    assert len(traffic.events) > published_before, "publishing stalled"
    undelivered = await finish(traffic, task)
    await asyncio.to_thread(cluster.start_node, victim)

    verdict = await judge(
        traffic, cluster, registry, topic, delivery_timeout=delivery_timeout
    )
    # With a delivery timeout longer than the failover, nothing fails.
    stats = traffic.manager.stats
    assert undelivered == 0
    assert stats.failed == stats.dropped == 0
    assert stats.delivered == len(traffic.events)
    assert moved[victim_partition].leader != victim
    report("failover", traffic, verdict, killed=victim, failover=f"{failover:.1f}s")


async def test_write_quorum_lost_longer_than_a_request_timeout(
    cluster: KafkaCluster, registry: LocalSchemaRegistry, topic: str
) -> None:
    # Shorter than the outage and the restart together, so events fail; long
    # enough to ride out the sender's retry backoff (up to 5 s) once the
    # quorum is back.
    delivery_timeout = 8.0
    outage = 4 * REQUEST_TIMEOUT_MS / 1000
    traffic, task = await start_traffic(
        cluster,
        registry,
        topic,
        delivery_timeout=delivery_timeout,
        # Fills during the outage: publish blocks, then drops and reports.
        buffer=BufferOptions(
            max_events=1000, overflow=OverflowPolicy.BLOCK, block_timeout=0.5
        ),
    )
    await asyncio.sleep(3)
    survivor = random.choice(cluster.node_ids)
    down = [node for node in cluster.node_ids if node != survivor]
    lost_at = time.monotonic()
    for node in down:
        await asyncio.to_thread(cluster.kill_node, node)
    await asyncio.sleep(outage)
    # Both at once: one alone has no quorum to join.
    await asyncio.to_thread(cluster.start)
    await cluster.wait_for_partitions(topic)
    recovered_at = time.monotonic()
    await asyncio.sleep(5)
    undelivered = await finish(traffic, task)

    verdict = await judge(
        traffic, cluster, registry, topic, delivery_timeout=delivery_timeout
    )
    stats = traffic.manager.stats
    # The outage was felt: events timed out, and the streams that never wait
    # filled the buffer, so publish blocked (within its bound) and dropped.
    assert stats.failed > 0
    assert stats.dropped > 0
    assert all(
        isinstance(f.error, NotAcknowledgedError | TimeoutError)
        or f.reason == "dropped"
        for f in traffic.failures
    ), {type(f.error).__name__ for f in traffic.failures}
    # Once the quorum was back, publishing recovered: what was published a
    # second after the partitions were in sync again got through.
    late = traffic.started_after(recovered_at + 1)
    assert late, "nothing was published after the recovery"
    assert [e for e in late if e not in verdict.delivered] == []
    assert 0 <= undelivered <= stats.failed
    waited_timeouts = sum(
        isinstance(e, EventDeliveryTimeoutError) for e in traffic.raised.values()
    )
    report(
        "quorum lost",
        traffic,
        verdict,
        down=down,
        outage=f"{recovered_at - lost_at:.1f}s",
        awaited_timeouts=waited_timeouts,
    )


async def test_rolling_restart_loses_nothing(
    cluster: KafkaCluster, registry: LocalSchemaRegistry, topic: str
) -> None:
    delivery_timeout = 60.0
    traffic, task = await start_traffic(
        cluster,
        registry,
        topic,
        delivery_timeout=delivery_timeout,
        buffer=BufferOptions(max_events=20_000, block_timeout=0.5),
    )
    await asyncio.sleep(2)
    started = time.monotonic()
    for node in cluster.node_ids:
        await asyncio.to_thread(cluster.restart_node, node)
        # The next node goes down only once this one has caught up.
        await cluster.wait_for_partitions(topic)
    rolled = time.monotonic() - started
    await asyncio.sleep(2)
    undelivered = await finish(traffic, task)

    verdict = await judge(
        traffic, cluster, registry, topic, delivery_timeout=delivery_timeout
    )
    stats = traffic.manager.stats
    assert undelivered == 0
    assert stats.failed == stats.dropped == 0
    assert stats.delivered == len(traffic.events)
    report("rolling restart", traffic, verdict, rolled=f"{rolled:.1f}s")
