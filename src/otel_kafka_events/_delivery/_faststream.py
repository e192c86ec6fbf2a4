"""Publishing through a FastStream ``KafkaBroker``, as Safir does.

Safir's `KafkaEventManager` takes a FastStream broker; a service that
already has one (a FastStream app) passes it so that events share its
connection. We publish through the aiokafka producer inside it. FastStream
keeps that producer in private attributes that moved between releases, so
the places it is known to be are tried in turn, and a broker in which none
holds a started producer is refused with a message that says so.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiokafka import AIOKafkaProducer

from ..errors import EventManagerUsageError

__all__ = ["producer_of", "start_broker", "stop_broker"]

# Attribute paths from the broker to its aiokafka producer: FastStream 0.6
# and 0.7 (config.producer is the broker's producer wrapper, holding a state
# object whose producer is aiokafka's), then 0.5.
_PRODUCER_PATHS: tuple[tuple[str, ...], ...] = (
    ("config", "producer", "_producer", "producer"),
    ("_producer", "_producer"),
)


def producer_of(broker: Any) -> AIOKafkaProducer:
    """The started aiokafka producer of a FastStream ``KafkaBroker``.

    Raises
    ------
    EventManagerUsageError
        If the broker holds no started aiokafka producer (not started yet,
        or a FastStream release whose layout is unknown here).
    """
    for path in _PRODUCER_PATHS:
        found: Any = broker
        for name in path:
            try:
                found = getattr(found, name)
            except Exception:  # FastStream raises its own error when unset.
                found = None
                break
        if isinstance(found, AIOKafkaProducer):
            return found
    raise EventManagerUsageError(
        "The FastStream broker has no started aiokafka producer: start it"
        " before initialize() (or pass manage_kafka_broker=True), or pass"
        " bootstrap_servers instead of kafka_broker"
    )


async def start_broker(broker: Any) -> None:
    """Start a FastStream broker (its ``start`` coroutine)."""
    await broker.start()


async def stop_broker(broker: Any) -> None:
    """Stop a FastStream broker: ``stop`` in 0.6 and later, ``close`` before."""
    stop = getattr(broker, "stop", None) or broker.close
    with contextlib.suppress(Exception):
        await stop()
