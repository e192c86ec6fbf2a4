"""Bad and borderline payload values: refused clearly or converted as documented.

Each refusal must name the event and the field and must leave nothing on the
topic; each accepted borderline value must decode to the documented value.
The table in ``docs/reliability.md`` lists every case with its outcome.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Annotated, Any, cast

import pytest
import pytest_asyncio
from pydantic import BaseModel, Field, ValidationError, create_model

from otel_kafka_events import (
    EventDecoder,
    EventPayload,
    KafkaEventManager,
    UnsupportedAvroSchemaError,
)
from otel_kafka_events.errors import EventPayloadError, EventTooLargeError
from otel_kafka_events_devstack import LocalKafkaStack

from ..broker_support import capabilities
from .test_reliability_delivery import read_all

pytestmark = pytest.mark.integration

TOPIC_PREFIX = "badinput"
MAX_REQUEST_SIZE = 10_000


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Status(enum.Enum):
    """Values that are not Avro names: the symbols are the member names."""

    IN_PROGRESS = "in-progress"
    DONE = "done!"


class Item(BaseModel):
    label: str
    at: dt.datetime | None = None


class Record(EventPayload):
    text: str = ""
    ratio: float = 0.0
    count: int = 0
    color: Color = Color.RED
    status: Status = Status.DONE
    amount: Annotated[Decimal, Field(max_digits=6, decimal_places=2)] = Decimal(0)
    when: dt.datetime = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    elapsed: dt.timedelta = dt.timedelta(0)
    items: list[Item] = []
    tags: dict[str, str] = {}
    blob: bytes = b""


class Unrelated(EventPayload):
    value: int = 0


# --- helpers ------------------------------------------------------------------


@pytest_asyncio.fixture
async def manager(
    local_kafka_stack: LocalKafkaStack,
) -> AsyncIterator[KafkaEventManager]:
    """A connected manager on a fresh topic, with a 10 kB request limit."""
    manager = KafkaEventManager(
        application=f"app_{uuid.uuid4().hex[:12]}",
        topic_prefix=TOPIC_PREFIX,
        bootstrap_servers=local_kafka_stack.bootstrap_servers,
        registry_url=local_kafka_stack.registry_url,
        enable_idempotence=capabilities().idempotent_producer,
        kafka_options={"max_request_size": MAX_REQUEST_SIZE},
        delivery_timeout=10,
        retry_backoff=0.05,
    )
    await local_kafka_stack.create_topic(manager.topic)
    await manager.initialize()
    yield manager
    await manager.aclose(timeout=5)


async def topic_values(
    stack: LocalKafkaStack, manager: KafkaEventManager
) -> list[dict[str, Any]]:
    """Every event on the manager's topic, decoded through the registry."""
    decoder = EventDecoder(stack.registry_url)
    records = await read_all(stack.bootstrap_servers, manager.topic)
    return [await decoder.decode(record.value) for record in records]


def assigned(record: Record, **values: Any) -> Record:
    """``record`` with attributes set after validation (Pydantic does not
    validate assignment by default, so such values reach ``publish``)."""
    for name, value in values.items():
        setattr(record, name, value)
    return record


# --- refusals -------------------------------------------------------------------

# id -> (payload factory, expected error, fragments of the message)
REFUSED: dict[str, tuple[Callable[[], Any], type[Exception], list[str]]] = {
    "lone surrogate": (
        lambda: Record(text="a\ud800b"),
        EventPayloadError,
        ["'text'", "surrogates not allowed"],
    ),
    "lone surrogate in a nested model": (
        lambda: Record(items=[Item(label="ok"), Item(label="\udfff")]),
        EventPayloadError,
        ["'items[1].label'"],
    ),
    "lone surrogate in a map key": (
        lambda: Record(tags={"\ud800": "x"}),
        EventPayloadError,
        ["'tags."],
    ),
    "naive datetime": (
        lambda: Record(when=dt.datetime(2024, 1, 1)),
        EventPayloadError,
        ["'when'", "naive datetime"],
    ),
    "naive datetime in a nested model": (
        lambda: Record(items=[Item(label="x", at=dt.datetime(2024, 1, 1))]),
        EventPayloadError,
        ["'items'", "naive datetime"],
    ),
    "instant before UTC year 1": (
        lambda: Record(
            when=dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))
        ),
        EventPayloadError,
        ["'when'", "outside the UTC years 1 to 9999"],
    ),
    "int beyond 64 bits": (
        lambda: Record(count=2**63),
        EventPayloadError,
        ["count"],
    ),
    "enum value assigned outside the enum": (
        lambda: assigned(Record(), color="green"),
        EventPayloadError,
        ["'color'", "not a member of Color"],
    ),
    "decimal with more places than the scale": (
        lambda: assigned(Record(), amount=Decimal("1.234")),
        EventPayloadError,
        ["'amount'", "decimal places"],
    ),
    "decimal with more digits than the precision": (
        lambda: assigned(Record(), amount=Decimal("123456")),
        EventPayloadError,
        ["'amount'", "digits"],
    ),
    "decimal NaN": (
        lambda: assigned(Record(), amount=Decimal("NaN")),
        EventPayloadError,
        ["'amount'", "finite"],
    ),
    "wrong type assigned": (
        lambda: assigned(Record(), count="many"),
        EventPayloadError,
        ["count"],
    ),
    "string over max_request_size": (
        lambda: Record(text="x" * (2 * MAX_REQUEST_SIZE)),
        EventTooLargeError,
        ["max_request_size"],
    ),
    "payload of another model": (
        lambda: Unrelated(),
        EventPayloadError,
        ["payload must be a Record", "Unrelated"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_refused_value_names_event_and_field_and_never_reaches_the_topic(
    case: str, manager: KafkaEventManager, local_kafka_stack: LocalKafkaStack
) -> None:
    make, error, fragments = REFUSED[case]
    publisher = await manager.create_publisher("record", Record)
    with pytest.raises(error) as caught:
        await publisher.publish(make())
    message = str(caught.value)
    assert "'record'" in message
    for fragment in fragments:
        assert fragment in message
    assert manager.stats.published == 0
    # A good event after the bad one is the only record on the topic.
    sentinel = await publisher.publish(Record(text="sentinel"), wait=True)
    values = await topic_values(local_kafka_stack, manager)
    assert [(v["id"], v["text"]) for v in values] == [(sentinel.id, "sentinel")]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"color": "green"}, "color"),
        ({"amount": Decimal("1.234")}, "amount"),
        ({"amount": Decimal("123456")}, "amount"),
        ({"ratio": "not a number"}, "ratio"),
        ({"when": "yesterday"}, "when"),
    ],
)
def test_pydantic_refuses_invalid_values_naming_the_field(
    values: dict[str, Any], field: str
) -> None:
    # Values given to the model are validated before publish sees them.
    with pytest.raises(ValidationError) as caught:
        Record(**values)
    assert [error["loc"][0] for error in caught.value.errors()] == [field]


async def test_recursive_model_refused_at_create_publisher(
    manager: KafkaEventManager,
) -> None:
    class Node(BaseModel):
        name: str
        children: list[Node] = []

    class Tree(EventPayload):
        root: Node

    with pytest.raises(UnsupportedAvroSchemaError) as caught:
        await manager.create_publisher("tree", Tree)
    assert caught.value.event == "tree"
    assert any("root.children" in p and "recursive" in p for p in caught.value.problems)


# --- accepted, converted as documented -------------------------------------------


async def test_borderline_values_decode_as_documented(
    manager: KafkaEventManager, local_kafka_stack: LocalKafkaStack
) -> None:
    publisher = await manager.create_publisher("record", Record)
    zone = dt.timezone(dt.timedelta(hours=-5, minutes=-30))
    payloads = [
        Record(
            ratio=math.nan,
            text="nul \x00, astral \U0001f600, accents éß",
            count=2**63 - 1,
            amount=Decimal("1.5"),
            when=dt.datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=zone),
            elapsed=dt.timedelta(days=1, microseconds=1),
            status=Status.IN_PROGRESS,
            blob=b"\xff\xfe\x00 not utf-8",
        ),
        Record(ratio=math.inf, count=-(2**63), amount=Decimal("-9999.99")),
        Record(ratio=-math.inf, text="x" * (MAX_REQUEST_SIZE // 2)),
    ]
    for payload in payloads:
        await publisher.publish(payload, wait=True)
    first, second, third = await topic_values(local_kafka_stack, manager)

    # IEEE 754 specials are carried by the Avro double.
    assert math.isnan(first["ratio"])
    assert (second["ratio"], third["ratio"]) == (math.inf, -math.inf)
    assert first["text"] == "nul \x00, astral \U0001f600, accents éß"
    assert (first["count"], second["count"]) == (2**63 - 1, -(2**63))
    # Decimals come back with the schema's scale.
    assert str(first["amount"]) == "1.50"
    assert second["amount"] == Decimal("-9999.99")
    # Aware datetimes are stored as the UTC instant, to the microsecond.
    assert first["when"] == payloads[0].when
    assert first["when"].utcoffset() == dt.timedelta(0)
    assert first["elapsed"] == pytest.approx(86_400.000001)
    # Enum values that are not Avro names travel as the member names.
    assert (first["status"], second["status"]) == ("IN_PROGRESS", "DONE")
    assert first["color"] == "red"
    assert first["blob"] == b"\xff\xfe\x00 not utf-8"
    assert len(third["text"]) == MAX_REQUEST_SIZE // 2


async def test_deeply_nested_values_round_trip(
    manager: KafkaEventManager, local_kafka_stack: LocalKafkaStack
) -> None:
    depth = 25
    annotation: Any = list[int]
    value: Any = [1, 2]
    for _ in range(depth - 1):
        annotation = list[annotation]
        value = [value, []]
    # A chain of nested records, ten levels deep.
    levels: list[Any] = [create_model("Level10", leaf=(str, ...))]
    for index in reversed(range(10)):
        levels.append(
            create_model(
                f"Level{index}", child=(levels[-1] | None, None), name=(str, ...)
            )
        )
    deep = cast(
        "type[EventPayload]",
        create_model(
            "Deep",
            __base__=EventPayload,
            lists=(annotation, ...),
            records=(levels[-1], ...),
            maps=(dict[str, dict[str, list[dict[str, int]]]], ...),
        ),
    )
    chain: dict[str, Any] = {"leaf": "bottom"}
    for index in reversed(range(10)):
        chain = {"child": chain, "name": f"level {index}"}
    maps = {"a": {"b": [{"c": 1}, {}], "d": []}, "e": {}}
    payload = deep.model_validate({"lists": value, "records": chain, "maps": maps})
    publisher = await manager.create_publisher("deep", deep)
    await publisher.publish(payload, wait=True)
    (decoded,) = await topic_values(local_kafka_stack, manager)
    assert decoded["lists"] == value
    assert decoded["records"] == chain
    assert decoded["maps"] == maps
