"""Pytest fixtures for a service's own tests: a local stack, no Docker.

Enable in a ``conftest.py``::

    pytest_plugins = ["otel_kafka_events.testing.pytest_plugin"]

The fixtures that need a broker start one with
``otel-kafka-events-devstack``, which the ``testing`` extra installs; it is
imported only when such a fixture is used, and without it the fixture fails
with one line saying what to install.

Fixtures
--------
local_kafka_stack
    Session scope: a started `LocalKafkaStack`. The broker kind comes from the
    ``OTEL_KAFKA_EVENTS_TEST_BROKER`` environment variable (``tansu`` by
    default, ``noida`` or ``kafka``).
local_kafka_env
    The stack's settings (``KAFKA_BOOTSTRAP_SERVERS``,
    ``SCHEMA_MANAGER_REGISTRY_URL`` and, for Tansu,
    ``METRICS_ENABLE_IDEMPOTENCE=false``) set in the environment for one
    test; the fixture's value is that mapping.
events_topic
    Async: a new `EventsTopic` on the stack, with the ``topic_prefix`` and
    ``application`` a manager needs; deleted after the test.
metrics_env
    `local_kafka_env` plus ``METRICS_APPLICATION`` and
    ``METRICS_EVENTS_TOPIC_PREFIX`` of `events_topic`: a service that builds
    its manager with `metrics_configuration_factory` publishes to that topic.
mock_event_manager
    Async: an initialized `MockEventManager`, closed after the test, for
    unit tests that only check what was published.
consume_events
    Async helper: ``await consume_events(topic, count)`` reads and decodes
    what was published (see `otel_kafka_events.testing.consume_events`).
kafka_topic
    Async: the name of a new one-partition topic, deleted after the test.

The async fixtures need ``pytest-asyncio``; they are declared with
``pytest_asyncio.fixture`` so they work in both strict and auto mode.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from .._encoding._records import DecodedRecord
from .._manager import MockEventManager
from ._events import EventsTopic
from ._events import consume_events as _consume_events

if TYPE_CHECKING:
    from otel_kafka_events_devstack import LocalKafkaStack

__all__ = [
    "consume_events",
    "events_topic",
    "kafka_topic",
    "local_kafka_env",
    "local_kafka_stack",
    "metrics_env",
    "mock_event_manager",
]

EVENTS_TOPIC_PREFIX = "test.events"
"""``topic_prefix`` of the topics `events_topic` creates."""

ConsumeEvents = Callable[..., Awaitable[list[DecodedRecord]]]

DEVSTACK_MISSING = (
    "the local Kafka stack comes with otel-kafka-events-devstack, which is not"
    " installed: pip install 'otel-kafka-events[testing]'"
    " (or otel-kafka-events-devstack)"
)
"""The one line a fixture that needs a broker fails with, without it."""


def _devstack() -> ModuleType:
    """``otel_kafka_events_devstack``, or fail the test saying what to install."""
    try:
        import otel_kafka_events_devstack
    except ImportError as exc:
        missing = f"{DEVSTACK_MISSING} ({exc})"
    else:
        return otel_kafka_events_devstack
    # Outside the except block: the report is this one line, not the chain.
    pytest.fail(missing, pytrace=False)


@pytest.fixture(scope="session")
def local_kafka_stack() -> Iterator[LocalKafkaStack]:
    """A broker and schema registry shared by the whole test session.

    Started from the main thread on purpose: the broker process is tied to
    the lifetime of the thread that starts it.
    """
    with _devstack().LocalKafkaStack() as stack:
        yield stack


@pytest.fixture
def local_kafka_env(
    local_kafka_stack: LocalKafkaStack, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The stack's connection settings, set in the environment for one test."""
    environment: dict[str, str] = _devstack().stack_environment(
        local_kafka_stack.bootstrap_servers,
        local_kafka_stack.registry_url,
        idempotent_producer=local_kafka_stack.broker.capabilities.idempotent_producer,
    )
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if "METRICS_ENABLE_IDEMPOTENCE" not in environment:
        monkeypatch.delenv("METRICS_ENABLE_IDEMPOTENCE", raising=False)
    return environment


@pytest_asyncio.fixture
async def events_topic(
    local_kafka_stack: LocalKafkaStack,
) -> AsyncIterator[EventsTopic]:
    """A fresh one-partition events topic; deleted afterwards.

    Its application name is unique, so the schemas a test registers do not
    meet another test's.
    """
    topic = EventsTopic(EVENTS_TOPIC_PREFIX, f"app_{uuid.uuid4().hex[:12]}")
    await local_kafka_stack.create_topic(topic.name, partitions=1)
    yield topic
    with contextlib.suppress(Exception):
        await local_kafka_stack.delete_topic(topic.name)


@pytest.fixture
def metrics_env(
    local_kafka_env: dict[str, str],
    events_topic: EventsTopic,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Everything a service configured from the environment needs."""
    environment = {
        **local_kafka_env,
        "METRICS_APPLICATION": events_topic.application,
        "METRICS_EVENTS_TOPIC_PREFIX": events_topic.topic_prefix,
    }
    for name in ("METRICS_APPLICATION", "METRICS_EVENTS_TOPIC_PREFIX"):
        monkeypatch.setenv(name, environment[name])
    for name in ("METRICS_ENABLED", "METRICS_MOCK"):
        monkeypatch.delenv(name, raising=False)
    return environment


@pytest_asyncio.fixture
async def mock_event_manager() -> AsyncIterator[MockEventManager]:
    """An initialized `MockEventManager` (application ``test``)."""
    manager = MockEventManager("test", EVENTS_TOPIC_PREFIX)
    await manager.initialize()
    yield manager
    await manager.aclose()


@pytest.fixture
def consume_events(local_kafka_stack: LocalKafkaStack) -> ConsumeEvents:
    """``await consume_events(topic, count, timeout=10.0)``: decoded records."""

    async def consume(
        topic: str | EventsTopic, count: int, *, timeout: float = 10.0
    ) -> list[DecodedRecord]:
        name = topic.name if isinstance(topic, EventsTopic) else topic
        return await _consume_events(local_kafka_stack, name, count, timeout=timeout)

    return consume


@pytest_asyncio.fixture
async def kafka_topic(
    request: pytest.FixtureRequest, local_kafka_stack: LocalKafkaStack
) -> AsyncIterator[str]:
    """A fresh one-partition topic named after the test; deleted afterwards."""
    # Named after the test so that broker logs point back to it.
    name = local_kafka_stack.unique_topic(f"test.{request.node.name}")
    await local_kafka_stack.create_topic(name, partitions=1)
    yield name
    # Best effort: a failed delete must not turn a passing test into an error,
    # and a leftover uniquely named topic harms nothing.
    with contextlib.suppress(Exception):
        await local_kafka_stack.delete_topic(name)
