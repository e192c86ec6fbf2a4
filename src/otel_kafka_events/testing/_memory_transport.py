"""`MemoryTransport`: a `Transport` that keeps every record in memory.

Give it to a `KafkaEventManager` (``transport=MemoryTransport()``) with a
`MemorySchemaRegistry` (``registry=``), and the real manager runs end to end,
encoding, registration, trace context, buffering, settlement and telemetry
included, with no broker and no socket. A test can read what was written
(`MemoryTransport.records`), and make sends fail, stall or the broker
vanish, to see what the application does about it.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from dataclasses import dataclass, field

from .._delivery._transport import RecordBatch, SendDone, SendFailure, TopicInfo
from ..errors import BrokerUnavailableError

__all__ = [
    "MemoryRecord",
    "MemoryTransport",
    "SendError",
    "SendOutcome",
]


class SendOutcome(enum.Enum):
    """How `MemoryTransport.fail_next` makes a send end."""

    RETRIABLE = "retriable"
    """Not written; the sender retries it (a lost connection, a leader
    election)."""
    REJECTED = "rejected"
    """Not written; the broker refuses it for good (say, a record too large
    for the topic)."""
    RESTART = "restart"
    """Not written, and the producer must be started anew (it lost its
    idempotent identity)."""
    NO_ANSWER = "no answer"
    """No answer: the events are reported not acknowledged. With
    ``written=True`` the broker wrote them anyway."""


class SendError(Exception):
    """The error a send made to fail ends with.

    Attributes
    ----------
    outcome
        What the failure means.
    """

    def __init__(self, outcome: SendOutcome) -> None:
        super().__init__(f"send made to fail ({outcome.value})")
        self.outcome = outcome


@dataclass(frozen=True)
class MemoryRecord:
    """A record the transport accepted.

    Attributes
    ----------
    topic, partition, offset
        Where it was written.
    key
        The record key, or None.
    value
        The record value (the Confluent-framed Avro event).
    headers
        The record headers, in order.
    timestamp_ms
        The record timestamp.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    def header(self, name: str) -> bytes | None:
        """The value of the last header called ``name``, or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


@dataclass
class _Batch:
    capacity: int
    records: list[tuple[bytes | None, bytes, tuple[tuple[str, bytes], ...], int]] = (
        field(default_factory=list)
    )
    size: int = 0

    def append(
        self,
        key: bytes | None,
        value: bytearray,
        timestamp_ms: int,
        headers: list[tuple[str, bytes]],
    ) -> bool:
        size = len(value) + len(key or b"") + sum(len(k) + len(v) for k, v in headers)
        if self.records and self.size + size > self.capacity:
            return False
        self.records.append((key, bytes(value), tuple(headers), timestamp_ms))
        self.size += size
        return True


@dataclass
class _Held:
    batch: _Batch
    topic: str
    partition: int
    done: SendDone


class MemoryTransport:
    """Writes events to in-memory topics.

    Topics are created when first used, with ``partitions`` partitions,
    unless ``auto_create_topics`` is False (then `create_topic` them: the
    manager's topic check fails with `KafkaTopicError` otherwise, as on a
    cluster that does not create topics).

    Parameters
    ----------
    partitions
        Partitions of a topic created on first use.
    auto_create_topics
        Create a topic when it is first asked about.
    max_request_size
        The largest request, as a producer's ``max_request_size``.
    batch_size
        Bytes of records per batch (``max_batch_size``).
    idempotent
        Whether it behaves as Kafka's idempotent producer (a send that got
        no answer can be retried without a duplicate).
    max_in_flight
        How many batches of one partition it takes at once
        (`Transport.max_in_flight`). It writes each partition's batches in
        the order they were sent; once a send of a partition fails without
        being written (`fail_next`, any outcome but ``REJECTED``, and
        ``NO_ANSWER`` without ``written``), the sends of that partition that
        follow fail too, as retriable, until that failure has been
        reported, as Kafka's idempotent producer fails the requests behind
        a gap in its sequence.

    Examples
    --------
    >>> transport = MemoryTransport()
    >>> manager = KafkaEventManager(
    ...     application="shop", topic_prefix="events",
    ...     transport=transport, registry=MemorySchemaRegistry())
    """

    sends_eagerly = True
    """`send` never waits (see `Transport`)."""

    def __init__(
        self,
        *,
        partitions: int = 1,
        auto_create_topics: bool = True,
        max_request_size: int = 1_048_576,
        batch_size: int = 512 * 1024,
        idempotent: bool = True,
        max_in_flight: int = 1,
    ) -> None:
        if type(max_in_flight) is not int or max_in_flight < 1:
            raise ValueError(
                f"max_in_flight must be an int of at least 1, not {max_in_flight!r}"
            )
        self._partitions = partitions
        self._auto_create = auto_create_topics
        self._max_request_size = max_request_size
        self._batch_size = batch_size
        self._idempotent = idempotent
        self._max_in_flight = max_in_flight
        self._gaps: set[tuple[str, int]] = set()
        """Partitions whose failed send is not reported yet."""
        self._topics: dict[str, list[list[MemoryRecord]]] = {}
        self._failures: deque[tuple[SendOutcome, bool]] = deque()
        self._held: list[_Held] = []
        self._started = False
        self.records: list[MemoryRecord] = []
        """Every record written, in the order written."""
        self.reachable = True
        """While False, `start` fails as for an unreachable broker."""
        self.stalled = False
        """While True, sends are held (neither written nor answered) until
        `release`."""
        self.stalled_partitions: set[int] = set()
        """Partitions whose sends are held until `release`."""
        self.starts = 0
        """How many times the transport was started."""
        self.sends = 0
        """How many batches were handed over."""

    # Steering -----------------------------------------------------------------

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        """Create ``topic`` with ``partitions`` partitions (idempotent)."""
        self._topics.setdefault(topic, [[] for _ in range(partitions)])

    def fail_next(
        self, outcome: SendOutcome = SendOutcome.RETRIABLE, *, written: bool = False
    ) -> None:
        """Make the next send end with ``outcome`` (one call per send).

        ``written`` (with `SendOutcome.NO_ANSWER`) writes the batch anyway,
        as a broker whose answer was lost.
        """
        self._failures.append((SendOutcome(outcome), written))

    def release(self) -> None:
        """Write every held send, and stop holding new ones; each is
        acknowledged from the event loop, as a send is.

        A sender that gave a batch up ignores its late answer.
        """
        self.stalled = False
        self.stalled_partitions.clear()
        held, self._held = self._held, []
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # no event loop: nobody waits for a turn of it
        for item in held:
            offset = self._write(item.batch, item.topic, item.partition)
            if loop is None:
                item.done(offset, None)
            else:
                loop.call_soon(item.done, offset, None)

    @property
    def held(self) -> int:
        """How many sends are held (stalled) now."""
        return len(self._held)

    def records_for(self, topic: str) -> list[MemoryRecord]:
        """The records of ``topic``, partition by partition, in offset
        order."""
        return [r for log in self._topics.get(topic, []) for r in log]

    # The seam -----------------------------------------------------------------

    @property
    def target(self) -> str:
        """``"memory"``."""
        return "memory"

    @property
    def max_request_size(self) -> int:
        """The largest request."""
        return self._max_request_size

    @property
    def idempotent(self) -> bool:
        """Whether it behaves as the idempotent producer."""
        return self._idempotent

    @property
    def max_in_flight(self) -> int:
        """How many batches of one partition it takes at once."""
        return self._max_in_flight

    @property
    def started(self) -> bool:
        """Whether it is started."""
        return self._started

    async def start(self) -> None:
        """Start, unless `reachable` is False."""
        await asyncio.sleep(0)
        if not self.reachable:
            raise BrokerUnavailableError("Cannot connect to Kafka at memory")
        self.starts += 1
        self._started = True

    async def stop(self, timeout: float, *, abandoned: bool) -> None:
        """Stop; held sends are failed as never sent."""
        self._started = False
        held, self._held = self._held, []
        loop = asyncio.get_running_loop()
        for item in held:
            loop.call_soon(item.done, None, SendError(SendOutcome.RETRIABLE))

    def new_batch(self) -> RecordBatch:
        """An empty batch of ``batch_size`` bytes."""
        return _Batch(self._batch_size)

    async def send(
        self, batch: RecordBatch, topic: str, partition: int, done: SendDone
    ) -> None:
        """Write the batch (or fail or hold it, as steered); ``done`` is
        told from the event loop."""
        assert isinstance(batch, _Batch), "a batch of this transport's new_batch"
        if not self._started:
            raise BrokerUnavailableError("not connected to Kafka at memory")
        self.sends += 1
        loop = asyncio.get_running_loop()
        where = (topic, partition)
        if where in self._gaps:
            # Behind a failed send: not written either.
            loop.call_soon(done, None, SendError(SendOutcome.RETRIABLE))
        elif self._failures:
            outcome, written = self._failures.popleft()
            if written:
                self._write(batch, topic, partition)
            elif outcome is not SendOutcome.REJECTED:
                self._gaps.add(where)
                done = self._closing_gap(where, done)
            loop.call_soon(done, None, SendError(outcome))
        elif self.stalled or partition in self.stalled_partitions:
            self._held.append(_Held(batch, topic, partition, done))
        else:
            loop.call_soon(done, self._write(batch, topic, partition), None)

    async def describe_topic(self, topic: str) -> TopicInfo:
        """The topic's partitions (created first, if it may be)."""
        if not self._started:
            raise BrokerUnavailableError("not connected to Kafka at memory")
        if topic not in self._topics and self._auto_create:
            self.create_topic(topic, self._partitions)
        partitions = self._topics.get(topic)
        if partitions is None:
            return TopicInfo((), 3, "UNKNOWN_TOPIC_OR_PARTITION")
        return TopicInfo(tuple(range(len(partitions))))

    async def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Write one record outside the event batches."""
        if not self._started:
            raise BrokerUnavailableError("not connected to Kafka at memory")
        batch = _Batch(len(value) + len(key or b"") + 1)
        batch.append(key, bytearray(value), 0, [])
        if topic not in self._topics:
            self.create_topic(topic, self._partitions)
        self._write(batch, topic, 0)

    def classify(self, error: BaseException) -> SendFailure:
        """What a send error means (`SendOutcome`)."""
        if not isinstance(error, SendError):
            return SendFailure.RETRY
        return {
            SendOutcome.RETRIABLE: SendFailure.RETRY,
            SendOutcome.REJECTED: SendFailure.REJECT,
            SendOutcome.RESTART: SendFailure.RESTART,
            SendOutcome.NO_ANSWER: (
                SendFailure.RETRY if self._idempotent else SendFailure.UNKNOWN
            ),
        }[error.outcome]

    def _closing_gap(self, where: tuple[str, int], done: SendDone) -> SendDone:
        """``done``, which first lets the partition's sends through again."""

        def reported(offset: int | None, error: BaseException | None) -> None:
            self._gaps.discard(where)
            done(offset, error)

        return reported

    def _write(self, batch: _Batch, topic: str, partition: int) -> int:
        if topic not in self._topics:
            self.create_topic(topic, self._partitions)
        log = self._topics[topic][partition]
        base = len(log)
        for index, (key, value, headers, timestamp_ms) in enumerate(batch.records):
            record = MemoryRecord(
                topic, partition, base + index, key, value, headers, timestamp_ms
            )
            log.append(record)
            self.records.append(record)
        return base
