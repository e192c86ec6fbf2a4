"""Moving events from the ledger to the transport, up to `max_in_flight`
batches per partition at a time.

A send starts when events are queued for a partition that has room for
another batch out (`Ledger.can_send`): the loop below starts the first
(or, for an event whose publisher waits for it, `Sender.send_now`, before
the publisher waits), and the end of each send starts the next ones at
once, from the transport's callback, without waiting for the loop's turn.
A transport that allows it is handed its batch in the same step
(`start_eagerly`) rather than by a task that would start a turn later.
While the publisher keeps the event loop busy, every hop between an
acknowledgement and the next request waits for it to yield, so fewer hops
mean bigger batches and less backlog. The loop, woken by new events, a new
connection or the next deadline, expires what is overdue (queued events,
and the events of batches out past their own deadline) and starts sends
after a backoff. Every decision about an event is the ledger's; this
module only times and carries them out. How many batches of a partition
may be out at once is the smaller of the ``max_in_flight`` setting and
what the transport keeps in order (`Transport.max_in_flight`), read each
time it starts.

The loop never dies of an error: what the transport raises (anything, a
``BaseException`` included) or answers that makes no sense becomes a send
failure, and anything else is counted by the guard and retried after a
backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from structlog.stdlib import BoundLogger

from .._foreign import describe, own_cancellation
from .._options import MAX_IN_FLIGHT
from ..errors import NotAcknowledgedError
from ._backoff import Backoff
from ._connection import Connection
from ._eager import start_eagerly
from ._ledger import Batch, Ledger, PendingEvent, Settled, Settlement
from ._listeners import Listeners
from ._settle import Settler
from ._transport import Headers, RecordBatch, SendFailure, Transport

__all__ = ["Sender"]


@dataclass(slots=True, eq=False)
class _Send:
    batch: Batch
    transport: Transport
    first_deadline: float
    """The earliest deadline of its events: the bound of the handover."""
    handover: asyncio.Task[None] | None = None
    """Running until the transport owns the batch."""
    handing: Coroutine[Any, Any, None] | None = None
    """What the handover task awaits: closed if the task never ran it."""
    handed_over: bool = False
    tokens: tuple[Any, ...] | None = None
    """What the batch listeners returned (a batch producer span)."""


class QueuedTooLongError(TimeoutError):
    """A deadline passed before the transport took the batch."""


class GarbledAnswerError(Exception):
    """The transport answered a send with something that means nothing: the
    broker may or may not have the batch."""


def not_acknowledged(error: BaseException) -> NotAcknowledgedError:
    """The error of events the broker may have written: always a
    `NotAcknowledgedError`, so that one type tells a caller which failed
    events may be on the topic; the transport's own error is its cause."""
    if isinstance(error, NotAcknowledgedError):
        return error
    result = NotAcknowledgedError(
        f"sent, but the broker's answer does not say whether it wrote the"
        f" batch: {describe(error)}"
    )
    result.__cause__ = error
    return result


class Sender:
    """Sends what the ledger holds, up to `max_in_flight` batches per
    partition at a time.

    Parameters
    ----------
    ledger
        The events and their accounts.
    settler
        Resolves waiters and tells listeners about settled events.
    listeners
        Told about batches.
    topic
        The destination topic.
    connection
        The transport, and whether it may send now.
    backoff
        First and longest delay before a partition is sent to again after a
        retriable failure.
    delivery_timeout
        Seconds an event may take; only for error messages (each event
        carries its own deadline).
    max_in_flight
        Most batches of one partition out at once; None: as many as the
        transport takes (`Transport.max_in_flight`), up to `MAX_IN_FLIGHT`.
        The transport's answer caps it either way.
    logger
        For the warning that the transport caps ``max_in_flight``.
    clock
        Monotonic time in seconds; asyncio's timeouts use the same clock.
    """

    def __init__(
        self,
        ledger: Ledger,
        settler: Settler,
        listeners: Listeners,
        *,
        topic: str,
        connection: Connection,
        backoff: tuple[float, float],
        delivery_timeout: float,
        max_in_flight: int | None = None,
        logger: BoundLogger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ledger = ledger
        self._settler = settler
        self._listeners = listeners
        self._topic = topic
        self._connection = connection
        self._backoff = Backoff(*backoff)
        self._delivery_timeout = delivery_timeout
        self._clock = clock
        self._sends: dict[_Send, None] = {}
        """The sends running, in the order they started."""
        self._max_in_flight = max_in_flight
        self._logger = logger
        self._capped: int | None = None
        """The depth the last warning about a cap was for."""
        self._stopping = False
        self._retry_at: dict[int, float] = {}
        self._wakeup = asyncio.Event()
        self._woken = False
        self._alarm: asyncio.TimerHandle | None = None
        self._alarm_at = math.inf
        """When the loop is due to look again unwoken (our clock)."""
        self._context: contextvars.Context | None = None
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
            # Sends started from a publisher's task run in the loop's
            # context, not the publisher's.
            self._context = contextvars.copy_context()
            self._task = asyncio.create_task(
                self._run(), name="otel-kafka-events-sender"
            )

    def connected(self) -> None:
        """The transport has (re)started: set how many batches of a
        partition may be out (what it takes may have changed), and look at
        the ledger again."""
        asked = self._max_in_flight
        allowed = self._transport_depth(self._connection.transport)
        depth = min(asked or MAX_IN_FLIGHT, allowed)
        self._ledger.max_in_flight = depth
        if asked is not None and depth < asked and self._capped != depth:
            self._capped = depth
            self._warn_capped(asked, depth)
        self.wake()

    def _transport_depth(self, transport: Transport) -> int:
        """`Transport.max_in_flight`, read behind the guard: 1 for a
        transport without it (it keeps order only one batch at a time), or
        whose answer is no int of at least 1 (a defect, reported)."""
        try:
            depth = getattr(transport, "max_in_flight", 1)
        except BaseException as exc:
            self._listeners.guard.failed("transport", exc)
            return 1
        if type(depth) is not int or depth < 1:
            self._listeners.guard.failed(
                "transport",
                TypeError(
                    f"the transport's max_in_flight is {depth!r}, not an int"
                    " of at least 1; sending one batch per partition at a time"
                ),
            )
            return 1
        return depth

    def _warn_capped(self, asked: int, depth: int) -> None:
        if self._logger is None:
            return
        if self._connection.transport.idempotent:
            reason = f"the transport takes {depth} at a time in order"
        else:
            reason = (
                "without Kafka's idempotent producer a retried batch could be"
                " written after the batches sent behind it, so order allows one"
            )
        with contextlib.suppress(Exception):
            self._logger.warning(
                f"max_in_flight={asked} lowered to {depth} batch(es) in flight"
                f" per partition: {reason}",
                max_in_flight=asked,
                in_flight=depth,
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

    def send_now(self, deadline: float) -> bool:
        """Start now the sends the loop would start at its next turn.

        For an event whose publisher is about to wait for it: its batch
        leaves before the publisher yields, a turn of the event loop sooner.
        ``deadline`` is the event's; the loop looks again by then.

        Returns
        -------
        bool
            False if nothing may be sent now (the loop is not running, or the
            transport is not connected): wake the loop instead.
        """
        context = self._context
        if self._stopping or context is None or not self._connection.ready:
            return False
        try:
            context.copy().run(self._start_sends, self._clock())
        except BaseException as exc:
            # A defect, as in the loop's turn: the publisher's event is
            # accepted, so it must not see it; the loop takes over.
            self._listeners.guard.failed("sender", exc)
            return False
        self._mind(deadline)
        return True

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
            s.handover for s in self._sends if s.handover is not None
        ]
        if self._task is not None:
            tasks.append(self._task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        self._context = None
        self._disarm()
        if self._sends:
            self.abandoned = True
        for send in self._sends:
            if send.handing is not None:
                # A handover task cancelled before it ran never awaited it.
                send.handing.close()
            self._listeners.batch_ended(
                send.tokens, send.batch.partition, None, in_flight_error
            )
        # What the transport still reports for these is ignored (`_finish`).
        self._sends.clear()
        self.settle(self._ledger.close(in_flight_error, queued_error))
        self._stopping = False

    def settle(self, settlements: list[Settlement]) -> None:
        """Report settlements and wake those waiting for room."""
        if settlements:
            self._settler.settle(settlements)
            self.room.set()

    # The loop -----------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(0.05, 1.0)
        while True:
            self._woken = False
            self._wakeup.clear()
            try:
                delay = self._turn()
                backoff.reset()
            except BaseException as exc:
                # A defect, ours or a library's: counted and logged, and the
                # loop goes on after a pause rather than leaving events
                # unsettled.
                self._listeners.guard.failed("sender", exc)
                delay = backoff.next()
            if delay is not None:
                self._mind(self._clock() + delay)
            if self._wakeup.is_set():
                # Woken during its own turn (a send that failed at once):
                # others run before the next turn.
                await asyncio.sleep(0)
            else:
                await self._wakeup.wait()

    def _mind(self, at: float) -> None:
        """Have the loop look again by ``at`` (our clock), unless it already
        will: one timer serves every deadline, so that a send need not wake
        the loop to tell it its deadline."""
        if at >= self._alarm_at:
            return
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm_at = at
        self._alarm = asyncio.get_running_loop().call_later(
            max(at - self._clock(), 0.0), self._ring, context=self._context
        )

    def _may_send(self, partition: int, now: float) -> bool:
        """Whether ``partition``'s backoff, if any, has run out."""
        return self._retry_at.get(partition, 0.0) <= now

    def _back_off(self, partition: int, now: float) -> None:
        """No send to ``partition`` before a backoff; the loop looks then."""
        at = self._retry_at[partition] = now + self._backoff.next()
        self._mind(at)

    def _ring(self) -> None:
        self._alarm = None
        self._alarm_at = math.inf
        self.wake()

    def _disarm(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        self._alarm_at = math.inf

    def _turn(self) -> float | None:
        """One look at the ledger; seconds until the next look is due."""
        ledger = self._ledger
        now = self._clock()
        self._expire_sends(now)
        self.settle(ledger.expire(now, self._timeout_error))
        ready = self._connection.ready
        if ready:
            self._start_sends(now)
        if ledger.buffered == 0:
            self._idle.set()
        return self._next_wakeup(now, ready)

    def _start_sends(self, now: float) -> None:
        """Start sends for each partition that has events queued, room for
        another batch out and no backoff running."""
        connection = self._connection
        transport = connection.transport
        for partition in self._ledger.sendable():
            if not connection.ready:
                break  # a send failed at once and restarts the transport
            if self._may_send(partition, now):
                self._fill(transport, partition, now)

    def _fill(self, transport: Transport, partition: int, now: float) -> None:
        """Start sends to ``partition`` while the ledger lets a batch be
        taken from it (one, with one batch in flight per partition)."""
        ledger = self._ledger
        while (
            self._start_send(transport, partition, now)
            and ledger.can_send(partition)
            and self._connection.ready
            and self._may_send(partition, now)
        ):
            pass

    def _next_wakeup(self, now: float, connected: bool) -> float | None:
        """Seconds until the loop has something to do without being woken."""
        deadline = self._ledger.next_deadline()
        times = [] if deadline is None else [deadline]
        if connected:
            # A partition that cannot send then anyway is looked at when
            # what blocks it ends (`_finish`), not at its backoff.
            can_send = self._ledger.can_send
            times.extend(
                at
                for partition, at in self._retry_at.items()
                if at > now and can_send(partition)
            )
        if not times:
            return None
        return max(min(times) - now, 0.0)

    def _start_send(self, transport: Transport, partition: int, now: float) -> bool:
        """Take a batch of ``partition`` and hand it to the transport;
        whether one was taken (its send may have ended already)."""
        try:
            records = transport.new_batch()
            fits, failures = _filler(records)
        except BaseException as exc:
            self._listeners.guard.failed("transport", exc)
            self._back_off(partition, now)
            return False
        batch = self._ledger.take(partition, now, fits)
        if failures:
            # The batch could not be built: it is not sent, and its events
            # go back to their queue (or fail, past their deadline).
            self._listeners.guard.failed("transport", failures[0])
            self._back_off(partition, now)
            if batch is not None:
                self.settle(self._ledger.retry(batch, now, failures[0]))
            return False
        if batch is None:
            return False
        send = _Send(batch, transport, min(event.deadline for event in batch.events))
        send.tokens = self._listeners.batch_started(partition, batch.events)
        self._sends[send] = None
        try:
            sending = transport.send(
                records,
                self._topic,
                partition,
                lambda offset, error: self._finish(send, offset, error),
            )
            eager = getattr(type(transport), "sends_eagerly", False) is True
            handing = start_eagerly(sending) if eager else sending
        except BaseException as exc:
            # Raised at the call, or before the transport's first wait.
            self._finish(send, None, _handover_error(exc))
            return True
        if handing is None:
            self._handed_over(send)
            return True
        send.handing = handing
        send.handover = asyncio.create_task(self._hand_over(send, handing))
        return True

    def _handed_over(self, send: _Send) -> None:
        send.handover = None
        send.handing = None
        send.handed_over = True
        # Its deadlines are the loop's to keep from now on.
        self._mind(send.first_deadline)

    async def _hand_over(self, send: _Send, handing: Coroutine[Any, Any, None]) -> None:
        """Give a batch to the transport, within its earliest deadline.

        aiokafka retries a batch on its own and queues the partition's next
        batch behind it: without a bound, ``delivery_timeout`` would not
        hold while the broker is away. Once the transport owns the batch,
        `_finish` hears how it went, or the loop gives its events up at
        their deadlines (`_expire_sends`).
        """
        try:
            async with asyncio.timeout_at(send.first_deadline):
                await handing
        except TimeoutError as exc:
            error: BaseException = QueuedTooLongError(
                "the producer did not take the batch in time"
            )
            error.__cause__ = exc
        except asyncio.CancelledError as exc:
            if self._stopping or own_cancellation(exc):
                raise
            error = _handover_error(exc)
        except BaseException as exc:
            error = exc
        else:
            self._handed_over(send)
            return
        send.handover = None
        send.handing = None
        self._finish(send, None, error)

    def _expire_sends(self, now: float) -> None:
        """Give up the events of batches out past their own deadline: the
        broker may have written them, so they are not acknowledged (and
        never resent)."""
        ledger = self._ledger
        for send in list(self._sends):
            if not send.handed_over:
                continue
            settlements = ledger.expire_batch(
                send.batch,
                now,
                NotAcknowledgedError(
                    f"sent, but not acknowledged within the delivery timeout"
                    f" of {self._delivery_timeout} s"
                ),
            )
            if not settlements:
                continue
            self.abandoned = True
            if not ledger.is_out(send.batch):
                del self._sends[send]
                self._listeners.batch_ended(
                    send.tokens, send.batch.partition, None, settlements[0].error
                )
            self.settle(settlements)

    def _finish(
        self, send: _Send, offset: int | None, error: BaseException | None
    ) -> None:
        """Settle a send that ended, then start the partition's next ones."""
        if send not in self._sends:
            return  # already settled: given up, or the sender stopped
        partition = send.batch.partition
        if error is None and (type(offset) is not int or offset < 0):
            error = GarbledAnswerError(
                f"the transport acknowledged the batch with offset {offset!r}"
            )
            offset = None
        elif error is not None and not isinstance(error, BaseException):
            error = GarbledAnswerError(
                f"the transport answered the send with {error!r}"
            )
        del self._sends[send]
        self._listeners.batch_ended(send.tokens, partition, offset, error)
        now = self._clock()
        batch = send.batch
        ledger = self._ledger
        if error is None:
            assert offset is not None
            # A batch sent before a failed one may be acknowledged after it:
            # the failed one's backoff (`_retry_at`) runs on.
            self._backoff.reset()
            self.settle(ledger.delivered(batch, offset))
        elif isinstance(error, QueuedTooLongError):
            self._back_off(partition, now)
            self.settle(ledger.retry(batch, now, error))
        else:
            kind = self._classify(send.transport, error)
            if kind is SendFailure.REJECT:
                self.settle(ledger.fail(batch, Settled.REJECTED, error))
            elif kind is SendFailure.UNKNOWN:
                self.settle(
                    ledger.fail(
                        batch, Settled.NOT_ACKNOWLEDGED, not_acknowledged(error)
                    )
                )
            else:
                self._back_off(partition, now)
                self._listeners.retrying(batch.events, error)
                self.settle(ledger.retry(batch, now, error))
                if kind is SendFailure.RESTART:
                    self._restart()
        if (
            error is None
            and not self._stopping
            and self._connection.ready
            and ledger.can_send(partition)
            and self._may_send(partition, now)
        ):
            # The next batch goes out now, not at the loop's next turn.
            self._fill(self._connection.transport, partition, now)
        if ledger.buffered == 0:
            self._idle.set()
            if error is None:
                return  # nothing for the loop to do
        self.wake()

    def _classify(self, transport: Transport, error: BaseException) -> SendFailure:
        """What a failed send means; not acknowledged when the transport
        cannot say."""
        if isinstance(error, GarbledAnswerError):
            return SendFailure.UNKNOWN
        try:
            kind = transport.classify(error)
        except BaseException as exc:
            self._listeners.guard.failed("transport", exc)
            return SendFailure.UNKNOWN
        return kind if isinstance(kind, SendFailure) else SendFailure.UNKNOWN

    def _restart(self) -> None:
        """The transport can send nothing more: the connection stops it and
        starts it again. Stopping fails every batch it still holds, each
        with an error that says whether it was ever sent, so those come back
        here (`_finish`) as retries or as not acknowledged."""
        self._connection.restart()

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


def _handover_error(error: BaseException) -> BaseException:
    """What a transport raised while taking a batch, as the send's error: a
    cancellation that is not ours (the transport's own) means the batch was
    not taken."""
    if isinstance(error, asyncio.CancelledError):
        return QueuedTooLongError("send cancelled")
    return error


def _filler(
    records: RecordBatch,
) -> tuple[Callable[[PendingEvent], bool], list[BaseException]]:
    """Appends events to ``records``, for `Ledger.take`; events of one span
    share their headers, so one header list serves a whole run of them.

    `Ledger.take` must not be interrupted half-way, so what the batch raises,
    or answers besides True or False, ends the batch and is kept in the
    list returned alongside: the batch is then not sent.
    """
    append = records.append
    last: list[Headers | None] = [None]
    header_list: list[list[tuple[str, bytes]]] = [[]]
    failures: list[BaseException] = []

    def fits(event: PendingEvent) -> bool:
        headers = event.headers
        if headers is not last[0]:
            last[0] = headers
            header_list[0] = list(headers) if headers else []
        try:
            appended = append(
                event.key, event.value, event.timestamp_ms, header_list[0]
            )
        except BaseException as exc:
            failures.append(exc)
            return False
        if appended is True:
            return True
        if appended is not False:
            failures.append(
                GarbledAnswerError(f"the batch answered {appended!r} to an append")
            )
        return False

    return fits, failures
