"""Record keys against a real broker: a topic of six partitions read back.

Each keyed record carries its key's bytes and sits on the partition Kafka's
default partitioner gives the key (checked against aiokafka's own murmur2,
an implementation we did not write); the events of one key are in publish
order. Unkeyed events of a ``spread`` type move to the next partition with
each batch. ``tail`` shows the keys.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from otel_kafka_events import EventPayload, KafkaEventManager
from otel_kafka_events._encoding._codec import EventDecoder
from otel_kafka_events_devstack import LocalKafkaStack

from ..conftest import ManagerFactory
from .test_cli import invoke, json_lines, manager_for, new_topic, stack_env
from .test_reliability_delivery import read_all

pytestmark = pytest.mark.integration

PARTITIONS = 6
USERS = [f"user-{n}" for n in range(12)]


class Order(EventPayload):
    """An order of a user, numbered in publish order."""

    user: str
    seq: int


def kafka_partition(key: bytes) -> int:
    """Where the Java client and aiokafka's default partitioner put ``key``."""
    return int(murmur2(key) & 0x7FFFFFFF) % PARTITIONS


async def topic_partitions(stack: LocalKafkaStack, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap_servers)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return len(description["partitions"])


async def six_partitions(
    make_kafka_manager: ManagerFactory, stack: LocalKafkaStack
) -> KafkaEventManager:
    """A manager on a fresh topic of six partitions (skipping a broker that
    cannot make one)."""
    manager = await make_kafka_manager(partitions=PARTITIONS)
    count = await topic_partitions(stack, manager.topic)
    if count != PARTITIONS:
        pytest.skip(f"the broker made {count} partitions when asked for {PARTITIONS}")
    return manager


async def decoded(
    stack: LocalKafkaStack, topic: str
) -> list[tuple[Any, dict[str, Any]]]:
    """Every record of ``topic`` with its decoded value, partition by
    partition in offset order."""
    records = await read_all(stack.bootstrap_servers, topic)
    records.sort(key=lambda r: (r.partition, r.offset))
    decoder = EventDecoder(stack.registry_url)
    return [(r, await decoder.decode(r.value)) for r in records]


async def test_keyed_events_land_on_their_keys_partition_in_order(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = await six_partitions(make_kafka_manager, local_kafka_stack)
    publisher = await manager.create_publisher("order", Order, key="user")
    count = 240
    for seq in range(count):
        # Every tenth waits: batches of several keys, and of one.
        await publisher.publish(
            Order(user=USERS[seq % len(USERS)], seq=seq), wait=seq % 10 == 9
        )
    assert await manager.aclose() == 0

    records = await decoded(local_kafka_stack, manager.topic)
    assert len(records) == count
    seqs: dict[bytes, list[int]] = {}
    for record, value in records:
        assert record.key == value["user"].encode()
        assert record.partition == kafka_partition(record.key)
        seqs.setdefault(record.key, []).append(value["seq"])
    for index, user in enumerate(USERS):
        assert seqs[user.encode()] == list(range(index, count, len(USERS)))
    # Twelve keys over six partitions: more than one partition is used.
    assert len({record.partition for record, _ in records}) > 1


async def test_a_key_given_to_publish_and_bytes_that_are_not_text(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = await six_partitions(make_kafka_manager, local_kafka_stack)
    publisher = await manager.create_publisher("order", Order, key="user")
    await publisher.publish(Order(user="ada", seq=0), key=b"\x00\xfe\xff")
    await publisher.publish(Order(user="ada", seq=1), key="given")
    await publisher.publish(Order(user="ada", seq=2), wait=True)
    assert await manager.aclose() == 0

    records = await decoded(local_kafka_stack, manager.topic)
    keys = {value["seq"]: record for record, value in records}
    assert [keys[seq].key for seq in range(3)] == [b"\x00\xfe\xff", b"given", b"ada"]
    for record in keys.values():
        assert record.partition == kafka_partition(record.key)


async def test_spread_events_move_to_the_next_partition_with_each_batch(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = await six_partitions(make_kafka_manager, local_kafka_stack)
    publisher = await manager.create_publisher("order", Order, spread=True)
    # Five events without a turn of the event loop, the last one awaited: a
    # batch of five; eight such batches.
    for seq in range(40):
        await publisher.publish(Order(user="any", seq=seq), wait=seq % 5 == 4)
    assert await manager.aclose() == 0

    records = await decoded(local_kafka_stack, manager.topic)
    partition_of = {value["seq"]: record.partition for record, value in records}
    assert sorted(partition_of) == list(range(40))
    home = kafka_partition(f"{manager.topic}.order".encode())
    for batch in range(8):
        where = {partition_of[seq] for seq in range(batch * 5, batch * 5 + 5)}
        assert where == {(home + batch) % PARTITIONS}
    assert all(record.key is None for record, _ in records)


def test_tail_shows_the_keys(local_kafka_stack: LocalKafkaStack) -> None:
    topic = new_topic(local_kafka_stack)

    async def publish() -> None:
        manager = manager_for(local_kafka_stack, topic)
        await manager.initialize()
        publisher = await manager.create_publisher("order", Order, key="user")
        await publisher.publish(Order(user="ada", seq=1))
        await publisher.publish(Order(user="ada", seq=2), key=b"\xffraw")
        assert await manager.aclose() == 0

    asyncio.run(publish())
    env = stack_env(local_kafka_stack)
    lines = json_lines(invoke("tail", topic.name, env=env))
    assert [line["key"] for line in lines] == ["ada", "\\xffraw"]
    table = invoke("tail", topic.name, "--table", env=env)
    assert table.exit_code == 0, table.stderr
    assert "key ada" in table.stdout
    assert "key \\xffraw" in table.stdout
