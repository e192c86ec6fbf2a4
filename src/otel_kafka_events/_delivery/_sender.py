"""Moving events from the ledger to a transport, one batch per partition.

A send starts when events are queued for a partition that has nothing out:
the loop below starts the first, and the end of each send starts the next
one at once, from the transport's callback, without waiting for the loop's
turn. While the publisher keeps the event loop busy, every hop between an
acknowledgement and the next request waits for it to yield, so fewer hops
mean bigger batches and less backlog. The loop, woken by new events, a new
connection or the next deadline, expires what is overdue (queued events,
and batches out past their deadline) and starts sends after a backoff.
Every decision about an event is the ledger's; this module only times and
carries them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._telemetry._propagation import Headers
from .._telemetry._spans import BatchSpans, end_producer_span
from ..errors import NotAcknowledgedError
from ._backoff import Backoff
from ._ledger import Batch, Ledger, PendingEvent, Settled, Settlement
from ._settle import Reporter
from ._transport import RecordBatch, SendFailure, Transport

__all__ = ["Sender"]


@dataclass(slots=True, eq=False)
class _Send:
    batch: Batch
    transport: Transport
    deadline: float
    """The batch's deadline (its youngest event's)."""
    handover: asyncio.Task[None] | None = None
    """Running until the transport owns the batch."""
    handed_over: bool = False
    span: Any = None
    """Its producer span (``producer_spans="batch"``)."""


class _QueuedTooLongError(TimeoutError):
    """The deadline passed before the transport took the batch."""


class Sender:
    """Sends what the ledger holds, one batch per partition at a time.

    Parameters
    ----------
    ledger
        The events and their accounts.
    reporter
        Notifies about settled events.
    topic
        The destination topic.
    transport
        Returns the transport to send with, or None while not connected.
    replace_transport
        Called with a transport whose producer can send nothing any more.
    retry_backoff
        First delay before a partition is sent to again after a retriable
        failure (doubling, up to 5 s).
    delivery_timeout
        Seconds an event may take; only for error messages (each event
        carries its own deadline).
    clock
        Monotonic time in seconds; asyncio's timeouts use the same clock.
    batch_spans
        Starts a producer span per batch sent, if given.
    """

    def __init__(
        self,
        ledger: Ledger,
        reporter: Reporter,
        *,
        topic: str,
        transport: Callable[[], Transport | None],
        replace_transport: Callable[[Transport], None],
        retry_backoff: float,
        delivery_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        batch_spans: BatchSpans | None = None,
    ) -> None:
        self._ledger = ledger
        self._reporter = reporter
        self._topic = topic
        self._transport = transport
        self._replace_transport = replace_transport
        self._backoff = Backoff(retry_backoff)
        self._delivery_timeout = delivery_timeout
        self._clock = clock
        self._batch_spans = batch_spans
        self._sends: dict[int, _Send] = {}
        self._stopping = False
        self._retry_at: dict[int, float] = {}
        self._wakeup = asyncio.Event()
        self._woken = False
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.room = asyncio.Event()
        """Set whenever settled events may have made room in the buffer."""
        self.room.set()
        self.abandoned = False
        """Whether a sent batch was given up while the transport held it."""

    # Control ------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(
                self._run(), name="otel-kafka-events-sender"
            )

    @property
    def running(self) -> bool:
        """Whether the loop is running."""
        return self._task is not None

    def wake(self) -> None:
        """Have the loop look at the ledger again."""
        # Called for every accepted event: a flag of our own is cheaper to
        # test than the Event's is_set().
        if not self._woken:
            self._woken = True
            self._wakeup.set()

    async def drained(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the ledger to empty."""
        if self._ledger.buffered == 0:
            return True
        if self._task is None:
            return False
        self._idle.clear()
        self.wake()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._idle.wait()
        return self._ledger.buffered == 0

    async def stop(
        self, in_flight_error: BaseException, queued_error: BaseException
    ) -> None:
        """Stop the loop and every send, then settle all that is left as
        closed: batches sent but not acknowledged with ``in_flight_error``,
        queued events with ``queued_error``."""
        self._stopping = True
        tasks: list[asyncio.Task[Any]] = [
            s.handover for s in self._sends.values() if s.handover is not None
        ]
        if self._task is not None:
            tasks.append(self._task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        if self._sends:
            self.abandoned = True
        for send in self._sends.values():
            if send.span is not None:
                self._end_span(send, None, in_flight_error)
        # What the transport still reports for these is ignored (`_sent`).
        self._sends.clear()
        self.settle(self._ledger.close(in_flight_error, queued_error))
        self._stopping = False

    def settle(self, settlements: list[Settlement]) -> None:
        """Report settlements and wake those waiting for room."""
        if settlements:
            self._reporter.report(settlements)
            self.room.set()

    # The loop -----------------------------------------------------------------

    async def _run(self) -> None:
        ledger = self._ledger
        while True:
            self._woken = False
            self._wakeup.clear()
            now = self._clock()
            self._expire_sends(now)
            self.settle(ledger.expire(now, self._timeout_error))
            transport = self._transport()
            if transport is not None:
                for partition in ledger.sendable():
                    if self._retry_at.get(partition, 0.0) <= now:
                        self._start_send(transport, partition, now)
            if ledger.buffered == 0:
                self._idle.set()
            delay = self._next_wakeup(now, transport is not None)
            try:
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _next_wakeup(self, now: float, connected: bool) -> float | None:
        """Seconds until the loop has something to do without being woken."""
        times = [send.deadline for send in self._sends.values() if send.handed_over]
        deadline = self._ledger.next_deadline()
        if deadline is not None:
            times.append(deadline)
        if connected:
            times.extend(
                at
                for partition, at in self._retry_at.items()
                if partition not in self._sends and at > now
            )
        if not times:
            return None
        return max(min(times) - now, 0.0)

    def _start_send(self, transport: Transport, partition: int, now: float) -> None:
        records = transport.new_batch()
        batch = self._ledger.take(partition, now, _filler(records))
        if batch is None:
            return
        send = _Send(batch, transport, batch.deadline)
        if self._batch_spans is not None:
            send.span = self._batch_spans.start(
                partition, len(batch.events), (e.context for e in batch.events)
            )
        self._sends[partition] = send
        send.handover = asyncio.create_task(self._hand_over(send, records))

    async def _hand_over(self, send: _Send, records: RecordBatch) -> None:
        """Give a batch to the transport, within its deadline.

        aiokafka retries a batch on its own until ``request_timeout_ms``
        (forever with the idempotent producer) and queues the partition's
        next batch behind it: without the deadline, ``delivery_timeout``
        would not hold while the broker is away. Once the transport owns
        the batch, `_sent` hears how it went, or the loop gives it up at its
        deadline (`_expire_sends`).
        """
        partition = send.batch.partition
        try:
            async with asyncio.timeout_at(send.deadline):
                await send.transport.send(
                    records,
                    self._topic,
                    partition,
                    lambda offset, error: self._sent(send, offset, error),
                )
        except TimeoutError as exc:
            error: BaseException = _QueuedTooLongError(
                "the producer did not take the batch in time"
            )
            error.__cause__ = exc
        except asyncio.CancelledError:
            if self._stopping:
                raise
            error = TimeoutError("send cancelled")
        except Exception as exc:
            error = exc
        else:
            send.handover = None
            send.handed_over = True
            # Its deadline may be the loop's next wake-up.
            self.wake()
            return
        send.handover = None
        self._finish(send, None, error)

    def _sent(
        self, send: _Send, offset: int | None, error: BaseException | None
    ) -> None:
        """The transport's word on a batch it owned (a callback)."""
        self._finish(send, offset, error)

    def _expire_sends(self, now: float) -> None:
        """Give up the batches out past their deadline: the broker may have
        written them, so they are not acknowledged (and never resent)."""
        for send in list(self._sends.values()):
            if send.handed_over and send.deadline <= now:
                self.abandoned = True
                self._finish(
                    send,
                    None,
                    NotAcknowledgedError(
                        f"sent, but not acknowledged within the delivery timeout"
                        f" of {self._delivery_timeout} s"
                    ),
                )

    def _finish(
        self, send: _Send, offset: int | None, error: BaseException | None
    ) -> None:
        """Settle a send that ended, then start the partition's next one."""
        partition = send.batch.partition
        if self._sends.get(partition) is not send:
            return  # already settled: given up, or the sender stopped
        del self._sends[partition]
        if send.span is not None:
            self._end_span(send, offset, error)
        now = self._clock()
        batch = send.batch
        ledger = self._ledger
        if error is None:
            assert offset is not None
            self._backoff.reset()
            self._retry_at.pop(partition, None)
            self.settle([ledger.delivered(batch, offset)])
        elif isinstance(error, NotAcknowledgedError):
            self.settle(ledger.fail(batch, Settled.NOT_ACKNOWLEDGED, error))
        elif isinstance(error, _QueuedTooLongError):
            self.settle(ledger.retry(batch, now, error))
        else:
            kind = send.transport.classify(error)
            if kind is SendFailure.REJECT:
                self.settle(ledger.fail(batch, Settled.REJECTED, error))
            elif kind is SendFailure.UNKNOWN:
                self.settle(ledger.fail(batch, Settled.NOT_ACKNOWLEDGED, error))
            else:
                self._retry_at[partition] = now + self._backoff.next()
                self._reporter.retrying(batch, error)
                self.settle(ledger.retry(batch, now, error))
                if kind is SendFailure.REPLACE_PRODUCER:
                    self._replace_transport(send.transport)
        if error is None and not self._stopping:
            # The next batch goes out now, not at the loop's next turn.
            transport = self._transport()
            if transport is not None and ledger.can_send(partition):
                self._start_send(transport, partition, now)
        if ledger.buffered == 0:
            self._idle.set()
        self.wake()

    def _end_span(
        self, send: _Send, offset: int | None, error: BaseException | None
    ) -> None:
        try:
            end_producer_span(
                send.span, partition=send.batch.partition, offset=offset, error=error
            )
        except Exception as exc:  # a span processor's failure is not ours
            self._reporter.notification_failed("span", exc)

    def _timeout_error(self, outcome: Settled) -> BaseException:
        waiting = (
            "the schema registration"
            if outcome is Settled.TIMED_OUT_REGISTRY
            else "Kafka"
        )
        return TimeoutError(
            f"waited for {waiting} longer than the delivery timeout of"
            f" {self._delivery_timeout} s"
        )


def _filler(records: RecordBatch) -> Callable[[PendingEvent], bool]:
    """Appends events to ``records``; events of one span share their headers,
    so one header list serves a whole run of them."""
    append = records.append
    last: list[Headers | None] = [None]
    header_list: list[list[tuple[str, bytes]]] = [[]]

    def fits(event: PendingEvent) -> bool:
        headers = event.headers
        if headers is not last[0]:
            last[0] = headers
            header_list[0] = list(headers) if headers else []
        return append(event.value, event.timestamp_ms, header_list[0])

    return fits
