"""Delivery of encoded events to Kafka: bounded buffer, batching, accounting.

``publish`` hands each encoded event to `DeliveryQueue.submit`, which only
appends it to a queue: its event type's own while the type's schema is being
registered, then its partition's. One background task, the sender,
repeatedly takes what is queued, packs it into one aiokafka batch per
partition, sends the batches together and waits for the acknowledgements.
Every event leaves the queue in exactly one way: delivered, failed (reported
to the failure callback and the log, and counted) or, when the buffer is full,
dropped (reported and counted likewise).

Ordering: an event type always goes to the same partition and at most one
batch per partition is in flight, so events of one type arrive in publish
order, also across retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import operator
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiokafka.errors import (
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from opentelemetry.trace import Span
from structlog.stdlib import BoundLogger

from ._codec import set_schema_id
from ._event_type import EventType
from ._exceptions import EventBufferFullError, EventDeliveryError, EventManagerError
from ._options import BufferOptions, OverflowPolicy
from .otel._propagation import Headers
from .otel._spans import end_producer_span

__all__ = [
    "DeliveredEvent",
    "DeliveryFailure",
    "DeliveryQueue",
    "DeliveryStats",
    "NotAcknowledgedError",
    "PendingEvent",
]


@dataclass(frozen=True)
class DeliveredEvent:
    """Where Kafka stored an event."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class DeliveryFailure:
    """An event that did not reach Kafka, as passed to failure callbacks.

    Attributes
    ----------
    event_id
        The id in the event's metadata.
    event_name
        The event name.
    reason
        ``"failed"`` (the broker refused it or delivery timed out),
        ``"dropped"`` (the buffer was full) or ``"shutdown"`` (still pending
        when `EventManager.aclose` gave up).
    error
        The underlying error.
    """

    event_id: str
    event_name: str
    reason: str
    error: BaseException


@dataclass(frozen=True)
class DeliveryStats:
    """Counters of a Kafka event manager since it was created.

    ``published == delivered + failed + dropped + buffered`` at every moment.
    """

    published: int
    delivered: int
    failed: int
    dropped: int
    buffered: int
    buffered_bytes: int


def record_size(value: bytes | bytearray, headers: Headers | None) -> int:
    """Bytes an event occupies in a Kafka request: value plus headers."""
    size = len(value)
    if headers:
        for key, header in headers:
            size += len(key) + len(header)
    return size


class PendingEvent(NamedTuple):
    """An encoded event waiting for its acknowledgement.

    A tuple, so that the garbage collector stops tracking it once it holds
    only plain values (no waiter, no span): a full buffer then costs the
    collector nothing, where one object per queued event would make every
    full collection walk them all.
    """

    event_name: str
    value: bytearray
    headers: Headers | None
    timestamp_ms: int
    event_id: str
    size: int
    enqueued: float
    """`time.monotonic` when publish queued it."""
    waiter: asyncio.Future[DeliveredEvent] | None = None
    span: Span | None = None


_ENQUEUED = operator.attrgetter("enqueued")

FailureCallback = Callable[[DeliveryFailure], None]

# Publishes between two voluntary yields to the event loop. Each step of a
# send round (batch handed over, request written, acknowledgement read) waits
# for one of them during a burst: with a few hundred between yields the
# sender fell behind and a backlog drained only after the burst (measured:
# 9 % of scenario 3's time); a yield costs a fraction of a microsecond per
# event at this spacing.
_YIELD_EVERY = 64


class NotAcknowledgedError(EventManagerError, TimeoutError):
    """A batch was sent but not acknowledged within the delivery timeout.

    Its events are failed, not retried: the broker may have written them.
    """


class _RateLimitedLog:
    """Logs at most once per ``interval`` seconds per kind of failure."""

    def __init__(self, logger: BoundLogger, interval: float) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def error(self, kind: str, message: str, **fields: Any) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        self._logger.error(message, suppressed_since_last=suppressed, **fields)


# After these the producer is unusable (aiokafka's sender stops, or the broker
# forgot the producer id, e.g. after a crash) while the batch was not written.
PRODUCER_FATAL_ERRORS = (OutOfOrderSequenceNumber, ProducerFenced, UnknownProducerId)


def is_retriable(error: BaseException) -> bool:
    """Whether sending again may succeed (connection loss, leader change...)."""
    if isinstance(error, KafkaError):
        return bool(getattr(error, "retriable", False)) or type(error).__name__ in (
            "KafkaConnectionError",
            "KafkaTimeoutError",
            "RequestTimedOutError",
            "NodeNotReadyError",
        )
    return isinstance(error, ConnectionError | TimeoutError | OSError)


class DeliveryQueue:
    """The bounded buffer and sender task between ``publish`` and Kafka.

    Parameters
    ----------
    topic
        Destination topic.
    producer
        Returns the started aiokafka producer, waiting while it connects.
    partitions
        Returns the partition of an event type (waits for metadata).
    buffer
        Size bounds and overflow policy.
    delivery_timeout
        Seconds an event may wait for its acknowledgement, retries
        included, before it is reported as failed.
    retry_backoff
        Seconds between attempts after a retriable failure (doubling, capped
        at 5 s).
    raise_on_error
        With the ``block`` policy, raise instead of dropping after the wait.
    on_failure
        Called once per event that fails or is dropped.
    logger
        For rate-limited failure logs.
    log_interval
        Seconds between two logs of the same kind of failure.
    replace_producer
        Called with a producer that failed with one of
        `PRODUCER_FATAL_ERRORS`, to have it replaced; its events are retried.
    """

    def __init__(
        self,
        *,
        topic: str,
        producer: Callable[[], Awaitable[Any]],
        partitions: Callable[[EventType[Any]], Awaitable[int]],
        buffer: BufferOptions,
        delivery_timeout: float,
        retry_backoff: float,
        raise_on_error: bool,
        on_failure: FailureCallback | None,
        logger: BoundLogger,
        log_interval: float = 10.0,
        replace_producer: Callable[[Any], None] | None = None,
    ) -> None:
        self._topic = topic
        self._replace_producer = replace_producer
        self._producer = producer
        self._partition_of = partitions
        self._buffer = buffer
        self._delivery_timeout = delivery_timeout
        self._retry_backoff = retry_backoff
        self._raise_on_error = raise_on_error
        self._on_failure = on_failure
        self._log = _RateLimitedLog(logger, log_interval)
        self._logger = logger
        # An event type's events wait in a queue of their own until its
        # schema is registered and its partition known; from then on they go
        # straight to their partition's queue, so that a send round costs
        # the same with one event type or hundreds.
        self._waiting: dict[EventType[Any], deque[PendingEvent]] = {}
        self._ready: dict[EventType[Any], int] = {}
        self._partitions: dict[int, deque[PendingEvent]] = {}
        # A queued event names its type (an object would keep it GC-tracked).
        self._event_types: dict[str, EventType[Any]] = {}
        self._count = 0
        self._bytes = 0
        self._published = self._delivered = self._failed = self._dropped = 0
        self._work = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._since_yield = 0
        self._in_flight: list[PendingEvent] = []
        self._closed = False
        self.abandoned = False
        """Whether a batch was given up while aiokafka may still hold it."""

    # Accounting -----------------------------------------------------------

    @property
    def stats(self) -> DeliveryStats:
        """A snapshot of the counters."""
        return DeliveryStats(
            published=self._published,
            delivered=self._delivered,
            failed=self._failed,
            dropped=self._dropped,
            buffered=self._count,
            buffered_bytes=self._bytes,
        )

    def _report(
        self, events: list[PendingEvent], reason: str, error: BaseException
    ) -> None:
        for event in events:
            event_id = str(event.event_id)
            failure = EventDeliveryError(event_id, event.event_name, str(error))
            failure.__cause__ = error
            if event.waiter is not None and not event.waiter.done():
                event.waiter.set_exception(failure)
            if event.span is not None:
                end_producer_span(event.span, error=error)
            if self._on_failure is not None:
                try:
                    self._on_failure(
                        DeliveryFailure(event_id, event.event_name, reason, error)
                    )
                except Exception:
                    self._logger.exception("Event failure callback raised")
        if events:
            self._log.error(
                f"events-{reason}",
                f"Events not delivered to Kafka ({reason})",
                topic=self._topic,
                count=len(events),
                first_event_id=str(events[0].event_id),
                event_name=events[0].event_name,
                error=f"{type(error).__name__}: {error}",
            )

    # Intake ---------------------------------------------------------------

    async def submit(self, event_type: EventType[Any], event: PendingEvent) -> bool:
        """Queue one event, applying the overflow policy when full.

        Returns
        -------
        bool
            Whether the event was queued; False when the policy dropped it
            or the queue closed while it waited (it is then reported).

        Raises
        ------
        EventBufferFullError
            With the ``raise`` policy, or ``block`` and ``raise_on_error``
            after the wait.
        """
        if self.offer(event_type, event):
            if self.should_yield():
                await asyncio.sleep(0)
            return True
        if not await self._make_room(event):
            return False
        if self._closed:
            # It waited for room while the queue closed: nothing would ever
            # send it, so it is settled at once.
            self._published += 1
            self._failed += 1
            self._report(
                [event],
                "shutdown",
                TimeoutError("the event manager was closed while it waited"),
            )
            return False
        self._append(event_type, event)
        return True

    def offer(self, event_type: EventType[Any], event: PendingEvent) -> bool:
        """Queue ``event`` if there is room; False (nothing done) if full."""
        if not self._has_room(event.size):
            return False
        self._append(event_type, event)
        self._since_yield += 1
        return True

    def should_yield(self) -> bool:
        """Whether the publisher should give the event loop a turn now.

        ``publish`` does not otherwise yield while there is room, so without
        this a long burst would be queued whole before the sender starts;
        yielding every few hundred events lets sending overlap with the
        broker's work on the batches already sent.
        """
        if self._since_yield >= _YIELD_EVERY:
            self._since_yield = 0
            return True
        return False

    def _append(self, event_type: EventType[Any], event: PendingEvent) -> None:
        self._published += 1
        partition = self._ready.get(event_type)
        if partition is not None:
            self._partitions[partition].append(event)
        else:
            queue = self._waiting.get(event_type)
            if queue is None:
                queue = self._waiting[event_type] = deque()
                self._event_types[event_type.name] = event_type
            queue.append(event)
        self._count += 1
        self._bytes += event.size
        if not self._work.is_set():
            self._idle.clear()
            self._work.set()

    def _has_room(self, size: int) -> bool:
        return (
            self._count < self._buffer.max_events
            and self._bytes + size <= self._buffer.max_bytes
        )

    async def _make_room(self, event: PendingEvent) -> bool:
        """Apply the overflow policy; True if the event may now be queued."""
        policy = self._buffer.overflow
        full = EventBufferFullError(
            f"Pending-event buffer of topic {self._topic!r} is full"
            f" ({self._count} events, {self._bytes} bytes; limits"
            f" {self._buffer.max_events} events, {self._buffer.max_bytes} bytes)"
        )
        if policy is OverflowPolicy.RAISE:
            raise full
        if policy is OverflowPolicy.BLOCK:
            deadline = time.monotonic() + self._buffer.block_timeout
            while not self._has_room(event.size):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), remaining)
            if self._has_room(event.size):
                return True
            if self._raise_on_error:
                raise full
        # The event was accepted by publish and is now given up: count it as
        # published and dropped so the totals still add up.
        self._published += 1
        self._dropped += 1
        self._report([event], "dropped", full)
        return False

    # Sending --------------------------------------------------------------

    def start(self) -> None:
        """Start the sender task (idempotent)."""
        if self._sender is None:
            self._sender = asyncio.create_task(
                self._run(), name="otel-kafka-events-sender"
            )

    async def _run(self) -> None:
        backoff = self._retry_backoff
        while True:
            if not self._count:
                self._idle.set()
                self._work.clear()
                await self._work.wait()
                continue
            try:
                # Bounded, so that expiry still runs while the broker is away.
                producer = await asyncio.wait_for(self._producer(), self._retry_backoff)
                progressed = await self._send_round(producer)
            except TimeoutError:
                progressed = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # defensive: the sender must not die
                self._log.error("sender", "Event sender error", error=repr(exc))
                progressed = False
            if progressed:
                backoff = self._retry_backoff
            else:
                self._expire()
                # Wake up for the next expiry even in a long backoff, so that
                # failures are reported on time.
                await asyncio.sleep(min(backoff, self._next_expiry()))
                backoff = min(backoff * 2, 5.0)

    def _all_queues(self) -> list[deque[PendingEvent]]:
        return [*self._waiting.values(), *self._partitions.values()]

    def _next_expiry(self) -> float:
        """Seconds until the oldest queued event times out (0 if overdue)."""
        oldest = min((q[0].enqueued for q in self._all_queues() if q), default=None)
        if oldest is None:
            return self._delivery_timeout
        return max(oldest + self._delivery_timeout - time.monotonic(), 0.0)

    async def _promote_registered(self) -> None:
        """Move the waiting events of newly registered types to their
        partition's queue, where that type's later events will follow them.

        The partition is looked up before anything moves: events leave a
        queue only with no await between there and `_in_flight`, or a
        failure or cancellation in between would lose them uncounted.
        """
        for event_type in list(self._waiting):
            if event_type.schema_id is None:
                continue
            partition = await self._partition_of(event_type)
            waiting = self._waiting.pop(event_type, None)
            if waiting is None:  # failed (fail_event_type) during the await
                continue
            queue = self._partitions.get(partition)
            if queue:
                # Expiry looks only at a queue's head, so the queue stays in
                # age order: the waiting events may be older than some there.
                waiting = deque(heapq.merge(queue, waiting, key=_ENQUEUED))
            self._partitions[partition] = waiting
            self._ready[event_type] = partition

    def _queue_of(self, event: PendingEvent) -> deque[PendingEvent]:
        """The queue an event of a failed batch goes back to."""
        event_type = self._event_types[event.event_name]
        partition = self._ready.get(event_type)
        if partition is not None:
            return self._partitions[partition]
        return self._waiting.setdefault(event_type, deque())

    async def _send_round(self, producer: Any) -> bool:
        """Send one batch per partition; return whether anything was settled."""
        await self._promote_registered()
        batches: dict[int, tuple[Any, list[PendingEvent]]] = {}
        for partition, queue in self._partitions.items():
            if not queue:
                continue
            batch = producer.create_batch()
            taken: list[PendingEvent] = []
            batches[partition] = (batch, taken)
            append = batch.append
            # aiokafka's batch builder takes headers as a list only; events of
            # one span share their headers, so one list serves a whole run.
            headers: Headers | None = None
            header_list: list[tuple[str, bytes]] = []
            while queue:
                event = queue[0]
                value = event.value
                # Encoded before its schema was registered: schema id 0. The
                # single-byte test rules out almost every event cheaply.
                if value[4] == 0 and value[1:5] == b"\0\0\0\0":
                    schema_id = self._event_types[event.event_name].schema_id
                    assert schema_id is not None  # it is in a partition queue
                    set_schema_id(value, schema_id)
                if event.headers is not headers:
                    headers = event.headers
                    header_list = list(headers) if headers else []
                metadata = append(
                    key=None,
                    value=value,
                    timestamp=event.timestamp_ms,
                    headers=header_list,
                )
                if metadata is None:
                    break
                taken.append(queue.popleft())
        batches = {p: e for p, e in batches.items() if e[1]}
        if not batches:
            return False
        self._in_flight = [e for _, taken in batches.values() for e in taken]
        try:
            results = await asyncio.gather(
                *(
                    self._send_batch(producer, p, b, min(e.enqueued for e in taken))
                    for p, (b, taken) in batches.items()
                ),
                return_exceptions=True,
            )
        finally:
            self._in_flight = []
        progressed = False
        for (partition, (_, taken)), result in zip(
            batches.items(), results, strict=True
        ):
            if isinstance(result, NotAcknowledgedError):
                # The batch may still be written by aiokafka: never resend it.
                self._fail(taken, result)
                progressed = True
            elif (
                isinstance(result, PRODUCER_FATAL_ERRORS)
                and self._replace_producer is not None
            ):
                progressed |= self._settle_failure(taken, result, retriable=True)
                self._replace_producer(producer)
            elif isinstance(result, BaseException):
                progressed |= self._settle_failure(taken, result)
            else:
                self._settle_success(taken, partition, result)
                progressed = True
        return progressed

    async def _send_batch(
        self, producer: Any, partition: int, batch: Any, oldest: float
    ) -> int:
        """Send a batch and wait for its acknowledgement until the delivery
        timeout of its oldest event.

        aiokafka retries a batch on its own until ``request_timeout_ms``
        (forever with the idempotent producer) and queues the next batch of a
        partition behind it, so without this bound ``delivery_timeout`` would
        not hold while the broker is away.
        """
        remaining = oldest + self._delivery_timeout - time.monotonic()
        try:
            async with asyncio.timeout(remaining):
                future = await producer.send_batch(
                    batch, self._topic, partition=partition
                )
                metadata = await future
        except TimeoutError as exc:
            self.abandoned = True
            raise NotAcknowledgedError(
                f"not acknowledged within the delivery timeout of"
                f" {self._delivery_timeout} s"
            ) from exc
        return int(metadata.offset)

    def _settle_success(
        self, events: list[PendingEvent], partition: int, base: int
    ) -> None:
        self._delivered += len(events)
        for index, event in enumerate(events):
            self._count -= 1
            self._bytes -= event.size
            if event.waiter is not None or event.span is not None:
                offset = base + index
                if event.waiter is not None and not event.waiter.done():
                    event.waiter.set_result(
                        DeliveredEvent(self._topic, partition, offset)
                    )
                if event.span is not None:
                    end_producer_span(event.span, partition=partition, offset=offset)
        self._room.set()

    def _settle_failure(
        self, events: list[PendingEvent], error: BaseException, retriable: bool = False
    ) -> bool:
        """Requeue retriable failures in order; fail the rest. True if settled."""
        now = time.monotonic()
        if retriable or is_retriable(error):
            retry = [e for e in events if now - e.enqueued < self._delivery_timeout]
            expired = [e for e in events if now - e.enqueued >= self._delivery_timeout]
            for event in reversed(retry):
                self._queue_of(event).appendleft(event)
            self._log.error(
                "retry",
                "Kafka send failed, will retry",
                topic=self._topic,
                count=len(retry),
                first_event_id=retry[0].event_id if retry else None,
                error=f"{type(error).__name__}: {error}",
            )
            self._fail(expired, error)
            return bool(expired)
        self._fail(events, error)
        return True

    def _fail(
        self, events: list[PendingEvent], error: BaseException, reason: str = "failed"
    ) -> None:
        if not events:
            return
        self._failed += len(events)
        for event in events:
            self._count -= 1
            self._bytes -= event.size
        self._report(events, reason, error)
        self._room.set()

    def _expire(self) -> None:
        """Fail events that waited longer than the delivery timeout."""
        now = time.monotonic()
        queues = [
            (
                "schema not registered"
                if event_type.schema_id is None
                else "not acknowledged",
                queue,
            )
            for event_type, queue in self._waiting.items()
        ]
        queues += [("not acknowledged", queue) for queue in self._partitions.values()]
        for reason, queue in queues:
            expired = []
            while queue and now - queue[0].enqueued >= self._delivery_timeout:
                expired.append(queue.popleft())
            if expired:
                self._fail(
                    expired,
                    TimeoutError(
                        f"{reason} within the delivery timeout of"
                        f" {self._delivery_timeout} s"
                    ),
                )

    def fail_event_type(
        self, event_type: EventType[Any], error: EventManagerError
    ) -> None:
        """Fail everything queued for an event type that cannot be registered."""
        queue = self._waiting.pop(event_type, None)
        if queue:
            self._fail(list(queue), error)

    def wake(self) -> None:
        """Tell the sender that something changed (e.g. a schema registered)."""
        if self._count:
            self._work.set()

    # Shutdown -------------------------------------------------------------

    async def close(self, timeout: float | None) -> int:
        """Deliver what is pending within ``timeout`` seconds, then stop.

        Returns
        -------
        int
            How many events pending at the call were not delivered: those
            still pending at the deadline (reported with reason
            ``shutdown``) and those whose delivery timeout ran out meanwhile
            (reason ``failed``).
        """
        self._closed = True
        failed_before = self._failed
        if self._sender is not None and self._count:
            self._work.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        in_flight = list(self._in_flight)
        if in_flight:
            self.abandoned = True
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        leftover = in_flight + [e for q in self._all_queues() for e in q]
        for queue in self._all_queues():
            queue.clear()
        if leftover:
            self._fail(
                leftover,
                TimeoutError("still pending when the event manager was closed"),
                reason="shutdown",
            )
        return self._failed - failed_before
