"""``tail`` lists the broker's topics through aiokafka's consumer client.

The consumer's public ``topics()`` keeps the partitions it fetched to
itself, so ``tail`` asks the consumer's client (not aiokafka's API). With
the installed aiokafka that client is there; where it is not, ``tail``
says so instead of failing on an attribute.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer

from otel_kafka_events._cli._errors import CliError
from otel_kafka_events._cli._tail import _topic_partitions, all_metadata_of


@pytest.fixture
async def consumer() -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer that is never started (so it opens no connection)."""
    made = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")
    yield made
    await made.stop()


async def test_the_installed_aiokafka_has_the_client(
    consumer: AIOKafkaConsumer,
) -> None:
    assert all_metadata_of(consumer) is not None


async def test_a_consumer_laid_out_otherwise_is_refused_with_a_message() -> None:
    laid_out_otherwise = SimpleNamespace(client=object())
    assert all_metadata_of(laid_out_otherwise) is None
    with pytest.raises(CliError, match="no client to list topics"):
        await _topic_partitions(laid_out_otherwise, "events")
