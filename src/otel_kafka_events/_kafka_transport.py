"""`Transport` over an aiokafka producer, and what Kafka errors mean.

Everything that knows aiokafka's batch API, its error classes and Kafka's
default partitioner lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.partitioner import murmur2

from ._transport import SendFailure

__all__ = [
    "DEFAULT_MAX_REQUEST_SIZE",
    "AiokafkaTransport",
    "drop_unsent_batches",
    "is_connection_error",
    "kafka_partition",
]

DEFAULT_MAX_REQUEST_SIZE = 1_048_576
"""aiokafka's default ``max_request_size``."""

# After these the producer is unusable (aiokafka's sender stops, or the broker
# forgot the producer id, e.g. after a crash) while the batch was not written.
_PRODUCER_FATAL = (OutOfOrderSequenceNumber, ProducerFenced, UnknownProducerId)

# aiokafka raises these for a broker it cannot talk to; only some of them
# carry ``retriable = True``.
_CONNECTION_ERRORS = frozenset(
    {
        "KafkaConnectionError",
        "KafkaTimeoutError",
        "RequestTimedOutError",
        "NodeNotReadyError",
    }
)


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` means the broker could not be reached or answer."""
    if isinstance(error, KafkaError):
        return type(error).__name__ in _CONNECTION_ERRORS
    return isinstance(error, ConnectionError | TimeoutError | OSError)


# A produce request that got no answer in time: the broker may have written
# it. Only the idempotent producer can send it again without a duplicate.
_NO_ANSWER = frozenset({"RequestTimedOutError", "KafkaTimeoutError"})


def classify(error: BaseException, *, idempotent: bool) -> SendFailure:
    """What a failed send means for its events (see `SendFailure`)."""
    if isinstance(error, _PRODUCER_FATAL):
        return SendFailure.REPLACE_PRODUCER
    if not idempotent and type(error).__name__ in _NO_ANSWER:
        return SendFailure.UNKNOWN
    if is_connection_error(error) or getattr(error, "retriable", False):
        return SendFailure.RETRY
    return SendFailure.REJECT


def kafka_partition(key: bytes, partitions: list[int]) -> int:
    """The partition Kafka's default partitioner gives ``key``."""
    ordered = sorted(partitions)
    index: int = (murmur2(key) & 0x7FFFFFFF) % len(ordered)
    return ordered[index]


def _offset_of(future: asyncio.Future[Any]) -> asyncio.Future[int]:
    """A future of the first offset of a batch aiokafka is sending.

    Whoever stops waiting cancels only the returned future; aiokafka's is
    then still read when it completes, since aiokafka leaves a failed
    batch's exception for the batch API's caller, and an unread one makes
    asyncio print "Future exception was never retrieved".
    """
    result: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def settle(done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            result.cancel()
            return
        error = done.exception()
        if result.done():
            return
        if error is not None:
            result.set_exception(error)
        else:
            result.set_result(int(done.result().offset))

    future.add_done_callback(settle)
    return result


class _Batch:
    """A `RecordBatch` over aiokafka's ``BatchBuilder``."""

    __slots__ = ("builder",)

    def __init__(self, builder: Any) -> None:
        self.builder = builder

    def append(
        self, value: bytearray, timestamp_ms: int, headers: list[tuple[str, bytes]]
    ) -> bool:
        return (
            self.builder.append(
                key=None, value=value, timestamp=timestamp_ms, headers=headers
            )
            is not None
        )


class AiokafkaTransport:
    """Sends record batches with a started ``AIOKafkaProducer``.

    Parameters
    ----------
    producer
        The producer; its lifecycle belongs to the caller.
    idempotent
        Whether the producer was started idempotent (False when unknown):
        only then is a batch that got no answer sent again.
    """

    def __init__(self, producer: AIOKafkaProducer, *, idempotent: bool) -> None:
        self.producer = producer
        self.idempotent = idempotent
        self._max_request_size = producer_max_request_size(producer)

    @property
    def max_request_size(self) -> int:
        """The producer's ``max_request_size``."""
        return self._max_request_size

    def new_batch(self) -> _Batch:
        """Start an empty batch (``max_batch_size`` of the producer)."""
        return _Batch(self.producer.create_batch())

    async def send(self, batch: Any, topic: str, partition: int) -> asyncio.Future[int]:
        """Hand a batch to the producer; await the result for its offset."""
        future = await self.producer.send_batch(
            batch.builder, topic, partition=partition
        )
        return _offset_of(future)

    async def partition_for(self, topic: str, key: bytes) -> int:
        """The partition of ``key``, as Kafka's default partitioner picks it."""
        partitions = await self.producer.partitions_for(topic)
        return kafka_partition(key, list(partitions))

    def classify(self, error: BaseException) -> SendFailure:
        """See `classify`."""
        return classify(error, idempotent=self.idempotent)


def producer_max_request_size(producer: Any) -> int:
    """``max_request_size`` of an aiokafka producer (its default if unknown)."""
    size = getattr(producer, "_max_request_size", None)
    return int(size) if size else DEFAULT_MAX_REQUEST_SIZE


async def drop_unsent_batches(producer: AIOKafkaProducer) -> None:
    """Fail the batches aiokafka still holds, so that stopping is quick.

    ``AIOKafkaProducer.stop`` waits for every batch it holds: without a
    broker that takes ``request_timeout_ms``, and forever with the
    idempotent producer. The events in them were already settled (failed at
    their deadline, or at shutdown), so they must not be sent later either.
    This reaches into aiokafka 0.14's internals; with other versions it does
    nothing.
    """
    sender = getattr(producer, "_sender", None)
    accumulator = getattr(producer, "_message_accumulator", None)
    queued = getattr(accumulator, "_batches", None)
    pending = getattr(accumulator, "_pending_batches", None)
    if sender is None or accumulator is None or queued is None or pending is None:
        return
    # The sender goes first, so that it cannot requeue a batch failed here.
    with contextlib.suppress(Exception):
        await sender.close()
    # A batch that was sent and requeued removes itself from the pending set
    # when it completes; put it back there so that its callback finds it.
    pending.update(batch for batches in queued.values() for batch in batches)
    accumulator.fail_all(KafkaError("the event manager was closed"))
