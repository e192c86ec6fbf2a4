"""Tests of `ApacheKafkaBroker`: a real Kafka 4.x node behaves like one.

One broker, with every listener (PLAINTEXT, SASL_PLAINTEXT and SASL_SSL with
SCRAM-SHA-512 or PLAIN, and SSL), serves the whole module, because each JVM
start costs seconds; one more, behind a delaying proxy, serves the
``network_delay`` test. The restart test comes last in the file: it runs last,
and leaves the broker up.

Skipped only when no ``java`` is installed. If Maven cannot resolve Kafka's
jars the fixture raises and every test fails: a missing broker must not pass
as a green run.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    UnknownTopicOrPartitionError,
)
from aiokafka.helpers import create_ssl_context

from otel_kafka_events_devstack._apache_kafka import (
    PLAIN_MECHANISM,
    SCRAM_MECHANISM,
    ApacheKafkaBroker,
    _cluster_id,
    find_java,
)

from ..broker_support import only_in_leg

pytestmark = [
    pytest.mark.integration,
    only_in_leg("kafka"),
    pytest.mark.timeout(180),
    pytest.mark.skipif(find_java() is None, reason="needs java (17+) on PATH"),
]

USER = "alice"
PASSWORD = "alice-secret"
# Topic-level limit, well below the producer's own max_request_size below.
TOPIC_MAX_MESSAGE_BYTES = 100_000


@pytest.fixture(scope="module")
def broker() -> Iterator[ApacheKafkaBroker]:
    """One Kafka node for the module, with SCRAM users and TLS enabled."""
    with ApacheKafkaBroker(sasl_scram_users={USER: PASSWORD}, ssl=True) as started:
        yield started


# -- helpers ---------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def admin_client(servers: str, **options: Any) -> AsyncIterator[Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, **options)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def create_topic(
    broker: ApacheKafkaBroker, name: str, configs: dict[str, str] | None = None
) -> None:
    async with admin_client(broker.bootstrap_servers) as admin:
        await admin.create_topics(
            [NewTopic(name, 1, 1, topic_configs=configs or {})], timeout_ms=10_000
        )


async def list_topics(broker: ApacheKafkaBroker) -> list[str]:
    async with admin_client(broker.bootstrap_servers) as admin:
        topics: list[str] = await admin.list_topics()
        return topics


async def produce(servers: str, topic: str, value: bytes, **options: Any) -> int:
    """Send one record, wait for the ack, and return its offset."""
    producer = AIOKafkaProducer(bootstrap_servers=servers, **options)
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic, value)
        offset: int = metadata.offset
        return offset
    finally:
        await producer.stop()


async def consume_all(
    servers: str, topic: str, count: int, **options: Any
) -> list[bytes]:
    """Read ``count`` records from the start of ``topic``."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **options,
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        while len(values) < count:
            batches = await consumer.getmany(timeout_ms=10_000)
            if not batches:
                raise AssertionError(f"got {len(values)} of {count} records")
            values += [
                record.value for records in batches.values() for record in records
            ]
        return values
    finally:
        await consumer.stop()


def sasl_options(
    password: str,
    *,
    mechanism: str = SCRAM_MECHANISM,
    protocol: str = "SASL_PLAINTEXT",
    ca_path: Path | None = None,
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "security_protocol": protocol,
        "sasl_mechanism": mechanism,
        "sasl_plain_username": USER,
        "sasl_plain_password": password,
    }
    if ca_path is not None:
        options["ssl_context"] = create_ssl_context(cafile=str(ca_path))
    return options


# -- PLAINTEXT -------------------------------------------------------------------


def test_capabilities() -> None:
    capabilities = ApacheKafkaBroker.capabilities
    assert capabilities.idempotent_producer
    assert not capabilities.auto_creates_topics
    assert capabilities.enforces_message_size
    assert capabilities.keeps_data_across_restart
    assert capabilities.keeps_acknowledged_writes
    assert capabilities.consumer_groups


async def test_round_trip_with_consumer_group(broker: ApacheKafkaBroker) -> None:
    topic = unique("round-trip")
    await create_topic(broker, topic)

    await produce(broker.bootstrap_servers, topic, b"hello")

    # A group id exercises the group coordinator and __consumer_offsets.
    assert await consume_all(
        broker.bootstrap_servers, topic, 1, group_id=unique("group")
    ) == [b"hello"]


async def test_topics_are_not_auto_created(broker: ApacheKafkaBroker) -> None:
    topic = unique("missing")

    # Both clients ask for auto-creation in their metadata requests, which a
    # broker with auto.create.topics.enable=true would honour.
    async with admin_client(broker.bootstrap_servers) as admin:
        (described,) = await admin.describe_topics([topic])
    assert described["error_code"] == UnknownTopicOrPartitionError.errno
    with pytest.raises(UnknownTopicOrPartitionError):
        await produce(broker.bootstrap_servers, topic, b"x", request_timeout_ms=1000)

    assert topic not in await list_topics(broker)


async def test_idempotent_producer(broker: ApacheKafkaBroker) -> None:
    topic = unique("idempotent")
    await create_topic(broker, topic)

    offset = await produce(
        broker.bootstrap_servers, topic, b"once", enable_idempotence=True
    )

    assert offset == 0
    assert await consume_all(broker.bootstrap_servers, topic, 1) == [b"once"]


async def test_broker_rejects_records_above_its_size_limit(
    broker: ApacheKafkaBroker,
) -> None:
    topic = unique("small-records")
    await create_topic(
        broker, topic, {"max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES)}
    )
    servers = broker.bootstrap_servers

    # Under the producer's own limit, so only the broker can refuse it.
    with pytest.raises(MessageSizeTooLargeError):
        await produce(
            servers,
            topic,
            b"x" * (2 * TOPIC_MAX_MESSAGE_BYTES),
            max_request_size=1_000_000,
        )

    assert await produce(servers, topic, b"x" * (TOPIC_MAX_MESSAGE_BYTES // 2)) == 0


# -- SASL_PLAINTEXT with SCRAM-SHA-512 -------------------------------------------


async def test_scram_login_with_the_right_password(broker: ApacheKafkaBroker) -> None:
    topic = unique("sasl")
    await create_topic(broker, topic)
    servers = broker.sasl_bootstrap_servers
    assert servers != broker.bootstrap_servers

    await produce(servers, topic, b"authenticated", **sasl_options(PASSWORD))

    assert await consume_all(servers, topic, 1, **sasl_options(PASSWORD)) == [
        b"authenticated"
    ]


async def test_scram_login_with_a_wrong_password_fails(
    broker: ApacheKafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=broker.sasl_bootstrap_servers,
        request_timeout_ms=5000,
        **sasl_options("wrong-password"),
    )
    try:
        # aiokafka reports the refused handshake as a failed bootstrap and
        # logs the broker's reason.
        with (
            caplog.at_level(logging.ERROR, logger="aiokafka"),
            pytest.raises(KafkaConnectionError),
        ):
            await admin.start()
    finally:
        await admin.close()

    assert "SaslAuthenticationFailed" in caplog.text
    assert "invalid credentials" in caplog.text


async def test_plain_login_with_the_same_users(broker: ApacheKafkaBroker) -> None:
    topic = unique("plain")
    await create_topic(broker, topic)
    servers = broker.sasl_bootstrap_servers
    options = sasl_options(PASSWORD, mechanism=PLAIN_MECHANISM)

    await produce(servers, topic, b"plain", **options)

    assert await consume_all(servers, topic, 1, **options) == [b"plain"]


def test_cluster_ids_never_start_with_a_dash() -> None:
    # The storage tool would read such an id as an option and refuse to
    # format; one random id in 64 starts with "-".
    ids = [_cluster_id() for _ in range(3000)]
    assert not [i for i in ids if i.startswith("-")]
    assert {len(base64.urlsafe_b64decode(i + "==")) for i in ids} == {16}


def test_user_names_that_plain_cannot_hold_are_refused() -> None:
    with pytest.raises(ValueError, match="user name 'a b'"):
        ApacheKafkaBroker(sasl_scram_users={"a b": "secret"})
    with pytest.raises(ValueError, match="password"):
        ApacheKafkaBroker(sasl_scram_users={"alice": 'with"quote'})


# -- SASL_SSL ----------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", [SCRAM_MECHANISM, PLAIN_MECHANISM])
async def test_sasl_ssl_round_trip(broker: ApacheKafkaBroker, mechanism: str) -> None:
    topic = unique("sasl-ssl")
    await create_topic(broker, topic)
    servers = broker.sasl_ssl_bootstrap_servers
    assert servers not in (broker.sasl_bootstrap_servers, broker.ssl_bootstrap_servers)
    options = sasl_options(
        PASSWORD, mechanism=mechanism, protocol="SASL_SSL", ca_path=broker.ca_path
    )

    await produce(servers, topic, b"both", **options)

    assert await consume_all(servers, topic, 1, **options) == [b"both"]


async def test_sasl_ssl_refuses_a_wrong_password(
    broker: ApacheKafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=broker.sasl_ssl_bootstrap_servers,
        request_timeout_ms=5000,
        **sasl_options("wrong", protocol="SASL_SSL", ca_path=broker.ca_path),
    )
    try:
        with (
            caplog.at_level(logging.ERROR, logger="aiokafka"),
            pytest.raises(KafkaConnectionError),
        ):
            await admin.start()
    finally:
        await admin.close()
    assert "invalid credentials" in caplog.text


# -- SSL -------------------------------------------------------------------------


async def test_ssl_round_trip(broker: ApacheKafkaBroker) -> None:
    topic = unique("ssl")
    await create_topic(broker, topic)
    servers = broker.ssl_bootstrap_servers
    # create_ssl_context verifies the certificate and the host name 127.0.0.1.
    options = {
        "security_protocol": "SSL",
        "ssl_context": create_ssl_context(cafile=str(broker.ca_path)),
    }

    await produce(servers, topic, b"encrypted", **options)

    assert await consume_all(servers, topic, 1, **options) == [b"encrypted"]


# -- network delay -------------------------------------------------------------------

DELAY = 0.05


async def test_network_delay_is_on_every_round_trip_and_survives_a_crash() -> None:
    delayed = ApacheKafkaBroker(network_delay=DELAY)
    await asyncio.to_thread(delayed.start)
    try:
        servers = delayed.bootstrap_servers
        assert servers != f"127.0.0.1:{delayed.port}"
        # The broker advertises the proxy, so no client ever bypasses it.
        async with admin_client(servers) as admin:
            described = await admin.describe_cluster()
        [node] = described["brokers"]
        assert f"{node['host']}:{node['port']}" == servers
        topic = unique("delayed")
        await create_topic(delayed, topic)
        producer = AIOKafkaProducer(bootstrap_servers=servers)
        await producer.start()
        try:
            trips = []
            for index in range(5):
                started = time.monotonic()
                await producer.send_and_wait(topic, b"%d" % index)
                trips.append(time.monotonic() - started)
        finally:
            await producer.stop()
        # One request and its answer: the delay once each way.
        assert min(trips) >= 2 * DELAY

        await asyncio.to_thread(delayed.kill)
        await asyncio.to_thread(delayed.start)

        assert delayed.bootstrap_servers == servers
        assert await consume_all(servers, topic, 5) == [b"%d" % i for i in range(5)]
    finally:
        await asyncio.to_thread(delayed.stop)


# -- restart (keep last: it restarts the shared broker) --------------------------


async def test_restart_keeps_data_and_ports(broker: ApacheKafkaBroker) -> None:
    topic = unique("durable")
    await create_topic(broker, topic)
    await produce(broker.bootstrap_servers, topic, b"before restart")
    addresses = (
        broker.bootstrap_servers,
        broker.sasl_bootstrap_servers,
        broker.ssl_bootstrap_servers,
        broker.sasl_ssl_bootstrap_servers,
    )
    pid = broker.process.pid if broker.process else None

    broker.restart()

    assert broker.running
    assert broker.process is not None
    assert broker.process.pid != pid
    assert addresses == (
        broker.bootstrap_servers,
        broker.sasl_bootstrap_servers,
        broker.ssl_bootstrap_servers,
        broker.sasl_ssl_bootstrap_servers,
    )
    assert topic in await list_topics(broker)
    assert await consume_all(broker.bootstrap_servers, topic, 1) == [b"before restart"]
    # SCRAM credentials live in the cluster metadata, which is kept too.
    await produce(
        broker.sasl_bootstrap_servers, topic, b"after", **sasl_options(PASSWORD)
    )
