"""Configuration from the environment against real Kafka's secure listeners.

A service configured with Safir's variables for SASL_PLAINTEXT (SCRAM-SHA-512)
or SSL publishes through `KafkaMetricsConfiguration` unchanged. Only Apache
Kafka offers these listeners, so the module runs in the Kafka leg.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from otel_kafka_events import EventPayload, KafkaEventManager
from otel_kafka_events.config import KafkaMetricsConfiguration
from otel_kafka_events.errors import BrokerUnavailableError
from otel_kafka_events_devstack import LocalSchemaRegistry
from otel_kafka_events_devstack._apache_kafka import ApacheKafkaBroker, find_java

from ..broker_support import only_in_leg

pytestmark = [
    pytest.mark.integration,
    only_in_leg("kafka"),
    pytest.mark.skipif(find_java() is None, reason="needs java (17+) on PATH"),
    pytest.mark.timeout(180),
]

USER = "svc"
PASSWORD = "svc-secret"
PREFIX = "secure.events"


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


async def _publish(manager: KafkaEventManager) -> None:
    await manager.initialize()
    publisher = await manager.create_publisher("audit", Audit)
    event = await publisher.publish(Audit(action="login"), wait=True)
    assert await manager.aclose() == 0
    assert manager.stats.delivered == 1
    assert event.application == manager.application


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
