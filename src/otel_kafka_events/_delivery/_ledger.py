"""The delivery ledger: what happened to every event ``publish`` accepted.

Pure bookkeeping, with no asyncio, no Kafka client and no clock of its own:
the caller passes the time in. That keeps every rule below checkable by a
test that drives the ledger step by step (``tests/unit/delivery``).

Invariants
----------
1. Every accepted event ends exactly once, as delivered, failed or dropped,
   and ``published == delivered + failed + dropped + buffered`` after every
   method returns.
2. An event fails by time only once its own deadline has passed, whatever
   other partitions or event types are doing, whether it is queued or sent;
   an expired event is never handed out in a batch again.
3. Each partition has at most `Ledger.max_in_flight` batches out at a
   time, kept in the order they were taken, and its queue keeps every event
   type's events in publish order, also when a batch comes back for a retry
   or a newly registered type's backlog joins it. A batch that comes back
   for a retry while other batches of its partition are out is held (its
   events still count, and fail at their own deadlines), and nothing more
   is taken from that partition, until every batch out has ended: those
   taken before it may still fail and come back, and those taken after it
   will (see below), and all their events must go back ahead of younger
   ones. Then the held events go back ahead of the queue, in the order
   they were taken. So a partition's events reach the topic in publish
   order, given a transport that writes a partition's batches in the order
   they were taken and, once it fails one without writing it, writes none
   taken after it before that failure was reported here (Kafka's
   idempotent producer fails the requests behind a gap in its sequence).
   Events with one key (of one type) all go to one partition, so they keep
   their publish order too.
4. ``buffered`` never exceeds the buffer's event bound, nor
   ``buffered_bytes`` its byte bound.

Nothing here notifies anyone: each method that settles events returns
`Settlement` objects, and the caller tells waiters and listeners.
"""

from __future__ import annotations

import enum
import heapq
import operator
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from .._options import BufferOptions
from ._partitioner import murmur2
from ._transport import Headers

__all__ = [
    "Batch",
    "DeliveryFailure",
    "DeliveryStats",
    "Ledger",
    "PendingEvent",
    "Route",
    "Settled",
    "Settlement",
]


class Settled(enum.Enum):
    """How an event left the ledger, and for a failure, why."""

    DELIVERED = "delivered"
    DROPPED = "dropped"
    """Refused for room by the overflow policy."""
    TIMED_OUT_REGISTRY = "timed out waiting for the schema registry"
    """Its event type's schema was still unregistered at its deadline."""
    TIMED_OUT_KAFKA = "timed out waiting for Kafka"
    """Still queued at its deadline (broker unreachable, or retrying)."""
    NOT_ACKNOWLEDGED = "sent but not acknowledged in time"
    """Sent, with no answer by its deadline: the broker may have it."""
    REJECTED = "rejected"
    """The broker refused it, or its event type cannot be registered."""
    CLOSED = "closed"
    """Still pending when the event manager closed."""

    @property
    def reason(self) -> str:
        """The `DeliveryFailure.reason` of this outcome."""
        if self is Settled.DROPPED:
            return "dropped"
        if self is Settled.CLOSED:
            return "shutdown"
        return "failed"


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
        ``"failed"`` (refused, or not delivered within the delivery
        timeout), ``"dropped"`` (refused for room by the overflow policy) or
        ``"shutdown"`` (still pending when `EventManager.aclose` gave up).
    error
        The underlying error.
    """

    event_id: str
    event_name: str
    reason: str
    error: BaseException


@dataclass(frozen=True)
class DeliveryStats:
    """Counters of a Kafka event manager since it was last initialized.

    ``published == delivered + failed + dropped + buffered`` at every moment.

    Attributes
    ----------
    published
        Events accepted by ``publish`` (dropped ones included).
    delivered
        Events Kafka acknowledged.
    failed
        Events that will not be delivered (timed out, refused, closed).
    dropped
        Events the overflow policy dropped.
    buffered
        Events accepted and not yet settled.
    buffered_bytes
        Their encoded size.
    listener_errors
        Calls into listeners (spans, log records, metrics, the failure
        callback) that raised; each was logged and the event settled anyway.
    """

    published: int
    delivered: int
    failed: int
    dropped: int
    buffered: int
    buffered_bytes: int
    listener_errors: int = 0


class PendingEvent(NamedTuple):
    """An encoded event on its way to Kafka.

    A tuple, so that the garbage collector stops tracking it once it holds
    only plain values (no waiter, no attachment): a full buffer then costs
    the collector nothing.
    """

    event_name: str
    value: bytearray
    headers: Headers | None
    timestamp_ms: int
    event_id: str
    size: int
    deadline: float
    """When its delivery timeout runs out, on the caller's monotonic clock."""
    waiter: Any = None
    """An object the caller resolves with the outcome (a future), or None."""
    attachment: Any = None
    """What a listener attached at publish (a producer span, or the caller's
    span context for batch spans); delivery only carries it."""
    key: bytes | None = None
    """The record key, or None."""


_DEADLINE = operator.attrgetter("deadline")
_TAKEN = operator.attrgetter("taken")


@dataclass(frozen=True, slots=True)
class Settlement:
    """Events that left the ledger together, and how.

    Attributes
    ----------
    events
        The events, in their queue order.
    outcome
        How they left.
    error
        Why, for every outcome but `Settled.DELIVERED`.
    partition
        Where a delivered run of events was written.
    base_offset
        The offset of its first event (the others follow it).
    """

    events: list[PendingEvent]
    outcome: Settled
    error: BaseException | None = None
    partition: int | None = None
    base_offset: int | None = None


@dataclass(slots=True, eq=False)
class Batch:
    """Events handed out for one send to one partition.

    A batch's events are in deadline order (a partition's queue is), so
    the events settled while it is out, at their deadlines, are always its
    first ones: `first_open` counts them.

    Attributes
    ----------
    partition
        Where it goes.
    events
        Its events, in record order.
    first_open
        The index of its first event not settled yet.
    taken
        When it was taken, as a count of the ledger's batches: a batch of
        its partition taken before it has a lower one.
    """

    partition: int
    events: list[PendingEvent]
    first_open: int = 0
    taken: int = 0

    def open_events(self) -> list[PendingEvent]:
        """The events not settled yet."""
        return self.events[self.first_open :] if self.first_open else self.events

    @property
    def done(self) -> bool:
        """Whether every event of the batch is settled."""
        return self.first_open == len(self.events)


class Route:
    """Which partition each event of one event type goes to.

    A keyed event goes where Kafka's default partitioner puts its key
    (murmur2 of the key, modulo the partition count), so that every event
    with that key lands on one partition. An unkeyed one goes to the type's
    home partition, or with ``spread`` to the type's current sticky
    partition, which moves on to the next partition each time a batch is
    taken from it (as the Java client's sticky partitioner does).

    Parameters
    ----------
    home
        The partition of unkeyed events (the first sticky one with
        ``spread``).
    partitions
        Every partition of the topic; ``(home,)`` when None.
    spread
        Spread unkeyed events over ``partitions``, one batch at a time.
    """

    __slots__ = ("_count", "_known", "_ordered", "home", "spread", "sticky")

    KNOWN_KEYS = 4096
    """Keys whose partition is remembered (the hash is pure Python); the
    memory is cleared when full."""

    def __init__(
        self, home: int, partitions: Iterable[int] | None = None, spread: bool = False
    ) -> None:
        ordered = tuple(sorted(set(partitions or ()) | {home}))
        self._ordered = ordered
        self._count = len(ordered)
        self.home = home
        self.spread = spread
        self.sticky = home
        """Where unkeyed events go now, with ``spread``."""
        self._known: dict[bytes, int] = {}

    @property
    def partitions(self) -> tuple[int, ...]:
        """Every partition events of the type may go to, in order."""
        return self._ordered

    def partition(self, key: bytes | None) -> int:
        """The partition of an event with ``key`` (None: unkeyed)."""
        if key is None:
            return self.sticky if self.spread else self.home
        known = self._known
        partition = known.get(key)
        if partition is None:
            if len(known) >= self.KNOWN_KEYS:
                known.clear()
            partition = known[key] = self._ordered[
                (murmur2(key) & 0x7FFFFFFF) % self._count
            ]
        return partition

    def batch_taken(self, partition: int) -> None:
        """A batch left ``partition``: unkeyed events move on, if they went
        there."""
        if self.spread and partition == self.sticky:
            ordered = self._ordered
            self.sticky = ordered[(ordered.index(partition) + 1) % self._count]


class Ledger:
    """Accounts for events between ``publish`` and Kafka's acknowledgement.

    Parameters
    ----------
    buffer
        The bounds on events held at once.
    max_in_flight
        Batches of one partition out at once (`max_in_flight`).

    Notes
    -----
    Events of an event type wait in a queue of their own until the type is
    registered (`register`), then join their partitions' queues (its
    `Route` says which); later events of that type go straight there. A
    partition's queue is ordered by deadline, which for one event type is
    publish order.
    """

    def __init__(self, buffer: BufferOptions, max_in_flight: int = 1) -> None:
        self.buffer = buffer
        self._max_events = buffer.max_events
        self._max_bytes = buffer.max_bytes
        self._waiting: dict[str, deque[PendingEvent]] = {}
        self._routes: dict[str, Route] = {}
        self._spreading: list[Route] = []
        self._queues: dict[int, deque[PendingEvent]] = {}
        self._out: dict[int, list[Batch]] = {}
        """Each partition's batches out, in take order (no entry: none)."""
        self._held: dict[int, list[Batch]] = {}
        """Each partition's retried batches waiting for batches taken before
        them to end, in take order (no entry: none)."""
        self._blocked: set[int] = set()
        """Partitions nothing may be taken from now: as many batches out as
        allowed, or events held."""
        self._depth = 1
        self._taken = 0
        self.max_in_flight = max_in_flight
        self._published = 0
        self._delivered = 0
        self._failed = 0
        self._dropped = 0
        self._buffered = 0
        self._bytes = 0

    # Counters ---------------------------------------------------------------

    @property
    def stats(self) -> DeliveryStats:
        """A snapshot of the counters."""
        return DeliveryStats(
            published=self._published,
            delivered=self._delivered,
            failed=self._failed,
            dropped=self._dropped,
            buffered=self._buffered,
            buffered_bytes=self._bytes,
        )

    @property
    def buffered(self) -> int:
        """Events accepted and not yet settled, in queues or in flight."""
        return self._buffered

    @property
    def max_in_flight(self) -> int:
        """How many batches of one partition may be out at once.

        The sender sets it each time its transport starts (what the
        transport allows may change); lowering it takes nothing back: the
        batches out end as they would, and no more are taken meanwhile.
        """
        return self._depth

    @max_in_flight.setter
    def max_in_flight(self, depth: int) -> None:
        if type(depth) is not int or depth < 1:
            raise ValueError(f"max_in_flight must be an int >= 1, not {depth!r}")
        self._depth = depth
        for partition in {*self._out, *self._held, *self._blocked}:
            self._recheck(partition)

    # Intake -----------------------------------------------------------------

    def has_room(self, size: int) -> bool:
        """Whether an event of ``size`` bytes fits within the bounds."""
        return self._buffered < self._max_events and self._bytes + size <= (
            self._max_bytes
        )

    def accept(self, event: PendingEvent) -> bool:
        """Take ``event`` if it fits; False (nothing changed) if not."""
        size = event.size
        if self._buffered >= self._max_events or (self._bytes + size > self._max_bytes):
            return False
        self._published += 1
        self._buffered += 1
        self._bytes += size
        route = self._routes.get(event.event_name)
        if route is not None:
            key = event.key
            if key is None and not route.spread:
                self._queues[route.home].append(event)
            else:
                self._queues[route.partition(key)].append(event)
        else:
            queue = self._waiting.get(event.event_name)
            if queue is None:
                queue = self._waiting[event.event_name] = deque()
            queue.append(event)
        return True

    def drop(self, event: PendingEvent, error: BaseException) -> Settlement:
        """Count an event refused for room as published and dropped."""
        self._published += 1
        self._dropped += 1
        return Settlement([event], Settled.DROPPED, error)

    def refuse(
        self, event: PendingEvent, outcome: Settled, error: BaseException
    ) -> Settlement:
        """Count an event given up before it was queued (e.g. the manager
        closed while it waited for room) as published and failed."""
        self._published += 1
        self._failed += 1
        return Settlement([event], outcome, error)

    # Registration -----------------------------------------------------------

    def waiting(self, event_name: str) -> Iterable[PendingEvent]:
        """The events of a type still waiting for its registration."""
        return tuple(self._waiting.get(event_name, ()))

    def register(self, event_name: str, route: Route | int) -> None:
        """Route an event type's events (a partition number: all of them
        there) and move its backlog to their partitions.

        The backlog is merged by deadline, so each partition queue stays in
        deadline order (which `expire` relies on) and each type's events
        stay in publish order.
        """
        if event_name in self._routes:
            return
        if isinstance(route, int):
            route = Route(route)
        self._routes[event_name] = route
        if route.spread:
            self._spreading.append(route)
        for partition in route.partitions:
            self._queues.setdefault(partition, deque())
        backlog = self._waiting.pop(event_name, None)
        if not backlog:
            return
        # With spread, a backlog is one batch's worth: it stays together.
        parts: dict[int, list[PendingEvent]] = {}
        for event in backlog:
            parts.setdefault(route.partition(event.key), []).append(event)
        for partition, events in parts.items():
            queue = self._queues[partition]
            self._queues[partition] = deque(heapq.merge(queue, events, key=_DEADLINE))

    def fail_type(self, event_name: str, error: BaseException) -> list[Settlement]:
        """Fail the backlog of an event type that cannot be registered."""
        backlog = self._waiting.pop(event_name, None)
        if not backlog:
            return []
        return [self._settle_failed(list(backlog), Settled.REJECTED, error)]

    # Sending ----------------------------------------------------------------

    def sendable(self) -> list[int]:
        """Partitions with queued events that a batch may be taken from now
        (fewer than `max_in_flight` batches out, no events held)."""
        blocked = self._blocked
        return [
            partition
            for partition, queue in self._queues.items()
            if queue and partition not in blocked
        ]

    def can_send(self, partition: int) -> bool:
        """Whether ``partition`` has queued events and a batch may be taken
        from it now."""
        return bool(self._queues.get(partition)) and partition not in self._blocked

    def is_out(self, batch: Batch) -> bool:
        """Whether ``batch`` is still out (not yet settled as a whole)."""
        return batch in self._out.get(batch.partition, ())

    def take(
        self, partition: int, now: float, fits: Callable[[PendingEvent], bool]
    ) -> Batch | None:
        """Hand out the next batch of a partition.

        Events whose deadline has passed are not handed out: call `expire`
        first. ``fits`` is offered each live event in queue order and says
        whether it went into the batch being built; the batch ends at the
        first that does not fit.

        Returns
        -------
        Batch or None
            None if no batch may be taken from the partition now (see
            `can_send`), or it has nothing live to send.
        """
        if partition in self._blocked:
            return None
        queue = self._queues.get(partition)
        if not queue:
            return None
        taken: list[PendingEvent] = []
        while queue:
            event = queue[0]
            if event.deadline <= now or not fits(event):
                break
            taken.append(queue.popleft())
        if not taken:
            return None
        self._taken += 1
        batch = Batch(partition, taken, 0, self._taken)
        out = self._out.get(partition)
        if out is None:
            self._out[partition] = [batch]
            if self._depth == 1:
                self._blocked.add(partition)
        else:
            out.append(batch)
            if len(out) >= self._depth:
                self._blocked.add(partition)
        for route in self._spreading:
            route.batch_taken(partition)
        return batch

    def delivered(self, batch: Batch, base_offset: int) -> list[Settlement]:
        """Settle a batch Kafka acknowledged: its events not settled yet,
        in runs of consecutive offsets. Batches of a partition may be
        acknowledged in any order."""
        self._end(batch)
        events = batch.open_events()
        if not events:
            return []
        self._delivered += len(events)
        self._buffered -= len(events)
        self._bytes -= sum(event.size for event in events)
        return [
            Settlement(
                events,
                Settled.DELIVERED,
                partition=batch.partition,
                base_offset=base_offset + batch.first_open,
            )
        ]

    def retry(self, batch: Batch, now: float, error: BaseException) -> list[Settlement]:
        """Put a batch that failed retriably back at the head of its queue.

        Its open events go back in their order, ahead of anything queued
        since (which is younger); those whose deadline has passed fail
        instead. While other batches of its partition are out, they are
        held instead, and the partition sends nothing, until every batch out
        has ended: then they go back with the events of the others that came
        back meanwhile, in take order (invariant 3).
        """
        open_events = batch.open_events()
        live = [e for e in open_events if e.deadline > now]
        expired = [e for e in open_events if e.deadline <= now]
        self._end(batch, live)
        if not expired:
            return []
        return [self._settle_failed(expired, Settled.TIMED_OUT_KAFKA, error)]

    def fail(
        self, batch: Batch, outcome: Settled, error: BaseException
    ) -> list[Settlement]:
        """Settle the open events of a batch that will not be sent again."""
        self._end(batch)
        events = batch.open_events()
        if not events:
            return []
        return [self._settle_failed(events, outcome, error)]

    def expire(
        self, now: float, error: Callable[[Settled], BaseException]
    ) -> list[Settlement]:
        """Fail every queued event whose deadline has passed.

        Parameters
        ----------
        now
            The current time.
        error
            Makes the error of an outcome (one per settlement).
        """
        settlements = []
        for queue, outcome in self._queues_with_outcome():
            expired: list[PendingEvent] = []
            while queue and queue[0].deadline <= now:
                expired.append(queue.popleft())
            if expired:
                settlements.append(
                    self._settle_failed(expired, outcome, error(outcome))
                )
        if self._held:
            settlements.extend(self._expire_held(now, error))
        return settlements

    def expire_batch(
        self, batch: Batch, now: float, error: BaseException
    ) -> list[Settlement]:
        """Fail the events of a sent batch whose deadline has passed, as not
        acknowledged: the broker may have them.

        The batch stays out for its other events; one whose events are all
        settled this way is given up (`is_out` then says False, and its
        answer, should one come, is to be ignored).
        """
        events = batch.events
        start = end = batch.first_open
        while end < len(events) and events[end].deadline <= now:
            end += 1
        if end == start:
            return []
        batch.first_open = end
        if batch.done:
            self._end(batch)
        return [self._settle_failed(events[start:end], Settled.NOT_ACKNOWLEDGED, error)]

    def next_deadline(self) -> float | None:
        """The earliest deadline among queued, held and sent events (None if
        none)."""
        heads = [queue[0].deadline for queue, _ in self._queues_with_outcome() if queue]
        for batches in (*self._out.values(), *self._held.values()):
            for batch in batches:
                if not batch.done:
                    heads.append(batch.events[batch.first_open].deadline)
        return min(heads, default=None)

    def close(
        self, in_flight_error: BaseException, queued_error: BaseException
    ) -> list[Settlement]:
        """Settle everything left as `Settled.CLOSED`: the batches out with
        ``in_flight_error`` (the broker may have them), then the held events
        and the queues with ``queued_error``."""
        settlements = []
        for batches in self._out.values():
            for batch in batches:
                events = batch.open_events()
                if events:
                    settlements.append(
                        self._settle_failed(events, Settled.CLOSED, in_flight_error)
                    )
        self._out.clear()
        for batches in self._held.values():
            events = [e for batch in batches for e in batch.open_events()]
            if events:
                settlements.append(
                    self._settle_failed(events, Settled.CLOSED, queued_error)
                )
        self._held.clear()
        self._blocked.clear()
        for queue, _ in self._queues_with_outcome():
            if queue:
                settlements.append(
                    self._settle_failed(list(queue), Settled.CLOSED, queued_error)
                )
                queue.clear()
        return settlements

    # Internals --------------------------------------------------------------

    def _queues_with_outcome(self) -> Iterator[tuple[deque[PendingEvent], Settled]]:
        for queue in self._waiting.values():
            yield queue, Settled.TIMED_OUT_REGISTRY
        for queue in self._queues.values():
            yield queue, Settled.TIMED_OUT_KAFKA

    def _end(self, batch: Batch, back: list[PendingEvent] | None = None) -> None:
        """``batch`` is no longer out; ``back``: its events to send again.

        Those are held while other batches of the partition are out; once
        none is, whatever is held goes back to the queue.
        """
        partition = batch.partition
        out = self._out.get(partition)
        if out is not None and out[0] is batch and len(out) == 1:
            del self._out[partition]
            if not back and not self._held:
                # The usual case: it was the only one, and nothing waits.
                self._blocked.discard(partition)
                return
        elif out is not None and batch in out:
            out.remove(batch)
            if not out:
                del self._out[partition]
        else:
            raise ValueError(f"batch of partition {partition} is not out")
        if back:
            held = self._held.setdefault(partition, [])
            held.append(Batch(partition, back, 0, batch.taken))
            held.sort(key=_TAKEN)
        if partition not in self._out:
            waiting = self._held.pop(partition, None)
            if waiting:
                self._put_back(partition, waiting)
        self._recheck(partition)

    def _put_back(self, partition: int, held: list[Batch]) -> None:
        """Requeue events of ``partition`` that failed retriably, ahead of
        the queue, in take order."""
        # Each batch is in deadline order, and so is the queue: the merge
        # keeps it so, and puts an earlier-taken batch's events first on a
        # tie, so that each type's events stay in publish order.
        runs = [batch.open_events() for batch in held]
        queue = self._queues[partition]
        self._queues[partition] = deque(heapq.merge(*runs, queue, key=_DEADLINE))

    def _expire_held(
        self, now: float, error: Callable[[Settled], BaseException]
    ) -> list[Settlement]:
        """Fail the held events whose deadline has passed (never sent again:
        timed out waiting for Kafka, as queued ones)."""
        settlements = []
        for partition, held in list(self._held.items()):
            expired: list[PendingEvent] = []
            for batch in held:
                events, end = batch.events, batch.first_open
                while end < len(events) and events[end].deadline <= now:
                    expired.append(events[end])
                    end += 1
                batch.first_open = end
            if not expired:
                continue
            left = [batch for batch in held if not batch.done]
            if left:
                self._held[partition] = left
            else:
                del self._held[partition]
                self._recheck(partition)
            outcome = Settled.TIMED_OUT_KAFKA
            settlements.append(self._settle_failed(expired, outcome, error(outcome)))
        return settlements

    def _recheck(self, partition: int) -> None:
        """Whether a batch may be taken from ``partition``, as it is now."""
        if partition in self._held or len(self._out.get(partition, ())) >= self._depth:
            self._blocked.add(partition)
        else:
            self._blocked.discard(partition)

    def _settle_failed(
        self, events: list[PendingEvent], outcome: Settled, error: BaseException
    ) -> Settlement:
        self._failed += len(events)
        self._buffered -= len(events)
        self._bytes -= sum(event.size for event in events)
        return Settlement(events, outcome, error)
