"""The delivery ledger's invariants, checked after every step of random runs.

A hypothesis state machine publishes events of several types to several
partitions, lets registrations succeed late or fail, hands out batches,
finishes their sends (acknowledged, retriable failure, refusal, no answer by
the deadline, with or without the broker having written them), moves the
clock and closes. One type's events are keyed (over every partition, by
their key), another's are spread over every partition (sticky per batch).
The "topic" is a log of records per partition. After every step it checks
the invariants stated in ``_ledger.py``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from otel_kafka_events import BufferOptions
from otel_kafka_events._delivery._ledger import (
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
        self.batches: dict[int, Any] = {}
        self.keys: dict[str, bytes] = {}
        self.closed = False

    # Bookkeeping of what the ledger reports ---------------------------------

    def record(self, settlements: list[Settlement]) -> None:
        for settlement in settlements:
            for event in settlement.events:
                assert event.event_id not in self.outcomes, (
                    f"{event.event_id} settled twice"
                )
                self.outcomes[event.event_id] = settlement.outcome
                if settlement.outcome in (
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

        batch = self.ledger.take(partition, self.now, fits)
        if partition in self.batches:
            assert batch is None, "two batches out for one partition"
            return
        if batch is None:
            return
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
        self.batches[partition] = (batch, records)

    @precondition(lambda self: bool(self.batches))
    @rule(data=st.data())
    def acknowledged(self, data: st.DataObject) -> None:
        partition = data.draw(st.sampled_from(sorted(self.batches)))
        batch, records = self.batches.pop(partition)
        offset = self.transport.write(records, partition)
        self.record(self.ledger.delivered(batch, offset))

    @precondition(lambda self: bool(self.batches))
    @rule(data=st.data())
    def retriable_failure(self, data: st.DataObject) -> None:
        partition = data.draw(st.sampled_from(sorted(self.batches)))
        batch, _ = self.batches.pop(partition)
        self.record(self.ledger.retry(batch, self.now, ConnectionError("lost")))

    @precondition(lambda self: bool(self.batches))
    @rule(data=st.data())
    def refused(self, data: st.DataObject) -> None:
        partition = data.draw(st.sampled_from(sorted(self.batches)))
        batch, _ = self.batches.pop(partition)
        self.record(self.ledger.fail(batch, Settled.REJECTED, ValueError("refused")))

    @precondition(lambda self: bool(self.batches))
    @rule(data=st.data(), written=st.booleans())
    def sent_events_reach_their_deadline(
        self, data: st.DataObject, written: bool
    ) -> None:
        """The sender gives each sent event up at its own deadline; the
        broker may have written the batch all the same."""
        partition = data.draw(st.sampled_from(sorted(self.batches)))
        batch, records = self.batches[partition]
        settlements = self.ledger.expire_batch(batch, self.now, TimeoutError("no ack"))
        self.record(settlements)
        for settlement in settlements:
            assert settlement.outcome is Settled.NOT_ACKNOWLEDGED
            self.maybe_written.update(e.event_id for e in settlement.events)
        if not self.ledger.is_out(batch):
            # Every event was given up: the batch is gone from the ledger.
            del self.batches[partition]
            if written:
                self.transport.write(records, partition)

    @precondition(lambda self: not self.closed)
    @rule(seconds=st.floats(0, 3))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: not self.closed)
    @rule()
    def expire(self) -> None:
        # As the sender does: the events of sent batches first, then queues.
        for partition, (batch, _) in list(self.batches.items()):
            settlements = self.ledger.expire_batch(batch, self.now, TimeoutError())
            self.record(settlements)
            for settlement in settlements:
                self.maybe_written.update(e.event_id for e in settlement.events)
            if not self.ledger.is_out(batch):
                del self.batches[partition]
        before = self.ledger.next_deadline()
        self.record(self.ledger.expire(self.now, lambda o: TimeoutError(o.value)))
        after = self.ledger.next_deadline()
        assert after is None or after > self.now
        if before is not None and before > self.now:
            assert after == before

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self) -> None:
        self.record(
            self.ledger.close(TimeoutError("in flight"), TimeoutError("queued"))
        )
        self.batches.clear()
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
            elif outcome is Settled.NOT_ACKNOWLEDGED:
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
