"""Tests of the exception hierarchy and of what the messages say.

Usage errors (the caller must change code or configuration) all derive from
`EventManagerUsageError` and are raised whatever ``raise_on_error`` says;
infrastructure errors do not, so ``except EventManagerUsageError`` never
swallows an outage. Every message names what is wrong: the event, the field,
the topic or the setting.
"""

from __future__ import annotations

import datetime as dt

import pytest

from otel_kafka_events import (
    DuplicateEventError,
    EventDeliveryError,
    EventManagerError,
    EventManagerUninitializedError,
    EventManagerUnintializedError,
    EventManagerUsageError,
    EventPayload,
    KafkaTopicError,
    NoopEventManager,
    UnsupportedAvroSchemaError,
)
from otel_kafka_events.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    EventBufferFullError,
    EventDeliveryAbortedError,
    EventDeliveryTimeoutError,
    EventDroppedError,
    EventKeyError,
    EventManagerClosedError,
    EventPayloadError,
    EventRejectedError,
    EventTooLargeError,
    IdempotenceUnsupportedError,
    IncompatibleSchemaError,
    InvalidEventNameError,
    NotAcknowledgedError,
    SchemaRegistryError,
    UnknownKeyFieldError,
)

USAGE_ERRORS: list[type[Exception]] = [
    ConfigurationError,
    EventManagerUninitializedError,
    EventManagerClosedError,
    DuplicateEventError,
    InvalidEventNameError,
    UnsupportedAvroSchemaError,
    KafkaTopicError,
    IncompatibleSchemaError,
    EventPayloadError,
    EventTooLargeError,
    EventKeyError,
    UnknownKeyFieldError,
]

INFRASTRUCTURE_ERRORS: list[type[Exception]] = [
    NotAcknowledgedError,
    EventBufferFullError,
    EventDeliveryError,
    EventDroppedError,
    EventDeliveryTimeoutError,
    EventRejectedError,
    EventDeliveryAbortedError,
    IdempotenceUnsupportedError,
    SchemaRegistryError,
    BrokerUnavailableError,
]


@pytest.mark.parametrize("error", USAGE_ERRORS, ids=lambda e: e.__name__)
def test_usage_errors(error: type[Exception]) -> None:
    assert issubclass(error, EventManagerUsageError)
    assert issubclass(error, EventManagerError)


@pytest.mark.parametrize("error", INFRASTRUCTURE_ERRORS, ids=lambda e: e.__name__)
def test_infrastructure_errors_are_not_usage_errors(error: type[Exception]) -> None:
    assert issubclass(error, EventManagerError)
    assert not issubclass(error, EventManagerUsageError)


def test_every_public_exception_is_an_event_manager_error() -> None:
    import otel_kafka_events.errors

    exported = [
        getattr(otel_kafka_events.errors, name)
        for name in otel_kafka_events.errors.__all__
    ]
    errors = [
        value
        for value in exported
        if isinstance(value, type)
        and issubclass(value, Exception)
        and not issubclass(value, AssertionError)  # the mock's assertion errors
        and not issubclass(value, Warning)  # UnknownSettingWarning
    ]
    assert set(errors) == {
        EventManagerError,
        EventManagerUsageError,
        *USAGE_ERRORS,
        *INFRASTRUCTURE_ERRORS,
    }


def test_safir_spelling_is_the_same_class() -> None:
    assert EventManagerUnintializedError is EventManagerUninitializedError
    with pytest.raises(EventManagerUnintializedError):
        raise EventManagerUninitializedError("not yet")


def test_too_large_is_a_payload_error() -> None:
    assert issubclass(EventTooLargeError, EventPayloadError)


def test_a_key_error_is_a_payload_error() -> None:
    # A publish refused for its key is refused like one for its payload.
    assert issubclass(EventKeyError, EventPayloadError)


def test_unknown_key_field_message() -> None:
    error = UnknownKeyFieldError("user", "Login", "Login has no field 'user'")
    assert (error.field, error.model) == ("user", "Login")
    assert str(error) == (
        "key='user' cannot be the key of Login events: Login has no field 'user'"
    )


# -- Messages and attributes ------------------------------------------------------


def test_duplicate_event_message() -> None:
    error = DuplicateEventError("login")
    assert error.name == "login"
    assert str(error) == "An event publisher named 'login' already exists"


def test_invalid_event_name_message() -> None:
    error = InvalidEventNameError("event name", "bad-name", "no hyphens")
    assert (error.part, error.value) == ("event name", "bad-name")
    assert str(error) == "Invalid event name 'bad-name': no hyphens"


def test_unsupported_schema_message_lists_every_problem() -> None:
    problems = ["a: tuple has no Avro representation", "b.c: dict keys must be str"]
    error = UnsupportedAvroSchemaError("login", problems)
    assert (error.event, error.problems) == ("login", problems)
    assert str(error).splitlines() == [
        "Payload model of event 'login' cannot be encoded as Avro:",
        "  - a: tuple has no Avro representation",
        "  - b.c: dict keys must be str",
    ]


def test_kafka_topic_message() -> None:
    error = KafkaTopicError("lsst.events.app", "not in the broker's metadata")
    assert error.topic == "lsst.events.app"
    assert "'lsst.events.app'" in str(error)
    assert "not in the broker's metadata" in str(error)


def test_incompatible_schema_message() -> None:
    error = IncompatibleSchemaError("t.app.login", ["field 'x' has no default"])
    assert error.subject == "t.app.login"
    assert error.messages == ["field 'x' has no default"]
    assert "'t.app.login'" in str(error)
    assert "field 'x' has no default" in str(error)
    empty = IncompatibleSchemaError("t.app.login", [])
    assert "no detail from the registry" in str(empty)


def test_payload_error_message() -> None:
    error = EventPayloadError("login", "field 'when': naive datetime")
    assert (error.event, error.detail) == ("login", "field 'when': naive datetime")
    assert str(error) == "Cannot publish event 'login': field 'when': naive datetime"


def test_delivery_error_message() -> None:
    error = EventDeliveryError("1234", "login", "KafkaTimeoutError")
    assert (error.event_id, error.event_name, error.reason) == (
        "1234",
        "login",
        "KafkaTimeoutError",
    )
    assert str(error) == "Event 'login' (1234) was not delivered: KafkaTimeoutError"


@pytest.mark.parametrize(
    "error",
    [
        EventDroppedError,
        EventDeliveryTimeoutError,
        EventRejectedError,
        EventDeliveryAbortedError,
    ],
    ids=lambda e: e.__name__,
)
def test_each_cause_of_a_failed_delivery_is_a_delivery_error(
    error: type[Exception],
) -> None:
    # ``except EventDeliveryError`` around publish(wait=True) catches them all.
    assert issubclass(error, EventDeliveryError)


def test_a_delivery_timeout_says_what_it_waited_for() -> None:
    error = EventDeliveryTimeoutError("1234", "login", "too slow", "registry")
    assert isinstance(error, TimeoutError)
    assert error.waiting_for == "registry"


def test_refused_idempotence_names_the_setting() -> None:
    message = str(IdempotenceUnsupportedError("UnknownError"))
    assert "UnknownError" in message
    assert "METRICS_ENABLE_IDEMPOTENCE" in message
    assert "enable_idempotence" in message


# -- Raised by real code paths, caught as usage errors ---------------------------


class Visit(EventPayload):
    """A valid payload."""

    page: str
    at: dt.datetime


class Shadowing(EventPayload):
    """A payload whose field shadows a metadata field."""

    application: str


async def test_usage_errors_from_a_manager_name_what_is_wrong() -> None:
    manager = NoopEventManager("errors_app", "test.events")
    with pytest.raises(EventManagerUsageError, match="Initialize the event manager"):
        await manager.create_publisher("visit", Visit)
    await manager.initialize()
    publisher = await manager.create_publisher("visit", Visit)

    with pytest.raises(EventManagerUsageError, match="'visit' already exists"):
        await manager.create_publisher("visit", Visit)
    with pytest.raises(EventManagerUsageError, match="Invalid event name 'vis-it'"):
        await manager.create_publisher("vis-it", Visit)
    with pytest.raises(EventManagerUsageError) as caught:
        await manager.create_publisher("shadow", Shadowing)
    assert "'shadow'" in str(caught.value)
    assert "application: payload field collides" in str(caught.value)
    with pytest.raises(EventManagerUsageError) as caught:
        await publisher.publish(Visit(page="/", at=dt.datetime(2024, 1, 1)))
    assert "'visit'" in str(caught.value)
    assert "'at'" in str(caught.value)

    await manager.aclose()
    with pytest.raises(EventManagerUsageError, match="closed"):
        await manager.create_publisher("other", Visit)
