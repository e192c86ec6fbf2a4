"""Our stand-in for Safir's ``tests/support/kafka.py``: the same two
dataclasses, on a local broker and registry instead of Docker containers.

Safir's outage tests stop and start its containers through
``KafkaStack.kafka_container`` and ``KafkaStack.schema_registry_container``;
`BrokerContainer` and `RegistryContainer` do the same to the local servers,
on the same ports, keeping their data.
"""

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
from otel_kafka_events_devstack import LocalBroker, LocalKafkaStack, LocalSchemaRegistry

__all__ = [
    "BrokerContainer",
    "KafkaClients",
    "KafkaStack",
    "RegistryContainer",
    "make_kafka_clients",
]


@dataclass
class BrokerContainer:
    """The two methods of Safir's Kafka container its outage test calls."""

    broker: LocalBroker

    def stop_container(self) -> None:
        """Stop the broker, keeping its port and its data (topics, records).

        ``kill`` rather than ``stop``: a broker's ``stop`` also deletes its
        work directory, as removing a container would, while Docker's
        ``container.stop()`` keeps the container's data for a restart.
        """
        self.broker.kill()

    def start_container_again(self) -> None:
        """Start the broker again on the same port, with its data."""
        self.broker.start()


@dataclass
class RegistryContainer:
    """Safir's schema registry container: ``stop`` takes it away."""

    registry: LocalSchemaRegistry

    def stop(self) -> None:
        """Stop serving; the port and the schemas are kept for `start`."""
        self.registry.stop()

    def start(self) -> None:
        self.registry.start()


@dataclass
class KafkaStack:
    """Connection settings for the local stack, as Safir's tests read them."""

    local: LocalKafkaStack
    kafka_connection_settings: KafkaConnectionSettings
    schema_manager_settings: SchemaManagerSettings
    kafka_container: BrokerContainer
    schema_registry_container: RegistryContainer

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
            kafka_container=BrokerContainer(local.broker),
            schema_registry_container=RegistryContainer(local.registry),
        )

    def bring_back(self) -> None:
        """Start whatever a test stopped (no-op for what is running)."""
        self.local.broker.start()
        self.local.registry.start()


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
