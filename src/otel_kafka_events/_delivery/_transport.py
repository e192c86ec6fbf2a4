"""The seam between delivery and whatever carries records to Kafka.

Delivery speaks only to a `Transport`: start and stop it, build a batch,
send it, ask about a topic, say what an error means. `AiokafkaTransport`
(``_aiokafka``) is the real one; `otel_kafka_events.testing.MemoryTransport`
keeps records in memory, so that the event manager's own behaviour is
tested without a broker, the way httpx tests its client on a mock
transport.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "Headers",
    "RecordBatch",
    "SendDone",
    "SendFailure",
    "TopicInfo",
    "Transport",
]

Headers = tuple[tuple[str, bytes], ...]
"""Kafka record headers: ``(key, value)`` pairs, shared by events of a span."""

SendDone = Callable[[int | None, BaseException | None], None]
"""Told how a send ended: ``(base_offset, None)`` once the broker has
acknowledged the batch, or ``(None, error)``."""


class SendFailure(enum.Enum):
    """What a failed send means for its events."""

    RETRY = "retry"
    """Not written; sending again may work (connection lost, leader moved)."""
    RESTART = "restart"
    """Not written, and the transport can send nothing more until it is
    stopped and started again (a Kafka producer that lost its identity)."""
    REJECT = "reject"
    """The broker refused the batch; sending it again will not help."""
    UNKNOWN = "unknown"
    """Sent, with no answer: the broker may have written it. Sending it
    again could write it twice, so it is not acknowledged, and not resent."""


@dataclass(frozen=True)
class TopicInfo:
    """What the broker says about a topic.

    Attributes
    ----------
    partitions
        Its partition ids (empty when it has none, or on error).
    error_code
        The broker's Kafka error code for it; 0 when it is usable.
    error_name
        The protocol name of ``error_code`` (``UNKNOWN_TOPIC_OR_PARTITION``),
        or None.
    retriable
        Whether asking again later may succeed (a leader being elected).
    """

    partitions: tuple[int, ...]
    error_code: int = 0
    error_name: str | None = None
    retriable: bool = False


class RecordBatch(Protocol):
    """A batch being built for one partition."""

    def append(
        self,
        key: bytes | None,
        value: bytearray,
        timestamp_ms: int,
        headers: list[tuple[str, bytes]],
    ) -> bool:
        """Add one record; False (nothing added) when the batch is full."""
        ...


class Transport(Protocol):
    """Carries record batches to the partitions of a topic.

    A transport owns its clients. `start` is called before anything else
    and again after `stop` (a reconnection, or a restart after
    `SendFailure.RESTART`); between `stop` and the next successful `start`
    nothing is sent.

    A transport class may set ``sends_eagerly = True`` to say that its
    `send` uses nothing bound to the current task across a wait (no
    ``asyncio.timeout``, no ``asyncio.current_task``): `send` then runs up
    to its first wait in the task that starts the batch, often a
    publisher's, which saves a turn of the event loop per batch. Without
    it, `send` runs in a task of its own.
    """

    @property
    def target(self) -> str:
        """Where it connects, for messages (``"kafka:9092"``)."""
        ...

    @property
    def max_request_size(self) -> int:
        """The largest request the transport sends, in bytes."""
        ...

    @property
    def idempotent(self) -> bool:
        """Whether a batch that got no answer can be sent again without a
        duplicate (Kafka's idempotent producer)."""
        ...

    @property
    def max_in_flight(self) -> int:
        """How many batches of one partition the transport takes at once and
        keeps in order.

        It writes them in the order `send` was called, so a batch is never
        written after a later batch of its partition; and once it fails a
        batch without writing it (a failure other than
        `SendFailure.REJECT` or `SendFailure.UNKNOWN`), it writes none of
        the batches of that partition sent after it before that failure was
        reported (they fail too), as Kafka's idempotent producer does. Read
        after each `start`: the answer may change (an idempotent producer
        the broker refused). A transport without this attribute takes one
        at a time.
        """
        ...

    async def start(self) -> None:
        """Connect.

        Raises
        ------
        BrokerUnavailableError
            If Kafka cannot be reached now (worth trying again later).
        IdempotenceUnsupportedError
            If idempotence is required and the broker refuses it.
        """
        ...

    async def stop(self, timeout: float, *, abandoned: bool) -> None:
        """Disconnect within about ``timeout`` seconds.

        ``abandoned`` says that batches the transport still holds were given
        up (their events already settled): they are failed at once rather
        than waited for.
        """
        ...

    def new_batch(self) -> RecordBatch:
        """Start an empty batch."""
        ...

    async def send(
        self, batch: RecordBatch, topic: str, partition: int, done: SendDone
    ) -> None:
        """Hand ``batch`` over for sending.

        Returns once the transport owns the batch; from that moment the
        batch may be written whatever happens to the caller. ``done`` is
        called exactly once, later, from the event loop (never from within
        this call), with the offset the broker gave the batch's first record
        or the error the send ended with.
        """
        ...

    async def describe_topic(self, topic: str) -> TopicInfo:
        """What the broker says about ``topic``.

        Raises
        ------
        BrokerUnavailableError
            If the broker cannot be asked now.
        """
        ...

    async def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Write one record outside the event batches and wait for its
        acknowledgement (the manager's own log export uses it)."""
        ...

    def classify(self, error: BaseException) -> SendFailure:
        """What a failed send means for its events."""
        ...
