"""Taking events from ``publish``: the checks, the buffer's room, and the
overflow policy when there is none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .._encoding._codec import set_schema_id
from .._encoding._event_type import EventType
from .._options import BufferOptions, OverflowPolicy
from ..errors import (
    EventBufferFullError,
    EventManagerClosedError,
    EventManagerUninitializedError,
    EventTooLargeError,
)
from ._ledger import Ledger, PendingEvent, Settled
from ._listeners import Listeners
from ._registration import Registrations
from ._sender import Sender

__all__ = ["YIELD_EVERY", "Intake", "record_overhead"]

YIELD_EVERY = 128
"""Publishes between two voluntary yields to the event loop: without them a
long burst would be queued whole before the sender starts, and each hop
between an acknowledgement and the next request waits for a yield. 64, 128
and 256 measured alike (benchmark scenario 3, paired runs); 512 while a
batch is out let a backlog build that drained only after the burst."""

# What a record adds to its value and headers in a Kafka request: the
# record's own varints (length, attributes, timestamp and offset deltas, key
# and value lengths, header count: at most 36 bytes) and two per header
# (at most 10 each), then the record batch header (61 bytes) and the produce
# request around one partition's batch (under 100 bytes plus the topic).
_RECORD_FRAMING = 36 + 2 * 10
_REQUEST_FRAMING = 61 + 100


def record_overhead(topic: str) -> int:
    """Bytes a single-record request needs beyond the record's value,
    headers and key, at most."""
    return _RECORD_FRAMING + _REQUEST_FRAMING + len(topic.encode())


class Intake:
    """Accepts encoded events into the ledger, or says why not.

    Parameters
    ----------
    topic
        The events topic (for messages and the size limit).
    ledger
        Where accepted events go.
    sender
        Woken for every accepted event (or asked to send it at once, when its
        publisher waits for it); its ``room`` says when settled events freed
        space.
    registrations
        Whether each event type may still publish.
    listeners
        Told about accepted and refused events.
    buffer
        The bounds and the overflow policy.
    delivery_timeout
        Seconds from acceptance to an event's deadline.
    max_request_size
        Returns the transport's request limit (known once connected).
    raise_on_error
        With the ``block`` policy, raise `EventBufferFullError` after the
        wait instead of dropping the event.
    """

    def __init__(
        self,
        *,
        topic: str,
        ledger: Ledger,
        sender: Sender,
        registrations: Registrations,
        listeners: Listeners,
        buffer: BufferOptions,
        delivery_timeout: float,
        max_request_size: Callable[[], int],
        raise_on_error: bool,
    ) -> None:
        self._topic = topic
        self._ledger = ledger
        self._sender = sender
        self._registrations = registrations
        self._listeners = listeners
        self._buffer = buffer
        self.delivery_timeout = delivery_timeout
        self._max_request_size = max_request_size
        self._overhead = record_overhead(topic)
        self._limit = 0
        self.refresh_limit()
        self._raise_on_error = raise_on_error
        self._since_yield = 0
        self._closed: BaseException | None = None

    def close(self, error: BaseException) -> None:
        """Refuse every later event with ``error`` (a copy each time), and
        wake publishers waiting for room: they give up."""
        self._closed = error
        self._sender.room.set()

    def refresh_limit(self) -> None:
        """Read the transport's request limit again (after it connects: a
        producer's own ``max_request_size`` is known then)."""
        self._limit = self._max_request_size() - self._overhead

    @property
    def closed(self) -> bool:
        """Whether events are refused now."""
        return self._closed is not None

    def should_yield(self) -> bool:
        """Whether a publisher should give the event loop a turn first.

        Every publish counts, accepted or not: a loop whose events are all
        dropped (a full buffer under ``drop_newest``) would otherwise never
        let the sender run, and the buffer would never drain.
        """
        self._since_yield += 1
        if self._since_yield >= YIELD_EVERY:
            self._since_yield = 0
            return True
        return False

    def check(self, event: PendingEvent) -> None:
        """Raise if ``event`` may not be accepted at all.

        Raises
        ------
        EventManagerClosedError
            If the manager is closing or closed.
        EventManagerUninitializedError
            If the publisher belongs to a manager initialized anew since.
        EventManagerUsageError
            If the event type could not be registered (a new copy of the
            registration error each time).
        EventTooLargeError
            If the event cannot fit in one Kafka request.
        """
        closed = self._closed
        if closed is not None:
            raise _copy(closed)
        failure = self._registrations.failure(event.event_name)
        if failure is not None:
            raise failure
        size = event.size + (len(event.key) if event.key else 0)
        limit = self._limit
        if size > limit:
            raise EventTooLargeError(
                event.event_name,
                f"encoded event is {size} bytes (value, key and headers), more"
                f" than the {limit} bytes a record can have under the"
                f" producer's max_request_size of {limit + self._overhead}",
            )

    def accept(self, event: PendingEvent, source: Any) -> bool:
        """Take an encoded event for delivery, if the buffer has room.

        ``source`` (the enriched event) goes to the listeners with it.

        Returns
        -------
        bool
            True if accepted; False if the buffer is full (nothing was done:
            call `accept_when_full`).

        Raises
        ------
        EventManagerError
            See `check`.
        """
        self.check(event)
        if not self._ledger.accept(event):
            return False
        listeners = self._listeners
        if listeners.hears_accepted:
            listeners.accepted(event, source)
        # A publisher about to wait for its event has its batch sent before
        # it yields; the others' events wait for the sender's next turn,
        # which batches all that arrived in the meantime.
        if event.waiter is None or not self._sender.send_now(event.deadline):
            self._sender.wake()
        return True

    async def accept_when_full(
        self, event_type: EventType[Any], event: PendingEvent, source: Any
    ) -> bool:
        """Apply the overflow policy to an event the full buffer refused.

        Returns
        -------
        bool
            True if the event was accepted after waiting for room; False if
            it was dropped, or given up because the manager closed or its
            event type failed to register while it waited (reported,
            counted, and its waiter resolved either way).

        Raises
        ------
        EventBufferFullError
            With the ``raise`` policy, or ``block`` and ``raise_on_error``
            after the wait.
        """
        buffer = self._buffer
        full = EventBufferFullError(
            f"Pending-event buffer of topic {self._topic!r} is full"
            f" ({buffer.max_events} events or {buffer.max_bytes} bytes)"
        )
        if buffer.overflow is OverflowPolicy.RAISE:
            raise full
        if buffer.overflow is OverflowPolicy.BLOCK:
            await self._wait_for_room(event.size, buffer.block_timeout)
            if self._closed is not None:
                self._sender.settle(
                    [
                        self._ledger.refuse(
                            event,
                            Settled.CLOSED,
                            EventManagerClosedError(
                                "the event manager closed while the event"
                                " waited for room in the buffer"
                            ),
                        )
                    ]
                )
                return False
            failure = self._registrations.failure(event.event_name)
            if failure is not None:
                # Registration failed for good during the wait.
                self._sender.settle(
                    [self._ledger.refuse(event, Settled.REJECTED, failure)]
                )
                return False
            if event_type.schema_id is not None:
                # Encoded before registration finished, during the wait.
                set_schema_id(event.value, event_type.schema_id)
            # The delivery timeout counts from when the buffer takes the
            # event; the wait for room had a bound of its own.
            event = event._replace(deadline=time.monotonic() + self.delivery_timeout)
            if self._ledger.accept(event):
                self._sender.wake()
                if self._listeners.hears_accepted:
                    self._listeners.accepted(event, source)
                return True
            if self._raise_on_error:
                raise full
        self._sender.settle([self._ledger.drop(event, full)])
        return False

    async def _wait_for_room(self, size: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        room = self._sender.room
        while self._closed is None and not self._ledger.has_room(size):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            room.clear()
            try:
                async with asyncio.timeout(remaining):
                    await room.wait()
            except TimeoutError:
                return


def _copy(error: BaseException) -> BaseException:
    """A fresh instance of a stored refusal (see ``fresh_copy``)."""
    if isinstance(error, EventManagerUninitializedError):
        return type(error)(*error.args)
    return EventManagerClosedError(*error.args)
