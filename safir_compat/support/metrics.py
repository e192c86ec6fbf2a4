"""Our stand-in for Safir's ``tests/support/metrics.py``.

Safir's manager always publishes through a FastStream broker it manages
(``manager._broker``), which Safir's outage test flushes; this stack's
manager is given one too (``kafka_broker=``, ``manage_kafka_broker=True``),
with the batch size the test asks for, so that the test reaches its
assertions about the outage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from faststream.kafka import KafkaBroker

from otel_kafka_events import (
    EventsConfiguration,
    KafkaEventManager,
    KafkaMetricsConfiguration,
)

from .kafka import KafkaClients, KafkaStack

__all__ = ["MetricsStack", "make_metrics_stack"]


@dataclass
class MetricsStack:
    """A Kafka event manager (initialized) on the ``what.ever.testapp`` topic."""

    kafka_stack: KafkaStack
    kafka_clients: KafkaClients
    kafka_max_batch_size: int
    event_manager: KafkaEventManager
    metrics_config: KafkaMetricsConfiguration


@asynccontextmanager
async def make_metrics_stack(
    *,
    kafka_stack: KafkaStack,
    kafka_clients: KafkaClients,
    kafka_max_batch_size: int = 16384,
) -> AsyncIterator[MetricsStack]:
    config = KafkaMetricsConfiguration(
        application="testapp",
        enabled=True,
        events=EventsConfiguration(topic_prefix="what.ever"),
        kafka=kafka_stack.kafka_connection_settings,
        schema_manager=kafka_stack.schema_manager_settings,
        backoff_interval=timedelta(hours=1),
        raise_on_error=False,
    )
    broker = KafkaBroker(
        kafka_stack.local.bootstrap_servers, max_batch_size=kafka_max_batch_size
    )
    manager = config.make_manager(kafka_broker=broker, manage_kafka_broker=True)
    try:
        await kafka_stack.local.create_topic("what.ever.testapp")
        await manager.initialize()
        yield MetricsStack(
            kafka_stack=kafka_stack,
            kafka_clients=kafka_clients,
            kafka_max_batch_size=kafka_max_batch_size,
            event_manager=manager,
            metrics_config=config,
        )
    finally:
        await manager.aclose()
