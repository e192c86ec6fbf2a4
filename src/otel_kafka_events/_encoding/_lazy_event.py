"""Enriched events whose field values are filled in on first use.

``publish`` returns the enriched event (an instance of the event model),
but most callers never look at it, and building it eagerly (the values
dict, the `uuid.UUID`, the `datetime`, Pydantic's own slots) cost about as
much as encoding the event. So `new_lazy_event` makes an instance that
holds only what the values are made from, and the values are made the
first time anything reads the instance: a field, ``__dict__`` (which
Pydantic's methods and ``vars()`` read), ``model_fields_set``, ``repr``,
``==``, copying, pickling.

How: Pydantic keeps field values in the instance ``__dict__`` and its own
state in three slots of `pydantic.BaseModel`. `LazyFields` shadows the
four with properties that fill them in first, and a field read misses the
still-empty instance dict and reaches ``__getattr__``, which fills it in
too. After that, reads go straight to the instance dict as for any model.
An instance made any other way (validation, ``model_construct``, copying,
unpickling) has nothing pending and behaves as a plain model.
``tests/unit/encoding/test_lazy_event.py`` compares both kinds operation by
operation.

The slots are Pydantic's internals, so they are checked at import: the four
descriptors must be where Pydantic 2 keeps them, and a lazy instance of a
probe model must read, dump, compare and copy as one built by
``model_construct``. Where either fails (a Pydantic release laid out
otherwise), `LazyFields` is a plain base and `new_lazy_event` builds the
instance at once with ``model_construct``: the plain, public path
(`LAZY` says which is in use).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, PrivateAttr
from pydantic_core import PydanticUndefined

__all__ = ["LAZY", "LazyFields", "eager_event", "new_lazy_event"]

_SLOT_NAMES = (
    "__dict__",
    "__pydantic_fields_set__",
    "__pydantic_extra__",
    "__pydantic_private__",
)


def _slot_descriptors(base: type[Any] = BaseModel) -> tuple[Any, ...] | None:
    """Pydantic's descriptors of the four slots, or None if it keeps them
    otherwise."""
    found = tuple(vars(base).get(name) for name in _SLOT_NAMES)
    for descriptor in found:
        if not (hasattr(descriptor, "__get__") and hasattr(descriptor, "__set__")):
            return None
    return found


_descriptors = _slot_descriptors()
if _descriptors is not None:
    _dict, _fields_set, _extra, _private = _descriptors
    _get_dict = _dict.__get__
    _set_dict = _dict.__set__
    _get_fields_set = _fields_set.__get__
    _set_fields_set = _fields_set.__set__
    _get_extra = _extra.__get__
    _set_extra = _extra.__set__
    _get_private = _private.__get__
    _set_private = _private.__set__
_new = object.__new__
# Two threads reading one new event at once fill it in once.
_filling = threading.Lock()


class _LazyFields(BaseModel):
    """First base of every enriched event model (see the module docstring).

    It adds no fields, only the slot that holds what is pending.
    """

    __slots__ = ("_pending_values",)

    def __getattr__(self, name: str) -> Any:
        # Reached only for names the instance dict lacks: before the values
        # are made, a field name is one of them.
        if _fill(self):
            return getattr(self, name)
        # Pydantic defines __getattr__ only outside type checking.
        return super().__getattr__(name)  # type: ignore[misc]

    def __setattr__(self, name: str, value: Any) -> None:
        _fill(self)
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        # Pydantic deletes a field from the instance dict directly.
        _fill(self)
        super().__delattr__(name)

    @property
    def __dict__(self) -> dict[str, Any]:
        _fill(self)
        values: dict[str, Any] = _get_dict(self)
        return values

    @__dict__.setter
    def __dict__(self, values: dict[str, Any]) -> None:
        _set_dict(self, values)

    @property
    def __pydantic_fields_set__(self) -> set[str]:
        _fill(self)
        names: set[str] = _get_fields_set(self)
        return names

    @__pydantic_fields_set__.setter
    def __pydantic_fields_set__(self, names: set[str]) -> None:
        _set_fields_set(self, names)

    @property
    def __pydantic_extra__(self) -> dict[str, Any] | None:
        _fill(self)
        extra: dict[str, Any] | None = _get_extra(self)
        return extra

    @__pydantic_extra__.setter
    def __pydantic_extra__(self, extra: dict[str, Any] | None) -> None:
        _set_extra(self, extra)

    @property
    def __pydantic_private__(self) -> dict[str, Any] | None:
        _fill(self)
        private: dict[str, Any] | None = _get_private(self)
        return private

    @__pydantic_private__.setter
    def __pydantic_private__(self, private: dict[str, Any] | None) -> None:
        _set_private(self, private)


class _PlainFields(BaseModel):
    """`LazyFields` where Pydantic's layout is not the known one: a plain
    model base, whose events `eager_event` builds."""


_pending_slot = vars(_LazyFields)["_pending_values"]
_get_pending_raw = _pending_slot.__get__
_set_pending = _pending_slot.__set__

LazyEventFactory = Callable[[type[Any], tuple[Any, ...]], Any]
"""``(model, pending)`` to an enriched event (see `new_lazy_event`)."""


def _lazy_event(model: type[Any], pending: tuple[Any, ...]) -> Any:
    """An instance of ``model`` whose values are made when first needed.

    ``pending`` is ``(make_values, *arguments)``: the values are
    ``make_values(*arguments)``. The arguments must not change afterwards:
    the caller passes private copies (the publish path copies the payload's
    dict).
    """
    event = _new(model)
    _set_pending(event, pending)
    return event


def eager_event(model: type[Any], pending: tuple[Any, ...]) -> Any:
    """The plain path of `new_lazy_event`: the values made now, and the
    instance built by Pydantic's ``model_construct`` (no validation: the
    values are the validated payload's and the metadata made for it)."""
    values = pending[0](*pending[1:])
    return model.model_construct(_fields_set=set(values), **values)


def _get_pending(event: Any) -> Any:
    try:
        return _get_pending_raw(event)
    except AttributeError:  # made by Pydantic, copied or unpickled
        return None


def _fill(event: Any) -> bool:
    """Make the values of ``event`` if they are pending; whether it did."""
    if _get_pending(event) is None:
        return False
    with _filling:
        pending = _get_pending(event)
        if pending is None:
            return False
        values = pending[0](*pending[1:])
        _set_dict(event, values)
        _set_fields_set(event, set(values))
        _set_extra(event, None)
        _set_private(event, _private_defaults(type(event)))
        # Last: another thread sees nothing pending only once all is set.
        _set_pending(event, None)
    return True


def _private_defaults(model: type[BaseModel]) -> dict[str, Any] | None:
    """What ``model_construct`` puts in ``__pydantic_private__``."""
    attributes = model.__private_attributes__
    if not attributes:
        return None
    defaults = {}
    for name, attribute in attributes.items():
        default = attribute.get_default()
        if default is not PydanticUndefined:
            defaults[name] = default
    return defaults


# -- the check at import -----------------------------------------------------------

_PROBE_VALUES: dict[str, Any] = {"name": "probe", "count": 2, "tags": ["a"]}

# Each is done to a new lazy instance first thing, and to one built by
# model_construct: what an enriched event's reader does with it.
_PROBE_READS: tuple[Callable[[Any], Any], ...] = (
    lambda e: e.count,
    lambda e: e._seen,
    lambda e: e.model_dump(),
    lambda e: e.model_dump_json(),
    lambda e: e.model_fields_set,
    lambda e: e.model_extra,
    lambda e: vars(e),
    repr,
    lambda e: list(e),
    lambda e: e == _probe_model.model_validate(_PROBE_VALUES),
    lambda e: e.model_copy(update={"count": 3}).model_dump(),
    lambda e: copy.deepcopy(e).model_dump(),
    lambda e: _set_count(e).model_dump(),
)


def _set_count(event: Any) -> Any:
    event.count = 5
    return event


def _probe_model_of(base: type[BaseModel]) -> type[BaseModel]:
    class Probe(base):  # type: ignore[valid-type,misc]
        """A model with what enriched events have: required fields, a
        default, a mutable field, a private attribute."""

        name: str
        count: int = 0
        tags: list[str]
        _seen: bool = PrivateAttr(default=False)

    return Probe


def _lazy_reads_as_eager(model: type[BaseModel]) -> bool:
    """Whether lazy instances of ``model`` read as ``model_construct``'s."""

    def make() -> dict[str, Any]:
        return copy.deepcopy(_PROBE_VALUES)

    try:
        for read in _PROBE_READS:
            lazy = read(_lazy_event(model, (make,)))
            if lazy != read(eager_event(model, (make,))):
                return False
    except Exception:
        return False
    return True


_probe_model: type[BaseModel] = _PlainFields
LAZY = False
"""Whether enriched events are lazy (Pydantic laid out as known), or built
at once with ``model_construct``."""
if _descriptors is not None:
    _probe_model = _probe_model_of(_LazyFields)
    LAZY = _lazy_reads_as_eager(_probe_model)

LazyFields: type[BaseModel] = _LazyFields if LAZY else _PlainFields
"""First base of every enriched event model."""

new_lazy_event: LazyEventFactory = _lazy_event if LAZY else eager_event
"""An instance of ``model`` whose values are made when first needed:
``pending`` is ``(make_values, *arguments)``, the values are
``make_values(*arguments)``, and the arguments must not change afterwards
(the caller passes private copies; the publish path copies the payload's
dict). Where Pydantic is laid out otherwise, `eager_event`."""
