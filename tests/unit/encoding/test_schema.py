"""Unit tests of the Pydantic to Avro mapping and of registration checks.

Every mapping is checked twice: the Avro type written into the schema, and a
round trip of a value through the compiled encoder and fastavro's reader with
the JSON form of that schema (what a registry stores). Registration and
publish-time refusals go through `NoopEventManager`, which runs the same
checks as the Kafka manager without needing a broker.
"""

from __future__ import annotations

import datetime as dt
import enum
import io
import ipaddress
import json
import uuid
from decimal import Decimal
from typing import Any, Literal

import pytest
from fastavro import parse_schema, schemaless_reader
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from otel_kafka_events import (
    EventManagerUsageError,
    EventPayload,
    NoopEventManager,
    TelemetryOptions,
    UnsupportedAvroSchemaError,
)
from otel_kafka_events._encoding._codec import split_confluent_frame
from otel_kafka_events._encoding._event_type import EventType
from otel_kafka_events.errors import EventPayloadError, InvalidEventNameError

TOPIC = "test.events.schema_app"
METADATA_NAMES = ["id", "application", "timestamp", "timestamp_ns"]
TRACE_NAMES = ["trace_id", "span_id", "trace_flags"]
UTC_PLUS_2 = dt.timezone(dt.timedelta(hours=2))


class Colour(enum.StrEnum):
    """A str enum whose values are valid Avro names: symbols are values."""

    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    """An int enum: values cannot be Avro symbols, so names are used."""

    LOW = 1
    HIGH = 10


class Mixed(enum.Enum):
    """A plain enum with values of mixed types (Safir fails to encode it)."""

    NUMBER = 1
    WORD = "word"
    FRACTION = 2.5
    NOTHING = None


class Status(enum.StrEnum):
    """A str enum with values that are not Avro names: names are used."""

    IN_PROGRESS = "in-progress"
    DONE = "done!"


class Point(BaseModel):
    """A nested record."""

    x: int
    y: int
    seen: dt.datetime


class Other(BaseModel):
    """A record with the same fields as `Point`, to test union branches."""

    x: int
    y: int
    seen: dt.datetime


def event_type(
    model: type[EventPayload],
    *,
    trace_context: bool = True,
    flat_payloads: bool = False,
) -> EventType[Any]:
    """Compile an event type as ``create_publisher`` would."""
    return EventType(
        "example",
        TOPIC,
        "schema_app",
        model,
        trace_context=trace_context,
        flat_payloads=flat_payloads,
    )


def round_trip(compiled: EventType[Any], payload: EventPayload) -> dict[str, Any]:
    """Encode ``payload`` and read it back with the JSON form of the schema."""
    compiled.set_schema_id(7)
    schema_id, body = split_confluent_frame(bytes(compiled.enrich(payload).value))
    assert schema_id == 7
    # Through JSON, as a registry would hand the schema to a consumer.
    reader_schema = parse_schema(json.loads(json.dumps(compiled.schema)))
    decoded = schemaless_reader(io.BytesIO(body), reader_schema, None)
    assert isinstance(decoded, dict)
    return decoded


def one_field_model(annotation: Any, info: FieldInfo | None = None) -> type[Any]:
    """A payload model with a single field ``value``."""
    definition = (annotation, info if info is not None else ...)
    return create_model("OneField", __base__=EventPayload, value=definition)


def field_type(compiled: EventType[Any], name: str) -> Any:
    """The Avro type of one field of a compiled schema."""
    for entry in compiled.schema["fields"]:
        if entry["name"] == name:
            return entry["type"]
    raise AssertionError(f"no field {name!r} in {compiled.schema}")


async def noop_manager(**options: Any) -> NoopEventManager:
    """An initialized manager that runs every check without Kafka."""
    manager = NoopEventManager("schema_app", "test.events", **options)
    await manager.initialize()
    return manager


# -- Type mapping -------------------------------------------------------------

SCALAR_CASES: list[tuple[str, Any, FieldInfo | None, Any, Any, Any]] = [
    # (id, annotation, field info, expected Avro type, value, expected decoded)
    ("str", str, None, "string", "héllo", "héllo"),
    ("int", int, None, "long", -(2**62), -(2**62)),
    ("float", float, None, "double", 0.1, 0.1),
    ("bool", bool, None, "boolean", False, False),
    ("bytes", bytes, None, "bytes", b"\x00\xff", b"\x00\xff"),
    (
        "datetime",
        dt.datetime,
        None,
        {"type": "long", "logicalType": "timestamp-micros"},
        dt.datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC_PLUS_2),
        dt.datetime(2024, 2, 29, 21, 59, 59, 999_999, tzinfo=dt.UTC),
    ),
    (
        "date",
        dt.date,
        None,
        {"type": "int", "logicalType": "date"},
        dt.date(1969, 7, 20),
        dt.date(1969, 7, 20),
    ),
    (
        "timedelta",
        dt.timedelta,
        None,
        "double",
        dt.timedelta(days=1, seconds=2, microseconds=500_000),
        86_402.5,
    ),
    (
        "uuid",
        uuid.UUID,
        None,
        {"type": "string", "logicalType": "uuid"},
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
    ),
    (
        "decimal",
        Decimal,
        Field(max_digits=8, decimal_places=3),
        {"type": "bytes", "logicalType": "decimal", "precision": 8, "scale": 3},
        Decimal("-12345.67"),
        Decimal("-12345.670"),
    ),
    (
        "str_enum",
        Colour,
        None,
        {
            "type": "enum",
            "name": "Colour",
            "namespace": f"{TOPIC}.example",
            "symbols": ["red", "green"],
        },
        Colour.GREEN,
        "green",
    ),
    (
        "int_enum",
        Level,
        None,
        {
            "type": "enum",
            "name": "Level",
            "namespace": f"{TOPIC}.example",
            "symbols": ["LOW", "HIGH"],
        },
        Level.HIGH,
        "HIGH",
    ),
    (
        "enum_bad_values",
        Status,
        None,
        {
            "type": "enum",
            "name": "Status",
            "namespace": f"{TOPIC}.example",
            "symbols": ["IN_PROGRESS", "DONE"],
        },
        Status.IN_PROGRESS,
        "IN_PROGRESS",
    ),
    ("literal_str", Literal["a", "b"], None, "string", "b", "b"),
    ("literal_int", Literal[1, 2], None, "long", 2, 2),
    ("list", list[int], None, {"type": "array", "items": "long"}, [3, 1, 2], [3, 1, 2]),
    (
        "list_of_datetimes",
        list[dt.datetime],
        None,
        {
            "type": "array",
            "items": {"type": "long", "logicalType": "timestamp-micros"},
        },
        [dt.datetime(2020, 1, 1, tzinfo=dt.UTC)],
        [dt.datetime(2020, 1, 1, tzinfo=dt.UTC)],
    ),
    (
        "dict",
        dict[str, float],
        None,
        {"type": "map", "values": "double"},
        {"a": 1.5, "b": -2.0},
        {"a": 1.5, "b": -2.0},
    ),
    (
        "dict_of_timedeltas",
        dict[str, dt.timedelta],
        None,
        {"type": "map", "values": "double"},
        {"wait": dt.timedelta(minutes=2)},
        {"wait": 120.0},
    ),
    (
        "optional",
        int | None,
        Field(None),
        ["null", "long"],
        None,
        None,
    ),
    ("optional_set", int | None, Field(None), ["null", "long"], 5, 5),
    ("union", int | str, None, ["long", "string"], "five", "five"),
    (
        "optional_timedelta",
        dt.timedelta | None,
        None,
        ["null", "double"],
        dt.timedelta(milliseconds=1),
        0.001,
    ),
]


@pytest.mark.parametrize(
    ("annotation", "info", "avro_type", "value", "decoded"),
    [pytest.param(*case[1:], id=case[0]) for case in SCALAR_CASES],
)
def test_type_mapping(
    annotation: Any, info: FieldInfo | None, avro_type: Any, value: Any, decoded: Any
) -> None:
    compiled = event_type(one_field_model(annotation, info))
    assert field_type(compiled, "value") == avro_type
    result = round_trip(compiled, compiled.payload_model(value=value))
    assert result["value"] == decoded
    assert type(result["value"]) is type(decoded)


def test_decimal_keeps_declared_scale() -> None:
    compiled = event_type(
        one_field_model(Decimal, Field(max_digits=6, decimal_places=2))
    )
    result = round_trip(compiled, compiled.payload_model(value=Decimal("7.5")))
    assert result["value"] == Decimal("7.50")
    assert result["value"].as_tuple().exponent == -2


def test_decimal_in_optional_takes_field_constraints() -> None:
    info = Field(None, max_digits=5, decimal_places=1)
    compiled = event_type(one_field_model(Decimal | None, info))
    assert field_type(compiled, "value") == [
        "null",
        {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 1},
    ]
    result = round_trip(compiled, compiled.payload_model(value=Decimal("12.3")))
    assert result["value"] == Decimal("12.3")


@pytest.mark.parametrize("member", list(Mixed), ids=lambda m: m.name)
def test_plain_enum_with_mixed_values_encodes_and_decodes(member: Mixed) -> None:
    compiled = event_type(one_field_model(Mixed))
    assert field_type(compiled, "value")["symbols"] == [
        "NUMBER",
        "WORD",
        "FRACTION",
        "NOTHING",
    ]
    result = round_trip(compiled, compiled.payload_model(value=member))
    assert result["value"] == member.name
    assert Mixed[result["value"]] is member


def test_enum_accepts_a_value_given_as_the_raw_value() -> None:
    # A payload built with model_construct (no validation) holds the raw
    # value; the converter maps values as well as members.
    compiled = event_type(one_field_model(Colour))
    payload = compiled.payload_model.model_construct(value="red")
    assert round_trip(compiled, payload)["value"] == "red"


def test_pydantic_aware_datetime_is_a_timestamp() -> None:
    from pydantic import AwareDatetime

    compiled = event_type(one_field_model(AwareDatetime))
    assert field_type(compiled, "value") == {
        "type": "long",
        "logicalType": "timestamp-micros",
    }
    when = dt.datetime(2023, 5, 6, 7, 8, 9, 10, tzinfo=dt.UTC)
    assert round_trip(compiled, compiled.payload_model(value=when))["value"] == when


def test_datetime_is_truncated_to_microseconds_in_utc() -> None:
    compiled = event_type(one_field_model(dt.datetime))
    value = dt.datetime(2001, 1, 1, 1, 0, 0, 123_456, tzinfo=UTC_PLUS_2)
    result = round_trip(compiled, compiled.payload_model(value=value))["value"]
    assert result == value
    assert result.tzinfo == dt.UTC
    assert result.hour == 23


class Route(EventPayload):
    """A payload using one nested model twice."""

    start: Point
    end: Point
    waypoints: list[Point] = Field(default_factory=list)


def test_nested_model_is_a_record_defined_once() -> None:
    compiled = event_type(Route)
    start = field_type(compiled, "start")
    assert start["type"] == "record"
    assert start["name"] == "Point"
    assert [f["name"] for f in start["fields"]] == ["x", "y", "seen"]
    # Avro allows a named type to be defined once; later uses are references.
    full_name = f"{start['namespace']}.Point"
    assert field_type(compiled, "end") == full_name
    assert field_type(compiled, "waypoints") == {"type": "array", "items": full_name}
    seen = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    payload = Route(
        start=Point(x=1, y=2, seen=seen),
        end=Point(x=3, y=4, seen=seen),
        waypoints=[Point(x=5, y=6, seen=seen)],
    )
    result = round_trip(compiled, payload)
    assert result["start"] == {"x": 1, "y": 2, "seen": seen}
    assert result["end"] == {"x": 3, "y": 4, "seen": seen}
    assert result["waypoints"] == [{"x": 5, "y": 6, "seen": seen}]


def test_enum_used_twice_is_defined_once() -> None:
    class TwoColours(EventPayload):
        first: Colour
        second: Colour | None = None

    compiled = event_type(TwoColours)
    assert field_type(compiled, "first")["type"] == "enum"
    assert field_type(compiled, "second") == ["null", f"{TOPIC}.example.Colour"]
    result = round_trip(compiled, TwoColours(first=Colour.RED, second=Colour.GREEN))
    assert (result["first"], result["second"]) == ("red", "green")


def test_optional_field_with_none_default_has_avro_default() -> None:
    class WithDefaults(EventPayload):
        note: str | None = None
        count: int = 3
        label: str = "x"
        ratio: float = 0.5
        flag: bool = True

    compiled = event_type(WithDefaults)
    defaults = {
        f["name"]: f["default"] for f in compiled.schema["fields"] if "default" in f
    }
    assert defaults == {
        "trace_id": None,
        "span_id": None,
        "trace_flags": None,
        "note": None,
        "count": 3,
        "label": "x",
        "ratio": 0.5,
        "flag": True,
    }


def test_schema_layout_metadata_first_then_payload() -> None:
    class Documented(EventPayload):
        """Something happened.

        On two lines.
        """

        what: str = Field(description="What happened.")

    compiled = event_type(Documented)
    schema = compiled.schema
    assert (schema["type"], schema["name"], schema["namespace"]) == (
        "record",
        "example",
        TOPIC,
    )
    assert [f["name"] for f in schema["fields"]] == [
        *METADATA_NAMES,
        *TRACE_NAMES,
        "what",
    ]
    assert schema["doc"] == "Something happened. On two lines."
    assert schema["fields"][-1]["doc"] == "What happened."
    # The schema must survive JSON, the form the registry stores.
    assert json.loads(json.dumps(schema)) == schema


def test_no_trace_fields_without_trace_context() -> None:
    class Plain(EventPayload):
        n: int

    compiled = event_type(Plain, trace_context=False)
    assert [f["name"] for f in compiled.schema["fields"]] == [*METADATA_NAMES, "n"]
    assert round_trip(compiled, Plain(n=1))["n"] == 1


# -- Unions: the branch is chosen from the value's type -----------------------


@pytest.mark.parametrize(
    ("annotation", "value", "decoded"),
    [
        pytest.param(
            dt.date | dt.datetime,
            dt.datetime(2024, 3, 4, 5, 6, 7, tzinfo=dt.UTC),
            dt.datetime(2024, 3, 4, 5, 6, 7, tzinfo=dt.UTC),
            id="datetime_not_cut_to_date",
        ),
        pytest.param(
            dt.date | dt.datetime, dt.date(2024, 3, 4), dt.date(2024, 3, 4), id="date"
        ),
        pytest.param(dt.date | int, 5, 5, id="int_not_read_as_date"),
        pytest.param(float | int, 1, 1, id="int_stays_int"),
        pytest.param(int | bool, True, True, id="bool_stays_bool"),
        pytest.param(Colour | str, "red", "red", id="str_in_str_branch"),
        pytest.param(Colour | str, Colour.GREEN, "green", id="enum_in_enum_branch"),
        pytest.param(
            dt.timedelta | str, dt.timedelta(seconds=3), 3.0, id="timedelta_converted"
        ),
        pytest.param(Literal["a", "b"] | int, "a", "a", id="literal"),
        pytest.param(list[int] | dict[str, int], {"a": 1}, {"a": 1}, id="map"),
        pytest.param(list[int] | dict[str, int], [1], [1], id="array"),
    ],
)
def test_union_branches(annotation: Any, value: Any, decoded: Any) -> None:
    compiled = event_type(one_field_model(annotation))
    result = round_trip(compiled, compiled.payload_model(value=value))
    assert result["value"] == decoded
    assert type(result["value"]) is type(decoded)


def test_union_branch_chosen_for_the_right_record() -> None:
    class Either(EventPayload):
        value: Point | Other

    compiled = event_type(Either)
    seen = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    compiled.set_schema_id(1)
    for model, index in ((Point, 0), (Other, 1)):
        payload = Either(value=model(x=1, y=2, seen=seen))
        _, body = split_confluent_frame(bytes(compiled.enrich(payload).value))
        # Read back with a reader schema that tells the branches apart.
        reader = json.loads(json.dumps(compiled.schema))
        union = next(f for f in reader["fields"] if f["name"] == "value")["type"]
        for position, branch in enumerate(union):
            branch["fields"].append(
                {"name": "branch", "type": "long", "default": position}
            )
        decoded = schemaless_reader(
            io.BytesIO(body),
            parse_schema(json.loads(json.dumps(compiled.schema))),
            parse_schema(reader),
        )
        assert isinstance(decoded, dict)
        assert decoded["value"]["branch"] == index


def test_union_of_indistinguishable_branches_is_refused() -> None:
    with pytest.raises(UnsupportedAvroSchemaError) as caught:
        event_type(one_field_model(dt.timedelta | float))
    assert caught.value.problems == [
        "value: union datetime.timedelta | float has two branches Avro cannot tell"
        " apart (double)"
    ]


def test_naive_datetime_in_union_is_refused() -> None:
    compiled = event_type(one_field_model(dt.date | dt.datetime))
    payload = compiled.payload_model(value=dt.datetime(2024, 1, 1))
    with pytest.raises(EventPayloadError, match="'value': naive datetime"):
        compiled.enrich(payload)


# -- flat_payloads ------------------------------------------------------------


def test_flat_payloads_accepts_scalars() -> None:
    class Flat(EventPayload):
        name: str
        count: int
        when: dt.datetime
        day: dt.date
        took: dt.timedelta
        colour: Colour
        level: Level | None = None
        kind: Literal["a", "b"] = "a"
        ident: uuid.UUID | None = None

    compiled = event_type(Flat, flat_payloads=True)
    assert [f["name"] for f in compiled.schema["fields"]][-9:] == list(
        Flat.model_fields
    )


def test_flat_payloads_refuses_every_non_scalar() -> None:
    class Nested(EventPayload):
        ok: int
        point: Point
        items: list[int]
        mapping: dict[str, int]
        maybe_items: list[str] | None = None

    with pytest.raises(UnsupportedAvroSchemaError) as caught:
        event_type(Nested, flat_payloads=True)
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "point",
        "items",
        "mapping",
        "maybe_items",
    ]
    assert all("only scalar fields are allowed" in p for p in problems)
    # The same model is fine without the Safir restriction.
    event_type(Nested)


async def test_flat_payloads_through_the_manager() -> None:
    class HasList(EventPayload):
        items: list[int]

    manager = await noop_manager(flat_payloads=True)
    with pytest.raises(UnsupportedAvroSchemaError, match="items"):
        await manager.create_publisher("has_list", HasList)


# -- Every bad field at once --------------------------------------------------


class Loop(BaseModel):
    """A recursive model, which Avro records could express but we refuse."""

    child: Loop | None = None


class Unhashable(BaseModel):
    """A non-frozen model: Pydantic cannot put it in a set."""

    a: int


class Frozen(BaseModel):
    """A frozen model, which can be put in a set."""

    model_config = ConfigDict(frozen=True)

    a: int


class Inner(BaseModel):
    """A nested model with a bad field, to check the reported path."""

    good: int
    # A type Pydantic validates (since 2.0) that Avro has no form for.
    bad: ipaddress.IPv4Address


class Everything(EventPayload):
    """Every kind of unsupported field."""

    fine: int
    pair: tuple[int, int]
    by_number: dict[int, str]
    amount: Decimal
    models: set[Unhashable]
    inner: Inner
    anything: Any
    loop: Loop
    numbers: list[ipaddress.IPv4Address]
    aliased: int = Field(alias="Aliased")
    lit: Literal["a", 1]
    also_fine: str


def test_every_bad_field_reported_at_once() -> None:
    with pytest.raises(UnsupportedAvroSchemaError) as caught:
        event_type(Everything)
    error = caught.value
    assert error.event == "example"
    paths = [problem.split(":")[0] for problem in error.problems]
    assert paths == [
        "pair",
        "by_number",
        "amount",
        "models",
        "inner.bad",
        "anything",
        "loop.child",
        "numbers[]",
        "aliased",
        "lit",
    ]
    message = str(error)
    assert "'example'" in message
    for problem in error.problems:
        assert f"  - {problem}" in message
    assert "dict keys must be str" in message
    assert "Decimal needs Field(max_digits=..., decimal_places=...)" in message
    assert "set items must be hashable" in message
    assert "recursive model Loop" in message


async def test_every_bad_field_reported_by_create_publisher() -> None:
    manager = await noop_manager()
    with pytest.raises(UnsupportedAvroSchemaError) as caught:
        await manager.create_publisher("everything", Everything)
    assert len(caught.value.problems) == 10

    # A refused event type is not registered: the name stays free.
    class Good(EventPayload):
        n: int

    await manager.create_publisher("everything", Good)


def test_set_of_frozen_models_and_set_of_scalars_are_arrays() -> None:
    class Sets(EventPayload):
        frozen: set[Frozen]
        tags: frozenset[str]

    compiled = event_type(Sets)
    assert field_type(compiled, "frozen")["type"] == "array"
    assert field_type(compiled, "tags") == {"type": "array", "items": "string"}
    result = round_trip(compiled, Sets(frozen={Frozen(a=1)}, tags=frozenset({"x"})))
    assert result["frozen"] == [{"a": 1}]
    assert result["tags"] == ["x"]


# -- Collisions with metadata fields ------------------------------------------


@pytest.mark.parametrize("trace_context", [True, False])
@pytest.mark.parametrize("name", METADATA_NAMES)
async def test_payload_field_colliding_with_metadata_refused(
    name: str, trace_context: bool
) -> None:
    model = create_model("Clash", __base__=EventPayload, **{name: (str, ...)})  # type: ignore[call-overload]
    manager = await noop_manager(
        telemetry=TelemetryOptions(trace_context=trace_context)
    )
    with pytest.raises(UnsupportedAvroSchemaError) as caught:
        await manager.create_publisher("clash", model)
    assert caught.value.problems == [
        f"{name}: payload field collides with the metadata field"
    ]


@pytest.mark.parametrize("name", TRACE_NAMES)
async def test_payload_field_colliding_with_trace_field(name: str) -> None:
    model = create_model("Clash", __base__=EventPayload, **{name: (str, ...)})  # type: ignore[call-overload]
    traced = await noop_manager()
    with pytest.raises(UnsupportedAvroSchemaError, match=f"{name}: payload field"):
        await traced.create_publisher("clash", model)
    # Without trace context the name is free and the payload keeps it.
    untraced = await noop_manager(telemetry=TelemetryOptions(trace_context=False))
    publisher = await untraced.create_publisher("clash", model)
    assert [f["name"] for f in publisher.avro_schema["fields"]] == [
        *METADATA_NAMES,
        name,
    ]
    event = await publisher.publish(model(**{name: "mine"}))
    assert getattr(event, name) == "mine"


def test_several_collisions_reported_together() -> None:
    class Clashes(EventPayload):
        id: int
        timestamp: int
        span_id: int

    with pytest.raises(UnsupportedAvroSchemaError) as caught:
        event_type(Clashes)
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "id",
        "span_id",
        "timestamp",
    ]


# -- Names ----------------------------------------------------------------------


class Simple(EventPayload):
    """A valid payload."""

    n: int


@pytest.mark.parametrize("name", ["bad-name", "1st", "", "has space", "dotted.name"])
async def test_invalid_event_name(name: str) -> None:
    manager = await noop_manager()
    with pytest.raises(InvalidEventNameError) as caught:
        await manager.create_publisher(name, Simple)
    assert caught.value.part == "event name"
    assert caught.value.value == name
    assert repr(name) in str(caught.value)
    assert isinstance(caught.value, EventManagerUsageError)


async def test_invalid_topic_part_names_the_part() -> None:
    manager = NoopEventManager("my-app", "test.events")
    await manager.initialize()
    with pytest.raises(InvalidEventNameError) as caught:
        await manager.create_publisher("fine_name", Simple)
    assert caught.value.value == "my-app"
    assert "topic part" in caught.value.part
    assert "'my-app'" in str(caught.value)


async def test_invalid_topic_prefix_part() -> None:
    manager = NoopEventManager("app", "lsst.square-metrics")
    await manager.initialize()
    with pytest.raises(InvalidEventNameError) as caught:
        await manager.create_publisher("fine_name", Simple)
    assert caught.value.value == "square-metrics"


def test_invalid_field_name_refused() -> None:
    model = create_model("Odd", __base__=EventPayload, **{"ünïcode": (int, ...)})  # type: ignore[call-overload]
    with pytest.raises(UnsupportedAvroSchemaError, match="not a valid Avro field"):
        event_type(model)


# -- Refusals at publish time -------------------------------------------------


class Timed(EventPayload):
    """A payload with datetimes at the top level and nested."""

    label: str
    when: dt.datetime
    point: Point | None = None


async def test_naive_datetime_refused_at_publish() -> None:
    manager = await noop_manager()
    publisher = await manager.create_publisher("timed", Timed)
    with pytest.raises(EventPayloadError) as caught:
        await publisher.publish(Timed(label="x", when=dt.datetime(2024, 1, 1)))
    assert caught.value.event == "timed"
    assert "'when'" in caught.value.detail
    assert "naive datetime" in caught.value.detail


async def test_naive_datetime_in_nested_model_refused_at_publish() -> None:
    manager = await noop_manager()
    publisher = await manager.create_publisher("timed", Timed)
    payload = Timed(
        label="x",
        when=dt.datetime.now(dt.UTC),
        point=Point(x=1, y=1, seen=dt.datetime(2024, 1, 1)),
    )
    with pytest.raises(EventPayloadError, match="'point': naive datetime"):
        await publisher.publish(payload)


async def test_aware_datetime_accepted() -> None:
    manager = await noop_manager()
    publisher = await manager.create_publisher("timed", Timed)
    when = dt.datetime(2024, 1, 1, tzinfo=UTC_PLUS_2)
    event = await publisher.publish(Timed(label="x", when=when))
    assert event.when == when  # type: ignore[attr-defined]


class Painted(EventPayload):
    """A payload with an enum."""

    colour: Colour
    level: Level


async def test_enum_value_outside_the_enum_refused() -> None:
    manager = await noop_manager()
    publisher = await manager.create_publisher("painted", Painted)
    # Validation would refuse it; model_construct skips validation.
    payload = Painted.model_construct(colour="purple", level=Level.LOW)  # type: ignore[arg-type]
    with pytest.raises(EventPayloadError) as caught:
        await publisher.publish(payload)
    assert "'colour'" in caught.value.detail
    assert "'purple' is not a member of Colour" in caught.value.detail


async def test_wrong_payload_type_refused() -> None:
    manager = await noop_manager()
    publisher = await manager.create_publisher("painted", Painted)
    with pytest.raises(EventPayloadError, match="must be a Painted, got Simple"):
        await publisher.publish(Simple(n=1))  # type: ignore[arg-type]


async def test_value_of_wrong_type_refused_naming_the_field() -> None:
    manager = await noop_manager()
    publisher = await manager.create_publisher("simple", Simple)
    with pytest.raises(EventPayloadError) as caught:
        await publisher.publish(Simple.model_construct(n="not a number"))  # type: ignore[arg-type]
    assert "n" in caught.value.detail
    assert "simple" in str(caught.value)


async def test_payload_model_must_be_an_event_payload() -> None:
    class NotPayload(BaseModel):
        n: int

    manager = await noop_manager()
    with pytest.raises(EventManagerUsageError, match="subclass of EventPayload"):
        await manager.create_publisher("nope", NotPayload)  # type: ignore[type-var]
