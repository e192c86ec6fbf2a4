"""Finding the aiokafka producer inside a FastStream broker.

FastStream keeps its producer in private attributes that moved between
releases; `producer_of` knows two layouts and refuses any other broker with
a message that says what to do, rather than failing on an attribute. The
installed FastStream's layout is exercised with a real broker in
``tests/integration/test_faststream_broker.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from otel_kafka_events._delivery._faststream import producer_of
from otel_kafka_events.errors import EventManagerUsageError


@pytest.fixture
async def producer() -> AsyncIterator[AIOKafkaProducer]:
    made = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")
    yield made
    await made.stop()


def layout_06(producer: Any) -> Any:
    """FastStream 0.6 and 0.7: config.producer._producer.producer."""
    state = SimpleNamespace(producer=producer)
    return SimpleNamespace(
        config=SimpleNamespace(producer=SimpleNamespace(_producer=state))
    )


def layout_05(producer: Any) -> Any:
    """FastStream 0.5: _producer._producer."""
    return SimpleNamespace(_producer=SimpleNamespace(_producer=producer))


@pytest.mark.parametrize("layout", [layout_06, layout_05])
async def test_known_layouts_give_the_producer(
    producer: AIOKafkaProducer, layout: Any
) -> None:
    assert producer_of(layout(producer)) is producer


class _Unset:
    """FastStream raises its own error for a producer not set yet."""

    @property
    def _producer(self) -> Any:
        raise RuntimeError("the broker is not started")


@pytest.mark.parametrize(
    "broker",
    [
        SimpleNamespace(),
        SimpleNamespace(config=SimpleNamespace(producer=_Unset())),
        layout_05(object()),
        layout_06(None),
    ],
    ids=["another layout", "not started", "not aiokafka", "no producer"],
)
def test_any_other_broker_is_refused_with_what_to_do(broker: Any) -> None:
    with pytest.raises(EventManagerUsageError, match="start it before initialize"):
        producer_of(broker)
