"""Event models: the user's payload base class and the metadata we add.

A published event is one flat record: the metadata fields first, then the
payload fields. `build_event_model` makes that record type once per event type,
at registration, so publishing never builds models.
"""

from __future__ import annotations

import copy
import json
from typing import Any, TypeVar, cast
from weakref import WeakKeyDictionary

from pydantic import UUID4, AwareDatetime, BaseModel, ConfigDict, Field, create_model
from pydantic_core import PydanticSerializationError, to_jsonable_python

from ._lazy_event import LazyFields

__all__ = [
    "EventMetadata",
    "EventPayload",
    "TracedEventMetadata",
    "build_event_model",
    "json_dump",
    "remember_schema",
]

P = TypeVar("P", bound="EventPayload")


# The schema each enriched event model was registered with, so that the
# events `publish` returns can give it back (Safir's events can: their
# models come from dataclasses-avroschema).
_REGISTERED_SCHEMAS: WeakKeyDictionary[type, dict[str, Any]] = WeakKeyDictionary()


def remember_schema(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """Record the Avro schema an enriched event model is published with."""
    _REGISTERED_SCHEMAS[model] = schema


def _derive_schema(model: type[BaseModel], *, flat: bool = False) -> dict[str, Any]:
    """The Avro record schema of a model that was never registered.

    Named after the class, in the namespace of its module; every problem
    (unsupported field types, fields named like metadata fields) is reported
    at once by `UnsupportedAvroSchemaError`.
    """
    from ..errors import UnsupportedAvroSchemaError
    from ._schema import compile_record

    problems: list[str] = []
    if issubclass(model, EventPayload) and not issubclass(model, EventMetadata):
        reserved = set(TracedEventMetadata.model_fields) & set(model.model_fields)
        problems = [
            f"{name}: payload field collides with the metadata field"
            for name in sorted(reserved)
        ]
    try:
        compiled = compile_record(
            model,
            name=model.__name__,
            namespace=model.__module__,
            event=model.__name__,
            flat=flat,
        )
    except UnsupportedAvroSchemaError as exc:
        raise UnsupportedAvroSchemaError(
            model.__name__, problems + exc.problems
        ) from None
    if problems:
        raise UnsupportedAvroSchemaError(model.__name__, problems)
    return compiled.schema


class _AvroSchemaMethods:
    """``avro_schema()`` and ``avro_schema_to_python()``, as Safir's models
    (dataclasses-avroschema's ``AvroBaseModel``) have them."""

    @classmethod
    def avro_schema_to_python(cls) -> dict[str, Any]:
        """The Avro schema of this model, as a dict.

        For the event class of a publisher (the type of what ``publish``
        returns), the schema registered for it; for any other model, one
        derived from its fields and named after the class.

        Raises
        ------
        UnsupportedAvroSchemaError
            If the model has no Avro representation.
        """
        schema = _REGISTERED_SCHEMAS.get(cls)
        if schema is None:
            schema = _derive_schema(cast("type[BaseModel]", cls))
        return copy.deepcopy(schema)

    @classmethod
    def avro_schema(cls) -> str:
        """The Avro schema of this model, as JSON text; see
        `avro_schema_to_python`."""
        return json.dumps(cls.avro_schema_to_python())


class EventPayload(_AvroSchemaMethods, BaseModel):
    """Base class for the payload of an application event.

    Subclass it with the fields that describe what happened. The field names
    must not collide with the metadata fields (`EventMetadata`), and the field
    types must be representable in Avro; both are checked when the event type
    is registered with `EventManager.create_publisher`.

    Examples
    --------
    >>> class LoginSucceeded(EventPayload):
    ...     username: str
    ...     duration_ms: float
    """

    @classmethod
    def validate_structure(cls, *, flat: bool = False) -> None:
        """Check that this payload model can be published.

        `EventManager.create_publisher` runs the same checks; call this to
        catch a bad model in a unit test without a manager.

        Parameters
        ----------
        flat
            Accept only scalar fields, Safir's rule (``flat_payloads``).

        Raises
        ------
        UnsupportedAvroSchemaError
            Listing every field that has no Avro representation or is named
            like a metadata field.
        """
        _derive_schema(cls, flat=flat)


class EventMetadata(_AvroSchemaMethods, BaseModel):
    """Fields added to every published event, ahead of the payload fields.

    ``publish`` returns an instance of the enriched event type, which derives
    from both this class and the payload model.
    """

    model_config = ConfigDict(frozen=False)

    id: UUID4 = Field(description="Unique id of this event (UUID4), for deduplication.")
    application: str = Field(description="Name of the application that published it.")
    timestamp: AwareDatetime = Field(
        description="When the event happened (UTC, microsecond precision in Avro)."
    )
    timestamp_ns: int = Field(
        description="When the event happened, in nanoseconds since the Unix epoch."
    )


class TracedEventMetadata(EventMetadata):
    """Metadata with the trace context captured when the event was published.

    All three fields are null for an event published outside a valid span.
    """

    trace_id: str | None = Field(
        default=None, description="W3C trace id, 32 lowercase hex digits."
    )
    span_id: str | None = Field(
        default=None, description="Id of the caller's active span, 16 hex digits."
    )
    trace_flags: int | None = Field(
        default=None, description="W3C trace flags (bit 0 sampled, bit 1 random)."
    )


METADATA_FIELDS: frozenset[str] = frozenset(EventMetadata.model_fields)
TRACE_FIELDS: frozenset[str] = (
    frozenset(TracedEventMetadata.model_fields) - METADATA_FIELDS
)


def build_event_model(
    name: str, payload_model: type[P], *, trace_context: bool
) -> type[P]:
    """Create the enriched event type: metadata fields, then payload fields.

    Parameters
    ----------
    name
        The event name, used as the class name for readable reprs.
    payload_model
        The user's payload class.
    trace_context
        Whether the metadata carries trace ids.

    Returns
    -------
    type
        A class deriving from ``payload_model`` and the metadata class.
    """
    metadata: type[EventMetadata] = (
        TracedEventMetadata if trace_context else EventMetadata
    )
    # Pydantic collects fields from the last base to the first, so listing the
    # metadata last puts its fields first, as on the Avro record. LazyFields
    # (no fields) lets the publish path make the values on first use.
    model = create_model(
        name,
        __base__=(LazyFields, payload_model, metadata),
        __module__=payload_model.__module__,
        # Class docstrings are not inherited; keep the payload's for the schema.
        __doc__=payload_model.__doc__,
    )
    return cast("type[P]", model)


def json_dump(model: BaseModel) -> dict[str, Any]:
    """``model.model_dump(mode="json")``, also for bytes that are not UTF-8.

    Pydantic writes ``bytes`` as UTF-8 text in JSON mode and fails on any
    other bytes, which a Kafka event may carry; those models are dumped with
    every ``bytes`` value in URL-safe base64 instead.
    """
    try:
        return model.model_dump(mode="json")
    except (UnicodeDecodeError, PydanticSerializationError):
        dumped: dict[str, Any] = to_jsonable_python(
            model.model_dump(), bytes_mode="base64"
        )
        return dumped
