"""Plumbing that runs Safir's metrics tests against otel-kafka-events.

Copied by ``safir_compat/run`` to ``tests/conftest.py`` beside Safir's
``tests/metrics/``. It does three things only:

1. makes the ``safir`` modules those tests import resolve to this package;
2. provides the fixtures of Safir's own ``tests/conftest.py`` that the
   metrics tests use, on local servers instead of Docker containers;
3. skips the tests listed in `INTENTIONAL_DIFFERENCES`, each naming the row
   of the README's "Differences from safir.metrics" table that explains it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import otel_kafka_events
import otel_kafka_events.arq
import otel_kafka_events.errors
import otel_kafka_events.fastapi
from otel_kafka_events import config as _config


def _alias_safir() -> None:
    """Put our modules in ``sys.modules`` under Safir's names."""

    def package(name: str) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__path__ = []
        return module

    kafka = types.ModuleType("safir.kafka")
    # The three names the metrics tests take from safir.kafka.
    kafka.KafkaConnectionSettings = _config.KafkaConnectionSettings  # type: ignore[attr-defined]
    kafka.SchemaManagerSettings = _config.SchemaManagerSettings  # type: ignore[attr-defined]
    kafka.SecurityProtocol = _config.KafkaSecurityProtocol  # type: ignore[attr-defined]
    sys.modules.update(
        {
            "safir": package("safir"),
            "safir.metrics": otel_kafka_events,
            "safir.metrics._exceptions": otel_kafka_events.errors,
            "safir.metrics.arq": otel_kafka_events.arq,
            "safir.dependencies": package("safir.dependencies"),
            "safir.dependencies.metrics": otel_kafka_events.fastapi,
            "safir.kafka": kafka,
        }
    )


_alias_safir()

# Imported after the aliases, like Safir's test modules.
import pytest  # noqa: E402
import pytest_asyncio  # noqa: E402
import structlog  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from arq.connections import ArqRedis  # noqa: E402
from arq.worker import Worker  # noqa: E402
from structlog.testing import LogCapture  # noqa: E402

from otel_kafka_events import (  # noqa: E402
    EventManager,
    EventsConfiguration,
    KafkaMetricsConfiguration,
)
from otel_kafka_events_devstack import LocalKafkaStack, RedisServer  # noqa: E402

from .support.kafka import (  # noqa: E402
    KafkaClients,
    KafkaStack,
    make_kafka_clients,
)
from .support.metrics import MetricsStack, make_metrics_stack  # noqa: E402

_ROW = "README, Differences from safir.metrics, row"

INTENTIONAL_DIFFERENCES: dict[str, str] = {
    "test_invalid_payload": (
        f"{_ROW} 'Payload field types': lists and dicts are valid payload"
        " fields here (flat_payloads=True keeps Safir's rule)"
    ),
    "test_bad_kafka_from_start_no_raises": (
        f"{_ROW} 'After an outage': events are buffered and retried, not"
        " dropped with one error log per backoff_interval; and row"
        " 'Publishing after aclose()': a closed manager's publishers raise"
    ),
    "test_bad_kafka_after_initialize": (
        f"{_ROW} 'After an outage': events published while Kafka is down are"
        " buffered and delivered when it is back, with no error log per"
        " publish; the test expects one error log per backoff_interval and"
        " those events dropped"
    ),
    "test_bad_schema_manager_mid_registration": (
        f"{_ROW} 'After an outage': with the registry down, create_publisher"
        " returns the publisher and logs the failed registration (retried"
        " in the background while its events buffer); the test expects a"
        " FailedEventPublisher whose publish logs an error"
    ),
    "test_managed_storage": (
        f"{_ROW} 'Kafka client': without kafka_broker the manager sends"
        " through its own aiokafka client, so it has no FastStream broker"
        " (manager._broker) to ping"
    ),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip the listed tests, saying why (unless SAFIR_COMPAT_RUN_ALL=1, to
    see how they fail)."""
    if os.environ.get("SAFIR_COMPAT_RUN_ALL") == "1":
        return
    for item in items:
        reason = INTENTIONAL_DIFFERENCES.get(item.name)
        if reason is not None:
            item.add_marker(
                pytest.mark.skip(reason=f"intentional difference: {reason}")
            )


@pytest.fixture
def log_output() -> LogCapture:
    """Capture structlog entries."""
    return LogCapture()


@pytest.fixture(autouse=True)
def configure_structlog(log_output: LogCapture) -> Iterator[None]:
    structlog.configure(processors=[log_output])
    yield
    structlog.reset_defaults()


# -- Kafka and the registry: one Apache Kafka broker for the session ---------


@pytest.fixture(scope="session")
def session_kafka_stack() -> Iterator[KafkaStack]:
    # Apache Kafka, like Safir's container, does not create topics on its
    # own: test_topic_not_created depends on it.
    with LocalKafkaStack("kafka") as stack:
        yield KafkaStack.for_local_stack(stack)


async def _delete_topics(bootstrap_servers: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if not t.startswith("__")]
        if topics:
            await admin.delete_topics(topics)
        for _ in range(100):
            if not [t for t in await admin.list_topics() if not t.startswith("__")]:
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


@pytest_asyncio.fixture
async def kafka_stack(session_kafka_stack: KafkaStack) -> KafkaStack:
    """The session's stack, emptied: no topics, no schemas (as Safir resets
    its containers)."""
    await _delete_topics(session_kafka_stack.local.bootstrap_servers)
    session_kafka_stack.local.registry.reset()
    return session_kafka_stack


@pytest_asyncio.fixture
async def kafka_clients(kafka_stack: KafkaStack) -> AsyncIterator[KafkaClients]:
    async with make_kafka_clients(kafka_stack) as clients:
        yield clients


@pytest_asyncio.fixture
async def event_manager(kafka_stack: KafkaStack) -> AsyncIterator[EventManager]:
    """A Kafka event manager on an existing ``what.ever.testapp`` topic."""
    config = KafkaMetricsConfiguration(
        application="testapp",
        enabled=True,
        events=EventsConfiguration(topic_prefix="what.ever"),
        kafka=kafka_stack.kafka_connection_settings,
        schema_manager=kafka_stack.schema_manager_settings,
    )
    manager = config.make_manager()
    await manager.initialize()
    await kafka_stack.local.create_topic("what.ever.testapp")
    yield manager
    await manager.aclose()


@pytest_asyncio.fixture
async def resiliency_metrics_stack(
    kafka_stack: KafkaStack, kafka_clients: KafkaClients
) -> AsyncIterator[MetricsStack]:
    """A metrics stack whose broker and registry the test may stop.

    Safir gives these tests containers of their own on fixed ports; here
    they get the session's broker and registry, which come back on the same
    ports with their data (``kafka_container.start_container_again()``),
    and which this fixture starts again afterwards if the test left them
    stopped. As in Safir, the producer's batches hold one message.
    """
    try:
        async with make_metrics_stack(
            kafka_stack=kafka_stack,
            kafka_clients=kafka_clients,
            kafka_max_batch_size=1,
        ) as stack:
            try:
                yield stack
            finally:
                # Before the manager's aclose(), which drains what it can.
                await asyncio.to_thread(kafka_stack.bring_back)
    finally:
        await asyncio.to_thread(kafka_stack.bring_back)


# -- Redis, for the arq tests --------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest_asyncio.fixture
async def arq_redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    redis = ArqRedis(host=redis_server.host, port=redis_server.port)
    await redis.flushall()
    yield redis
    await redis.aclose(close_connection_pool=True)


@pytest_asyncio.fixture
async def create_arq_worker(
    arq_redis: ArqRedis,
) -> AsyncIterator[Callable[..., Worker]]:
    """Make an arq worker on the test's Redis (one per test)."""
    made: list[Worker] = []

    def create(functions: Any, **options: Any) -> Worker:
        options.setdefault("redis_pool", arq_redis)
        options.setdefault("burst", True)
        options.setdefault("poll_delay", 0)
        worker = Worker(functions=functions, **options)
        made.append(worker)
        return worker

    yield create
    for worker in made:
        await worker.close()
