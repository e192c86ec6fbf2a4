"""Event models: the user's payload base class and the metadata we add.

A published event is one flat record: the metadata fields first, then the
payload fields. `build_event_model` makes that record type once per event type,
at registration, so publishing never builds models.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from pydantic import UUID4, AwareDatetime, BaseModel, ConfigDict, Field, create_model
from pydantic_core import PydanticSerializationError, to_jsonable_python

__all__ = [
    "EventMetadata",
    "EventPayload",
    "TracedEventMetadata",
    "build_event_model",
    "construct_event",
    "json_dump",
]

P = TypeVar("P", bound="EventPayload")


class EventPayload(BaseModel):
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


class EventMetadata(BaseModel):
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
    # metadata last puts its fields first, as on the Avro record.
    model = create_model(
        name,
        __base__=(payload_model, metadata),
        __module__=payload_model.__module__,
        # Class docstrings are not inherited; keep the payload's for the schema.
        __doc__=payload_model.__doc__,
    )
    return cast("type[P]", model)


def construct_event(model: type[BaseModel], values: dict[str, Any]) -> Any:
    """Instantiate an event model from values that are already valid.

    The payload was validated when the caller built it and the metadata is
    made by us, so validating again (or `BaseModel.model_construct`, which
    still walks every field) would only cost time on the publish path.
    """
    event = model.__new__(model)
    # BaseModel's own slots, set through their descriptors (pydantic's
    # __setattr__ would validate).
    _set_dict(event, values)
    _set_fields_set(event, set(values))
    _set_extra(event, None)
    _set_private(event, None)
    return event


_slots = BaseModel.__dict__
_set_dict = _slots["__dict__"].__set__
_set_fields_set = _slots["__pydantic_fields_set__"].__set__
_set_extra = _slots["__pydantic_extra__"].__set__
_set_private = _slots["__pydantic_private__"].__set__


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
