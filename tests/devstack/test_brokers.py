"""Tests of the local broker launchers and `LocalKafkaStack`.

These test the launchers themselves, so they name Tansu and noida-db directly
instead of following ``OTEL_KAFKA_EVENTS_TEST_BROKER``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import TopicAlreadyExistsError, UnknownError
from aiokafka.structs import ConsumerRecord

from otel_kafka_events_devstack._broker_base import SubprocessBroker
from otel_kafka_events_devstack._noida import NoidaBroker
from otel_kafka_events_devstack._registry import LocalSchemaRegistry
from otel_kafka_events_devstack._stack import (
    BROKER_ENV_VAR,
    LocalKafkaStack,
    create_topic,
    make_broker,
)
from otel_kafka_events_devstack._tansu import TansuBroker

from ..broker_support import only_in_leg

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BROKERS: dict[str, type[SubprocessBroker]] = {
    "tansu": TansuBroker,
    "noida": NoidaBroker,
}


@pytest.fixture(params=sorted(BROKERS))
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def broker(kind: str) -> Iterator[SubprocessBroker]:
    started = BROKERS[kind]()
    try:
        started.start()
        yield started
    finally:
        started.stop()


# -- helpers -------------------------------------------------------------------


async def produce(
    bootstrap: str, topic: str, values: list[bytes], partition: int = 0
) -> None:
    """Send to one explicit partition: Tansu auto-creates topics with four."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(
                topic,
                value,
                key=b"key-" + value,
                headers=[("h", b"v")],
                partition=partition,
            )
    finally:
        await producer.stop()


async def read_values(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    """Values of partition 0 from the start, stopping at ``expected`` or 5 s."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + 5
        while len(values) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            values.extend(r.value for batch in batches.values() for r in batch)
        return values
    finally:
        await consumer.stop()


async def end_offset(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        offsets = await consumer.end_offsets([partition])
        offset: int = offsets[partition]
        return offset
    finally:
        await consumer.stop()


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (not yet reaped by init) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state follows the parenthesised command name.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# -- the launchers ---------------------------------------------------------------


async def test_produce_and_consume_round_trip(broker: SubprocessBroker) -> None:
    topic = LocalKafkaStack.unique_topic("roundtrip")
    await produce(broker.bootstrap_servers, topic, [b"a", b"b", b"c"])

    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + 5
        while len(records) < 3 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            records.extend(r for batch in batches.values() for r in batch)
    finally:
        await consumer.stop()

    assert [r.value for r in records] == [b"a", b"b", b"c"]
    assert [r.key for r in records] == [b"key-a", b"key-b", b"key-c"]
    assert all(list(r.headers) == [("h", b"v")] for r in records)


async def test_restart_keeps_port_and_data_as_declared(
    broker: SubprocessBroker,
) -> None:
    topic = LocalKafkaStack.unique_topic("restart")
    await produce(broker.bootstrap_servers, topic, [b"before"])
    bootstrap = broker.bootstrap_servers
    old_process = broker.process
    assert old_process is not None

    broker.restart()

    assert broker.bootstrap_servers == bootstrap
    assert old_process.returncode == 0  # stopped gracefully, not killed
    assert broker.process is not None
    assert broker.process.pid != old_process.pid
    if broker.capabilities.keeps_data_across_restart:
        assert await read_values(bootstrap, topic, 1) == [b"before"]
    else:
        assert await end_offset(bootstrap, topic) == 0
    await produce(bootstrap, topic, [b"after"])
    expected = 2 if broker.capabilities.keeps_data_across_restart else 1
    assert len(await read_values(bootstrap, topic, expected)) == expected


@only_in_leg("tansu")
async def test_tansu_recreating_a_topic_written_after_a_restart_breaks_it() -> None:
    # What the crash test in test_reliability_outages works around: after a
    # restart Tansu has no topics, yet takes writes for a partition a
    # producer still knows; creating the topic then resets the partition's
    # offsets, and the next write collides with the stored batch.
    with TansuBroker() as tansu:
        bootstrap = tansu.bootstrap_servers
        topic = LocalKafkaStack.unique_topic("recreated")
        await create_topic(bootstrap, topic)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"before", partition=0)
            tansu.kill()
            tansu.start()
            written = await producer.send_and_wait(topic, b"unknown", partition=0)
            assert written.offset == 0
            # Tansu does not know the topic: no TopicAlreadyExistsError.
            await create_topic(bootstrap, topic)
            with pytest.raises(UnknownError):
                await producer.send_and_wait(topic, b"after", partition=0)
        finally:
            await producer.stop()


DELAY = 0.02


async def test_tansu_network_delay_is_on_every_round_trip_after_bootstrap() -> None:
    with TansuBroker(network_delay=DELAY) as tansu:
        servers = tansu.bootstrap_servers
        assert servers != f"127.0.0.1:{tansu.port}"
        topic = LocalKafkaStack.unique_topic("delayed")
        await create_topic(servers, topic)
        producer = AIOKafkaProducer(bootstrap_servers=servers)
        await producer.start()
        try:
            # The broker advertises the proxy: the producer's connection to
            # the partition's leader goes through it too, not around it.
            [node] = producer.client.cluster.brokers()
            assert f"{node.host}:{node.port}" == servers
            trips = []
            for index in range(5):
                started = time.monotonic()
                await producer.send_and_wait(topic, b"%d" % index, partition=0)
                trips.append(time.monotonic() - started)
        finally:
            await producer.stop()
        # One request and its answer: the delay once each way.
        assert min(trips) >= 2 * DELAY
        assert await read_values(servers, topic, 5) == [b"%d" % i for i in range(5)]
    assert not accepts_connections(int(servers.rsplit(":", 1)[1]))


def test_tansu_refuses_a_negative_network_delay() -> None:
    with pytest.raises(ValueError, match="network_delay"):
        TansuBroker(network_delay=-0.001)


def test_stop_is_idempotent_and_ends_the_process(broker: SubprocessBroker) -> None:
    process = broker.process
    workdir = broker.workdir
    assert process is not None
    assert workdir is not None
    assert workdir.is_dir()

    broker.stop()
    broker.stop()

    assert process.poll() is not None
    assert process.returncode == 0  # the signal stopped it, not the SIGKILL fallback
    assert not broker.running
    assert not accepts_connections(broker.port)
    assert not workdir.exists()


def test_kill_sends_sigkill_and_start_comes_back(broker: SubprocessBroker) -> None:
    process = broker.process
    assert process is not None
    port = broker.port

    broker.kill()

    assert process.returncode == -signal.SIGKILL
    assert broker.workdir is not None  # kept, as after a crash
    broker.start()
    assert broker.running
    assert broker.port == port
    assert accepts_connections(port)


def test_start_failure_raises_with_log_tail(kind: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        failing = BROKERS[kind](port=port, start_timeout=10)
        try:
            with pytest.raises(RuntimeError, match="in use"):
                failing.start()
            assert not failing.running
        finally:
            failing.stop()


def test_broker_started_from_a_finished_thread_keeps_running() -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* exits.
    broker = TansuBroker()
    worker = threading.Thread(target=broker.start)
    try:
        worker.start()
        worker.join()
        time.sleep(0.3)
        assert broker.running
    finally:
        broker.stop()


_CHILD = textwrap.dedent(
    """
    import sys, time
    from otel_kafka_events_devstack._stack import make_broker

    broker = make_broker(sys.argv[1])
    broker.start()
    print(broker.process.pid, broker.port, broker.workdir, flush=True)
    time.sleep(60)
    """
)


def test_broker_dies_when_its_parent_is_killed(kind: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _CHILD, kind],
        stdout=subprocess.PIPE,
        text=True,
    )
    broker_pid = 0
    workdir = ""
    try:
        assert parent.stdout is not None
        pid_text, port_text, workdir = parent.stdout.readline().split()
        broker_pid, port = int(pid_text), int(port_text)
        assert pid_alive(broker_pid)
        assert accepts_connections(port)

        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=5)

        # The leader thread turns zombie before the other threads have exited
        # and closed the shared sockets: wait for both.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (
            pid_alive(broker_pid) or accepts_connections(port)
        ):
            time.sleep(0.05)
        assert not pid_alive(broker_pid)
        assert not accepts_connections(port)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if broker_pid and pid_alive(broker_pid):
            os.kill(broker_pid, signal.SIGKILL)
        if workdir:
            # The killed parent had no chance to remove its temporary dir.
            subprocess.run(["rm", "-rf", "--", workdir], check=False)


# -- make_broker ---------------------------------------------------------------


def test_make_broker_follows_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BROKER_ENV_VAR, raising=False)
    assert isinstance(make_broker(), TansuBroker)
    monkeypatch.setenv(BROKER_ENV_VAR, " Noida ")
    assert isinstance(make_broker(), NoidaBroker)
    assert isinstance(make_broker("tansu"), TansuBroker)


def test_make_broker_rejects_unknown_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=f"tansu, noida, kafka.*{BROKER_ENV_VAR}"):
        make_broker("redpanda")
    monkeypatch.setenv(BROKER_ENV_VAR, "redpanda")
    with pytest.raises(ValueError, match="redpanda"):
        make_broker()


def test_unique_topic_names_are_fresh_and_valid() -> None:
    first = LocalKafkaStack.unique_topic("test_x[noida]-1/2")
    second = LocalKafkaStack.unique_topic("test_x[noida]-1/2")
    assert first != second
    assert first.startswith("test_x_noida__1_2_")
    assert all(c.isascii() and (c.isalnum() or c in "._") for c in first)


# -- LocalKafkaStack -----------------------------------------------------------


async def test_stack_round_trip_and_consume_timeout(kind: str) -> None:
    async with LocalKafkaStack(kind) as stack:
        assert stack.registry.running
        assert stack.registry_url == f"http://127.0.0.1:{stack.registry.port}"
        topic = stack.unique_topic()
        await stack.create_topic(topic, partitions=2)
        with pytest.raises(TopicAlreadyExistsError):
            await stack.create_topic(topic, partitions=2)
        await stack.create_topic(topic, partitions=2, exist_ok=True)
        await produce(stack.bootstrap_servers, topic, [b"p0-a", b"p0-b"], partition=0)
        await produce(stack.bootstrap_servers, topic, [b"p1-a", b"p1-b"], partition=1)

        records = await stack.consume(topic, 4, timeout=10)
        assert sorted(r.value for r in records) == [b"p0-a", b"p0-b", b"p1-a", b"p1-b"]

        started = time.monotonic()
        with pytest.raises(TimeoutError, match="only 4 of 5 records"):
            await stack.consume(topic, 5, timeout=1)
        assert time.monotonic() - started < 5

        await stack.delete_topic(topic)
    assert not stack.broker.running
    assert not stack.registry.running


async def test_consume_of_missing_topic_times_out() -> None:
    async with LocalKafkaStack("tansu") as stack:
        with pytest.raises(TimeoutError, match="did not exist"):
            await stack.consume(stack.unique_topic("missing"), 1, timeout=0.5)


class _FailingRegistry(LocalSchemaRegistry):
    def start(self) -> None:
        raise RuntimeError("registry refused to start")


def test_stack_stops_the_broker_when_the_registry_fails() -> None:
    stack = LocalKafkaStack("tansu", registry=_FailingRegistry())
    with pytest.raises(RuntimeError, match="registry refused"), stack:
        pass  # pragma: no cover - never entered
    process = stack.broker.process if isinstance(stack.broker, TansuBroker) else None
    assert process is not None
    assert process.poll() is not None
    assert not stack.broker.running
