"""Record keys: how an event type's records get their Kafka key.

A publisher's key is the value of one payload field, or what a function of
the payload returns; ``publish(payload, key=...)`` can override it for one
event. The key decides the partition (Kafka's default partitioner) and so
the order consumers see: events with one key keep their publish order.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from .._foreign import describe, own_cancellation
from ..errors import EventKeyError, EventManagerUsageError, UnknownKeyFieldError

__all__ = ["KeyFunction", "RecordKeys", "given_key", "key_text"]

KeyFunction = Callable[[Any], "str | bytes | None"]
"""A function of the payload that returns its record key (or None)."""

# Values that have no single text form to hash: a key made of them would
# change with formatting details nobody meant to partition by.
_NOT_KEYS = (list, tuple, set, frozenset, dict, BaseModel)
_NOT_KEY_TYPES = frozenset({"record", "array", "map"})


def key_text(key: bytes) -> str:
    """A key as text, for span and log attributes and ``tail``.

    UTF-8 keys (every key made from a `str`, or from a field's text) read as
    they are; bytes that are not UTF-8 are written as ``\\xNN`` escapes, so
    two different keys never read alike in a trace or a log.
    """
    return key.decode("utf-8", "backslashreplace")


def value_key(value: Any) -> bytes | None:
    """The key bytes of a field's value (None for None).

    `str` is encoded as UTF-8, `bytes` kept as they are, an `enum.Enum`
    member keyed by its value, and any other scalar (`int`, `uuid.UUID`,
    `decimal.Decimal`, `datetime.datetime`) by ``str(value)`` in UTF-8.

    Raises
    ------
    TypeError
        If the value is a collection or a model (no single text form).
    UnicodeEncodeError
        If a text value cannot be encoded (lone surrogates).
    """
    kind = type(value)
    if kind is str:
        return value.encode()  # type: ignore[no-any-return]
    if value is None:
        return None
    if kind is bytes:
        return value  # type: ignore[no-any-return]
    if isinstance(value, enum.Enum):
        return value_key(value.value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return str.encode(value)
    if isinstance(value, _NOT_KEYS):
        raise TypeError(f"a {kind.__name__} cannot be a record key")
    return str(value).encode()


def given_key(event_name: str, key: object) -> bytes:
    """The bytes of a key passed to ``publish``.

    Raises
    ------
    EventKeyError
        If ``key`` is neither `str` nor `bytes`, or is text that cannot be
        encoded as UTF-8.
    """
    if isinstance(key, bytes):
        return bytes(key)
    if isinstance(key, str):
        try:
            return key.encode()
        except UnicodeEncodeError as exc:
            raise EventKeyError(
                event_name, f"key is not valid UTF-8 text: {exc}"
            ) from exc
    raise EventKeyError(
        event_name, f"key must be str or bytes, got {type(key).__name__}"
    )


class RecordKeys:
    """How the record keys of one event type are made.

    Parameters
    ----------
    event_name
        The event name, for errors.
    payload_model
        The payload model (a key field must be one of its fields).
    schema
        The event's Avro schema (a key field must be a scalar in it).
    key
        The name of a payload field, or a function of the payload.

    Raises
    ------
    UnknownKeyFieldError
        If ``key`` names no payload field, or one whose values are records,
        arrays or maps.
    EventManagerUsageError
        If ``key`` is neither a field name nor callable.
    """

    def __init__(
        self,
        event_name: str,
        payload_model: type[BaseModel],
        schema: Mapping[str, Any],
        key: str | KeyFunction,
    ) -> None:
        self._event_name = event_name
        self.field: str | None = None
        """The key field's name, or None for a key function."""
        self._function: KeyFunction | None = None
        if isinstance(key, str):
            model = payload_model.__name__
            fields = list(payload_model.model_fields)
            if key not in fields:
                raise UnknownKeyFieldError(
                    key,
                    model,
                    f"{model} has no field {key!r} (its fields:"
                    f" {', '.join(fields) or 'none'})",
                )
            kind = _avro_kind(schema, key)
            if kind in _NOT_KEY_TYPES:
                raise UnknownKeyFieldError(
                    key,
                    model,
                    f"field {key!r} holds {kind} values; a key field must hold"
                    " a single value (text, bytes, a number, a UUID, an enum)",
                )
            self.field = key
        elif callable(key):
            self._function = key
        else:
            raise EventManagerUsageError(
                f"key of event {event_name!r} must be the name of a payload"
                f" field or a function of the payload, got {type(key).__name__}"
            )

    def of(self, payload: Any, fields: Mapping[str, Any]) -> bytes | None:
        """The key of one event (None: no key).

        Parameters
        ----------
        payload
            The payload passed to ``publish`` (what a key function gets).
        fields
            Its field values, as copied for encoding.

        Raises
        ------
        EventKeyError
            If the key function raises or returns something other than
            `str`, `bytes` or None, or the key field's value cannot be a
            key. Naming the event and, for a field, the field.
        """
        name = self.field
        if name is not None:
            try:
                return value_key(fields[name])
            except (TypeError, UnicodeEncodeError) as exc:
                raise EventKeyError(
                    self._event_name, f"key field {name!r}: {exc}"
                ) from exc
        function = self._function
        assert function is not None
        try:
            key = function(payload)
        except BaseException as exc:
            # The application's code: whatever it raises refuses this
            # publish, except the cancellation of the publishing task.
            if own_cancellation(exc):
                raise
            raise EventKeyError(
                self._event_name, f"the key function raised {describe(exc)}"
            ) from exc
        if key is None:
            return None
        if isinstance(key, bytes | str):
            return given_key(self._event_name, key)
        raise EventKeyError(
            self._event_name,
            "the key function must return str, bytes or None, returned"
            f" {type(key).__name__}",
        )


def _avro_kind(schema: Mapping[str, Any], field: str) -> str | None:
    """The Avro type name of a field's non-null values (None if unknown)."""
    for entry in schema.get("fields", ()):
        if entry.get("name") != field:
            continue
        kind = entry.get("type")
        branches = kind if isinstance(kind, list) else [kind]
        names = [b.get("type") if isinstance(b, dict) else b for b in branches]
        # A union is a key field if none of its branches is a collection.
        for name in names:
            if name in _NOT_KEY_TYPES:
                return str(name)
        scalar = [n for n in names if n != "null"]
        return str(scalar[0]) if scalar else None
    return None
