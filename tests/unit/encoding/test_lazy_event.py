"""An event whose values are made on first use behaves as a plain model.

`EventType.enrich` returns event model instances that make their values
only when something reads them (``_lazy_event``). Every test here does one
thing to such an instance before anything else has read it, and compares
the outcome with the same thing done to an instance Pydantic built and
validated from the same values.

The lazy instances lean on Pydantic's slots; where its layout is not the
known one, events are built at once with ``model_construct`` instead. The
``path`` fixture runs the comparisons on both, so the fallback is held to
the same outcomes.
"""

from __future__ import annotations

import copy
import datetime as dt
import pickle
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, PrivateAttr

from otel_kafka_events import EventMetadata, EventPayload
from otel_kafka_events._encoding import _event_type, _lazy_event, _models
from otel_kafka_events._encoding._event_type import EventType
from otel_kafka_events._encoding._lazy_event import new_lazy_event
from otel_kafka_events._encoding._models import json_dump


class Order(EventPayload):
    """A payload with a mutable field and a private attribute."""

    item: str
    quantity: int
    tags: list[str]
    _seen: bool = PrivateAttr(default=False)


class FrozenOrder(EventPayload):
    """A frozen payload: its events are hashable."""

    model_config = ConfigDict(frozen=True)

    item: str


ORDER_TYPE = EventType("order", "test.events.lazy", "lazy", Order)
FROZEN_TYPE = EventType("frozen_order", "test.events.lazy", "lazy", FrozenOrder)

VALUES: dict[str, Any] = {
    "id": uuid.UUID("6f1c2b8e-93a4-4d2a-8b1e-3c5d7e9f0a1b"),
    "application": "lazy",
    "timestamp": dt.datetime(2026, 12, 2, 12, 0, 0, 123456, tzinfo=dt.UTC),
    "timestamp_ns": 1_796_212_800_123_456_789,
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "span_id": "b7ad6b7169203331",
    "trace_flags": 1,
    "item": "book",
    "quantity": 2,
    "tags": ["gift", "fragile"],
}


@dataclass
class Path:
    """How enriched events are made: their types and the event factory."""

    order_type: EventType[Any]
    frozen_type: EventType[Any]
    new_event: _lazy_event.LazyEventFactory


@pytest.fixture(params=["lazy", "plain"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The lazy path, or the plain one a Pydantic laid out otherwise gets."""
    if request.param == "lazy":
        return Path(ORDER_TYPE, FROZEN_TYPE, new_lazy_event)
    monkeypatch.setattr(_models, "LazyFields", _lazy_event._PlainFields)
    monkeypatch.setattr(_event_type, "new_lazy_event", _lazy_event.eager_event)
    return Path(
        EventType("order", "test.events.lazy", "lazy", Order),
        EventType("frozen_order", "test.events.lazy", "lazy", FrozenOrder),
        _lazy_event.eager_event,
    )


def make_pair(
    path: Path, frozen: bool = False, values: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """An enriched event and a validated one, from the same values."""
    source = dict(VALUES if values is None else values)
    model = (path.frozen_type if frozen else path.order_type).event_model
    enriched = path.new_event(model, (lambda: copy.deepcopy(source),))
    return enriched, model.model_validate(copy.deepcopy(source))


def set_field(event: Any, name: str, value: Any) -> Any:
    setattr(event, name, value)
    return event


def delete_field(event: Any, name: str) -> Any:
    delattr(event, name)
    return event


OPERATIONS: dict[str, Callable[[Any], Any]] = {
    "field": lambda e: e.item,
    "metadata field": lambda e: e.timestamp,
    "private attribute": lambda e: e._seen,
    "model_dump": lambda e: e.model_dump(),
    "model_dump json mode": lambda e: e.model_dump(mode="json"),
    "model_dump exclude_unset": lambda e: e.model_dump(exclude_unset=True),
    "model_dump_json": lambda e: e.model_dump_json(),
    "json_dump": json_dump,
    "repr": repr,
    "str": str,
    "vars": vars,
    "__dict__": lambda e: e.__dict__,
    "model_fields_set": lambda e: e.model_fields_set,
    "model_extra": lambda e: e.model_extra,
    "iterate": lambda e: list(e),
    "dict": dict,
    "copy": lambda e: copy.copy(e).model_dump(),
    "deepcopy": lambda e: copy.deepcopy(e).model_dump(),
    # Event models live in no module, so neither kind pickles: both say so.
    "pickle": lambda e: pickle.loads(pickle.dumps(e)).model_dump(),
    "pickle the values": lambda e: pickle.loads(pickle.dumps(e.__dict__)),
    "model_copy": lambda e: e.model_copy(update={"quantity": 5}).model_dump(),
    "set a field": lambda e: set_field(e, "quantity", 9).model_dump(),
    "set a private attribute": lambda e: set_field(e, "_seen", True)._seen,
    "mutate a list field": lambda e: (e.tags.append("x"), e.tags)[1],
    "delete a field": lambda e: delete_field(e, "quantity").__dict__,
    "getattr default": lambda e: getattr(e, "missing", "default"),
    "hasattr": lambda e: (hasattr(e, "item"), hasattr(e, "missing")),
}


def outcome(operation: Callable[[Any], Any], event: Any) -> Any:
    """What ``operation`` returns, or the type and text of what it raises."""
    try:
        return operation(event)
    except Exception as exc:
        return ("raised", type(exc), str(exc))


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_first_use_gives_what_a_validated_model_gives(name: str, path: Path) -> None:
    lazy, validated = make_pair(path)
    operation = OPERATIONS[name]
    assert outcome(operation, lazy) == outcome(operation, validated)
    # And the instance stays consistent after its first use.
    assert lazy.model_dump() == validated.model_dump()


def test_equality_both_ways(path: Path) -> None:
    lazy, validated = make_pair(path)
    assert lazy == validated
    other, _ = make_pair(path)
    assert validated == other
    different, _ = make_pair(path, values={**VALUES, "quantity": 3})
    assert different != validated


def test_a_missing_attribute_raises_the_same_error(path: Path) -> None:
    lazy, validated = make_pair(path)
    with pytest.raises(AttributeError) as from_lazy:
        _ = lazy.missing
    with pytest.raises(AttributeError) as from_validated:
        _ = validated.missing
    assert str(from_lazy.value) == str(from_validated.value)


def test_a_frozen_payloads_events_hash_and_assign_alike(path: Path) -> None:
    values = {k: v for k, v in VALUES.items() if k not in ("quantity", "tags")}
    lazy, validated = make_pair(path, frozen=True, values=values)
    assert outcome(hash, lazy) == outcome(hash, validated)
    lazy, validated = make_pair(path, frozen=True, values=values)

    def assign(event: Any) -> Any:
        event.item = "pen"
        return event.item

    assert outcome(assign, lazy) == outcome(assign, validated)


def test_types_and_validation_are_the_models(path: Path) -> None:
    lazy, validated = make_pair(path)
    assert type(lazy) is type(validated)
    assert isinstance(lazy, EventMetadata)
    assert isinstance(lazy, Order)
    # Validating the lazy instance's dump gives the instance back.
    assert type(lazy).model_validate(lazy.model_dump()) == validated


def test_values_are_made_once_whatever_reads_first() -> None:
    calls: list[int] = []
    source = dict(VALUES)

    def make() -> dict[str, Any]:
        calls.append(1)
        return dict(source)

    event = new_lazy_event(ORDER_TYPE.event_model, (make,))
    assert event.model_dump()["item"] == "book"
    assert event.item == "book"
    assert repr(event).startswith("order(")
    assert calls == [1]


def test_threads_reading_a_new_event_see_the_same_values() -> None:
    calls: list[int] = []
    barrier = threading.Barrier(8)

    def make() -> dict[str, Any]:
        calls.append(1)
        return dict(VALUES)

    event = new_lazy_event(ORDER_TYPE.event_model, (make,))
    seen: list[Any] = []

    def read() -> None:
        barrier.wait()
        seen.append((event.id, event.quantity, event.model_dump()))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert all(s == seen[0] for s in seen)
    assert calls == [1]


def test_enrich_copies_the_payload_before_it_changes(path: Path) -> None:
    payload = Order(item="book", quantity=2, tags=["gift"])
    enriched = path.order_type.enrich(payload)
    payload.quantity = 7
    payload.item = "pen"
    assert enriched.event.quantity == 2
    assert enriched.event.item == "book"


def test_enrich_fills_in_the_metadata(path: Path) -> None:
    payload = Order(item="book", quantity=2, tags=["gift"])
    enriched = path.order_type.enrich(payload)
    event = enriched.event
    assert str(event.id) == enriched.event_id
    assert event.id.version == 4
    assert event.application == "lazy"
    assert event.timestamp_ns == enriched.timestamp_ns
    micros = enriched.timestamp_ns // 1000
    assert event.timestamp == dt.datetime.fromtimestamp(0, dt.UTC) + dt.timedelta(
        microseconds=micros
    )
    assert event.trace_id is None
    assert list(event.__dict__)[:7] == [
        "id",
        "application",
        "timestamp",
        "timestamp_ns",
        "trace_id",
        "span_id",
        "trace_flags",
    ]
    # A validated copy of the event is equal to it: the values are valid.
    assert type(event).model_validate(event.model_dump()) == event


def test_models_built_by_pydantic_have_nothing_pending(path: Path) -> None:
    model = path.order_type.event_model
    built = model.model_construct(**VALUES)
    assert built.item == "book"
    assert built.model_dump() == model.model_validate(VALUES).model_dump()
    copied = copy.deepcopy(built)
    assert copied == built


# -- the check of Pydantic's layout ------------------------------------------------


def test_the_lazy_path_is_taken_with_the_installed_pydantic() -> None:
    # A Pydantic release that moved the slots would fall back silently.
    assert _lazy_event.LAZY
    assert new_lazy_event is _lazy_event._lazy_event
    assert issubclass(ORDER_TYPE.event_model, _lazy_event.LazyFields)
    made: list[int] = []

    def make() -> dict[str, Any]:
        made.append(1)
        return dict(VALUES)

    lazy = new_lazy_event(ORDER_TYPE.event_model, (make,))
    assert made == []
    assert lazy.item == "book"
    assert made == [1]
    # What publish returns is such an event, its values not made yet.
    event = ORDER_TYPE.enrich(Order(item="book", quantity=2, tags=[])).event
    assert _lazy_event._get_pending(event) is not None
    assert event.item == "book"
    assert _lazy_event._get_pending(event) is None


def test_the_plain_path_makes_the_values_at_once() -> None:
    made: list[int] = []

    def make() -> dict[str, Any]:
        made.append(1)
        return dict(VALUES)

    event = _lazy_event.eager_event(ORDER_TYPE.event_model, (make,))
    assert made == [1]
    assert event == ORDER_TYPE.event_model.model_validate(VALUES)


def test_a_base_model_without_the_known_slots_is_not_taken() -> None:
    class Elsewhere:
        """Keeps its state some other way."""

    assert _lazy_event._slot_descriptors(BaseModel) is not None
    assert _lazy_event._slot_descriptors(Elsewhere) is None


def test_a_pydantic_that_reads_its_slots_directly_is_noticed() -> None:
    probe = _lazy_event._probe_model
    assert _lazy_event._lazy_reads_as_eager(probe)

    class Bypassing(probe):  # type: ignore[valid-type,misc]
        """As if Pydantic read the instance dict without the property."""

        @property
        def __dict__(self) -> dict[str, Any]:
            values: dict[str, Any] = _lazy_event._get_dict(self)
            return values

        @__dict__.setter
        def __dict__(self, values: dict[str, Any]) -> None:
            _lazy_event._set_dict(self, values)

    assert not _lazy_event._lazy_reads_as_eager(Bypassing)
