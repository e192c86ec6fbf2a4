"""Pydantic model to Avro schema, and the value converters that go with it.

`compile_record` walks a model's fields once, at registration, and returns both
the Avro schema and a converter that turns a model instance into the datum
fastavro writes. Every field that cannot be represented is collected, so the
user sees all problems in one `UnsupportedAvroSchemaError`.

Type mapping (see ``docs/schemas.md``):

========================  =============================================
Python                    Avro
========================  =============================================
str / int / float / bool  string / long / double / boolean
bytes                     bytes
datetime (aware)          long, logicalType timestamp-micros
date                      int, logicalType date
timedelta                 double (seconds)
UUID                      string, logicalType uuid
Decimal (max_digits,      bytes, logicalType decimal
decimal_places set)
Enum                      enum (symbols = values when they are all valid
                          Avro names, else member names)
Literal[str, ...]         string
nested BaseModel          record
list[X] / dict[str, X]    array / map
X | None, X | Y           union
========================  =============================================
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import re
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pydantic
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ..errors import InvalidEventNameError, UnsupportedAvroSchemaError

__all__ = [
    "CompiledRecord",
    "Converter",
    "compile_record",
    "validate_avro_name",
    "validate_namespace",
]

Converter = Callable[[Any], Any]
"""Turns one validated Python value into what fastavro expects."""

_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def validate_avro_name(part: str, value: str) -> None:
    """Raise `InvalidEventNameError` unless ``value`` is a valid Avro name."""
    if not _AVRO_NAME.match(value):
        raise InvalidEventNameError(
            part,
            value,
            "Avro names start with a letter or underscore and contain only"
            " ASCII letters, digits and underscores",
        )


def validate_namespace(namespace: str) -> None:
    """Raise `InvalidEventNameError` naming the first bad dot-separated part."""
    for part in namespace.split("."):
        validate_avro_name(f"topic part (of {namespace!r})", part)


class NaiveDatetimeError(ValueError):
    pass


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE = dt.date(1970, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)
_MIN_MICROS = (dt.datetime.min.replace(tzinfo=dt.UTC) - _EPOCH) // _MICROSECOND
_MAX_MICROS = (dt.datetime.max.replace(tzinfo=dt.UTC) - _EPOCH) // _MICROSECOND


def _datetime_value(value: dt.datetime) -> int:
    # A naive datetime has no defined instant; guessing a zone would silently
    # shift the stored time, so it is refused (documented in docs/schemas.md).
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(
            "naive datetime (no timezone); use an aware datetime, e.g. with tz=UTC"
        )
    # Integer arithmetic on timedeltas is exact, unlike timestamp() floats.
    micros = (value - _EPOCH) // _MICROSECOND
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        # Valid Avro, but a datetime cannot hold it: Python readers fail.
        raise ValueError(f"{value} is outside the UTC years 1 to 9999")
    return micros


def _date_value(value: dt.date) -> int:
    return (value - _EPOCH_DATE).days


def _uuid_value(value: uuid.UUID) -> str:
    return str(value)


# Enough digits that scaling a decimal never rounds it.
_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX)


def _decimal_converter(precision: int, scale: int) -> Converter:
    # A value assigned after validation (or built with model_construct) can
    # have more places or digits than the schema: refuse it rather than
    # round it or write a number the declared precision cannot hold.
    def convert(value: Decimal) -> bytes:
        if not value.is_finite():
            raise ValueError(f"{value} is not a finite decimal")
        # Checked before scaling, so a huge exponent costs nothing.
        if value and value.adjusted() >= precision - scale:
            raise ValueError(
                f"{value} has more than {precision} digits"
                f" (decimal({precision}, {scale}))"
            )
        scaled = value.scaleb(scale, context=_EXACT)
        unscaled = int(scaled.to_integral_value(context=_EXACT))
        if unscaled != scaled:
            raise ValueError(
                f"{value} has more than {scale} decimal places"
                f" (decimal({precision}, {scale}))"
            )
        return unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)

    return convert


def _timedelta_value(value: dt.timedelta) -> float:
    return value.total_seconds()


@dataclass
class CompiledRecord:
    """The Avro schema of a model and the converter for its instances."""

    schema: dict[str, Any]
    converters: dict[str, Converter]
    """Converters for the fields that need one; other values pass unchanged."""


@dataclass
class _Context:
    namespace: str
    flat: bool
    problems: list[str] = field(default_factory=list)
    named: dict[type, str] = field(default_factory=dict)
    # Avro full name -> the class that defined it, to catch two classes of
    # one name (Avro allows each name once).
    owners: dict[str, type] = field(default_factory=dict)
    record_converters: dict[type, Converter] = field(default_factory=dict)
    in_progress: set[type] = field(default_factory=set)


def compile_record(
    model: type[BaseModel],
    *,
    name: str,
    namespace: str,
    event: str,
    flat: bool = False,
    reserved: frozenset[str] = frozenset(),
) -> CompiledRecord:
    """Derive the Avro record schema and converters of a Pydantic model.

    Parameters
    ----------
    model
        The enriched event model (metadata and payload fields).
    name
        The record name (the event name).
    namespace
        The record namespace (the topic).
    event
        The event name, for error messages.
    flat
        Accept only scalar fields, as Safir does.
    reserved
        Field names the payload must not use (the metadata fields); used only
        to word the error when a payload field shadows one.

    Raises
    ------
    UnsupportedAvroSchemaError
        Listing every field that cannot be represented.
    """
    context = _Context(namespace=f"{namespace}.{name}", flat=flat)
    fields, converters = _record_fields(model, "", context)
    if context.problems:
        raise UnsupportedAvroSchemaError(event, context.problems)
    schema = {
        "type": "record",
        "name": name,
        "namespace": namespace,
        "fields": fields,
    }
    if model.__doc__ and model.__doc__ is not BaseModel.__doc__:
        schema["doc"] = " ".join(model.__doc__.split())
    return CompiledRecord(schema=schema, converters=converters)


def _record_fields(
    model: type[BaseModel], path: str, context: _Context
) -> tuple[list[dict[str, Any]], dict[str, Converter]]:
    fields: list[dict[str, Any]] = []
    converters: dict[str, Converter] = {}
    for field_name, info in model.model_fields.items():
        where = f"{path}{field_name}"
        if not _AVRO_NAME.match(field_name):
            context.problems.append(f"{where}: not a valid Avro field name")
            continue
        if info.alias and info.alias != field_name:
            context.problems.append(
                f"{where}: field aliases are not supported (alias {info.alias!r})"
            )
            continue
        avro_type, converter = _field_type(info.annotation, info, where, context)
        if avro_type is None:
            continue
        entry: dict[str, Any] = {"name": field_name, "type": avro_type}
        if info.description:
            entry["doc"] = info.description
        default = _avro_default(info, avro_type)
        if default is not _NO_DEFAULT:
            entry["default"] = default
        fields.append(entry)
        if converter is not None:
            converters[field_name] = converter
    return fields, converters


_NO_DEFAULT = object()


def _avro_default(info: FieldInfo, avro_type: Any) -> Any:
    # Defaults matter for schema evolution (a new field with a default keeps a
    # subject BACKWARD compatible); only plain JSON scalars are carried over.
    if info.is_required() or info.default_factory is not None:
        return _NO_DEFAULT
    default = info.default
    if default is None:
        if isinstance(avro_type, list) and avro_type and avro_type[0] == "null":
            return None
        return _NO_DEFAULT
    if isinstance(avro_type, list):
        return _NO_DEFAULT  # Avro defaults must match the first union branch.
    if isinstance(default, enum.Enum):
        return _NO_DEFAULT
    if isinstance(default, bool) and avro_type == "boolean":
        return default
    if (
        isinstance(default, int)
        and not isinstance(default, bool)
        and avro_type == "long"
    ):
        return default
    if isinstance(default, float) and avro_type == "double":
        return default
    if isinstance(default, str) and avro_type == "string":
        return default
    return _NO_DEFAULT


# Pydantic's constrained date and time types are marker classes at run time,
# not subclasses of datetime/date.
_PYDANTIC_DATETIMES: tuple[Any, ...] = (
    pydantic.AwareDatetime,
    pydantic.NaiveDatetime,
    pydantic.PastDatetime,
    pydantic.FutureDatetime,
)
_PYDANTIC_DATES: tuple[Any, ...] = (pydantic.PastDate, pydantic.FutureDate)

_SCALARS: dict[type, str] = {
    str: "string",
    bool: "boolean",
    int: "long",
    float: "double",
    bytes: "bytes",
}


def _field_type(
    annotation: Any, info: FieldInfo | None, where: str, context: _Context
) -> tuple[Any, Converter | None]:
    """Return ``(avro_type, converter)``, or ``(None, None)`` after a problem."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        # Nested in a list, map or union, the constraints (such as a
        # Decimal's max_digits) are only in the Annotated metadata.
        nested = FieldInfo.from_annotation(annotation)
        info = nested if info is None else FieldInfo.merge_field_infos(info, nested)
        return _field_type(typing.get_args(annotation)[0], info, where, context)
    if annotation is None or annotation is type(None):
        return "null", None
    if origin in (typing.Union, types.UnionType):
        return _union_type(annotation, info, where, context)
    if origin is typing.Literal:
        return _literal_type(annotation, where, context)
    if annotation in _SCALARS:
        return _SCALARS[annotation], None
    if annotation is dt.datetime or annotation in _PYDANTIC_DATETIMES:
        return {"type": "long", "logicalType": "timestamp-micros"}, _datetime_value
    if annotation is dt.date or annotation in _PYDANTIC_DATES:
        return {"type": "int", "logicalType": "date"}, _date_value
    if annotation is dt.timedelta:
        return "double", _timedelta_value
    if annotation is uuid.UUID or (
        isinstance(annotation, type) and issubclass(annotation, uuid.UUID)
    ):
        return {"type": "string", "logicalType": "uuid"}, _uuid_value
    if annotation is Decimal:
        return _decimal_type(info, where, context)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum_type(annotation, where, context)
    if context.flat:
        context.problems.append(
            f"{where}: only scalar fields are allowed with flat_payloads=True"
            f" (got {_type_name(annotation)})"
        )
        return None, None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _nested_record(annotation, where, context)
    if origin in (list, set, frozenset):
        (item,) = typing.get_args(annotation) or (Any,)
        if origin is not list and _unhashable(item):
            # Pydantic refuses every non-empty value of such a field.
            context.problems.append(
                f"{where}: set items must be hashable, {_type_name(item)} is not"
                " (use a list, or a frozen model)"
            )
            return None, None
        item_type, item_conv = _field_type(item, None, f"{where}[]", context)
        if item_type is None:
            return None, None
        return {"type": "array", "items": item_type}, _list_converter(item_conv)
    if origin is dict:
        args = typing.get_args(annotation)
        if not args or args[0] is not str:
            context.problems.append(f"{where}: dict keys must be str for an Avro map")
            return None, None
        value_type, value_conv = _field_type(args[1], None, f"{where}{{}}", context)
        if value_type is None:
            return None, None
        return {"type": "map", "values": value_type}, _dict_converter(value_conv)
    context.problems.append(
        f"{where}: type {_type_name(annotation)} has no Avro representation"
    )
    return None, None


def _unhashable(item: Any) -> bool:
    if isinstance(item, type) and issubclass(item, BaseModel):
        return not item.model_config.get("frozen", False)
    return typing.get_origin(item) in (list, dict, set)


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__qualname__
    return repr(annotation)


def _union_type(
    annotation: Any, info: FieldInfo | None, where: str, context: _Context
) -> tuple[Any, Converter | None]:
    members = typing.get_args(annotation)
    nullable = type(None) in members
    branches: list[Any] = ["null"] if nullable else []
    checks: list[tuple[Any, Converter | None, str]] = []
    seen_kinds: set[str] = set()
    for member in members:
        if member is type(None):
            continue
        if context.flat and typing.get_origin(member) in (list, dict):
            context.problems.append(f"{where}: only scalar fields are allowed")
            return None, None
        avro_type, converter = _field_type(member, info, where, context)
        if avro_type is None:
            return None, None
        kind = _branch_kind(avro_type)
        if kind in seen_kinds:
            context.problems.append(
                f"{where}: union {annotation!r} has two branches Avro cannot tell"
                f" apart ({kind})"
            )
            return None, None
        seen_kinds.add(kind)
        branches.append(avro_type)
        checks.append((_python_type(member), converter, _branch_tag(avro_type)))
    if len(branches) == 1:
        return branches[0], checks[0][1] if checks else None
    if len(checks) == 1:
        # ``X | None``: None never reaches a converter, so no branch to pick.
        return branches, checks[0][1]
    return branches, _union_converter(checks)


def _branch_kind(avro_type: Any) -> str:
    # Avro allows one branch per unnamed type; named types (records, enums)
    # are told apart by name.
    if isinstance(avro_type, dict):
        if avro_type["type"] in ("record", "enum"):
            return f"{avro_type['type']}:{avro_type.get('name')}"
        return str(avro_type["type"])
    if isinstance(avro_type, str):
        return avro_type
    return repr(avro_type)


def _python_type(member: Any) -> Any:
    """The Python class whose instances a union member's values are."""
    if typing.get_origin(member) is typing.Annotated:
        return _python_type(typing.get_args(member)[0])
    if typing.get_origin(member) is typing.Literal:
        return type(typing.get_args(member)[0])
    if member in _PYDANTIC_DATETIMES:
        return dt.datetime
    if member in _PYDANTIC_DATES:
        return dt.date
    return typing.get_origin(member) or member


def _branch_tag(avro_type: Any) -> str:
    """The branch name fastavro's tuple notation ``(name, value)`` expects."""
    if isinstance(avro_type, dict):
        if avro_type["type"] in ("record", "enum"):
            return f"{avro_type['namespace']}.{avro_type['name']}"
        return str(avro_type["type"])
    return str(avro_type)  # a primitive, or the full name of a named type


def _union_converter(checks: list[tuple[Any, Converter | None, str]]) -> Converter:
    # fastavro would write a value to the first branch that accepts it: an
    # int into a ``date`` branch, a datetime into a ``date`` branch, a model
    # into the first record with the same fields. The branch is chosen here
    # from the value's class instead (most derived class first) and passed on
    # in tuple notation.
    by_type: dict[type, tuple[Converter | None, str]] = {}
    for python_type, converter, tag in checks:
        if isinstance(python_type, type):
            by_type.setdefault(python_type, (converter, tag))

    def convert(value: Any) -> Any:
        for klass in type(value).__mro__:
            found = by_type.get(klass)
            if found is not None:
                converter, tag = found
                return (tag, converter(value) if converter else value)
        return value

    return convert


def _literal_type(
    annotation: Any, where: str, context: _Context
) -> tuple[Any, Converter | None]:
    values = typing.get_args(annotation)
    if all(isinstance(v, str) for v in values):
        return "string", None
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "long", None
    context.problems.append(f"{where}: Literal values must be all str or all int")
    return None, None


def _decimal_type(
    info: FieldInfo | None, where: str, context: _Context
) -> tuple[Any, Converter | None]:
    digits: int | None = None
    places: int | None = None
    for constraint in info.metadata if info else ():
        digits = getattr(constraint, "max_digits", None) or digits
        found_places = getattr(constraint, "decimal_places", None)
        places = found_places if found_places is not None else places
    if digits is None or places is None:
        context.problems.append(
            f"{where}: Decimal needs Field(max_digits=..., decimal_places=...)"
            " to fix the Avro decimal precision and scale"
        )
        return None, None
    return {
        "type": "bytes",
        "logicalType": "decimal",
        "precision": digits,
        "scale": places,
    }, _decimal_converter(digits, places)


def _enum_type(
    enum_class: type[enum.Enum], where: str, context: _Context
) -> tuple[Any, Converter | None]:
    members = list(enum_class)
    values = [m.value for m in members]
    # Keep the values analysts see in Safir (string values) when Avro allows
    # them as symbols; otherwise fall back to member names, which always are.
    use_values = all(isinstance(v, str) and _AVRO_NAME.match(v) for v in values) and (
        len(set(values)) == len(values)
    )
    symbols = [str(m.value) if use_values else m.name for m in members]
    bad = [s for s in symbols if not _AVRO_NAME.match(s)]
    if bad:
        context.problems.append(f"{where}: enum symbols {bad} are not valid Avro names")
        return None, None
    lookup: dict[Any, str] = {}
    for member, symbol in zip(members, symbols, strict=True):
        lookup[member.value] = symbol
        lookup[member] = symbol
    avro_type = {
        "type": "enum",
        "name": enum_class.__name__,
        "namespace": context.namespace,
        "symbols": symbols,
    }
    if enum_class in context.named:
        return context.named[enum_class], _enum_converter(enum_class, lookup)
    if not _claim_name(enum_class, "enum", where, context):
        return None, None
    return avro_type, _enum_converter(enum_class, lookup)


def _claim_name(cls: type, kind: str, where: str, context: _Context) -> bool:
    """Record that ``cls`` defines its Avro name; False (and a problem) if
    another class already defined that name."""
    full_name = f"{context.namespace}.{cls.__name__}"
    owner = context.owners.get(full_name)
    if owner is not None and owner is not cls:
        context.problems.append(
            f"{where}: {kind} {cls.__module__}.{cls.__qualname__} has the Avro"
            f" name {cls.__name__!r} of {owner.__module__}.{owner.__qualname__},"
            " used elsewhere in the payload; Avro needs one definition per name,"
            " so rename one of the classes"
        )
        return False
    context.owners[full_name] = cls
    context.named[cls] = full_name
    return True


def _enum_converter(enum_class: type[enum.Enum], lookup: dict[Any, str]) -> Converter:
    def convert(value: Any) -> str:
        try:
            return lookup[value]
        except (KeyError, TypeError):
            raise ValueError(
                f"{value!r} is not a member of {enum_class.__name__}"
            ) from None

    return convert


def _nested_record(
    model: type[BaseModel], where: str, context: _Context
) -> tuple[Any, Converter | None]:
    if model in context.in_progress:
        context.problems.append(
            f"{where}: recursive model {model.__name__} is not supported"
        )
        return None, None
    if model in context.named:
        # Avro allows a named type to be defined once; later uses refer to it.
        return context.named[model], context.record_converters[model]
    if not _claim_name(model, "model", where, context):
        return None, None
    context.in_progress.add(model)
    fields, converters = _record_fields(model, f"{where}.", context)
    context.in_progress.discard(model)
    record_converter = _model_converter(converters)
    context.record_converters[model] = record_converter
    schema = {
        "type": "record",
        "name": model.__name__,
        "namespace": context.namespace,
        "fields": fields,
    }
    return schema, record_converter


def _model_converter(converters: dict[str, Converter]) -> Converter:
    items = tuple(converters.items())

    def convert(value: Any) -> dict[str, Any]:
        datum = dict(value.__dict__)
        for name, converter in items:
            item = datum.get(name)
            if item is not None:
                datum[name] = converter(item)
        return datum

    return convert


def _list_converter(item: Converter | None) -> Converter | None:
    if item is None:
        return list
    convert_item = item

    def convert(value: Any) -> list[Any]:
        return [None if v is None else convert_item(v) for v in value]

    return convert


def _dict_converter(item: Converter | None) -> Converter | None:
    if item is None:
        return None
    convert_item = item

    def convert(value: dict[str, Any]) -> dict[str, Any]:
        return {k: None if v is None else convert_item(v) for k, v in value.items()}

    return convert
