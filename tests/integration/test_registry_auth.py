"""A registry that requires HTTP basic authentication, and one that hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
import pytest_asyncio

from otel_kafka_events import (
    DeliveryOptions,
    EventPayload,
    KafkaMetricsConfiguration,
    SchemaManagerSettings,
)
from otel_kafka_events.config import KafkaConnectionSettings
from otel_kafka_events.errors import SchemaRegistryError
from otel_kafka_events_devstack import LocalKafkaStack, LocalSchemaRegistry

from ..broker_support import capabilities
from ..conftest import TOPIC_PREFIX, unique_application

PASSWORD = "pw-6d1e-secret"


class Ordered(EventPayload):
    item: str
    waited: timedelta


@pytest.fixture
def guarded_registry() -> Iterator[LocalSchemaRegistry]:
    with LocalSchemaRegistry(basic_auth=("svc", PASSWORD)) as registry:
        yield registry


def config_for(
    stack: LocalKafkaStack, application: str, registry: SchemaManagerSettings
) -> KafkaMetricsConfiguration:
    return KafkaMetricsConfiguration(
        application=application,
        events={"topic_prefix": TOPIC_PREFIX},
        kafka=KafkaConnectionSettings(bootstrap_servers=stack.bootstrap_servers),
        schema_manager=registry,
        delivery=DeliveryOptions(
            raise_on_error=True,
            enable_idempotence=capabilities().idempotent_producer,
        ),
    )


@pytest.mark.parametrize("in_url", [False, True], ids=["settings", "url"])
async def test_registers_with_credentials(
    local_kafka_stack: LocalKafkaStack,
    guarded_registry: LocalSchemaRegistry,
    in_url: bool,
) -> None:
    application = unique_application()
    await local_kafka_stack.create_topic(f"{TOPIC_PREFIX}.{application}")
    if in_url:
        url = guarded_registry.url.replace("http://", f"http://svc:{PASSWORD}@")
        settings = SchemaManagerSettings(registry_url=url)
    else:
        settings = SchemaManagerSettings(
            registry_url=guarded_registry.url,
            registry_username="svc",
            registry_password=PASSWORD,
        )
    manager = config_for(local_kafka_stack, application, settings).make_manager()
    await manager.initialize()
    try:
        publisher = await manager.create_publisher("ordered", Ordered)
        await publisher.publish(Ordered(item="tea", waited=timedelta(0)), wait=True)
        assert manager.stats.delivered == 1
    finally:
        await manager.aclose()


async def test_wrong_password_is_refused_without_showing_it(
    local_kafka_stack: LocalKafkaStack, guarded_registry: LocalSchemaRegistry
) -> None:
    application = unique_application()
    await local_kafka_stack.create_topic(f"{TOPIC_PREFIX}.{application}")
    wrong = "wrong-password-3a9b"
    settings = SchemaManagerSettings(
        registry_url=guarded_registry.url,
        registry_username="svc",
        registry_password=wrong,
    )
    manager = config_for(local_kafka_stack, application, settings).make_manager()
    await manager.initialize()
    try:
        with pytest.raises(SchemaRegistryError, match="HTTP 401") as caught:
            await manager.create_publisher("ordered", Ordered)
        assert wrong not in str(caught.value)
        assert PASSWORD not in str(caught.value)
    finally:
        await manager.aclose()


@pytest_asyncio.fixture
async def silent_registry() -> AsyncIterator[str]:
    """A server that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_registry_timeout_bounds_each_request(
    local_kafka_stack: LocalKafkaStack, silent_registry: str
) -> None:
    application = unique_application()
    await local_kafka_stack.create_topic(f"{TOPIC_PREFIX}.{application}")
    settings = SchemaManagerSettings(registry_url=silent_registry, registry_timeout=0.5)
    manager = config_for(local_kafka_stack, application, settings).make_manager()
    await manager.initialize()
    try:
        started = time.monotonic()
        with pytest.raises(SchemaRegistryError, match=r"did not answer within 0\.5 s"):
            await manager.create_publisher("ordered", Ordered)
        # One request of 0.5 s, not the default of 10 s.
        assert time.monotonic() - started < 3
    finally:
        await manager.aclose()
