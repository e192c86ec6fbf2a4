"""Payload models and values drawn by hypothesis, for the round-trip and
writer properties: scalars, datetimes, decimals, enums, literals, nested
models, lists, maps, optionals and unions, some of the values invalid."""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar, cast

from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError, create_model

from otel_kafka_events import (
    EventPayload,
)

T = TypeVar("T")

TOPIC = "hypothesis.roundtrip"
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_names = itertools.count()


def _unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


# --- type specifications --------------------------------------------------------


@dataclass
class Spec:
    """A field type, a strategy for its raw values, and what Avro gives back.

    ``expect`` maps the validated Python value (as Pydantic stored it) to the
    value the decoder must return.
    """

    annotation: Any
    values: st.SearchStrategy[Any]
    expect: Callable[[Any], Any] = field(default=lambda value: value)
    kind: str = ""
    """Avro branch kind, so that generated unions stay unambiguous."""


def _same(value: Any) -> Any:
    return value


# Strategies mostly produce valid values, plus some that must be refused.
_surrogates = st.text(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2
)
_offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)
# Over the whole range: near years 1 and 9999 an offset can push the UTC
# instant out of what a datetime holds, which publish must refuse.
_aware = st.datetimes().flatmap(
    lambda naive: _offsets.map(lambda zone: naive.replace(tzinfo=zone))
)
_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_too_big = st.integers(min_value=2**63, max_value=2**80) | st.integers(
    min_value=-(2**80), max_value=-(2**63) - 1
)


def _scalar_specs() -> list[Spec]:
    return [
        Spec(str, st.text(max_size=12) | _surrogates, kind="string"),
        Spec(int, _int64 | _too_big, kind="long"),
        Spec(
            float,
            st.floats(allow_nan=True, allow_infinity=True),
            kind="double",
        ),
        Spec(bool, st.booleans(), kind="boolean"),
        Spec(bytes, st.binary(max_size=12), kind="bytes"),
        Spec(
            dt.datetime,
            _aware | st.datetimes(),
            kind="timestamp",
        ),
        Spec(dt.date, st.dates(), kind="date"),
        Spec(
            dt.timedelta,
            st.timedeltas(),
            expect=lambda value: value.total_seconds(),
            kind="double",
        ),
        Spec(uuid.UUID, st.uuids(), kind="uuid"),
        Spec(
            Literal["alpha", "beta"],
            st.sampled_from(["alpha", "beta"]),
            kind="string",
        ),
    ]


@st.composite
def _decimal_spec(draw: st.DrawFn) -> Spec:
    precision = draw(st.integers(min_value=1, max_value=20))
    scale = draw(st.integers(min_value=0, max_value=precision))
    limit = Decimal(10) ** (precision - scale) - Decimal(1).scaleb(-scale)
    valid = st.decimals(
        min_value=-limit, max_value=limit, places=scale, allow_nan=False
    )
    # One place too many: Pydantic must refuse it.
    finer = st.decimals(
        min_value=-limit, max_value=limit, places=scale + 1, allow_nan=False
    )
    annotation = Annotated[Decimal, Field(max_digits=precision, decimal_places=scale)]
    return Spec(annotation, valid | finer, kind="decimal")


@st.composite
def _enum_spec(draw: st.DrawFn) -> Spec:
    names = draw(
        st.lists(
            st.from_regex(r"[A-Z][A-Z0-9_]{0,5}", fullmatch=True),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    plain = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)
    odd = st.text(min_size=1, max_size=4)
    values = draw(
        st.lists(
            plain | odd | st.integers(-3, 3),
            min_size=len(names),
            max_size=len(names),
            unique=True,
        )
    )
    enum_class = enum.Enum(_unique("E"), list(zip(names, values, strict=True)))  # type: ignore[misc]
    # The documented rule: values when all are distinct valid Avro names,
    # else member names.
    by_value = all(isinstance(v, str) and _AVRO_NAME.match(v) for v in values)

    def expect(member: Any) -> str:
        return str(member.value) if by_value else str(member.name)

    return Spec(enum_class, st.sampled_from(list(enum_class)), expect, "enum")


def _leaves() -> st.SearchStrategy[Spec]:
    return st.sampled_from(_scalar_specs()) | _decimal_spec() | _enum_spec()


def _list_of(child: Spec) -> Spec:
    return Spec(
        list[child.annotation],  # type: ignore[name-defined]
        st.lists(child.values, max_size=3),
        lambda value: [child.expect(item) for item in value],
        "array",
    )


def _map_of(child: Spec) -> Spec:
    return Spec(
        dict[str, child.annotation],  # type: ignore[name-defined]
        st.dictionaries(st.text(max_size=4), child.values, max_size=3),
        lambda value: {key: child.expect(item) for key, item in value.items()},
        "map",
    )


def _optional(child: Spec) -> Spec:
    return Spec(
        child.annotation | None,
        st.none() | child.values,
        lambda value: None if value is None else child.expect(value),
        child.kind,
    )


def _model_spec(children: list[Spec]) -> Spec:
    model = create_model(  # type: ignore[call-overload]
        _unique("M"),
        **{f"f{i}": (child.annotation, ...) for i, child in enumerate(children)},
    )

    def expect(value: BaseModel) -> dict[str, Any]:
        return {
            f"f{i}": child.expect(getattr(value, f"f{i}"))
            for i, child in enumerate(children)
        }

    raw = st.fixed_dictionaries(
        {f"f{i}": child.values for i, child in enumerate(children)}
    )
    return Spec(model, raw, expect, f"record:{model.__name__}")


def _union_spec(first: Spec, second: Spec) -> Spec:
    def expect(value: Any) -> Any:
        # Two scalar branches: pick by the Python type Pydantic kept.
        for branch in (first, second):
            if type(value) is _python_type(branch.annotation):
                return branch.expect(value)
        return value

    return Spec(
        first.annotation | second.annotation,
        first.values | second.values,
        expect,
        "union",
    )


def _python_type(annotation: Any) -> Any:
    return annotation


_UNION_BRANCHES = [s for s in _scalar_specs() if s.annotation in (str, int, bytes)]


def _extend(children: st.SearchStrategy[Spec]) -> st.SearchStrategy[Spec]:
    return st.one_of(
        children.map(_list_of),
        children.map(_map_of),
        children.map(_optional),
        st.lists(children, min_size=1, max_size=3).map(_model_spec),
    )


_field_specs: st.SearchStrategy[Spec] = st.recursive(_leaves(), _extend, max_leaves=6)


@st.composite
def _unions(draw: st.DrawFn) -> Spec:
    first, second = draw(
        st.lists(st.sampled_from(_UNION_BRANCHES), min_size=2, max_size=2, unique_by=id)
    )
    return _union_spec(first, second)


@dataclass
class Case:
    """A drawn payload model and raw values for it."""

    model: type[EventPayload]
    specs: list[Spec]
    raw: dict[str, Any]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    specs = draw(st.lists(_field_specs | _unions(), min_size=1, max_size=4))
    model = cast(
        "type[EventPayload]",
        create_model(  # type: ignore[call-overload]
            _unique("Payload"),
            __base__=EventPayload,
            **{f"f{i}": (spec.annotation, ...) for i, spec in enumerate(specs)},
        ),
    )
    raw = draw(
        st.fixed_dictionaries({f"f{i}": spec.values for i, spec in enumerate(specs)})
    )
    return Case(model, specs, raw)


# --- comparison ---------------------------------------------------------------------


def avro_equal(expected: Any, actual: Any) -> bool:
    """Equality as Avro promises it: NaN equals NaN, booleans stay booleans,
    a long written to a double branch compares by number."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(actual, float) and math.isnan(actual)
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(avro_equal(expected[k], actual[k]) for k in expected)
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(avro_equal(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(expected == actual)


def expected_fields(case: Case, payload: EventPayload) -> dict[str, Any]:
    return {
        f"f{i}": spec.expect(getattr(payload, f"f{i}"))
        for i, spec in enumerate(case.specs)
    }


def build(case: Case) -> EventPayload | None:
    """The payload, or None if Pydantic refuses the raw values."""
    try:
        return case.model(**case.raw)
    except ValidationError:
        return None
