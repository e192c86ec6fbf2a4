"""Tests of `KafkaCluster`: three Apache Kafka nodes behave as one cluster.

One cluster serves the module (each start costs seconds of three JVMs); the
tests run in file order and the last one stops it. What the library does on
such a cluster is `tests/integration/test_cluster.py`; this module checks the
launcher's own promises: the settings, the ports, and nodes that can be
killed, stopped and started again with their data.

Runs in the ``cluster`` leg of ``scripts/test`` (``BROKERS=cluster``).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import UnknownTopicOrPartitionError

from otel_kafka_events_devstack import KafkaCluster, PartitionState
from otel_kafka_events_devstack._apache_kafka import find_java

from ..broker_support import only_in_leg

pytestmark = [
    pytest.mark.integration,
    pytest.mark.cluster,
    only_in_leg("cluster"),
    pytest.mark.skipif(find_java() is None, reason="needs java (17+) on PATH"),
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[KafkaCluster]:
    with KafkaCluster(3) as started:
        yield started


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def admin_client(cluster: KafkaCluster) -> AsyncIterator[Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def produce(cluster: KafkaCluster, topic: str, values: list[bytes]) -> None:
    """Send each value with ``acks="all"``, waiting for each."""
    producer = AIOKafkaProducer(
        bootstrap_servers=cluster.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=5000,
    )
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


async def read_partition(cluster: KafkaCluster, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=cluster.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        values: list[bytes] = []
        while len(values) < count:
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, f"got {len(values)} of {count} records"
            values += [r.value for rs in batches.values() for r in rs if r.value]
        return values
    finally:
        await consumer.stop()


def pid_of(cluster: KafkaCluster, node_id: int) -> int:
    process = cluster.node(node_id).process
    assert process is not None
    return process.pid


def topic_config(response: Any) -> dict[str, str]:
    """Name to value, from a DescribeConfigs answer about one resource."""
    (resource,) = response.to_object()["resources"]
    return {
        entry["config_names"]: entry["config_value"]
        for entry in resource["config_entries"]
    }


# -- settings --------------------------------------------------------------------


def test_three_nodes_each_below_the_ephemeral_range(cluster: KafkaCluster) -> None:
    ephemeral = int(
        Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
    )
    servers = cluster.bootstrap_servers.split(",")
    assert cluster.node_ids == (1, 2, 3)
    assert servers == [cluster.node(n).bootstrap_servers for n in cluster.node_ids]
    assert cluster.running_nodes() == (1, 2, 3)
    for node_id in cluster.node_ids:
        node = cluster.node(node_id)
        assert node.running
        assert node.port < ephemeral
        assert node.controller_port < ephemeral
        # Small and C1-only: three nodes share two cores.
        assert node.process is not None
        arguments = node.process.args
        assert isinstance(arguments, list)
        assert {"-Xmx384m", "-XX:TieredStopAtLevel=1"} <= set(arguments)
    with pytest.raises(KeyError, match="no node 4"):
        cluster.node(4)


async def test_topics_are_replicated_three_times_and_need_two_in_sync(
    cluster: KafkaCluster,
) -> None:
    topic = unique("settings")
    await cluster.create_topic(topic, 3)
    states = await cluster.wait_for_partitions(topic)
    assert cluster.replication_factor == 3
    assert cluster.min_insync_replicas == 2
    assert sorted(states) == [0, 1, 2]
    for state in states.values():
        assert sorted(state.replicas) == [1, 2, 3]
        assert state.leader in state.replicas
    # Spread: each node leads one of the three partitions.
    assert sorted(s.leader or 0 for s in states.values()) == [1, 2, 3]

    async with admin_client(cluster) as admin:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
        [node_response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, "2")]
        )
        # A metadata request naming an unknown topic does not create it.
        missing = unique("missing")
        (described,) = await admin.describe_topics([missing])
        assert described["error_code"] == UnknownTopicOrPartitionError.errno
        assert missing not in await admin.list_topics()
    config = topic_config(response)
    assert config["min.insync.replicas"] == "2"
    assert config["unclean.leader.election.enable"] == "false"
    node_config = topic_config(node_response)
    assert node_config["default.replication.factor"] == "3"
    assert node_config["auto.create.topics.enable"] == "false"
    assert node_config["group.initial.rebalance.delay.ms"] == "0"


async def test_internal_topics_are_replicated_too(cluster: KafkaCluster) -> None:
    topic = unique("group")
    await cluster.create_topic(topic)
    # Committing a group's offset creates __consumer_offsets.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=cluster.bootstrap_servers,
        group_id=unique("group"),
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=500)
        await consumer.commit({TopicPartition(topic, 0): 0})
    finally:
        await consumer.stop()
    offsets = await cluster.wait_for_partitions("__consumer_offsets")
    assert all(sorted(s.replicas) == [1, 2, 3] for s in offsets.values())


# -- nodes -------------------------------------------------------------------------


async def test_killed_leader_is_replaced_and_comes_back(cluster: KafkaCluster) -> None:
    topic = unique("failover")
    await cluster.create_topic(topic)
    await cluster.wait_for_partitions(topic)
    await produce(cluster, topic, [b"before"])
    leader = await cluster.leader(topic, 0)
    assert leader is not None
    pid = pid_of(cluster, leader)

    await asyncio.to_thread(cluster.kill_node, leader)

    assert leader not in cluster.running_nodes()
    assert not cluster.running

    def moved(state: PartitionState) -> bool:
        return state.leader not in (None, leader) and leader not in state.in_sync

    states = await cluster.wait_for_partitions(topic, moved, timeout=30)
    assert len(states[0].in_sync) == 2
    # Two in sync are enough for acks=all.
    await produce(cluster, topic, [b"during"])

    await asyncio.to_thread(cluster.start_node, leader)

    assert cluster.node(leader).running
    assert pid_of(cluster, leader) != pid
    states = await cluster.wait_for_partitions(topic, timeout=60)
    assert sorted(states[0].in_sync) == [1, 2, 3]
    assert await read_partition(cluster, topic, 2) == [b"before", b"during"]


async def test_a_stopped_node_keeps_its_port_and_data(cluster: KafkaCluster) -> None:
    topic = unique("stopped")
    await cluster.create_topic(topic)
    await cluster.wait_for_partitions(topic)
    await produce(cluster, topic, [b"kept"])
    node_id = 2
    address = cluster.node(node_id).bootstrap_servers
    data = cluster.node(node_id).workdir

    await asyncio.to_thread(cluster.stop_node, node_id)

    assert cluster.running_nodes() == (1, 3)
    assert data is not None
    # The record is on the stopped node's disk, in its replica's segment.
    [segment] = (data / "data" / f"{topic}-0").glob("*.log")
    assert segment.stat().st_size > 0
    inode = segment.stat().st_ino

    await asyncio.to_thread(cluster.start_node, node_id)
    await asyncio.to_thread(cluster.start)  # all run: nothing to do

    assert cluster.running_nodes() == (1, 2, 3)
    assert cluster.node(node_id).bootstrap_servers == address
    await cluster.wait_for_partitions(topic, timeout=60)
    # It came back with that segment, not a copy fetched anew.
    assert segment.stat().st_ino == inode
    assert await read_partition(cluster, topic, 1) == [b"kept"]


def test_restart_node_restarts_it_on_the_same_port(cluster: KafkaCluster) -> None:
    pid = pid_of(cluster, 3)
    address = cluster.node(3).bootstrap_servers

    cluster.restart_node(3)

    assert cluster.node(3).running
    assert pid_of(cluster, 3) != pid
    assert cluster.node(3).bootstrap_servers == address


# -- keep last: it stops the module's cluster ---------------------------------------


def test_stop_ends_every_node_and_removes_the_data(cluster: KafkaCluster) -> None:
    pids = [pid_of(cluster, node_id) for node_id in cluster.node_ids]
    folders = {cluster.node(n).workdir for n in cluster.node_ids}

    cluster.stop()
    cluster.stop()  # idempotent

    assert not cluster.running
    assert cluster.running_nodes() == ()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert all(folder is not None and not folder.exists() for folder in folders)
    with pytest.raises(RuntimeError, match="not been started"):
        cluster.node(1)


async def test_network_delay_puts_a_proxy_before_every_node() -> None:
    delay = 0.02
    delayed = KafkaCluster(3, network_delay=delay)
    await asyncio.to_thread(delayed.start)
    try:
        proxies = delayed.bootstrap_servers.split(",")
        direct = [f"127.0.0.1:{delayed.node(n).port}" for n in delayed.node_ids]
        assert not set(proxies) & set(direct)
        # Every node advertises its proxy: clients and nodes use only those.
        async with admin_client(delayed) as admin:
            described = await admin.describe_cluster()
        advertised = {
            broker["node_id"]: f"{broker['host']}:{broker['port']}"
            for broker in described["brokers"]
        }
        assert advertised == dict(zip(delayed.node_ids, proxies, strict=True))
        topic = unique("delayed")
        await delayed.create_topic(topic)
        await delayed.wait_for_partitions(topic)
        producer = AIOKafkaProducer(
            bootstrap_servers=delayed.bootstrap_servers, acks="all"
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"warm-up")
            started = time.monotonic()
            await producer.send_and_wait(topic, b"timed")
            elapsed = time.monotonic() - started
        finally:
            await producer.stop()
        # At least the client's own round trip through the leader's proxy.
        assert elapsed >= 2 * delay
    finally:
        await asyncio.to_thread(delayed.stop)


def test_a_cluster_needs_a_node() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        KafkaCluster(0)
