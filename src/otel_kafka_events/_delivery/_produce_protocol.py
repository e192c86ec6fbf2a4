"""Kafka's produce and producer-id requests, their answers, and record
batches, across the aiokafka releases we support (0.11 to 0.14).

From aiokafka 0.13 a request object picks its version per connection from
what the broker supports; before that, each request is a list of classes,
one per version, and the caller picks one from the broker version the
client detected, as aiokafka's own producer does. Both shapes are handled
here, so that `_pipeline` speaks to one small surface.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from aiokafka.protocol import produce as _produce
from aiokafka.protocol import transaction as _transaction
from aiokafka.record.default_records import DefaultRecordBatchBuilder

__all__ = [
    "MIN_BROKER_VERSION",
    "PartitionAnswer",
    "Records",
    "init_producer_id_request",
    "partition_answers",
    "produce_request",
    "requests_supported",
]

MIN_BROKER_VERSION = (0, 11)
"""The first Kafka with record batches of magic 2 and producer ids."""

# Record batches of magic 2, uncompressed, outside a transaction.
_MAGIC = 2
_NO_COMPRESSION = 0

# aiokafka's producer waits this long for a transaction it never opens.
_TRANSACTION_TIMEOUT_MS = 60_000


def requests_supported(client: Any) -> bool:
    """Whether requests can be made for ``client``'s broker: always with
    aiokafka 0.13 and later; before, when the broker version it detected
    is at least `MIN_BROKER_VERSION`."""
    if not isinstance(_produce.ProduceRequest, list):
        return True
    version = getattr(client, "api_version", None)
    return isinstance(version, tuple) and version >= MIN_BROKER_VERSION


def _listed_produce_version(broker: tuple[int, ...]) -> int:
    """The produce request version aiokafka before 0.13 sends a broker."""
    for at_least, version in (((2, 1), 7), ((2, 0), 6), ((1, 1), 5), ((1, 0), 4)):
        if broker >= at_least:
            return version
    return 3


def produce_request(
    client: Any,
    *,
    acks: int,
    timeout_ms: int,
    topics: list[tuple[str, list[tuple[int, bytearray]]]],
) -> Any:
    """A request writing record batches (one per partition) to ``topics``:
    ``[(topic, [(partition, batch bytes), ...]), ...]``."""
    request = _produce.ProduceRequest
    if isinstance(request, list):
        version = _listed_produce_version(client.api_version)
        return request[version](
            transactional_id=None, required_acks=acks, timeout=timeout_ms, topics=topics
        )
    return request(None, acks, timeout_ms, topics)


def init_producer_id_request() -> Any:
    """A request for a producer id outside any transaction."""
    request = _transaction.InitProducerIdRequest
    if isinstance(request, list):
        return request[0](
            transactional_id=None, transaction_timeout_ms=_TRANSACTION_TIMEOUT_MS
        )
    return request(None, _TRANSACTION_TIMEOUT_MS)


class PartitionAnswer(NamedTuple):
    """The broker's answer for one partition of a produce request."""

    topic: str
    partition: int
    error_code: int
    base_offset: int


def partition_answers(response: Any) -> Iterator[PartitionAnswer]:
    """Each partition's answer in a produce response (every version starts a
    partition's entry with its id, error code and base offset)."""
    for topic, partitions in response.topics:
        for entry in partitions:
            yield PartitionAnswer(
                str(topic), int(entry[0]), int(entry[1]), int(entry[2])
            )


class Records:
    """A `RecordBatch` of magic 2, built by aiokafka's record builder.

    The producer id and the batch's first sequence number are written in
    when the batch is handed over (`seal`): sequence numbers go out in the
    order batches are sent.

    Parameters
    ----------
    max_bytes
        The most bytes of records the batch takes; the first record always
        fits.
    """

    __slots__ = ("_builder", "_count")

    def __init__(self, max_bytes: int) -> None:
        self._builder = DefaultRecordBatchBuilder(
            _MAGIC, _NO_COMPRESSION, 0, -1, -1, -1, max_bytes
        )
        self._count = 0

    @property
    def count(self) -> int:
        """Records in the batch."""
        return self._count

    @property
    def size(self) -> int:
        """Bytes of the batch so far."""
        size: int = self._builder.size()
        return size

    def append(
        self,
        key: bytes | None,
        value: bytearray,
        timestamp_ms: int,
        headers: list[tuple[str, bytes]],
    ) -> bool:
        if self._builder.append(self._count, timestamp_ms, key, value, headers) is None:
            return False
        self._count += 1
        return True

    def seal(self, producer_id: int, epoch: int, base_sequence: int) -> bytearray:
        """The batch's bytes, numbered for the idempotent producer (``-1``
        each, without one)."""
        self._builder.set_producer_state(producer_id, epoch, base_sequence)
        built: bytearray = self._builder.build()
        return built
