"""Safir's constructor: a FastStream broker, an admin client, a schema manager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient
from faststream.kafka import KafkaBroker

from otel_kafka_events import (
    EventManagerUsageError,
    EventPayload,
    KafkaEventManager,
    KafkaMetricsConfiguration,
    KafkaTopicError,
    SchemaManagerSettings,
)
from otel_kafka_events.config import KafkaConnectionSettings
from otel_kafka_events.testing import consume_events
from otel_kafka_events_devstack import LocalKafkaStack

from ..broker_support import requires
from ..conftest import TOPIC_PREFIX, unique_application


class Ordered(EventPayload):
    item: str
    waited: timedelta


@pytest_asyncio.fixture
async def broker(local_kafka_stack: LocalKafkaStack) -> AsyncIterator[KafkaBroker]:
    broker = KafkaBroker(local_kafka_stack.bootstrap_servers)
    await broker.start()
    yield broker
    await broker.stop()


@pytest_asyncio.fixture
async def admin(
    local_kafka_stack: LocalKafkaStack,
) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=local_kafka_stack.bootstrap_servers)
    await admin.start()
    yield admin
    await admin.close()


async def test_safir_signature_publishes_through_the_broker(
    local_kafka_stack: LocalKafkaStack,
    broker: KafkaBroker,
    admin: AIOKafkaAdminClient,
) -> None:
    application = unique_application()
    topic = f"{TOPIC_PREFIX}.{application}"
    await local_kafka_stack.create_topic(topic)
    manager = KafkaEventManager(
        application=application,
        topic_prefix=TOPIC_PREFIX,
        kafka_broker=broker,
        kafka_admin_client=admin,
        schema_manager=SchemaManagerSettings(
            registry_url=local_kafka_stack.registry_url
        ).make_manager(),
        manage_kafka_broker=False,
    )
    await manager.initialize()
    publisher = await manager.create_publisher("ordered", Ordered)
    await publisher.publish(Ordered(item="tea", waited=timedelta(1)), wait=True)
    assert await manager.aclose() == 0
    # The caller's broker and admin client stay usable.
    assert await broker.ping(timeout=5)
    assert await admin.list_topics()
    events = await consume_events(local_kafka_stack, topic, count=1)
    assert events[0].value is not None
    assert events[0].value["item"] == "tea"


async def test_managed_broker_is_started_and_stopped(
    local_kafka_stack: LocalKafkaStack,
) -> None:
    application = unique_application()
    await local_kafka_stack.create_topic(f"{TOPIC_PREFIX}.{application}")
    broker = KafkaBroker(local_kafka_stack.bootstrap_servers)
    config = KafkaMetricsConfiguration(
        application=application,
        events={"topic_prefix": TOPIC_PREFIX},
        kafka=KafkaConnectionSettings(
            bootstrap_servers=local_kafka_stack.bootstrap_servers
        ),
        schema_manager=SchemaManagerSettings(
            registry_url=local_kafka_stack.registry_url
        ),
    )
    manager = config.make_manager(kafka_broker=broker, manage_kafka_broker=True)
    await manager.initialize()
    publisher = await manager.create_publisher("ordered", Ordered)
    await publisher.publish(Ordered(item="tea", waited=timedelta(0)), wait=True)
    await manager.aclose()
    assert not await broker.ping(timeout=1)


@requires("topic_absence")
async def test_topic_checked_with_the_broker(
    broker: KafkaBroker, admin: AIOKafkaAdminClient, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = KafkaEventManager(
        application=unique_application(),
        topic_prefix=TOPIC_PREFIX,
        kafka_broker=broker,
        kafka_admin_client=admin,
        registry_url=local_kafka_stack.registry_url,
    )
    await manager.initialize()
    try:
        with pytest.raises(KafkaTopicError):
            await manager.create_publisher("ordered", Ordered)
    finally:
        await manager.aclose()


async def test_unstarted_broker_is_refused(
    local_kafka_stack: LocalKafkaStack,
) -> None:
    manager = KafkaEventManager(
        application=unique_application(),
        topic_prefix=TOPIC_PREFIX,
        kafka_broker=KafkaBroker(local_kafka_stack.bootstrap_servers),
        bootstrap_servers=local_kafka_stack.bootstrap_servers,
        registry_url=local_kafka_stack.registry_url,
    )
    with pytest.raises(EventManagerUsageError, match="start it"):
        await manager.initialize()
    await manager.aclose()
