"""The seam between the sender and whatever carries batches to Kafka.

The sender speaks only to a `Transport`: build a batch, send it, choose a
partition, say what an error means. `AiokafkaTransport` (``_kafka_transport``)
is the real one; the test suite has an in-memory one, so the sender's logic
is tested without a broker, the way httpx tests its client on a mock
transport.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol

__all__ = ["RecordBatch", "SendDone", "SendFailure", "Transport"]

SendDone = Callable[[int | None, BaseException | None], None]
"""Told how a send ended: ``(base_offset, None)`` once the broker has
acknowledged the batch, or ``(None, error)``."""


class SendFailure(enum.Enum):
    """What a failed send means for its events."""

    RETRY = "retry"
    """Not written; sending again may work (connection lost, leader moved)."""
    REPLACE_PRODUCER = "replace producer"
    """Not written, and the producer cannot send anything any more: send
    again with a new one."""
    REJECT = "reject"
    """The broker refused the batch; sending it again will not help."""
    UNKNOWN = "unknown"
    """Sent, with no answer: the broker may have written it. Sending it
    again could write it twice, so it is not acknowledged, and not resent."""


class RecordBatch(Protocol):
    """A batch being built for one partition."""

    def append(
        self, value: bytearray, timestamp_ms: int, headers: list[tuple[str, bytes]]
    ) -> bool:
        """Add one record; False (nothing added) when the batch is full."""
        ...


class Transport(Protocol):
    """Carries record batches to the partitions of a topic."""

    @property
    def max_request_size(self) -> int:
        """The largest record, headers included, the transport can send."""
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
        or the error the send ended with. A caller that stops waiting simply
        ignores the call.
        """
        ...

    async def partition_for(self, topic: str, key: bytes) -> int:
        """The partition records with ``key`` go to."""
        ...

    def classify(self, error: BaseException) -> SendFailure:
        """What a failed send means for its events."""
        ...
