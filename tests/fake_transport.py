"""An in-memory `Transport`: a record log per partition, sends the test steers.

Used by the ledger's state-machine test and the sender's tests, so the
delivery logic is checked without a broker. The integration suites check
the same guarantees against real brokers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from otel_kafka_events._delivery._transport import RecordBatch, SendDone, SendFailure


class RetriableSendError(ConnectionError):
    """A send failure that leaves the batch unwritten (like a lost connection)."""


class RejectedSendError(Exception):
    """A send the broker refuses for good."""


class ProducerBrokenError(Exception):
    """A failure after which the producer must be replaced."""


@dataclass
class FakeBatch:
    """A batch of at most ``capacity`` records."""

    capacity: int
    records: list[bytes] = field(default_factory=list)

    def append(
        self, value: bytearray, timestamp_ms: int, headers: list[tuple[str, bytes]]
    ) -> bool:
        if len(self.records) >= self.capacity:
            return False
        self.records.append(bytes(value))
        return True


@dataclass
class _Held:
    batch: FakeBatch
    partition: int
    done: SendDone


class FakeTransport:
    """Writes batches to in-memory partition logs.

    Parameters
    ----------
    partitions
        Number of partitions.
    capacity
        Records per batch.
    """

    max_request_size = 1_000_000

    def __init__(self, partitions: int = 2, capacity: int = 100) -> None:
        self.logs: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        self.capacity = capacity
        self.failures: list[BaseException] = []
        """Errors the next sends fail with, in order (nothing written)."""
        self.stalled: set[int] = set()
        """Partitions whose sends are held until `release` (never acked)."""
        self.held: list[_Held] = []
        self.sends = 0

    def new_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    def write(self, batch: FakeBatch, partition: int) -> int:
        """Append a batch to a partition's log; the offset of its first record."""
        log = self.logs[partition]
        base = len(log)
        log.extend(batch.records)
        return base

    async def send(
        self, batch: RecordBatch, topic: str, partition: int, done: SendDone
    ) -> None:
        assert isinstance(batch, FakeBatch)
        self.sends += 1
        # Like a real transport: the answer comes later, from the loop.
        loop = asyncio.get_running_loop()
        if self.failures:
            loop.call_soon(done, None, self.failures.pop(0))
        elif partition in self.stalled:
            self.held.append(_Held(batch, partition, done))
        else:
            loop.call_soon(done, self.write(batch, partition), None)

    def release(self) -> None:
        """Write and acknowledge every held batch (a sender that gave one up
        ignores its answer)."""
        for held in self.held:
            held.done(self.write(held.batch, held.partition), None)
        self.held.clear()

    async def partition_for(self, topic: str, key: bytes) -> int:
        return sum(key) % len(self.logs)

    def classify(self, error: BaseException) -> SendFailure:
        if isinstance(error, ProducerBrokenError):
            return SendFailure.REPLACE_PRODUCER
        if isinstance(error, RetriableSendError):
            return SendFailure.RETRY
        return SendFailure.REJECT
