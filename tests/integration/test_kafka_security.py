"""Configuration from the environment against real Kafka's secure listeners.

A service configured with Safir's variables for SASL_PLAINTEXT, SSL or
SASL_SSL (TLS with a CA file, and SCRAM-SHA-512 or PLAIN: the listener of
managed Kafka services such as Strimzi, MSK or Confluent Cloud) publishes
through `KafkaMetricsConfiguration` unchanged, and the events are read back
over the same listener. The SASL_SSL blocks of `docs/production.md` do the
same, as written but for the local broker's address, CA and users. Only
Apache Kafka offers these listeners, so the module runs in the Kafka leg.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.helpers import create_ssl_context

from otel_kafka_events import (
    EventDecoder,
    EventPayload,
    KafkaEventManager,
    metrics_configuration_factory,
)
from otel_kafka_events.config import KafkaMetricsConfiguration
from otel_kafka_events.errors import BrokerUnavailableError
from otel_kafka_events_devstack import LocalSchemaRegistry
from otel_kafka_events_devstack._apache_kafka import ApacheKafkaBroker, find_java

from ..broker_support import only_in_leg
from ..markdown_programs import blocks, environment_files

pytestmark = [
    pytest.mark.integration,
    only_in_leg("kafka"),
    pytest.mark.skipif(find_java() is None, reason="needs java (17+) on PATH"),
    pytest.mark.timeout(180),
]

USER = "svc"
PASSWORD = "svc-secret"
REGISTRY_PASSWORD = "registry-secret"
PREFIX = "secure.events"
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "production.md"


class Audit(EventPayload):
    """An event for the secure listeners."""

    action: str


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[ApacheKafkaBroker]:
    with ApacheKafkaBroker(sasl_scram_users={USER: PASSWORD}, ssl=True) as broker:
        yield broker


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalSchemaRegistry]:
    with LocalSchemaRegistry() as started:
        yield started


@pytest_asyncio.fixture
async def application(secure_broker: ApacheKafkaBroker) -> AsyncIterator[str]:
    """A fresh application name whose topic exists (created over PLAINTEXT)."""
    name = f"app_{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=secure_broker.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"{PREFIX}.{name}", 1, 1)])
    finally:
        await admin.close()
    yield name


def _use_environment(
    monkeypatch: pytest.MonkeyPatch,
    application: str,
    registry: LocalSchemaRegistry,
    **settings: str,
) -> None:
    """Replace the metrics/Kafka environment with a service's settings."""
    import os

    for key in list(os.environ):
        if key.startswith(("METRICS_", "KAFKA_", "SCHEMA_MANAGER_")):
            monkeypatch.delenv(key)
    settings = {
        "METRICS_APPLICATION": application,
        "METRICS_EVENTS_TOPIC_PREFIX": PREFIX,
        "SCHEMA_MANAGER_REGISTRY_URL": registry.url,
        **settings,
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)


async def _publish(manager: KafkaEventManager) -> str:
    """Publish one event, waiting for it; its id."""
    await manager.initialize()
    publisher = await manager.create_publisher("audit", Audit)
    event = await publisher.publish(Audit(action="login"), wait=True)
    assert await manager.aclose() == 0
    assert manager.stats.delivered == 1
    assert event.application == manager.application
    return str(event.id)


async def _read_back(
    servers: str, topic: str, registry_url: str, **security: Any
) -> list[dict[str, Any]]:
    """Every event on ``topic``, read over the listener at ``servers``, its
    schemas from ``registry_url`` (with credentials, if it needs them)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **security,
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()
    decoder = EventDecoder(registry_url)
    records = [record for batch in batches.values() for record in batch]
    return [await decoder.decode(record.value) for record in records]


async def test_sasl_scram_from_environment(
    monkeypatch: pytest.MonkeyPatch,
    secure_broker: ApacheKafkaBroker,
    registry: LocalSchemaRegistry,
    application: str,
) -> None:
    _use_environment(
        monkeypatch,
        application,
        registry,
        KAFKA_BOOTSTRAP_SERVERS=secure_broker.sasl_bootstrap_servers,
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_USERNAME=USER,
        KAFKA_SASL_PASSWORD=PASSWORD,
    )
    manager = KafkaMetricsConfiguration().make_manager()
    await _publish(manager)


async def test_wrong_sasl_password_fails_clearly(
    monkeypatch: pytest.MonkeyPatch,
    secure_broker: ApacheKafkaBroker,
    registry: LocalSchemaRegistry,
    application: str,
) -> None:
    _use_environment(
        monkeypatch,
        application,
        registry,
        KAFKA_BOOTSTRAP_SERVERS=secure_broker.sasl_bootstrap_servers,
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_USERNAME=USER,
        KAFKA_SASL_PASSWORD="not-the-password",
        METRICS_RAISE_ON_ERROR="true",
    )
    manager = KafkaMetricsConfiguration().make_manager()
    with pytest.raises(BrokerUnavailableError, match="Cannot connect to Kafka"):
        await manager.initialize()
    await manager.aclose(timeout=1)


async def test_ssl_from_environment(
    monkeypatch: pytest.MonkeyPatch,
    secure_broker: ApacheKafkaBroker,
    registry: LocalSchemaRegistry,
    application: str,
) -> None:
    _use_environment(
        monkeypatch,
        application,
        registry,
        KAFKA_BOOTSTRAP_SERVERS=secure_broker.ssl_bootstrap_servers,
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_CLUSTER_CA_PATH=str(secure_broker.ca_path),
    )
    manager = KafkaMetricsConfiguration().make_manager()
    await _publish(manager)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
async def test_sasl_ssl_from_environment(
    monkeypatch: pytest.MonkeyPatch,
    secure_broker: ApacheKafkaBroker,
    registry: LocalSchemaRegistry,
    application: str,
    mechanism: str,
) -> None:
    _use_environment(
        monkeypatch,
        application,
        registry,
        KAFKA_BOOTSTRAP_SERVERS=secure_broker.sasl_ssl_bootstrap_servers,
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM=mechanism,
        KAFKA_SASL_USERNAME=USER,
        KAFKA_SASL_PASSWORD=PASSWORD,
        KAFKA_CLUSTER_CA_PATH=str(secure_broker.ca_path),
    )
    manager = KafkaMetricsConfiguration().make_manager()

    event_id = await _publish(manager)

    # Read back over the same listener, as a consumer of the service would.
    [value] = await _read_back(
        secure_broker.sasl_ssl_bootstrap_servers,
        manager.topic,
        registry.url,
        security_protocol="SASL_SSL",
        ssl_context=create_ssl_context(cafile=str(secure_broker.ca_path)),
        sasl_mechanism=mechanism,
        sasl_plain_username=USER,
        sasl_plain_password=PASSWORD,
    )
    assert str(value["id"]) == event_id
    assert value["action"] == "login"


async def test_sasl_plain_from_environment(
    monkeypatch: pytest.MonkeyPatch,
    secure_broker: ApacheKafkaBroker,
    registry: LocalSchemaRegistry,
    application: str,
) -> None:
    _use_environment(
        monkeypatch,
        application,
        registry,
        KAFKA_BOOTSTRAP_SERVERS=secure_broker.sasl_bootstrap_servers,
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM="PLAIN",
        KAFKA_SASL_USERNAME=USER,
        KAFKA_SASL_PASSWORD=PASSWORD,
    )
    manager = KafkaMetricsConfiguration().make_manager()
    event_id = await _publish(manager)
    [value] = await _read_back(
        secure_broker.bootstrap_servers, manager.topic, registry.url
    )
    assert str(value["id"]) == event_id


def _wrong_sasl_ssl_password(
    monkeypatch: pytest.MonkeyPatch,
    secure_broker: ApacheKafkaBroker,
    registry: LocalSchemaRegistry,
    application: str,
) -> KafkaEventManager:
    _use_environment(
        monkeypatch,
        application,
        registry,
        KAFKA_BOOTSTRAP_SERVERS=secure_broker.sasl_ssl_bootstrap_servers,
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME=USER,
        KAFKA_SASL_PASSWORD="not-the-password",
        KAFKA_CLUSTER_CA_PATH=str(secure_broker.ca_path),
        METRICS_RAISE_ON_ERROR="true",
    )
    return KafkaMetricsConfiguration().make_manager()


async def test_wrong_sasl_ssl_password_raises_one_error(
    monkeypatch: pytest.MonkeyPatch,
    secure_broker: ApacheKafkaBroker,
    registry: LocalSchemaRegistry,
    application: str,
) -> None:
    manager = _wrong_sasl_ssl_password(
        monkeypatch, secure_broker, registry, application
    )
    with pytest.raises(BrokerUnavailableError) as caught:
        await manager.initialize()
    assert secure_broker.sasl_ssl_bootstrap_servers in str(caught.value)
    # Nothing was accepted, so nothing is left to give up at close.
    assert await manager.aclose(timeout=1) == 0


async def test_wrong_sasl_ssl_password_error_says_the_credentials_were_refused(
    monkeypatch: pytest.MonkeyPatch,
    secure_broker: ApacheKafkaBroker,
    registry: LocalSchemaRegistry,
    application: str,
) -> None:
    manager = _wrong_sasl_ssl_password(
        monkeypatch, secure_broker, registry, application
    )
    # aiokafka only logs why a bootstrap failed; an application's logging
    # setup (dictConfig's disable_existing_loggers) may silence that logger.
    monkeypatch.setattr(logging.getLogger("aiokafka"), "disabled", True)
    try:
        with pytest.raises(BrokerUnavailableError) as caught:
            await manager.initialize()
    finally:
        await manager.aclose(timeout=1)
    message = str(caught.value)
    assert "authentication failed" in message.lower(), message
    assert "unreachable" not in message, message


@pytest.fixture(scope="module")
def guarded_registry() -> Iterator[LocalSchemaRegistry]:
    """A registry that asks for HTTP basic authentication."""
    with LocalSchemaRegistry(basic_auth=(USER, REGISTRY_PASSWORD)) as started:
        yield started


@pytest.mark.parametrize("block", ["scram", "plain"])
async def test_the_guides_sasl_ssl_blocks_publish(
    monkeypatch: pytest.MonkeyPatch,
    secure_broker: ApacheKafkaBroker,
    guarded_registry: LocalSchemaRegistry,
    application: str,
    block: str,
) -> None:
    written = environment_files(blocks(GUIDE))[block]
    local = {
        "METRICS_APPLICATION": application,
        "KAFKA_BOOTSTRAP_SERVERS": secure_broker.sasl_ssl_bootstrap_servers,
        "KAFKA_SASL_USERNAME": USER,
        "KAFKA_SASL_PASSWORD": PASSWORD,
        "SCHEMA_MANAGER_REGISTRY_URL": guarded_registry.url,
        "SCHEMA_MANAGER_REGISTRY_USERNAME": USER,
        "SCHEMA_MANAGER_REGISTRY_PASSWORD": REGISTRY_PASSWORD,
    }
    # Only addresses and credentials are replaced: the protocol, the
    # mechanism and the rest are the page's.
    assert set(local) <= set(written)
    assert written["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    if "KAFKA_CLUSTER_CA_PATH" in written:
        local["KAFKA_CLUSTER_CA_PATH"] = str(secure_broker.ca_path)
    else:
        # No CA file: the system's trust store, which trusts the local CA.
        monkeypatch.setenv("SSL_CERT_FILE", str(secure_broker.ca_path))
    _use_environment(
        monkeypatch,
        application,
        guarded_registry,
        **(written | local | {"METRICS_EVENTS_TOPIC_PREFIX": PREFIX}),
    )
    manager = metrics_configuration_factory().make_manager()
    assert isinstance(manager, KafkaEventManager)

    event_id = await _publish(manager)

    mechanism = written["KAFKA_SASL_MECHANISM"]
    [value] = await _read_back(
        secure_broker.sasl_ssl_bootstrap_servers,
        manager.topic,
        guarded_registry.url.replace("://", f"://{USER}:{REGISTRY_PASSWORD}@"),
        security_protocol="SASL_SSL",
        ssl_context=create_ssl_context(cafile=str(secure_broker.ca_path)),
        sasl_mechanism=mechanism,
        sasl_plain_username=USER,
        sasl_plain_password=PASSWORD,
    )
    assert str(value["id"]) == event_id
