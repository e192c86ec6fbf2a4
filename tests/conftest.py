"""Shared fixtures: the local stack (one per session) and manager factories.

The layers: ``tests/unit`` (no network), ``tests/integration`` (brokers and
registries), ``tests/peers`` (software we did not write) and
``tests/devstack`` (the development stack itself).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest_asyncio

from otel_kafka_events import KafkaEventManager

if TYPE_CHECKING:
    from otel_kafka_events_devstack import LocalKafkaStack

from .broker_support import capabilities

pytest_plugins = ["otel_kafka_events.testing.pytest_plugin", "tests.peer_support"]

# A separate project with its own pytest configuration, run in a subprocess
# by test_sample_project.py.
collect_ignore = ["sample_project"]

TOPIC_PREFIX = "test.events"

ManagerFactory = Callable[..., Awaitable[KafkaEventManager]]


def unique_application() -> str:
    """An application name (and so a topic) no other test uses."""
    return f"app_{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture
async def make_kafka_manager(
    local_kafka_stack: LocalKafkaStack,
) -> AsyncIterator[ManagerFactory]:
    """Build initialized `KafkaEventManager` objects on a fresh topic each.

    Keyword arguments go to the manager; ``partitions`` (default 1) and
    ``create_topic`` (default True) control the topic, ``initialize``
    (default True) whether `initialize` is called. Managers are closed after
    the test.
    """
    managers: list[KafkaEventManager] = []

    async def factory(
        *,
        partitions: int = 1,
        create_topic: bool = True,
        initialize: bool = True,
        application: str | None = None,
        **kwargs: Any,
    ) -> KafkaEventManager:
        application = application or unique_application()
        if create_topic:
            await local_kafka_stack.create_topic(
                f"{TOPIC_PREFIX}.{application}", partitions=partitions
            )
        kwargs.setdefault("enable_idempotence", capabilities().idempotent_producer)
        kwargs.setdefault("bootstrap_servers", local_kafka_stack.bootstrap_servers)
        kwargs.setdefault("registry_url", local_kafka_stack.registry_url)
        manager = KafkaEventManager(
            application=application, topic_prefix=TOPIC_PREFIX, **kwargs
        )
        managers.append(manager)
        if initialize:
            await manager.initialize()
        return manager

    yield factory
    for manager in managers:
        await manager.aclose(timeout=10)


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """Mark every test that uses the local stack as ``integration``."""
    import pytest

    for item in items:
        if "local_kafka_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
