"""Our stand-in for Safir's ``tests/support/kafka.py``: the same two
dataclasses, on a local broker and registry instead of Docker containers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from faststream.kafka import KafkaBroker
from schema_registry.client import AsyncSchemaRegistryClient

from otel_kafka_events import SchemaRegistrar
from otel_kafka_events.config import (
    KafkaConnectionSettings,
    KafkaSecurityProtocol,
    SchemaManagerSettings,
)
from otel_kafka_events.testing import LocalKafkaStack

__all__ = ["KafkaClients", "KafkaStack", "make_kafka_clients"]


@dataclass
class KafkaStack:
    """Connection settings for the local stack, as Safir's tests read them."""

    local: LocalKafkaStack
    kafka_connection_settings: KafkaConnectionSettings
    schema_manager_settings: SchemaManagerSettings

    @classmethod
    def for_local_stack(cls, local: LocalKafkaStack) -> KafkaStack:
        return cls(
            local=local,
            kafka_connection_settings=KafkaConnectionSettings(
                bootstrap_servers=local.bootstrap_servers,
                security_protocol=KafkaSecurityProtocol.PLAINTEXT,
            ),
            schema_manager_settings=SchemaManagerSettings(
                registry_url=local.registry_url
            ),
        )


@dataclass
class KafkaClients:
    """Clients of the stack, as Safir's ``KafkaClients``."""

    kafka_consumer: AIOKafkaConsumer
    kafka_broker: KafkaBroker
    kafka_admin_client: AIOKafkaAdminClient
    schema_registry_client: AsyncSchemaRegistryClient
    schema_manager: SchemaRegistrar


@asynccontextmanager
async def make_kafka_clients(stack: KafkaStack) -> AsyncIterator[KafkaClients]:
    """Started clients of the stack, stopped afterwards."""
    servers = stack.local.bootstrap_servers
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, client_id="pytest-consumer")
    broker = KafkaBroker(servers, client_id="pytest-broker")
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, client_id="pytest-admin")
    await consumer.start()
    await broker.start()
    await admin.start()
    try:
        yield KafkaClients(
            kafka_consumer=consumer,
            kafka_broker=broker,
            kafka_admin_client=admin,
            schema_registry_client=AsyncSchemaRegistryClient(
                url=stack.schema_manager_settings.registry_url
            ),
            schema_manager=stack.schema_manager_settings.make_manager(),
        )
    finally:
        await consumer.stop()
        await broker.stop()
        await admin.close()
