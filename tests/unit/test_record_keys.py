"""Record keys and partitions, on a real manager over `MemoryTransport`.

A publisher's key is a payload field or a function of the payload;
``publish(key=...)`` overrides it. A keyed event goes to the partition
Kafka's default partitioner gives its key, so events with one key keep
their order; an unkeyed one goes to its type's partition, or with
``spread=True`` over every partition, one batch at a time.
"""

from __future__ import annotations

import enum
import io
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from otel_kafka_events import (
    EventPayload,
    KafkaEventManager,
    MockEventManager,
    NoopEventManager,
    TelemetryOptions,
)
from otel_kafka_events._delivery._partitioner import partition_for_key
from otel_kafka_events._encoding._codec import split_confluent_frame
from otel_kafka_events._encoding._event_type import EventType
from otel_kafka_events.errors import (
    EventKeyError,
    EventManagerUsageError,
    EventPayloadError,
    UnknownKeyFieldError,
)
from otel_kafka_events.testing import (
    MemoryRecord,
    MemorySchemaRegistry,
    MemoryTransport,
)

PARTITIONS = 6
ALL = range(PARTITIONS)
TOPIC = "events.shop"


class Colour(enum.Enum):
    RED = "red"


class Order(EventPayload):
    """A payload with a field of each kind a key can be made of."""

    user: str | None
    n: int
    ref: uuid.UUID | None = None
    colour: Colour | None = None
    raw: bytes | None = None
    tags: list[str] = []


def make_manager(transport: MemoryTransport, **kwargs: Any) -> KafkaEventManager:
    return KafkaEventManager(
        application="shop",
        topic_prefix="events",
        transport=transport,
        registry=MemorySchemaRegistry(),
        **kwargs,
    )


async def published(
    events: Sequence[tuple[Order, str | bytes | None]], **create: Any
) -> list[MemoryRecord]:
    """The records of ``events`` (payload, per-call key), published in order
    by a publisher made with ``create``."""
    transport = MemoryTransport(partitions=PARTITIONS)
    manager = make_manager(transport)
    await manager.initialize()
    publisher = await manager.create_publisher("order", Order, **create)
    for payload, key in events:
        await publisher.publish(payload, key=key)
    assert await manager.aclose() == 0
    return transport.records


# -- Keys from a field ------------------------------------------------------------


async def test_a_key_field_keys_each_record_and_picks_its_partition() -> None:
    users = ["ada", "grace", "linus", "barbara", "ken", "dennis", "guido"]
    records = await published(
        [(Order(user=u, n=i), None) for i, u in enumerate(users)], key="user"
    )
    by_key = {r.key: r.partition for r in records}
    assert set(by_key) == {u.encode() for u in users}
    for key, partition in by_key.items():
        assert key is not None
        assert partition == partition_for_key(key, ALL)
    # Seven users over six partitions: more than one partition is used.
    assert len(set(by_key.values())) > 1


async def test_events_with_one_key_keep_their_order() -> None:
    users = ["ada", "grace", "linus"]
    events = [(Order(user=users[i % 3], n=i), None) for i in range(60)]
    records = await published(events, key="user")
    seen: dict[bytes | None, list[int]] = defaultdict(list)
    partitions: dict[bytes | None, set[int]] = defaultdict(set)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        seen[record.key].append(decode_n(record))
        partitions[record.key].add(record.partition)
    for index, user in enumerate(users):
        assert seen[user.encode()] == list(range(index, 60, 3))
        assert partitions[user.encode()] == {partition_for_key(user.encode(), ALL)}


@pytest.mark.parametrize(
    ("payload", "field", "key"),
    [
        (Order(user="ada", n=1), "user", b"ada"),
        (Order(user="ünï", n=1), "user", "ünï".encode()),
        (Order(user=None, n=42), "n", b"42"),
        (
            Order(user=None, n=1, ref=uuid.UUID(int=7)),
            "ref",
            b"00000000-0000-0000-0000-000000000007",
        ),
        (Order(user=None, n=1, colour=Colour.RED), "colour", b"red"),
        (Order(user=None, n=1, raw=b"\x00\xff"), "raw", b"\x00\xff"),
    ],
    ids=["str", "unicode", "int", "uuid", "enum", "bytes"],
)
async def test_a_field_value_becomes_key_bytes(
    payload: Order, field: str, key: bytes
) -> None:
    [record] = await published([(payload, None)], key=field)
    assert record.key == key
    assert record.partition == partition_for_key(key, ALL)


async def test_a_none_field_value_means_no_key_and_the_type_partition() -> None:
    [record] = await published([(Order(user=None, n=1), None)], key="user")
    assert record.key is None
    assert record.partition == partition_for_key(f"{TOPIC}.order".encode(), ALL)


async def test_unkeyed_events_of_a_type_all_go_to_one_partition() -> None:
    records = await published([(Order(user=f"u{i}", n=i), None) for i in range(20)])
    assert {r.key for r in records} == {None}
    assert {r.partition for r in records} == {
        partition_for_key(f"{TOPIC}.order".encode(), ALL)
    }
    assert [decode_n(r) for r in records] == list(range(20))


# -- Keys from a function, and per publish -----------------------------------------


async def test_a_key_function_of_the_payload() -> None:
    records = await published(
        [(Order(user="ada", n=1), None), (Order(user=None, n=2), None)],
        key=lambda order: f"{order.user}/{order.n}" if order.user else None,
    )
    assert [r.key for r in records] == [b"ada/1", None]


async def test_a_key_given_to_publish_overrides_the_publishers() -> None:
    records = await published(
        [
            (Order(user="ada", n=1), "override"),
            (Order(user="ada", n=2), b"\xfe\xff"),
            (Order(user="ada", n=3), None),
        ],
        key="user",
    )
    assert [r.key for r in records] == [b"override", b"\xfe\xff", b"ada"]
    assert records[0].partition == partition_for_key(b"override", ALL)


async def test_a_key_given_to_an_unkeyed_publisher() -> None:
    [record] = await published([(Order(user="ada", n=1), "given")])
    assert record.key == b"given"
    assert record.partition == partition_for_key(b"given", ALL)


# -- Refusals ----------------------------------------------------------------------


async def refused(create: dict[str, Any], payload: Order, **publish: Any) -> str:
    """Publish one event that must be refused for its key; the message.

    Nothing may be queued or written.
    """
    transport = MemoryTransport(partitions=PARTITIONS)
    manager = make_manager(transport)
    await manager.initialize()
    publisher = await manager.create_publisher("order", Order, **create)
    with pytest.raises(EventKeyError) as caught:
        await publisher.publish(payload, **publish)
    assert isinstance(caught.value, EventPayloadError)
    assert caught.value.event == "order"
    assert manager.stats.published == 0
    assert await manager.aclose() == 0
    assert transport.records == []
    return str(caught.value)


async def test_a_key_function_that_raises_refuses_the_publish() -> None:
    def broken(order: Order) -> str:
        raise LookupError("no such tenant")

    message = await refused({"key": broken}, Order(user="ada", n=1))
    assert "key function raised LookupError: no such tenant" in message


async def test_a_key_function_raising_a_base_exception_refuses_the_publish() -> None:
    def interrupted(order: Order) -> str:
        raise KeyboardInterrupt

    message = await refused({"key": interrupted}, Order(user="ada", n=1))
    assert "KeyboardInterrupt" in message


async def test_a_key_function_returning_something_else_is_refused() -> None:
    message = await refused({"key": lambda order: order.n}, Order(user="ada", n=1))
    assert "must return str, bytes or None, returned int" in message


@pytest.mark.parametrize("key", [5, 1.5, bytearray(b"x"), ["a"]])
async def test_a_key_of_another_type_given_to_publish_is_refused(key: Any) -> None:
    message = await refused({}, Order(user="ada", n=1), key=key)
    assert f"key must be str or bytes, got {type(key).__name__}" in message


async def test_text_that_is_not_utf8_is_refused() -> None:
    message = await refused({}, Order(user="ada", n=1), key="\ud800")
    assert "key is not valid UTF-8 text" in message


async def test_an_unknown_key_field_is_refused_at_create_publisher() -> None:
    manager = make_manager(MemoryTransport())
    await manager.initialize()
    with pytest.raises(UnknownKeyFieldError) as caught:
        await manager.create_publisher("order", Order, key="customer")
    assert (caught.value.field, caught.value.model) == ("customer", "Order")
    assert "Order has no field 'customer'" in str(caught.value)
    assert "user, n, ref" in str(caught.value)
    # The name is free again: a failed create_publisher registered nothing.
    await manager.create_publisher("order", Order, key="user")
    await manager.aclose()


async def test_a_list_field_cannot_be_the_key() -> None:
    manager = make_manager(MemoryTransport())
    await manager.initialize()
    with pytest.raises(UnknownKeyFieldError, match="'tags' holds array values"):
        await manager.create_publisher("order", Order, key="tags")
    await manager.aclose()


@pytest.mark.parametrize("create", [{"key": 5}, {"spread": "yes"}])
async def test_a_key_or_spread_of_another_type_is_refused(
    create: dict[str, Any],
) -> None:
    manager = make_manager(MemoryTransport())
    await manager.initialize()
    with pytest.raises(EventManagerUsageError, match="'order'"):
        await manager.create_publisher("order", Order, **create)
    await manager.aclose()


@pytest.mark.parametrize("manager_class", [NoopEventManager, MockEventManager])
async def test_managers_without_kafka_check_keys_alike(
    manager_class: type[NoopEventManager],
) -> None:
    manager = manager_class("shop", "events")
    await manager.initialize()
    with pytest.raises(UnknownKeyFieldError):
        await manager.create_publisher("order", Order, key="customer")
    publisher = await manager.create_publisher(
        "order", Order, key=lambda order: order.n
    )
    with pytest.raises(EventKeyError, match="returned int"):
        await publisher.publish(Order(user="ada", n=1))
    with pytest.raises(EventKeyError, match="got int"):
        await publisher.publish(Order(user="ada", n=1), key=3)  # type: ignore[arg-type]
    other = await manager.create_publisher("other", Order, key="user", spread=True)
    event = await other.publish(Order(user="ada", n=1), key="k")
    assert event.n == 1  # type: ignore[attr-defined]
    await manager.aclose()


# -- Spreading unkeyed events ----------------------------------------------------


async def test_spread_moves_to_the_next_partition_after_each_batch() -> None:
    transport = MemoryTransport(partitions=PARTITIONS)
    manager = make_manager(transport)
    await manager.initialize()
    publisher = await manager.create_publisher("order", Order, spread=True)
    # Each awaited event is a batch of its own.
    for n in range(8):
        await publisher.publish(Order(user=None, n=n), wait=True)
    assert await manager.aclose() == 0
    home = partition_for_key(f"{TOPIC}.order".encode(), ALL)
    assert [r.partition for r in transport.records] == [
        (home + n) % PARTITIONS for n in range(8)
    ]


async def test_spread_keeps_a_batch_on_one_partition() -> None:
    transport = MemoryTransport(partitions=PARTITIONS)
    manager = make_manager(transport)
    await manager.initialize()
    publisher = await manager.create_publisher("order", Order, spread=True)
    # Published without a turn of the event loop (the last one then waits
    # for its acknowledgement): one batch, on one partition; then another.
    for first in (0, 10):
        for n in range(first, first + 10):
            await publisher.publish(Order(user=None, n=n), wait=n == first + 9)
    assert await manager.aclose() == 0
    partitions = [r.partition for r in transport.records]
    assert len(set(partitions[:10])) == 1
    # Sent after the first batch: on the next partition, together.
    assert len(set(partitions[10:])) == 1
    assert partitions[10] == (partitions[0] + 1) % PARTITIONS
    assert sorted(decode_n(r) for r in transport.records) == list(range(20))


async def test_spread_leaves_keyed_events_on_their_keys_partition() -> None:
    events = [(Order(user=None, n=n), f"k{n % 2}") for n in range(10)]
    records = await published(events, spread=True)
    for record in records:
        assert record.key is not None
        assert record.partition == partition_for_key(record.key, ALL)


# -- Telemetry -------------------------------------------------------------------


async def test_the_producer_span_carries_the_key_only_when_there_is_one() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    manager = make_manager(
        MemoryTransport(partitions=PARTITIONS),
        telemetry=TelemetryOptions(tracer_provider=provider, producer_spans=True),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("order", Order, key="user")
    await publisher.publish(Order(user="ada", n=1), wait=True)
    await publisher.publish(Order(user=None, n=2), wait=True)
    await publisher.publish(Order(user=None, n=3), key=b"\xffid", wait=True)
    await manager.aclose()
    spans = [s for s in exporter.get_finished_spans() if s.name == f"send {TOPIC}"]
    keys = [dict(s.attributes or {}).get("messaging.kafka.message.key") for s in spans]
    # Bytes that are not UTF-8 read as escapes.
    assert keys == ["ada", None, "\\xffid"]
    partitions = [
        dict(s.attributes or {})["messaging.destination.partition.id"] for s in spans
    ]
    assert partitions[0] == str(partition_for_key(b"ada", ALL))


def decode_n(record: MemoryRecord) -> int:
    """The ``n`` of the event in a record: its publish sequence."""
    _, body = split_confluent_frame(record.value)
    decoded = schemaless_reader(io.BytesIO(body), _PARSED, None)
    assert isinstance(decoded, dict)
    return int(decoded["n"])


_PARSED = parse_schema(EventType("order", TOPIC, "shop", Order).schema)
