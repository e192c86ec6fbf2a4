"""End-to-end tests of `KafkaEventManager` against the local broker and registry.

Every test publishes through a real broker and a real registry over sockets,
then reads the topic back with a plain consumer. Values are decoded twice:
with python-schema-registry-client's serializer, which shares no code with
our encoder, and with our own `decode`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any, Literal

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel, Field
from schema_registry.client import AsyncSchemaRegistryClient
from schema_registry.serializers.message_serializer import (
    AsyncAvroMessageSerializer,
)

from otel_kafka_events import (
    DuplicateEventError,
    EventDecoder,
    EventManagerUninitializedError,
    EventManagerUnintializedError,
    EventManagerUsageError,
    EventPayload,
    KafkaEventManager,
    KafkaTopicError,
    decode,
)
from otel_kafka_events._encoding._codec import split_confluent_frame
from otel_kafka_events._encoding._registry import HttpSchemaRegistry
from otel_kafka_events.errors import EventManagerClosedError, IncompatibleSchemaError
from otel_kafka_events_devstack import LocalKafkaStack

from ..broker_support import requires
from ..conftest import TOPIC_PREFIX, ManagerFactory

SENTINEL = b"end of test"


# -- Payloads -----------------------------------------------------------------


class Colour(enum.StrEnum):
    """Values are valid Avro names: they are the symbols."""

    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    """Int values: the member names are the symbols."""

    LOW = 1
    HIGH = 2


class Mixed(enum.Enum):
    """Values of mixed types: the member names are the symbols."""

    ONE = 1
    TWO = "two"
    HALF = 0.5


class Address(BaseModel):
    """A nested record, used twice in `Everything`."""

    street: str
    number: int | None = None
    moved_in: dt.date


class Everything(EventPayload):
    """One field of every supported type."""

    text: str
    count: int
    ratio: float
    flag: bool
    raw: bytes
    happened: dt.datetime
    day: dt.date
    took: dt.timedelta
    ident: uuid.UUID
    price: Decimal = Field(max_digits=12, decimal_places=4)
    colour: Colour
    level: Level
    mixed: Mixed
    kind: Literal["small", "large"]
    home: Address
    work: Address
    scores: list[int]
    history: list[Address]
    durations: dict[str, dt.timedelta]
    labels: dict[str, str]
    maybe: int | None = None
    either: int | str
    when: dt.date | dt.datetime
    maybe_colour: Colour | None = None


def sample_payloads() -> list[Everything]:
    """Payloads that between them exercise every branch of every field."""
    berlin = dt.timezone(dt.timedelta(hours=1))
    return [
        Everything(
            text="héllo, wörld",
            count=-(2**53) - 1,
            ratio=3.141592653589793,
            flag=True,
            raw=bytes(range(256)),
            happened=dt.datetime(2024, 2, 29, 23, 30, 15, 654_321, tzinfo=berlin),
            day=dt.date(1969, 7, 20),
            took=dt.timedelta(hours=1, microseconds=250),
            ident=uuid.uuid4(),
            price=Decimal("-98765432.1234"),
            colour=Colour.BLUE,
            level=Level.HIGH,
            mixed=Mixed.HALF,
            kind="large",
            home=Address(street="Main", number=1, moved_in=dt.date(2000, 1, 1)),
            work=Address(street="Office", moved_in=dt.date(2010, 6, 15)),
            scores=[3, 1, 2],
            history=[Address(street="Old", number=9, moved_in=dt.date(1990, 1, 1))],
            durations={"boot": dt.timedelta(seconds=1.5), "run": dt.timedelta(0)},
            labels={"a": "b"},
            maybe=7,
            either="seven",
            when=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
            maybe_colour=Colour.RED,
        ),
        Everything(
            text="",
            count=0,
            ratio=-0.0,
            flag=False,
            raw=b"",
            happened=dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
            day=dt.date(2038, 1, 19),
            took=dt.timedelta(days=-1),
            ident=uuid.UUID(int=0),
            price=Decimal("0.5"),
            colour=Colour.RED,
            level=Level.LOW,
            mixed=Mixed.ONE,
            kind="small",
            home=Address(street="Home", moved_in=dt.date(2020, 2, 2)),
            work=Address(street="Home", moved_in=dt.date(2020, 2, 2)),
            scores=[],
            history=[],
            durations={},
            labels={},
            either=42,
            when=dt.date(2030, 1, 1),
        ),
        Everything(
            text="x" * 10_000,
            count=2**63 - 1,
            ratio=1e300,
            flag=True,
            raw=b"\x00",
            happened=dt.datetime(2099, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC),
            day=dt.date(1, 1, 1),
            took=dt.timedelta(microseconds=1),
            ident=uuid.UUID("ffffffff-ffff-ffff-ffff-ffffffffffff"),
            price=Decimal("12345678.9"),
            colour=Colour.BLUE,
            level=Level.LOW,
            mixed=Mixed.TWO,
            kind="small",
            home=Address(street="A", number=-1, moved_in=dt.date(1999, 12, 31)),
            work=Address(street="B", number=0, moved_in=dt.date(1999, 12, 31)),
            scores=list(range(100)),
            history=[
                Address(street=str(n), moved_in=dt.date(2000, 1, n + 1))
                for n in range(3)
            ],
            durations={"long": dt.timedelta(days=365)},
            labels={"ünïcode": "välue"},
            either=-1,
            when=dt.datetime(
                2000, 6, 1, 12, tzinfo=dt.timezone(-dt.timedelta(hours=5))
            ),
        ),
    ]


def avro_value(value: Any) -> Any:
    """What an Avro reader returns for a published Python value."""
    if isinstance(value, Colour):
        return value.value  # valid Avro names: the values are the symbols
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, BaseModel):
        return {name: avro_value(v) for name, v in value.__dict__.items()}
    if isinstance(value, list):
        return [avro_value(v) for v in value]
    if isinstance(value, dict):
        return {k: avro_value(v) for k, v in value.items()}
    return value


def assert_same_fields(decoded: dict[str, Any], payload: BaseModel) -> None:
    """Compare a decoded record with the payload it came from, field by field."""
    for name, value in payload.__dict__.items():
        expected, actual = avro_value(value), decoded[name]
        if isinstance(value, uuid.UUID):
            # Readers differ: fastavro gives a UUID, others a string.
            actual = uuid.UUID(str(actual))
        assert actual == expected, f"field {name}: {actual!r} != {expected!r}"
        if isinstance(value, dt.datetime):
            assert actual.tzinfo is not None, name
        if isinstance(value, Decimal):
            assert isinstance(actual, Decimal), name
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            assert type(actual) is dt.date, name


def client_of(manager: KafkaEventManager) -> AsyncSchemaRegistryClient:
    """The registry client a manager made from its registry URL."""
    registry = manager.registry
    assert isinstance(registry, HttpSchemaRegistry)
    return registry.client


def registry_client(stack: LocalKafkaStack) -> AsyncSchemaRegistryClient:
    """A registry client independent of the one the manager uses."""
    client = AsyncSchemaRegistryClient(url=stack.registry_url)
    client.client_kwargs["verify"] = False  # plain HTTP: no TLS context needed
    return client


async def append_sentinel(stack: LocalKafkaStack, topic: str) -> None:
    """Append a marker record after everything the manager wrote.

    Reading up to the marker counts the records before it exactly, with no
    reliance on end offsets (Tansu reports stale ones) or on waiting for
    records that should not come.
    """
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, SENTINEL, partition=0)
    finally:
        await producer.stop()


async def topic_exists(stack: LocalKafkaStack, topic: str) -> bool:
    """Whether the broker knows ``topic``, asking about all topics."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap_servers, group_id=None
    )
    await consumer.start()
    try:
        return topic in await consumer.topics()
    finally:
        await consumer.stop()


# -- Round trip -----------------------------------------------------------------


async def test_every_field_type_round_trips(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = await make_kafka_manager()
    publisher = await manager.create_publisher("everything", Everything)
    payloads = sample_payloads()
    events = [await publisher.publish(p, wait=True) for p in payloads]

    records = await local_kafka_stack.consume(manager.topic, len(payloads))
    client = registry_client(local_kafka_stack)
    serializer = AsyncAvroMessageSerializer(client)
    registered = await client.get_schema(manager.subject_for("everything"))
    assert registered is not None
    for record, payload, event in zip(records, payloads, events, strict=True):
        schema_id, _ = split_confluent_frame(record.value)
        assert schema_id == registered.schema_id
        independent = await serializer.decode_message(record.value)
        ours = await decode(record.value, client)
        assert independent == ours
        assert_same_fields(independent, payload)
        # The metadata is what publish returned.
        assert uuid.UUID(str(independent["id"])) == event.id
        assert independent["application"] == manager.application
        assert independent["timestamp_ns"] == event.timestamp_ns
        assert independent["timestamp"] == dt.datetime(
            1970, 1, 1, tzinfo=dt.UTC
        ) + dt.timedelta(microseconds=event.timestamp_ns // 1000)
        # Published outside any span: the trace fields are null.
        assert independent["trace_id"] is None
        assert independent["span_id"] is None
        assert independent["trace_flags"] is None


async def test_registered_schema_is_the_publisher_schema(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = await make_kafka_manager()
    publisher = await manager.create_publisher("everything", Everything)
    found = await registry_client(local_kafka_stack).get_schema(
        manager.subject_for("everything")
    )
    assert found is not None
    assert found.schema.raw_schema == publisher.avro_schema
    assert found.schema.raw_schema["name"] == "everything"
    assert found.schema.raw_schema["namespace"] == manager.topic


# -- Several event types on one topic -----------------------------------------


class Opened(EventPayload):
    """First event type of the shared topic."""

    seq: int
    door: str


class Closed(EventPayload):
    """Second event type."""

    seq: int
    slammed: bool


class Locked(EventPayload):
    """Third event type."""

    seq: int
    key: uuid.UUID


async def test_several_event_types_share_one_topic(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    # Several partitions, so per-type ordering is not an accident of a single
    # partition.
    manager = await make_kafka_manager(partitions=3)
    opened = await manager.create_publisher("opened", Opened)
    closed = await manager.create_publisher("closed", Closed)
    locked = await manager.create_publisher("locked", Locked)

    published: list[tuple[str, Opened | Closed | Locked]] = []
    for seq in range(60):
        match seq % 5:  # uneven interleaving: opened, opened, closed, ...
            case 0 | 1:
                door = Opened(seq=seq, door=f"d{seq}")
                await opened.publish(door)
                published.append(("opened", door))
            case 2 | 3:
                shut = Closed(seq=seq, slammed=seq % 2 == 0)
                await closed.publish(shut)
                published.append(("closed", shut))
            case _:
                lock = Locked(seq=seq, key=uuid.uuid4())
                await locked.publish(lock)
                published.append(("locked", lock))
    assert await manager.aclose() == 0

    records = await local_kafka_stack.consume(manager.topic, len(published))
    client = registry_client(local_kafka_stack)
    ids: dict[str, int] = {}
    for name in ("opened", "closed", "locked"):
        found = await client.get_schema(manager.subject_for(name))
        assert found is not None
        ids[name] = found.schema_id
    assert len(set(ids.values())) == 3
    name_by_id = {schema_id: name for name, schema_id in ids.items()}

    serializer = AsyncAvroMessageSerializer(client)
    decoder = EventDecoder(client)
    received: dict[str, list[dict[str, Any]]] = {name: [] for name in ids}
    for record in records:
        schema_id, _ = split_confluent_frame(record.value)
        name = name_by_id[schema_id]
        independent = await serializer.decode_message(record.value)
        ours = await decoder.decode(record.value)
        assert independent == ours
        received[name].append(ours)

    for name in ids:
        expected = [p for n, p in published if n == name]
        # Each type's events arrive in publish order, with their own fields.
        assert [r["seq"] for r in received[name]] == [p.seq for p in expected]
        for decoded, payload in zip(received[name], expected, strict=True):
            assert_same_fields(decoded, payload)


# -- Delivery -------------------------------------------------------------------


async def test_publish_with_wait_returns_after_acknowledgement(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = await make_kafka_manager()
    publisher = await manager.create_publisher("opened", Opened)
    for seq in range(3):
        event = await publisher.publish(Opened(seq=seq, door="front"), wait=True)
        # Acknowledged: counted as delivered, nothing left in the buffer, and
        # the record is already stored by the broker.
        stats = manager.stats
        assert (stats.published, stats.delivered, stats.buffered) == (
            seq + 1,
            seq + 1,
            0,
        )
        assert isinstance(event, Opened)
        assert event.seq == seq
        records = await local_kafka_stack.consume(manager.topic, seq + 1)
        last = await decode(records[-1].value, manager.registry)
        assert (last["seq"], last["id"]) == (seq, event.id)


async def test_aclose_delivers_every_pending_event(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    total = 10_000
    manager = await make_kafka_manager()
    publisher = await manager.create_publisher("opened", Opened)
    for seq in range(total):
        await publisher.publish(Opened(seq=seq, door="d"))
    assert await manager.aclose() == 0

    stats = manager.stats
    assert stats.published == stats.delivered == total
    assert stats.failed == stats.dropped == stats.buffered == 0
    assert stats.buffered_bytes == 0
    # Exactly `total` records before the marker: none lost, none duplicated.
    await append_sentinel(local_kafka_stack, manager.topic)
    records = await local_kafka_stack.consume(manager.topic, total + 1, timeout=60)
    assert records[-1].value == SENTINEL
    decoder = EventDecoder(registry_client(local_kafka_stack))
    sequence = [(await decoder.decode(r.value))["seq"] for r in records[:-1]]
    assert sequence == list(range(total))


# -- Registry subjects ----------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "-value", "_dev"])
async def test_subject_naming(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    suffix: str,
) -> None:
    manager = await make_kafka_manager(schema_suffix=suffix)
    subject = f"{TOPIC_PREFIX}.{manager.application}.opened{suffix}"
    assert manager.topic == f"{TOPIC_PREFIX}.{manager.application}"
    assert manager.subject_for("opened") == subject
    publisher = await manager.create_publisher("opened", Opened)
    await publisher.publish(Opened(seq=1, door="x"), wait=True)

    client = registry_client(local_kafka_stack)
    subjects = await client.get_subjects()
    assert subject in subjects
    ours = [s for s in subjects if manager.application in s]
    assert ours == [subject]
    found = await client.get_schema(subject)
    assert found is not None
    (record,) = await local_kafka_stack.consume(manager.topic, 1)
    assert split_confluent_frame(record.value)[0] == found.schema_id


# -- Usage errors ---------------------------------------------------------------


async def test_duplicate_event_name(make_kafka_manager: ManagerFactory) -> None:
    manager = await make_kafka_manager()
    await manager.create_publisher("opened", Opened)
    with pytest.raises(DuplicateEventError) as caught:
        await manager.create_publisher("opened", Closed)
    assert caught.value.name == "opened"
    assert "'opened'" in str(caught.value)
    with pytest.raises(DuplicateEventError):
        await manager.create_publisher("opened", Opened)


async def test_create_publisher_before_initialize(
    make_kafka_manager: ManagerFactory,
) -> None:
    manager = await make_kafka_manager(initialize=False)
    with pytest.raises(EventManagerUninitializedError):
        await manager.create_publisher("opened", Opened)
    # Safir's old spelling is the same class, so old except clauses work.
    assert EventManagerUnintializedError is EventManagerUninitializedError
    with pytest.raises(EventManagerUnintializedError):
        await manager.create_publisher("opened", Opened)
    await manager.initialize()
    publisher = await manager.create_publisher("opened", Opened)
    await publisher.publish(Opened(seq=1, door="x"), wait=True)
    assert manager.stats.delivered == 1


async def test_use_after_aclose(make_kafka_manager: ManagerFactory) -> None:
    manager = await make_kafka_manager()
    publisher = await manager.create_publisher("opened", Opened)
    assert await manager.aclose() == 0
    with pytest.raises(EventManagerClosedError):
        await publisher.publish(Opened(seq=1, door="x"))
    with pytest.raises(EventManagerClosedError):
        await publisher.publish(Opened(seq=1, door="x"), wait=True)
    # What Safir raises (and services catch) for a closed manager.
    with pytest.raises(EventManagerUninitializedError):
        await manager.create_publisher("closed", Closed)
    # Closing again is harmless.
    assert await manager.aclose() == 0
    assert manager.stats.published == 0


async def test_initialize_after_aclose_starts_anew(
    make_kafka_manager: ManagerFactory,
) -> None:
    # Safir lets a closed manager be initialized again; so do we, with new
    # clients and an empty buffer.
    manager = await make_kafka_manager()
    publisher = await manager.create_publisher("opened", Opened)
    await publisher.publish(Opened(seq=1, door="x"), wait=True)
    assert await manager.aclose() == 0
    await manager.initialize()
    assert manager.stats.published == 0
    publisher = await manager.create_publisher("opened", Opened)
    await publisher.publish(Opened(seq=2, door="y"), wait=True)
    assert manager.stats.delivered == 1
    # A publisher of an event type the new session does not have is refused
    # rather than left to time out.
    other = await manager.create_publisher("closed_door", Opened)
    assert await manager.aclose() == 0
    await manager.initialize()
    with pytest.raises(EventManagerUninitializedError, match="create_publisher"):
        await other.publish(Opened(seq=3, door="z"))
    assert manager.stats.published == 0
    assert await manager.aclose() == 0


@requires("topic_absence")
async def test_missing_topic(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = await make_kafka_manager(create_topic=False)
    with pytest.raises(KafkaTopicError) as caught:
        await manager.create_publisher("opened", Opened)
    assert caught.value.topic == manager.topic
    assert manager.topic in str(caught.value)
    assert isinstance(caught.value, EventManagerUsageError)
    # Checking must not create the topic.
    assert not await topic_exists(local_kafka_stack, manager.topic)
    # The name is free again after the refusal, and works once the topic is
    # there.
    await local_kafka_stack.create_topic(manager.topic)
    publisher = await manager.create_publisher("opened", Opened)
    await publisher.publish(Opened(seq=1, door="x"), wait=True)


# -- Schema evolution -------------------------------------------------------------


class Version1(EventPayload):
    """The first version of an event."""

    quantity: int
    note: str


class NewRequiredField(EventPayload):
    """Adds a field without default: old events cannot be read."""

    quantity: int
    note: str
    colour_added: str


class ChangedType(EventPayload):
    """Changes a field's type."""

    quantity: str
    note: str


class NewOptionalField(EventPayload):
    """Adds a nullable field with a null default: compatible."""

    quantity: int
    note: str
    extra_info: str | None = None


async def register_v1(
    make_kafka_manager: ManagerFactory, compatibility: str
) -> tuple[KafkaEventManager, int]:
    """Register `Version1` as ``"item"``; return the manager and schema id."""
    manager = await make_kafka_manager(schema_compatibility=compatibility)
    publisher = await manager.create_publisher("item", Version1)
    await publisher.publish(Version1(quantity=1, note="v1"), wait=True)
    subject = manager.subject_for("item")
    found = await client_of(manager).get_schema(subject)
    assert found is not None
    return manager, found.schema_id


async def second_version(
    make_kafka_manager: ManagerFactory,
    first: KafkaEventManager,
    compatibility: str,
) -> KafkaEventManager:
    """A new manager on the same topic, as after a redeployment."""
    return await make_kafka_manager(
        application=first.application,
        create_topic=False,
        schema_compatibility=compatibility,
    )


@pytest.mark.parametrize(
    ("model", "field"),
    [(NewRequiredField, "colour_added"), (ChangedType, "quantity")],
)
async def test_incompatible_schema_refused_under_backward(
    make_kafka_manager: ManagerFactory, model: type[EventPayload], field: str
) -> None:
    first, _ = await register_v1(make_kafka_manager, "BACKWARD")
    manager = await second_version(make_kafka_manager, first, "BACKWARD")
    with pytest.raises(IncompatibleSchemaError) as caught:
        await manager.create_publisher("item", model)
    error = caught.value
    assert error.subject == manager.subject_for("item")
    assert error.messages
    assert f"'{field}'" in str(error)
    assert isinstance(error, EventManagerUsageError)


async def test_compatible_change_gets_a_new_schema_id(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    first, v1_id = await register_v1(make_kafka_manager, "BACKWARD")
    manager = await second_version(make_kafka_manager, first, "BACKWARD")
    publisher = await manager.create_publisher("item", NewOptionalField)
    await publisher.publish(
        NewOptionalField(quantity=2, note="v2", extra_info="more"), wait=True
    )
    found = await client_of(manager).get_schema(manager.subject_for("item"))
    assert found is not None
    assert found.schema_id != v1_id
    assert found.version == 2

    records = await local_kafka_stack.consume(manager.topic, 2)
    assert [split_confluent_frame(r.value)[0] for r in records] == [
        v1_id,
        found.schema_id,
    ]
    client = registry_client(local_kafka_stack)
    old, new = [await decode(r.value, client) for r in records]
    assert (old["quantity"], old["note"]) == (1, "v1")
    assert "extra_info" not in old
    assert (new["quantity"], new["note"], new["extra_info"]) == (2, "v2", "more")


@pytest.mark.parametrize("model", [NewRequiredField, ChangedType])
async def test_none_compatibility_accepts_anything(
    make_kafka_manager: ManagerFactory, model: type[EventPayload]
) -> None:
    first, v1_id = await register_v1(make_kafka_manager, "NONE")
    manager = await second_version(make_kafka_manager, first, "NONE")
    await manager.create_publisher("item", model)
    found = await client_of(manager).get_schema(manager.subject_for("item"))
    assert found is not None
    assert found.schema_id != v1_id


async def test_compatibility_level_is_set_on_the_subject(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    manager, _ = await register_v1(make_kafka_manager, "FULL")
    level = await registry_client(local_kafka_stack).get_compatibility(
        manager.subject_for("item")
    )
    assert level == "FULL"


def test_unknown_compatibility_level_refused(
    local_kafka_stack: LocalKafkaStack,
) -> None:
    with pytest.raises(ValueError, match="schema compatibility must be one of"):
        KafkaEventManager(
            application="app",
            topic_prefix=TOPIC_PREFIX,
            bootstrap_servers=local_kafka_stack.bootstrap_servers,
            registry_url=local_kafka_stack.registry_url,
            schema_compatibility="SIDEWAYS",
        )


# -- Publishing concurrently -----------------------------------------------------


async def test_concurrent_publishers_keep_per_type_order(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = await make_kafka_manager(partitions=2)
    opened = await manager.create_publisher("opened", Opened)
    closed = await manager.create_publisher("closed", Closed)

    async def open_many() -> None:
        for seq in range(200):
            await opened.publish(Opened(seq=seq, door="d"))

    async def close_many() -> None:
        for seq in range(200):
            await closed.publish(Closed(seq=seq, slammed=False))
            if seq % 50 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(open_many(), close_many())
    assert await manager.aclose() == 0
    records = await local_kafka_stack.consume(manager.topic, 400)
    decoder = EventDecoder(registry_client(local_kafka_stack))
    by_type: dict[bool, list[int]] = {True: [], False: []}
    for record in records:
        decoded = await decoder.decode(record.value)
        by_type["door" in decoded].append(decoded["seq"])
    assert by_type[True] == list(range(200))
    assert by_type[False] == list(range(200))
