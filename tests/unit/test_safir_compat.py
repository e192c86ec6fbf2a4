"""What a service written for ``safir.metrics`` relies on, checked here.

Safir's own test suite runs against this package in CI too (``safir_compat``);
these tests pin each compatibility point on its own, so a regression names
itself without Python 3.12 or Safir's suite.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import structlog
from pydantic import AnyUrl, HttpUrl, ValidationError

import otel_kafka_events
from otel_kafka_events import (
    DisabledMetricsConfiguration,
    EventManagerUninitializedError,
    EventMetadata,
    EventPayload,
    EventsConfiguration,
    FailedEventPublisher,
    KafkaMetricsConfiguration,
    MockEventManager,
    MockMetricsConfiguration,
    NoopEventManager,
    NotPublishedError,
    PublishedCountError,
    SchemaManagerSettings,
    UnsupportedAvroSchemaError,
)
from otel_kafka_events.config import KafkaConnectionSettings
from otel_kafka_events.errors import EventManagerClosedError

# ``safir.metrics.__all__`` in Safir 15.2.3.
SAFIR_METRICS_ALL = [
    "ANY",
    "NOT_NONE",
    "BaseAssertionError",
    "BaseMetricsConfiguration",
    "DisabledMetricsConfiguration",
    "DuplicateEventError",
    "EventManager",
    "EventManagerUninitializedError",
    "EventManagerUsageError",
    "EventMetadata",
    "EventPayload",
    "EventPublisher",
    "EventsConfiguration",
    "FailedEventPublisher",
    "KafkaEventManager",
    "KafkaEventPublisher",
    "KafkaMetricsConfiguration",
    "KafkaTopicError",
    "MetricsConfiguration",
    "MockEventManager",
    "MockEventPublisher",
    "MockMetricsConfiguration",
    "NoopEventManager",
    "NoopEventPublisher",
    "NotPublishedConsecutivelyError",
    "NotPublishedError",
    "PublishedCountError",
    "PublishedList",
    "PublishedTooFewError",
    "UnsupportedAvroSchemaError",
    "metrics_configuration_factory",
]


class Ordered(EventPayload):
    """Somebody ordered something."""

    item: str
    count: int
    waited: timedelta


def test_every_safir_metrics_name_imports_from_the_root() -> None:
    missing = [n for n in SAFIR_METRICS_ALL if n not in otel_kafka_events.__all__]
    assert missing == []
    for name in SAFIR_METRICS_ALL:
        assert getattr(otel_kafka_events, name) is not None


async def started_mock() -> MockEventManager:
    manager = MockEventManager("shop", "what.ever")
    await manager.initialize()
    return manager


async def test_published_event_gives_the_registered_avro_schema() -> None:
    manager = await started_mock()
    publisher = await manager.create_publisher("ordered", Ordered)
    event = await publisher.publish(
        Ordered(item="tea", count=2, waited=timedelta(seconds=3))
    )
    schema = event.avro_schema_to_python()
    assert schema == publisher.avro_schema
    assert (schema["name"], schema["namespace"]) == ("ordered", "what.ever.shop")
    assert json.loads(event.avro_schema()) == schema
    # A copy: changing it changes nothing.
    schema["name"] = "changed"
    assert event.avro_schema_to_python()["name"] == "ordered"


def test_payload_class_alone_gives_a_schema_named_after_it() -> None:
    schema = Ordered.avro_schema_to_python()
    assert schema["name"] == "Ordered"
    assert [f["name"] for f in schema["fields"]] == ["item", "count", "waited"]


def test_validate_structure() -> None:
    Ordered.validate_structure()

    class Nested(EventPayload):
        tags: list[str]
        timestamp: int
        handle: object

    with pytest.raises(UnsupportedAvroSchemaError) as caught:
        Nested.validate_structure()
    problems = "\n".join(caught.value.problems)
    assert "timestamp" in problems
    assert "handle" in problems
    assert "tags" not in problems
    # Safir's rule: scalars only.
    with pytest.raises(UnsupportedAvroSchemaError, match="tags"):
        Nested.validate_structure(flat=True)


async def test_construct_event_builds_without_publishing() -> None:
    manager = await started_mock()
    publisher = await manager.create_publisher("ordered", Ordered)
    event = publisher.construct_event(Ordered(item="tea", count=2, waited=timedelta(0)))
    assert isinstance(event, publisher.event_class)
    assert isinstance(event, EventMetadata)
    assert event.application == "shop"
    assert event.item == "tea"
    assert publisher.published == []


def kafka_config(**values: Any) -> KafkaMetricsConfiguration:
    return KafkaMetricsConfiguration(
        application="shop",
        kafka=KafkaConnectionSettings(bootstrap_servers="127.0.0.1:1"),
        schema_manager=SchemaManagerSettings(registry_url="http://127.0.0.1:1"),
        **values,
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (90, timedelta(seconds=90)),
        (timedelta(hours=1), timedelta(hours=1)),
    ],
)
def test_backoff_interval_is_read(given: Any, expected: timedelta) -> None:
    config = kafka_config(backoff_interval=given)
    assert config.backoff_interval == expected
    manager = config.make_manager()
    # The cap of the reconnection and registration backoffs.
    assert manager.options.backoff_interval == expected.total_seconds()


def test_backoff_interval_from_safir_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKOFF_INTERVAL", "2m")
    assert kafka_config().backoff_interval == timedelta(minutes=2)


def test_unknown_kafka_setting_is_refused() -> None:
    with pytest.raises(ValidationError, match="backof_interval"):
        kafka_config(backof_interval=timedelta(minutes=1))


@pytest.mark.parametrize("url", [HttpUrl("https://nope.example"), AnyUrl("http://x:1")])
def test_registry_url_accepts_pydantic_urls(url: Any) -> None:
    settings = SchemaManagerSettings(registry_url=url)
    assert settings.registry_url == str(url)


def test_camel_case_settings_as_in_safir_yaml() -> None:
    config = KafkaMetricsConfiguration.model_validate(
        {
            "appName": "shop",
            "events": {"topicPrefix": "what.ever"},
            "kafka": {"bootstrapServers": "k:9092", "securityProtocol": "PLAINTEXT"},
            "schemaManager": {"registryUrl": "https://r.example", "suffix": "_dev"},
            "raiseOnError": True,
        }
    )
    assert config.kafka.bootstrap_servers == "k:9092"
    assert config.schema_manager.suffix == "_dev"
    assert config.raise_on_error


@pytest.mark.parametrize(
    "config",
    [
        MockMetricsConfiguration(
            enabled=False,
            mock=True,
            application="shop",
            events=EventsConfiguration(topic_prefix="what.ever"),
        ),
        DisabledMetricsConfiguration(enabled=False, application="shop"),
    ],
)
def test_kafka_broker_is_accepted_by_every_configuration(config: Any) -> None:
    # A FastStream service passes its broker whatever the configuration.
    manager = config.make_manager(kafka_broker=object())
    assert isinstance(manager, NoopEventManager)


@pytest.mark.parametrize("kind", [NoopEventManager, MockEventManager])
async def test_closed_manager_can_be_initialized_again(kind: type[Any]) -> None:
    manager = kind("shop", "what.ever")
    await manager.initialize()
    await manager.create_publisher("ordered", Ordered)
    await manager.aclose()
    with pytest.raises(EventManagerUninitializedError) as caught:
        await manager.create_publisher("ordered", Ordered)
    assert isinstance(caught.value, EventManagerClosedError)
    await manager.initialize()
    publisher = await manager.create_publisher("ordered", Ordered)
    event = await publisher.publish(Ordered(item="x", count=1, waited=timedelta(0)))
    assert event.application == "shop"


async def test_mock_assertion_errors_carry_models_and_errormsg() -> None:
    manager = await started_mock()
    publisher = await manager.create_publisher("ordered", Ordered)
    payload = Ordered(item="tea", count=2, waited=timedelta(0))
    await publisher.publish(payload)
    with pytest.raises(NotPublishedError) as missing:
        publisher.published.assert_published([{"item": "cake"}])
    assert missing.value.actual_models == [payload]
    assert missing.value.errormsg().startswith("Some expected events")
    assert str(missing.value).startswith(missing.value.errormsg())
    with pytest.raises(PublishedCountError) as count:
        publisher.published.assert_published_all([])
    assert count.value.actual_models == [payload]
    assert "number" in count.value.errormsg()


async def test_failed_event_publisher_logs_once_per_interval() -> None:
    manager = await started_mock()
    mock = await manager.create_publisher("ordered", Ordered)
    failed = FailedEventPublisher(
        manager.event_type_for(mock.event_class),
        manager._telemetry,
        structlog.get_logger("test"),
        backoff_interval=timedelta(hours=1),
    )
    with structlog.testing.capture_logs() as logs:
        for count in range(3):
            event = await failed.publish(
                Ordered(item="x", count=count, waited=timedelta(0))
            )
            assert event.application == "shop"
    assert [entry["attempted_operation"] for entry in logs] == ["publish"]
