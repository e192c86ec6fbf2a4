"""aiokafka's own producer, where events still go through it: its batches,
watching how each ends, and stopping it within a budget.

Used for a producer given to the manager, FastStream's, and one made with
options our `ProducePipeline` does not take (`pipeline_takes`). Several
of these helpers reach into aiokafka's insides as laid out from 0.11 to
0.14; each checks that layout first and falls back to the public API
(see docs/contributing/architecture.md, "Code we do not own").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from .._foreign import contained, describe
from ._kafka_errors import gave_up_retrying
from ._sent import MaybeSentError, NotSentError
from ._transport import SendDone

__all__ = [
    "AiokafkaBatch",
    "direct_append_works",
    "direct_for",
    "knows_insides",
    "stop_producer",
    "watch_batch",
]


def _queued_batch(producer: Any, topic: str, partition: int, builder: Any) -> Any:
    """aiokafka's own batch around ``builder``, which ``send_batch`` just
    queued (the last of its partition's queue), or None where aiokafka is
    laid out otherwise."""
    accumulator = getattr(producer, "_message_accumulator", None)
    queues = getattr(accumulator, "_batches", None)
    queue = (
        queues.get(TopicPartition(topic, partition))
        if isinstance(queues, dict)
        else None
    )
    batch: Any = queue[-1] if queue else None
    if (
        getattr(batch, "_builder", None) is not builder
        or not isinstance(getattr(batch, "retry_count", None), int)
        or not isinstance(getattr(batch, "future", None), asyncio.Future)
    ):
        return None
    return batch


def _sent_probe(queued: Any) -> Callable[[], bool]:
    """Whether the batch ``send_batch`` just queued was ever sent.

    aiokafka counts each time a batch is drained for a request
    (``retry_count`` of its batch, `_queued_batch`). Where aiokafka is laid
    out otherwise, a failed batch counts as sent: that reports "not
    acknowledged" rather than risk a duplicate.
    """
    if queued is None:
        return lambda: True
    return lambda: bool(queued.retry_count)


def watch_batch(
    producer: Any,
    topic: str,
    partition: int,
    builder: Any,
    shielded: asyncio.Future[Any],
    done: SendDone,
) -> None:
    """Have ``done`` told how the batch ``send_batch`` just queued ends.

    ``send_batch`` returns the batch's future behind ``asyncio.shield``,
    which passes the outcome on a turn of the event loop later; aiokafka's
    own batch (`_queued_batch`) tells at once. Where it is found, the
    shield is cancelled (the outcome is read from the batch); elsewhere the
    shield tells, a turn later.
    """
    queued = _queued_batch(producer, topic, partition, builder)
    report = _report_to(done, _sent_probe(queued))
    if queued is None:
        shielded.add_done_callback(report)
        return
    queued.future.add_done_callback(report)
    if shielded is not queued.future:
        shielded.cancel()


def _report_to(
    done: SendDone, was_sent: Callable[[], bool]
) -> Callable[[asyncio.Future[Any]], None]:
    """A callback for aiokafka's batch future that tells ``done``.

    aiokafka retries a batch itself and fails it with a retriable error only
    when it gives up (the batch expired while its partition had no leader,
    say). If the batch had been sent by then, an earlier attempt may be
    written, so that failure is reported as `MaybeSentError`: sending its
    events again in a new batch could write them twice.

    The future's exception is always read: aiokafka leaves a failed batch's
    exception for the batch API's caller, and an unread one makes asyncio
    print "Future exception was never retrieved".
    """

    def report(future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            done(None, NotSentError("the producer cancelled the batch"))
            return
        error = future.exception()
        if error is not None:
            if gave_up_retrying(error) and was_sent():
                written = MaybeSentError(
                    f"{describe(error)}, after the batch was sent:"
                    " the broker may have it"
                )
                written.__cause__ = error
                error = written
            done(None, error)
            return
        try:
            offset = int(future.result().offset)
        except Exception as exc:
            done(None, MaybeSentError(f"unreadable acknowledgement: {describe(exc)}"))
            return
        done(offset, None)

    return report


class AiokafkaBatch:
    """A `RecordBatch` over aiokafka's ``BatchBuilder``.

    ``BatchBuilder.append`` is a Python method around the C record builder
    it holds, taking keywords and checking serializers we never set; records
    go straight to that C builder instead (about a third less time per
    record), and the count of records is handed back to the
    ``BatchBuilder`` before it is sent (`finish`). That builder is not
    aiokafka's API: records go to it only when ``direct`` (which
    `AiokafkaTransport` sets where `direct_append_works`) and the
    ``BatchBuilder`` is laid out as known; otherwise ``BatchBuilder.append``
    is used, the plain path.
    """

    __slots__ = ("_append_record", "_count", "builder")

    def __init__(self, builder: Any, *, direct: bool = True) -> None:
        self.builder = builder
        records = getattr(builder, "_builder", None)
        direct = (
            direct
            and isinstance(getattr(builder, "_relative_offset", None), int)
            and callable(getattr(records, "append", None))
        )
        self._append_record = records.append if direct and records else None
        self._count = 0

    @property
    def direct(self) -> bool:
        """Whether records go straight to the C record builder."""
        return self._append_record is not None

    def append(
        self,
        key: bytes | None,
        value: bytearray,
        timestamp_ms: int,
        headers: list[tuple[str, bytes]],
    ) -> bool:
        append_record = self._append_record
        if append_record is None:
            return (
                self.builder.append(
                    key=key, value=value, timestamp=timestamp_ms, headers=headers
                )
                is not None
            )
        if append_record(self._count, timestamp_ms, key, value, headers) is None:
            return False
        self._count += 1
        return True

    def finish(self) -> Any:
        """The ``BatchBuilder``, closed and counting its records."""
        if self._append_record is not None:
            self.builder._relative_offset = self._count
        self.builder.close()
        return self.builder


# Records of the check of `direct_append_works`: with and without a key and
# headers, an empty value, timestamps apart.
_PROBE_RECORDS: tuple[
    tuple[bytes | None, bytearray, int, list[tuple[str, bytes]]], ...
] = (
    (None, bytearray(b"\x00\x00\x00\x00\x01value"), 1_700_000_000_000, []),
    (b"key", bytearray(b"v" * 300), 1_700_000_000_123, [("traceparent", b"00-ab")]),
    (b"", bytearray(), 1_600_000_000_000, [("a", b""), ("b", b"\xff" * 3)]),
)


# Whether records may go straight to a kind of C record builder: checked
# once per kind (`direct_append_works`).
_direct_kinds: dict[type[Any], bool] = {}


def direct_append_works(new_builder: Callable[[], Any]) -> bool:
    """Whether `AiokafkaBatch`'s direct path builds the batch aiokafka's own
    ``BatchBuilder.append`` builds.

    Two builders from ``new_builder`` (``producer.create_batch``) take the
    same records, one straight to its C record builder and one through
    ``BatchBuilder.append``; the batches built must be the same bytes.
    Anything else (a builder laid out otherwise, an ``append`` that takes
    other arguments or counts otherwise, an error) means no.
    """
    try:
        plain = AiokafkaBatch(new_builder(), direct=False)
        direct = AiokafkaBatch(new_builder())
        if not direct.direct:
            return False
        for key, value, timestamp_ms, headers in _PROBE_RECORDS:
            if not plain.append(key, value, timestamp_ms, headers):
                return False
            if not direct.append(key, value, timestamp_ms, headers):
                return False
        plain_builder, direct_builder = plain.finish(), direct.finish()
        if plain_builder.record_count() != direct_builder.record_count():
            return False
        # Only the sender builds a batch; `_build` is where aiokafka does it.
        built: bytes = direct_builder._build()
        return bool(built == plain_builder._build())
    except Exception:
        return False


def direct_for(producer: AIOKafkaProducer, builder: Any) -> bool:
    """Whether records may go straight to ``builder``'s record builder."""
    kind = type(getattr(builder, "_builder", None))
    direct = _direct_kinds.get(kind)
    if direct is None:
        direct = _direct_kinds[kind] = direct_append_works(producer.create_batch)
    return direct


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
    aiokafka's internals (as laid out from 0.11 to 0.14, `knows_insides`);
    where they are laid out otherwise it only calls ``stop``, bounded by
    the time left, and closes the client.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout, 0.0)
    insides = knows_insides(producer)
    # Giving up and closing get a tenth of the budget each, at least 20 ms.
    slice_ = max(timeout / 10, 0.02)
    if abandoned and insides:
        await _give_up_sends(producer, loop.time() + slice_)
    stopping = asyncio.ensure_future(contained(producer.stop()))
    await asyncio.wait({stopping}, timeout=max(deadline - loop.time() - slice_, 0.0))
    if not stopping.done() or stopping.exception() is not None:
        # Out of time, or the stop failed: what the producer still holds is
        # given up now, and its sender stopped.
        if insides:
            await _give_up_sends(producer, loop.time() + slice_ / 2)
        await asyncio.wait({stopping}, timeout=slice_ / 2)
        stopping.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await stopping
    # A stop that failed half-way leaves the client open: close it on its own.
    with contextlib.suppress(TimeoutError, Exception):
        async with asyncio.timeout(max(deadline - loop.time(), 0.01)):
            await contained(producer.client.close())
    if insides:
        _abort_connections(producer)


def knows_insides(producer: Any) -> bool:
    """Whether ``producer`` is laid out as `stop_producer` reaches into it:
    aiokafka's sender (with ``close``), its accumulator's queued batches (a
    mapping) and batches in flight (a set), and its client's connections (a
    dict), as from aiokafka 0.11 to 0.14."""
    sender = getattr(producer, "_sender", None)
    accumulator = getattr(producer, "_message_accumulator", None)
    connections = getattr(getattr(producer, "client", None), "_conns", None)
    return (
        callable(getattr(sender, "close", None))
        and isinstance(getattr(accumulator, "_batches", None), Mapping)
        and isinstance(getattr(accumulator, "_pending_batches", None), set)
        and isinstance(connections, dict)
    )


async def _give_up_sends(producer: AIOKafkaProducer, until: float) -> None:
    """Stop aiokafka's sender, then fail the batches it held.

    Its requests in flight end when their connections are aborted, which
    is done as often as it opens new ones, until the sender has stopped or
    ``until`` (loop time) has passed. The batches are failed only then: the
    sender must not be handling them at the same time. A batch aiokafka
    never drained fails with an error that says it was not sent (safe to
    send again); one it sent fails with one that says the broker may have
    it.
    """
    loop = asyncio.get_running_loop()
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        closing = asyncio.ensure_future(contained(sender.close()))
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
    if accumulator is None or queued is None or pending is None:
        return
    queued_batches = [batch for batches in queued.values() for batch in batches]
    never_sent = {
        id(batch) for batch in queued_batches if getattr(batch, "retry_count", 1) == 0
    }
    held = {id(batch): batch for batch in (*pending, *queued_batches)}
    # A batch that was sent and requeued removes itself from the pending set
    # when it completes: put it back there, so that its callback finds it.
    pending.update(queued_batches)
    for batch in held.values():
        error: KafkaError = (
            NotSentError("given up before it was sent")
            if id(batch) in never_sent
            else MaybeSentError("given up after it was sent; the broker may have it")
        )
        with contextlib.suppress(Exception):
            batch.failure(error)
        # Failing a batch also fails its drain waiter, which only aiokafka's
        # sender would have read; read it here, or asyncio reports it.
        waiter = getattr(batch, "_drain_waiter", None)
        if waiter is not None and waiter.done() and not waiter.cancelled():
            waiter.exception()
    accumulator._exception = KafkaError("the producer was stopped")


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
