"""Error messages a user can act on: named broker errors, reasons given once."""

from __future__ import annotations

import pytest

from otel_kafka_events import EventPayload, KafkaTopicError
from otel_kafka_events.errors import IncompatibleSchemaError, kafka_error_name

from ..broker_support import requires
from ..conftest import ManagerFactory


def test_kafka_error_names() -> None:
    assert kafka_error_name(3) == "UNKNOWN_TOPIC_OR_PARTITION"
    assert kafka_error_name(29) == "TOPIC_AUTHORIZATION_FAILED"
    assert kafka_error_name(99_999) is None


def test_unknown_topic_names_the_error_and_how_to_create_it() -> None:
    error = KafkaTopicError.from_error_code("lsst.events.app", 3)
    message = str(error)
    assert error.topic == "lsst.events.app"
    assert error.error_code == 3
    assert error.error_name == "UNKNOWN_TOPIC_OR_PARTITION"
    assert "UNKNOWN_TOPIC_OR_PARTITION (error code 3)" in message
    assert "kafka-topics.sh --create --topic lsst.events.app" in message
    assert "otel-kafka-events stack --topic lsst.events.app" in message


def test_authorization_failure_says_what_to_grant() -> None:
    message = str(KafkaTopicError.from_error_code("t.app", 29))
    assert "TOPIC_AUTHORIZATION_FAILED" in message
    assert "Describe and Write" in message


def test_unknown_code_keeps_the_number() -> None:
    error = KafkaTopicError.from_error_code("t.app", 99_999)
    assert error.error_name is None
    assert "an unknown error (error code 99999)" in str(error)


def test_missing_topic_message() -> None:
    error = KafkaTopicError.missing("t.app")
    assert error.error_name == "UNKNOWN_TOPIC_OR_PARTITION"
    assert "create it" in str(error)


@requires("topic_absence")
async def test_missing_topic_from_the_broker_is_named(
    make_kafka_manager: ManagerFactory,
) -> None:
    manager = await make_kafka_manager(create_topic=False)

    class Opened(EventPayload):
        door: str

    with pytest.raises(KafkaTopicError) as caught:
        await manager.create_publisher("opened", Opened)
    assert caught.value.error_name == "UNKNOWN_TOPIC_OR_PARTITION"
    assert "error code 3)" in str(caught.value) or "does not know it" in str(
        caught.value
    )
    assert f"--topic {manager.topic}" in str(caught.value)


class Item(EventPayload):
    """First version."""

    quantity: int


class ItemWithRequiredField(EventPayload):
    """Adds a field without a default: BACKWARD-incompatible."""

    quantity: int
    colour: str


async def test_incompatible_schema_reasons_appear_once(
    make_kafka_manager: ManagerFactory,
) -> None:
    first = await make_kafka_manager(schema_compatibility="BACKWARD")
    await first.create_publisher("item", Item)
    second = await make_kafka_manager(
        application=first.application,
        create_topic=False,
        schema_compatibility="BACKWARD",
    )
    with pytest.raises(IncompatibleSchemaError) as caught:
        await second.create_publisher("item", ItemWithRequiredField)
    message = str(caught.value)
    assert caught.value.messages
    # Before: the refusal's sentence ("... details: [reason]") and then the
    # same reason again from the compatibility endpoint.
    assert message.count("READER_FIELD_MISSING_DEFAULT_VALUE") == 1, message
    assert "fields: ['colour']" in message
