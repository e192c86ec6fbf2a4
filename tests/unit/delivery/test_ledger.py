"""The delivery ledger's invariants, checked after every step of random runs.

A hypothesis state machine publishes events of several types to several
partitions, lets registrations succeed late or fail, hands out batches (up
to 1 to 5 per partition at once, drawn per run, and changed as a restarted
transport may), finishes their sends in any order (acknowledged,
retriable failure, refusal, no answer, no answer by the deadline, with or
without the broker having written them), moves the clock and closes. One
type's events are keyed (over every partition, by their key), another's
are spread over every partition (sticky per batch).

The "broker" writes a partition's batches in the order they were taken: a
batch is written only once every batch taken before it was written or will
never be; a batch that fails retriably is not written, and neither is any
batch taken after it before that failure was reported (Kafka's idempotent
producer fails the requests behind a gap in its sequence; that is what
`Transport.max_in_flight` asks of a transport). Acknowledgements of written
batches come in any order. The "topic" is a log of records per partition.
After every step it checks the invariants stated in ``_ledger.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from otel_kafka_events import BufferOptions
from otel_kafka_events._delivery._ledger import (
    Batch,
    Ledger,
    PendingEvent,
    Route,
    Settled,
    Settlement,
)
from otel_kafka_events._delivery._partitioner import partition_for_key


class Topic:
    """Partition logs, and batches of at most ``capacity`` records."""

    def __init__(self, partitions: int) -> None:
        self.logs: dict[int, list[bytes]] = {p: [] for p in range(partitions)}

    def write(self, records: list[bytes], partition: int) -> int:
        """Append records to a partition; the offset of the first."""
        log = self.logs[partition]
        base = len(log)
        log.extend(records)
        return base


TIMEOUT = 10.0
TYPES = ("alpha", "beta", "gamma", "keyed", "spread")
PARTITIONS = 3
PARTITION_OF = {"alpha": 0, "beta": 1, "gamma": 0, "keyed": 1, "spread": 2}
KEYS = (b"k1", b"k2", b"k3", b"k4")
ALL = tuple(range(PARTITIONS))


def route_of(name: str) -> Route:
    """How the ledger is told to route each type (as `Registrations` does)."""
    if name == "keyed":
        return Route(PARTITION_OF[name], ALL)
    if name == "spread":
        return Route(PARTITION_OF[name], ALL, spread=True)
    return Route(PARTITION_OF[name])


MAX_EVENTS = 6
MAX_BYTES = 2048


def make_event(
    name: str, sequence: int, now: float, size: int, key: bytes | None = None
) -> PendingEvent:
    value = bytearray(f"{name}:{sequence}".encode())
    return PendingEvent(
        name,
        value,
        None,
        0,
        f"{name}-{sequence}",
        size,
        now + TIMEOUT,
        None,
        None,
        key,
    )


@dataclass(eq=False)
class Sent:
    """A batch handed to the "transport", as the broker sees it."""

    batch: Batch
    records: list[bytes]
    written_at: int | None = None
    """The offset of its first record, once written."""
    dead: bool = False
    """Never to be written."""


class LedgerMachine(RuleBasedStateMachine):
    """Drives a `Ledger` the way the sender and the manager do."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(BufferOptions(max_events=MAX_EVENTS, max_bytes=MAX_BYTES))
        self.transport = Topic(PARTITIONS)
        self.now = 0.0
        self.sequence = dict.fromkeys(TYPES, 0)
        self.registered: set[str] = set()
        self.unregistrable: set[str] = set()
        self.accepted: dict[str, PendingEvent] = {}
        self.outcomes: dict[str, Settled] = {}
        self.handed_out: set[str] = set()
        self.maybe_written: set[str] = set()
        self.out: dict[int, list[Sent]] = {p: [] for p in ALL}
        """The batches the ledger has out, per partition, in take order."""
        self.pipeline: dict[int, list[Sent]] = {p: [] for p in ALL}
        """What the broker may still write, per partition, in take order
        (batches the ledger gave up included)."""
        self.depth = 1
        self.keys: dict[str, bytes] = {}
        self.closed = False

    @initialize(depth=st.integers(1, 5))
    def pipelined(self, depth: int) -> None:
        self.depth = self.ledger.max_in_flight = depth

    # Bookkeeping of what the ledger reports ---------------------------------

    def record(self, settlements: list[Settlement], answered: bool = False) -> None:
        """Check and note outcomes; ``answered``: the transport's answer
        settled them, not the clock."""
        for settlement in settlements:
            for event in settlement.events:
                assert event.event_id not in self.outcomes, (
                    f"{event.event_id} settled twice"
                )
                self.outcomes[event.event_id] = settlement.outcome
                if not answered and settlement.outcome in (
                    Settled.TIMED_OUT_KAFKA,
                    Settled.TIMED_OUT_REGISTRY,
                    Settled.NOT_ACKNOWLEDGED,
                ):
                    # Never failed for time before its own deadline.
                    assert event.deadline <= self.now, event
                if settlement.outcome in (
                    Settled.TIMED_OUT_KAFKA,
                    Settled.TIMED_OUT_REGISTRY,
                ):
                    assert event.event_id not in self.maybe_written
            if settlement.outcome is Settled.DELIVERED:
                assert settlement.base_offset is not None

    def ended(self, sent: Sent) -> None:
        """The ledger no longer has ``sent`` out."""
        self.out[sent.batch.partition].remove(sent)
        assert not self.ledger.is_out(sent.batch)

    def not_written(self, sent: Sent) -> None:
        """The broker will never write ``sent``."""
        sent.dead = True
        if sent in self.pipeline[sent.batch.partition]:
            self.pipeline[sent.batch.partition].remove(sent)

    def draw_out(self, data: st.DataObject, written: bool | None = None) -> Sent:
        """One batch out (written or not, when asked), any partition."""
        candidates = [
            sent
            for batches in self.out.values()
            for sent in batches
            if written is None or (sent.written_at is not None) == written
        ]
        return data.draw(st.sampled_from(candidates))

    def has_out(self, written: bool | None = None) -> bool:
        return any(
            written is None or (sent.written_at is not None) == written
            for batches in self.out.values()
            for sent in batches
        )

    # Rules ------------------------------------------------------------------

    @precondition(lambda self: not self.closed)
    @rule(
        name=st.sampled_from(TYPES),
        size=st.integers(10, 600),
        key=st.sampled_from(KEYS),
    )
    def publish(self, name: str, size: int, key: bytes) -> None:
        if name in self.unregistrable:
            return  # the manager refuses it before the ledger sees it
        self.sequence[name] += 1
        if name != "keyed":
            key = None  # type: ignore[assignment]
        event = make_event(name, self.sequence[name], self.now, size, key)
        if key is not None:
            self.keys[event.event_id] = key
        room = self.ledger.has_room(size)
        if self.ledger.accept(event):
            assert room
            self.accepted[event.event_id] = event
        else:
            assert not room
            # The drop_newest policy: counted as published and dropped.
            self.accepted[event.event_id] = event
            self.record([self.ledger.drop(event, RuntimeError("full"))])

    @precondition(lambda self: not self.closed)
    @rule(name=st.sampled_from(TYPES))
    def register(self, name: str) -> None:
        if name in self.registered or name in self.unregistrable:
            return
        self.ledger.register(name, route_of(name))
        self.registered.add(name)

    @precondition(lambda self: not self.closed)
    @rule(name=st.sampled_from(TYPES))
    def registration_fails_for_good(self, name: str) -> None:
        if name in self.registered or name in self.unregistrable:
            return
        self.unregistrable.add(name)
        self.record(self.ledger.fail_type(name, RuntimeError("incompatible")))

    @precondition(lambda self: not self.closed)
    @rule(partition=st.integers(0, PARTITIONS - 1), capacity=st.integers(1, 4))
    def send(self, partition: int, capacity: int) -> None:
        # The sender always expires before handing out a batch.
        self.record(self.ledger.expire(self.now, lambda o: TimeoutError(o.value)))
        records: list[bytes] = []

        def fits(event: PendingEvent) -> bool:
            if len(records) >= capacity:
                return False
            records.append(bytes(event.value))
            return True

        could = self.ledger.can_send(partition)
        batch = self.ledger.take(partition, self.now, fits)
        if len(self.out[partition]) >= self.depth:
            assert not could
            assert batch is None, "more batches out for a partition than allowed"
            return
        if batch is None:
            return
        assert could
        deadlines = [event.deadline for event in batch.events]
        assert deadlines == sorted(deadlines), "a batch out of deadline order"
        for event in batch.events:
            assert event.deadline > self.now, "an expired event was handed out"
            assert event.event_name in self.registered
            if event.key is not None:
                assert partition == partition_for_key(event.key, ALL), (
                    "a keyed event on another partition than its key's"
                )
            elif event.event_name != "spread":
                assert partition == PARTITION_OF[event.event_name]
            self.handed_out.add(event.event_id)
        assert [bytes(e.value) for e in batch.events] == records
        sent = Sent(batch, records)
        self.out[partition].append(sent)
        self.pipeline[partition].append(sent)
        assert self.ledger.is_out(batch)

    @precondition(lambda self: not self.closed)
    @rule(partition=st.integers(0, PARTITIONS - 1), capacity=st.integers(1, 2))
    def send_a_pipeline(self, partition: int, capacity: int) -> None:
        """As the sender does: batches while the partition may send."""
        for _ in range(6):
            self.send(partition, capacity)

    @precondition(lambda self: not self.closed)
    @rule(depth=st.integers(1, 5))
    def transport_restarted(self, depth: int) -> None:
        """What the transport takes at once may change when it restarts;
        the batches out end as they would."""
        self.depth = self.ledger.max_in_flight = depth

    @precondition(lambda self: any(self.pipeline.values()))
    @rule(data=st.data(), drop=st.booleans())
    def broker_writes(self, data: st.DataObject, drop: bool) -> None:
        """The broker writes the next batch of a partition, in take order;
        one the ledger gave up it may drop instead (never written, and the
        batches behind it neither)."""
        partition = data.draw(
            st.sampled_from([p for p, sent in self.pipeline.items() if sent])
        )
        sent = self.pipeline[partition][0]
        if drop and not self.ledger.is_out(sent.batch):
            self.gap(sent)
            return
        sent.written_at = self.transport.write(sent.records, partition)
        self.pipeline[partition].pop(0)

    def gap(self, sent: Sent) -> None:
        """``sent`` is not written, and nor is any batch taken after it
        and before this failure is reported: a gap in the sequence. The
        failures of those are no gaps of their own: a batch taken after
        this failure is reported may be written before they are (a weaker
        transport than Kafka's idempotent producer, to keep the ledger
        honest)."""
        partition = sent.batch.partition
        behind = [
            other
            for other in self.pipeline[partition]
            if other.batch.taken > sent.batch.taken
        ]
        self.not_written(sent)
        for other in behind:
            self.not_written(other)

    @precondition(lambda self: self.has_out(written=True))
    @rule(data=st.data())
    def acknowledged(self, data: st.DataObject) -> None:
        """Any written batch's answer, in any order."""
        sent = self.draw_out(data, written=True)
        assert sent.written_at is not None
        self.record(self.ledger.delivered(sent.batch, sent.written_at))
        self.ended(sent)

    @precondition(lambda self: self.has_out(written=False))
    @rule(data=st.data())
    def retriable_failure(self, data: st.DataObject) -> None:
        """Not written: sent again, possibly in the middle of a pipeline."""
        sent = self.draw_out(data, written=False)
        if not sent.dead:
            # A failure of its own, not the report of one behind a gap.
            self.gap(sent)
        self.record(self.ledger.retry(sent.batch, self.now, ConnectionError("lost")))
        self.ended(sent)

    @precondition(lambda self: self.has_out(written=False))
    @rule(data=st.data())
    def refused(self, data: st.DataObject) -> None:
        sent = self.draw_out(data, written=False)
        self.not_written(sent)
        self.record(
            self.ledger.fail(sent.batch, Settled.REJECTED, ValueError("refused"))
        )
        self.ended(sent)

    @precondition(lambda self: self.has_out())
    @rule(data=st.data(), written=st.booleans())
    def no_answer(self, data: st.DataObject, written: bool) -> None:
        """No answer: not acknowledged, never sent again; the broker wrote
        it, or may write it yet, or never will."""
        sent = self.draw_out(data)
        if sent.written_at is None and not written and not sent.dead:
            self.gap(sent)
        settlements = self.ledger.fail(
            sent.batch, Settled.NOT_ACKNOWLEDGED, TimeoutError("no answer")
        )
        self.ended(sent)
        self.record(settlements, answered=True)
        for settlement in settlements:
            self.maybe_written.update(e.event_id for e in settlement.events)

    @precondition(lambda self: self.has_out())
    @rule(data=st.data())
    def sent_events_reach_their_deadline(self, data: st.DataObject) -> None:
        """The sender gives each sent event up at its own deadline; the
        broker may write the batch all the same."""
        sent = self.draw_out(data)
        settlements = self.ledger.expire_batch(
            sent.batch, self.now, TimeoutError("no ack")
        )
        self.record(settlements)
        for settlement in settlements:
            assert settlement.outcome is Settled.NOT_ACKNOWLEDGED
            self.maybe_written.update(e.event_id for e in settlement.events)
        if not self.ledger.is_out(sent.batch):
            # Every event was given up: the batch is gone from the ledger.
            self.ended(sent)

    @precondition(lambda self: not self.closed)
    @rule(seconds=st.floats(0, 3))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: not self.closed)
    @rule()
    def expire(self) -> None:
        # As the sender does: the events of sent batches first, then queues.
        for batches in self.out.values():
            for sent in list(batches):
                settlements = self.ledger.expire_batch(
                    sent.batch, self.now, TimeoutError()
                )
                self.record(settlements)
                for settlement in settlements:
                    self.maybe_written.update(e.event_id for e in settlement.events)
                if not self.ledger.is_out(sent.batch):
                    self.ended(sent)
        before = self.ledger.next_deadline()
        self.record(self.ledger.expire(self.now, lambda o: TimeoutError(o.value)))
        after = self.ledger.next_deadline()
        assert after is None or after > self.now
        if before is not None and before > self.now:
            assert after == before

    @precondition(lambda self: not self.closed)
    @rule(now=st.integers(0, 9))
    def close(self, now: int) -> None:
        if now:
            return  # rarely: a closed ledger ends the interesting part
        self.record(
            self.ledger.close(TimeoutError("in flight"), TimeoutError("queued"))
        )
        for batches in self.out.values():
            for sent in batches:
                # The broker may have them, but nothing is written any more.
                self.maybe_written.update(e.event_id for e in sent.batch.events)
            batches.clear()
        for sent_list in self.pipeline.values():
            sent_list.clear()
        self.closed = True
        assert self.ledger.buffered == 0

    @rule()
    def stats_are_a_snapshot(self) -> None:
        # Always allowed, so a closed ledger still has a step to take.
        assert self.ledger.stats == self.ledger.stats

    # Invariants -------------------------------------------------------------

    @invariant()
    def counters_add_up(self) -> None:
        stats = self.ledger.stats
        assert stats.published == (
            stats.delivered + stats.failed + stats.dropped + stats.buffered
        )
        assert stats.published == len(self.accepted)
        settled = list(self.outcomes.values())
        assert stats.delivered == settled.count(Settled.DELIVERED)
        assert stats.dropped == settled.count(Settled.DROPPED)
        assert stats.failed == len(settled) - stats.delivered - stats.dropped
        assert stats.buffered == len(self.accepted) - len(self.outcomes)

    @invariant()
    def the_ledger_has_out_what_was_handed_out(self) -> None:
        for batches in self.out.values():
            for sent in batches:
                assert self.ledger.is_out(sent.batch)
        if self.closed:
            assert self.ledger.next_deadline() is None

    @invariant()
    def within_bounds(self) -> None:
        stats = self.ledger.stats
        assert stats.buffered <= MAX_EVENTS
        assert stats.buffered_bytes <= MAX_BYTES
        unsettled = [e for i, e in self.accepted.items() if i not in self.outcomes]
        assert stats.buffered_bytes == sum(e.size for e in unsettled)

    @invariant()
    def the_topic_holds_the_truth(self) -> None:
        written: dict[str, int] = {}
        for log in self.transport.logs.values():
            for record in log:
                event_id = record.decode().replace(":", "-")
                written[event_id] = written.get(event_id, 0) + 1
        for event_id, outcome in self.outcomes.items():
            count = written.get(event_id, 0)
            if outcome is Settled.DELIVERED:
                assert count == 1, f"delivered {event_id} written {count} times"
            elif outcome is Settled.NOT_ACKNOWLEDGED or (
                outcome is Settled.CLOSED and event_id in self.maybe_written
            ):
                # Sent with no answer, or out at the close: maybe written.
                assert count <= 1
            else:
                assert count == 0, f"{event_id} reported {outcome} but written"
                assert outcome is Settled.DROPPED or event_id not in self.maybe_written

    @invariant()
    def each_key_is_on_its_partition_in_publish_order(self) -> None:
        for partition, log in self.transport.logs.items():
            last: dict[bytes, int] = {}
            for record in log:
                event_id = record.decode().replace(":", "-")
                key = self.keys.get(event_id)
                if key is None:
                    continue
                assert partition == partition_for_key(key, ALL)
                sequence = int(event_id.rsplit("-", 1)[1])
                assert sequence > last.get(key, 0), f"key {key!r} out of order"
                last[key] = sequence

    @invariant()
    def each_type_keeps_publish_order(self) -> None:
        for log in self.transport.logs.values():
            last: dict[str, int] = {}
            for record in log:
                name, sequence = record.decode().split(":")
                assert int(sequence) > last.get(name, 0), f"{name} out of order"
                last[name] = int(sequence)


LedgerMachine.TestCase.settings = settings(
    max_examples=500, stateful_step_count=100, deadline=None
)
TestLedgerInvariants = LedgerMachine.TestCase


# -- Routes, step by step ----------------------------------------------------------


def take_all(ledger: Ledger, partition: int) -> list[str]:
    """The ids of the batch ``partition`` hands out now (then acknowledged)."""
    batch = ledger.take(partition, 0.0, lambda event: True)
    if batch is None:
        return []
    ledger.delivered(batch, 0)
    return [event.event_id for event in batch.events]


def test_a_keyed_backlog_joins_its_keys_partitions_at_registration() -> None:
    ledger = Ledger(BufferOptions())
    events = [make_event("keyed", n, 0.0, 10, KEYS[n % 4]) for n in range(1, 9)]
    for event in events:
        assert ledger.accept(event)
    assert ledger.sendable() == []  # not registered yet
    ledger.register("keyed", Route(0, ALL))
    taken = {p: take_all(ledger, p) for p in ALL}
    for event in events:
        assert event.key is not None
        assert event.event_id in taken[partition_for_key(event.key, ALL)]
    for ids in taken.values():
        # Each partition's share in publish order.
        assert ids == sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1]))


def test_spread_events_stay_on_one_partition_until_a_batch_leaves_it() -> None:
    ledger = Ledger(BufferOptions())
    ledger.register("spread", Route(1, ALL, spread=True))
    for n in range(1, 4):
        ledger.accept(make_event("spread", n, 0.0, 10))
    assert ledger.sendable() == [1]
    # Taking from another partition does not move it.
    assert take_all(ledger, 0) == []
    ledger.accept(make_event("spread", 4, 0.0, 10))
    assert take_all(ledger, 1) == ["spread-1", "spread-2", "spread-3", "spread-4"]
    ledger.accept(make_event("spread", 5, 0.0, 10))
    assert take_all(ledger, 2) == ["spread-5"]
    ledger.accept(make_event("spread", 6, 0.0, 10))
    # Past the last partition, back to the first.
    assert take_all(ledger, 0) == ["spread-6"]


def test_a_route_puts_keys_where_kafka_does() -> None:
    route = Route(0, (5, 3, 1, 0, 4, 2))
    assert route.partitions == (0, 1, 2, 3, 4, 5)
    for key in (b"", b"a", b"user-1", b"\xff" * 17):
        assert route.partition(key) == partition_for_key(key, range(6))
    assert route.partition(None) == 0


def test_a_route_forgets_keys_when_its_memory_is_full() -> None:
    class Small(Route):
        __slots__ = ()
        KNOWN_KEYS = 2

    route = Small(0, ALL)
    keys = [f"key-{n}".encode() for n in range(7)]
    for key in keys * 2:
        assert route.partition(key) == partition_for_key(key, ALL)


# -- Several batches out per partition, step by step -----------------------------


def pipelined_ledger(depth: int, events: int) -> Ledger:
    ledger = Ledger(BufferOptions(), max_in_flight=depth)
    ledger.register("alpha", 0)
    for n in range(1, events + 1):
        ledger.accept(make_event("alpha", n, 0.0, 10))
    return ledger


def one_each(ledger: Ledger) -> Batch:
    """A batch of one event of partition 0."""
    records: list[PendingEvent] = []

    def fits(event: PendingEvent) -> bool:
        records.append(event)
        return len(records) == 1

    batch = ledger.take(0, 0.0, fits)
    assert batch is not None
    return batch


def ids(batch: Batch | None) -> list[str]:
    assert batch is not None
    return [event.event_id for event in batch.events]


def test_batches_out_up_to_the_depth_and_acknowledged_in_any_order() -> None:
    ledger = pipelined_ledger(3, 4)
    batches = [one_each(ledger) for _ in range(3)]
    assert ledger.sendable() == []
    assert not ledger.can_send(0)
    assert ledger.take(0, 0.0, lambda event: True) is None
    # The last one answers first.
    [settlement] = ledger.delivered(batches[2], 7)
    assert (settlement.base_offset, ids(batches[2])) == (7, ["alpha-3"])
    assert ledger.is_out(batches[0])
    assert not ledger.is_out(batches[2])
    assert ledger.can_send(0)
    assert ids(ledger.take(0, 0.0, lambda event: True)) == ["alpha-4"]


def test_a_batch_retried_behind_an_earlier_one_waits_for_it() -> None:
    ledger = pipelined_ledger(3, 3)
    first, middle = one_each(ledger), one_each(ledger)
    assert ledger.retry(middle, 0.0, ConnectionError()) == []
    # Held, not requeued: the partition sends nothing meanwhile.
    assert ledger.stats.buffered == 3
    assert not ledger.can_send(0)
    assert ledger.sendable() == []
    assert ledger.next_deadline() == TIMEOUT
    ledger.delivered(first, 0)
    assert ids(ledger.take(0, 0.0, lambda event: True)) == ["alpha-2", "alpha-3"]


def test_a_failure_in_the_middle_waits_for_the_batches_behind_it() -> None:
    # The transport writes none of the batches taken after one it failed
    # without writing: their events must go back ahead of younger ones, so
    # the partition waits for them too.
    ledger = pipelined_ledger(3, 2)
    middle, behind = one_each(ledger), one_each(ledger)
    ledger.accept(make_event("alpha", 3, 0.0, 10))
    ledger.retry(middle, 0.0, ConnectionError())
    assert not ledger.can_send(0)
    assert ledger.take(0, 0.0, lambda event: True) is None
    ledger.retry(behind, 0.0, ConnectionError())
    assert ids(ledger.take(0, 0.0, lambda event: True)) == [
        "alpha-1",
        "alpha-2",
        "alpha-3",
    ]


def test_held_events_fail_at_their_own_deadline_and_close_as_queued() -> None:
    ledger = pipelined_ledger(2, 2)
    first, second = one_each(ledger), one_each(ledger)
    ledger.retry(second, 0.0, ConnectionError())
    [expired] = ledger.expire(TIMEOUT, lambda outcome: TimeoutError(outcome.value))
    assert expired.outcome is Settled.TIMED_OUT_KAFKA
    assert [e.event_id for e in expired.events] == ["alpha-2"]
    assert ledger.next_deadline() == TIMEOUT  # the first, still out
    ledger.accept(make_event("alpha", 3, TIMEOUT, 10))
    # Nothing held any more: the partition may send again.
    assert ledger.can_send(0)
    ledger.retry(first, TIMEOUT - 1, ConnectionError())
    in_flight, queued = TimeoutError("in flight"), TimeoutError("queued")
    closed = ledger.close(in_flight, queued)
    assert [(s.error, [e.event_id for e in s.events]) for s in closed] == [
        (queued, ["alpha-1", "alpha-3"])
    ]
    assert ledger.stats.buffered == 0


def test_a_lower_depth_takes_nothing_back() -> None:
    ledger = pipelined_ledger(3, 4)
    first, second = one_each(ledger), one_each(ledger)
    ledger.max_in_flight = 1
    assert not ledger.can_send(0)
    ledger.delivered(first, 0)
    assert not ledger.can_send(0)
    ledger.delivered(second, 1)
    assert ledger.can_send(0)
    for depth in (0, 6.0, True):
        with pytest.raises(ValueError, match="max_in_flight"):
            ledger.max_in_flight = depth  # type: ignore[assignment]
