"""`Transport` over an aiokafka producer, and what Kafka errors mean.

Everything that knows aiokafka's batch API, its error classes and Kafka's
default partitioner lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.partitioner import murmur2

from ._transport import SendDone, SendFailure

__all__ = [
    "DEFAULT_MAX_REQUEST_SIZE",
    "AiokafkaTransport",
    "is_connection_error",
    "kafka_partition",
    "stop_producer",
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


def _report_to(done: SendDone) -> Callable[[asyncio.Future[Any]], None]:
    """A callback for aiokafka's batch future that tells ``done``.

    The future's exception is always read: aiokafka leaves a failed batch's
    exception for the batch API's caller, and an unread one makes asyncio
    print "Future exception was never retrieved".
    """

    def report(future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            done(None, asyncio.CancelledError("the producer cancelled the batch"))
            return
        error = future.exception()
        if error is not None:
            done(None, error)
        else:
            done(int(future.result().offset), None)

    return report


class _Batch:
    """A `RecordBatch` over aiokafka's ``BatchBuilder``.

    ``BatchBuilder.append`` is a Python method around the C record builder
    it holds, taking keywords and checking serializers we never set; records
    go straight to that C builder instead (about a third less time per
    record), and the count of records is handed back to the
    ``BatchBuilder`` before it is sent (`finish`). With an aiokafka whose
    builder is laid out otherwise, ``BatchBuilder.append`` is used.
    """

    __slots__ = ("_append_record", "_count", "builder")

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        records = getattr(builder, "_builder", None)
        direct = isinstance(getattr(builder, "_relative_offset", None), int)
        self._append_record = records.append if direct and records else None
        self._count = 0

    @property
    def direct(self) -> bool:
        """Whether records go straight to the C record builder."""
        return self._append_record is not None

    def append(
        self, value: bytearray, timestamp_ms: int, headers: list[tuple[str, bytes]]
    ) -> bool:
        append_record = self._append_record
        if append_record is None:
            return (
                self.builder.append(
                    key=None, value=value, timestamp=timestamp_ms, headers=headers
                )
                is not None
            )
        if append_record(self._count, timestamp_ms, None, value, headers) is None:
            return False
        self._count += 1
        return True

    def finish(self) -> Any:
        """The ``BatchBuilder``, closed and counting its records."""
        if self._append_record is not None:
            self.builder._relative_offset = self._count
        self.builder.close()
        return self.builder


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

    async def send(
        self, batch: Any, topic: str, partition: int, done: SendDone
    ) -> None:
        """Hand a batch to the producer; ``done`` hears its offset or error."""
        future = await self.producer.send_batch(
            batch.finish(), topic, partition=partition
        )
        future.add_done_callback(_report_to(done))

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


async def stop_producer(
    producer: AIOKafkaProducer, timeout: float, *, abandoned: bool
) -> None:
    """Stop an aiokafka producer within about ``timeout`` seconds.

    ``AIOKafkaProducer.stop`` waits for every batch it holds and every
    request in flight: when the broker does not answer (down, paused, a
    broken network) that takes ``request_timeout_ms``, and forever for the
    batches of an idempotent producer. Here, once the batches are given up
    (``abandoned``: their events were already settled) or the time is up,
    aiokafka's sender is stopped while its connections are aborted (as often
    as it opens new ones), then the batches it still holds are failed, and
    the stop goes on from there. Nothing given up is written later, and the
    producer ends closed, so no ResourceWarning follows. This reaches into
    aiokafka 0.14's internals; with other versions it only calls ``stop``.

    Parameters
    ----------
    producer
        A started producer.
    timeout
        Seconds a graceful stop may take when nothing was given up.
    abandoned
        Whether batches were given up that the producer may still hold.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout, 0.0)
    if abandoned:
        await _give_up_sends(producer, deadline + 1.0)
    stopping = asyncio.ensure_future(producer.stop())
    await asyncio.wait({stopping}, timeout=max(deadline - loop.time(), 0.0))
    if not stopping.done():
        # Out of time: what the producer still holds is given up now.
        await _give_up_sends(producer, loop.time() + 1.0)
        await asyncio.wait({stopping}, timeout=1.0)
        stopping.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await stopping
    # A stop that failed half-way leaves the client open: close it on its own.
    with contextlib.suppress(TimeoutError, Exception):
        async with asyncio.timeout(1.0):
            await producer.client.close()


async def _give_up_sends(producer: AIOKafkaProducer, until: float) -> None:
    """Stop aiokafka's sender, then fail the batches it held.

    Its requests in flight end when their connections are aborted, which
    is done as often as it opens new ones, until the sender has stopped or
    ``until`` (loop time) has passed. The batches are failed only then: the
    sender must not be handling them at the same time.
    """
    loop = asyncio.get_running_loop()
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        closing = asyncio.ensure_future(sender.close())
        while not closing.done() and loop.time() < until:
            _abort_connections(producer)
            await asyncio.wait({closing}, timeout=0.02)
        closing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await closing
    _abort_connections(producer)
    accumulator = getattr(producer, "_message_accumulator", None)
    queued = getattr(accumulator, "_batches", None)
    pending = getattr(accumulator, "_pending_batches", None)
    if accumulator is not None and queued is not None and pending is not None:
        # A batch that was sent and requeued removes itself from the pending
        # set when it completes; put it back there so that its callback
        # finds it.
        pending.update(batch for batches in queued.values() for batch in batches)
        with contextlib.suppress(Exception):
            accumulator.fail_all(KafkaError("the event manager was closed"))
        # Failing a batch also fails its drain waiter, which only aiokafka's
        # sender would have read; read it here, or asyncio reports it.
        for batch in pending:
            waiter = getattr(batch, "_drain_waiter", None)
            if waiter is not None and waiter.done() and not waiter.cancelled():
                waiter.exception()


def _abort_connections(producer: AIOKafkaProducer) -> None:
    """Abort the producer's connections: their requests fail at once."""
    connections = getattr(producer.client, "_conns", None) or {}
    for connection in list(connections.values()):
        writer = getattr(connection, "_writer", None)
        with contextlib.suppress(Exception):
            if writer is not None:
                # Unsent bytes are dropped: a graceful close would wait for
                # a broker that does not read them.
                writer.transport.abort()
            connection.close()
