"""A local broker plus schema registry, with helpers for tests.

`LocalKafkaStack` is what the pytest plugin hands to tests: one
Kafka-protocol broker (`make_broker` picks which) and one
`LocalSchemaRegistry`, both on free ports of 127.0.0.1, started together and
always stopped together.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from ._broker_base import LocalBroker
from ._lifecycle import StartStop
from ._registry import LocalSchemaRegistry

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord

__all__ = [
    "BROKER_ENV_VAR",
    "BROKER_KINDS",
    "LocalKafkaStack",
    "create_topic",
    "make_broker",
]

BROKER_ENV_VAR = "OTEL_KAFKA_EVENTS_TEST_BROKER"
"""Environment variable naming the broker kind when none is given."""

BROKER_KINDS = ("tansu", "noida", "kafka")
"""The kinds `make_broker` accepts; the first is the default."""

# Kafka allows hyphens too, but keeping to these characters makes a topic name
# usable in Avro names and metric labels without escaping.
_INVALID_TOPIC_CHARS = re.compile(r"[^A-Za-z0-9._]")
_MAX_TOPIC_PREFIX = 200  # Kafka's limit is 249; leave room for the suffix.


def make_broker(kind: str | None = None) -> LocalBroker:
    """Create (without starting) a local broker of the given kind.

    Parameters
    ----------
    kind
        ``"tansu"``, ``"noida"`` or ``"kafka"`` (Apache Kafka). ``None`` reads
        `BROKER_ENV_VAR`, so a CI job can run the same tests against every
        broker; when that is unset or empty the default is ``"tansu"``, the
        fastest to start.

    Raises
    ------
    ValueError
        If the kind is not one of `BROKER_KINDS`.
    """
    if kind is None:
        kind = os.environ.get(BROKER_ENV_VAR, "")
    normalized = kind.strip().lower() or BROKER_KINDS[0]
    if normalized == "tansu":
        from ._tansu import TansuBroker

        return TansuBroker()
    if normalized == "noida":
        from ._noida import NoidaBroker

        return NoidaBroker()
    if normalized == "kafka":
        # Imported lazily: it is the only broker that needs a JVM.
        from ._apache_kafka import ApacheKafkaBroker

        return ApacheKafkaBroker()
    raise ValueError(
        f"unknown broker kind {kind!r}: expected one of {', '.join(BROKER_KINDS)} "
        f"(as argument or in the {BROKER_ENV_VAR} environment variable)"
    )


class LocalKafkaStack(StartStop):
    """A started local broker and schema registry, torn down together.

    Use as ``with LocalKafkaStack() as stack:`` or ``async with``; the async
    form runs the blocking start and stop in a worker thread so that the event
    loop keeps running. If either part fails to start, whatever did start is
    stopped before the error propagates.

    Parameters
    ----------
    broker
        A `LocalBroker`, or a kind for `make_broker` (``None``: the
        `BROKER_ENV_VAR` kind, else Tansu). The stack stops it on exit.
    registry
        A `LocalSchemaRegistry`; by default a new one on a free port.
    """

    def __init__(
        self,
        broker: LocalBroker | str | None = None,
        *,
        registry: LocalSchemaRegistry | None = None,
    ) -> None:
        self._broker = (
            broker if isinstance(broker, LocalBroker) else make_broker(broker)
        )
        self._registry = (
            registry
            if registry is not None
            else LocalSchemaRegistry(host="127.0.0.1", port=0)
        )

    @property
    def broker(self) -> LocalBroker:
        """The Kafka-protocol broker."""
        return self._broker

    @property
    def registry(self) -> LocalSchemaRegistry:
        """The schema registry."""
        return self._registry

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the broker, for Kafka clients."""
        return self._broker.bootstrap_servers

    @property
    def registry_url(self) -> str:
        """Base URL of the schema registry."""
        return self._registry.url

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the broker, then the registry; on failure stop both."""
        try:
            self._broker.start()
            self._registry.start()
        except BaseException as error:
            try:
                self.stop()
            except Exception as cleanup_error:
                error.add_note(
                    f"stopping the stack afterwards failed too: {cleanup_error!r}"
                )
            raise

    def stop(self) -> None:
        """Stop the registry and the broker, even if one of them fails.

        Raises
        ------
        Exception
            The first error, after both stop attempts have been made.
        """
        errors: list[Exception] = []
        for component in (self._registry, self._broker):
            try:
                component.stop()
            except Exception as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup("stopping the local Kafka stack failed", errors)

    async def __aenter__(self) -> Self:
        starting = asyncio.ensure_future(asyncio.to_thread(self.start))
        try:
            # Shielded: a cancelled thread would go on starting processes.
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            # Let the start finish in its thread, then undo it.
            await asyncio.wait([starting])
            await asyncio.to_thread(self.stop)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Shielded so that a cancellation cannot leave the stop half-done.
        await asyncio.shield(asyncio.to_thread(self.stop))

    # -- helpers for tests -----------------------------------------------------

    @staticmethod
    def unique_topic(prefix: str = "test") -> str:
        """Return a topic name no other test uses.

        Characters other than letters, digits, dots and underscores in
        ``prefix`` become underscores, so a test's node id can be passed.
        """
        clean = _INVALID_TOPIC_CHARS.sub("_", prefix)[:_MAX_TOPIC_PREFIX]
        return f"{clean}_{uuid.uuid4().hex}" if clean else uuid.uuid4().hex

    async def create_topic(
        self, name: str, partitions: int = 1, *, exist_ok: bool = False
    ) -> None:
        """Create a topic with the broker's `LocalBroker.replication_factor`
        (1, except on a `KafkaCluster`).

        Raises
        ------
        aiokafka.errors.TopicAlreadyExistsError
            Unless ``exist_ok``; note that both local brokers auto-create a
            topic when a client merely asks for its metadata.
        aiokafka.errors.KafkaError
            For any other error the broker reports.
        """
        await create_topic(
            self.bootstrap_servers,
            name,
            partitions,
            replication_factor=self._broker.replication_factor,
            exist_ok=exist_ok,
        )

    async def delete_topic(self, name: str) -> None:
        """Delete a topic.

        Raises
        ------
        aiokafka.errors.KafkaError
            If the broker reports an error, e.g. for an unknown topic.
        """
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            response = await admin.delete_topics([name])
        finally:
            await admin.close()
        for topic_error in response.topic_error_codes:
            _raise_for_code(topic_error, f"deleting topic {name!r}")

    async def consume(
        self,
        topic: str,
        count: int,
        # A parameter rather than asyncio.timeout() around the call, so the
        # TimeoutError can say how many records did arrive.
        timeout: float = 10.0,
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """Read the first ``count`` records of a topic, from the beginning.

        Uses no consumer group (group joins are slow on Tansu) and assigns
        every partition of the topic, so records come in per-partition order.

        Raises
        ------
        TimeoutError
            If the topic does not exist or fewer than ``count`` records arrive
            within ``timeout`` seconds; the message says how many did.
        """
        deadline = time.monotonic() + timeout
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            partitions = await _wait_for_partitions(consumer, topic, deadline)
            if partitions is None:
                raise TimeoutError(
                    f"topic {topic!r} did not exist within {timeout} s "
                    f"(0 of {count} records)"
                )
            assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            records: list[ConsumerRecord[bytes, bytes]] = []
            while len(records) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"only {len(records)} of {count} records arrived on topic "
                        f"{topic!r} within {timeout} s"
                    )
                batches = await consumer.getmany(
                    timeout_ms=max(int(remaining * 1000), 1),
                    max_records=count - len(records),
                )
                for batch in batches.values():
                    records.extend(batch)
            return records
        finally:
            await consumer.stop()


async def _wait_for_partitions(
    consumer: Any, topic: str, deadline: float
) -> set[int] | None:
    """The partition ids of ``topic``, or ``None`` if it is still unknown.

    Asks for all topics' metadata rather than this one's: a metadata request
    naming a topic would make Tansu and noida-db create it.
    """
    while True:
        # Read the partitions from that answer itself: the consumer's own
        # metadata only covers topics it was asked about, which on Apache
        # Kafka leaves ``partitions_for_topic`` empty here.
        cluster = await consumer._client.fetch_all_metadata()
        partitions = cluster.partitions_for_topic(topic)
        if partitions:
            return cast(set[int], set(partitions))
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.05)


async def create_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int = 1,
    *,
    replication_factor: int = 1,
    exist_ok: bool = False,
) -> None:
    """Create a topic (by default with one replica) on any broker.

    `LocalKafkaStack.create_topic` for a broker without a stack around it;
    it raises the same errors.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                )
            ]
        )
    finally:
        await admin.close()
    for topic_error in response.topic_errors:
        _raise_for_code(topic_error, f"creating topic {name!r}", exist_ok=exist_ok)


def _raise_for_code(
    topic_error: tuple[Any, ...], action: str, *, exist_ok: bool = False
) -> None:
    """Raise the aiokafka error for a per-topic error code in a response."""
    code = topic_error[1]
    if code == 0:
        return
    error_type = for_code(code)
    if exist_ok and issubclass(error_type, TopicAlreadyExistsError):
        return
    message = topic_error[2] if len(topic_error) > 2 else None
    raise error_type(f"{action}: {message}" if message else action)
