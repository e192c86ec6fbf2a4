"""Pytest fixtures for a local Kafka-protocol broker and schema registry.

Enable in a ``conftest.py``::

    pytest_plugins = ["otel_kafka_events.testing.pytest_plugin"]

Fixtures
--------
local_kafka_stack
    Session scope: a started `LocalKafkaStack`. The broker kind comes from the
    ``OTEL_KAFKA_EVENTS_TEST_BROKER`` environment variable (``tansu`` by
    default, ``noida`` or ``kafka``).
kafka_topic
    Function scope, async: the name of a new one-partition topic, deleted
    after the test.

The async fixture needs ``pytest-asyncio``; it is declared with
``pytest_asyncio.fixture`` so it works in both strict and auto mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from ._stack import LocalKafkaStack

__all__ = ["kafka_topic", "local_kafka_stack"]


@pytest.fixture(scope="session")
def local_kafka_stack() -> Iterator[LocalKafkaStack]:
    """A broker and schema registry shared by the whole test session.

    Started from the main thread on purpose: the broker process is tied to
    the lifetime of the thread that starts it.
    """
    with LocalKafkaStack() as stack:
        yield stack


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
