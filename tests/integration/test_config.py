"""Tests of the environment-driven configuration, with Safir's variable names.

A service configured for ``safir.metrics`` must start unchanged: the same
variables pick the same kind of manager with the same topic. Every test
starts from an environment without any ``METRICS_``, ``KAFKA_`` or
``SCHEMA_MANAGER_`` variable.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from otel_kafka_events import (
    DisabledMetricsConfiguration,
    EventPayload,
    KafkaEventManager,
    KafkaMetricsConfiguration,
    LogExportOptions,
    MockEventManager,
    MockMetricsConfiguration,
    NoopEventManager,
    OverflowPolicy,
    decode,
    metrics_configuration_factory,
)
from otel_kafka_events.errors import BrokerUnavailableError
from otel_kafka_events_devstack import LocalKafkaStack

from ..broker_support import capabilities

DEFAULT_PREFIX = "lsst.square.metrics.events"
TRACE_FIELDS = {"trace_id", "span_id", "trace_flags"}


class Ping(EventPayload):
    """A minimal payload."""

    n: int


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every variable the configuration could read."""
    for name in list(os.environ):
        if name.upper().startswith(("METRICS_", "KAFKA_", "SCHEMA_MANAGER_")) or (
            name.upper() == "RAISE_ON_ERROR"
        ):
            monkeypatch.delenv(name)


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """Set environment variables."""
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def kafka_env(monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    """The minimal environment of a Kafka configuration."""
    values = {
        "METRICS_APPLICATION": "myapp",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "SCHEMA_MANAGER_REGISTRY_URL": "http://127.0.0.1:8081",
    }
    set_env(monkeypatch, **(values | extra))


def unused_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- Which configuration the factory picks --------------------------------------


def test_mock(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        METRICS_ENABLED="false",
        METRICS_MOCK="true",
        METRICS_APPLICATION="a",
    )
    config = metrics_configuration_factory()
    assert isinstance(config, MockMetricsConfiguration)
    manager = config.make_manager()
    assert type(manager) is MockEventManager
    assert manager.topic == f"{DEFAULT_PREFIX}.a"
    assert manager.application == "a"


def test_mock_wins_over_kafka_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(monkeypatch, METRICS_ENABLED="false", METRICS_MOCK="true")
    assert isinstance(metrics_configuration_factory(), MockMetricsConfiguration)


@pytest.mark.parametrize("mock", [None, "false"])
def test_disabled(monkeypatch: pytest.MonkeyPatch, mock: str | None) -> None:
    set_env(monkeypatch, METRICS_ENABLED="false", METRICS_APPLICATION="b")
    if mock is not None:
        monkeypatch.setenv("METRICS_MOCK", mock)
    config = metrics_configuration_factory()
    assert isinstance(config, DisabledMetricsConfiguration)
    manager = config.make_manager()
    assert type(manager) is NoopEventManager
    assert manager.topic == f"{DEFAULT_PREFIX}.b"


@pytest.mark.parametrize("enabled", [None, "true"])
async def test_kafka(monkeypatch: pytest.MonkeyPatch, enabled: str | None) -> None:
    kafka_env(monkeypatch)
    if enabled is not None:
        monkeypatch.setenv("METRICS_ENABLED", enabled)
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert config.schema_manager.registry_url == "http://127.0.0.1:8081"
    manager = config.make_manager()
    assert type(manager) is KafkaEventManager
    assert manager.topic == f"{DEFAULT_PREFIX}.myapp"
    assert manager.subject_for("ping") == f"{DEFAULT_PREFIX}.myapp.ping"
    assert await manager.aclose() == 0


def test_mock_needs_enabled_false(monkeypatch: pytest.MonkeyPatch) -> None:
    # As in Safir: METRICS_MOCK alone does not disable Kafka.
    kafka_env(monkeypatch, METRICS_MOCK="true")
    assert isinstance(metrics_configuration_factory(), KafkaMetricsConfiguration)


def test_topic_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        METRICS_ENABLED="false",
        METRICS_APPLICATION="c",
        METRICS_EVENTS_TOPIC_PREFIX="my.events",
    )
    config = metrics_configuration_factory()
    assert config.events.topic_prefix == "my.events"
    assert config.make_manager().topic == "my.events.c"


def test_schema_suffix_and_compatibility(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(
        monkeypatch,
        SCHEMA_MANAGER_SUFFIX="_dev",
        SCHEMA_MANAGER_COMPATIBILITY="FORWARD",
    )
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    assert config.schema_manager.compatibility == "FORWARD"
    manager = config.make_manager()
    assert manager.subject_for("ping") == f"{DEFAULT_PREFIX}.myapp.ping_dev"


# -- Validation errors name the setting ----------------------------------------


def test_missing_bootstrap_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        METRICS_APPLICATION="d",
        SCHEMA_MANAGER_REGISTRY_URL="http://127.0.0.1:8081",
    )
    with pytest.raises(ValidationError) as caught:
        metrics_configuration_factory()
    assert "KAFKA_BOOTSTRAP_SERVERS" in str(caught.value)


def test_missing_registry_url(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, METRICS_APPLICATION="d", KAFKA_BOOTSTRAP_SERVERS="h:1")
    with pytest.raises(ValidationError) as caught:
        metrics_configuration_factory()
    assert "SCHEMA_MANAGER_REGISTRY_URL" in str(caught.value)


def test_missing_application(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, METRICS_ENABLED="false")
    with pytest.raises(ValidationError, match="Field required"):
        metrics_configuration_factory()


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_without_username(monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    kafka_env(monkeypatch, KAFKA_SECURITY_PROTOCOL=protocol, KAFKA_SASL_PASSWORD="pw")
    with pytest.raises(ValidationError) as caught:
        metrics_configuration_factory()
    message = str(caught.value)
    assert "KAFKA_SASL_USERNAME" in message
    assert "KAFKA_SASL_PASSWORD" not in message


def test_sasl_options(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(
        monkeypatch,
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_USERNAME="user",
        KAFKA_SASL_PASSWORD="secret",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
    )
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    assert config.kafka.to_client_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "user",
        "sasl_plain_password": "secret",
    }
    # Safir's name for the same options, with the brokers.
    assert config.kafka.to_aiokafka_params() == {
        "bootstrap_servers": "127.0.0.1:9092",
        **config.kafka.to_client_options(),
    }


def test_unknown_sasl_mechanism(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(
        monkeypatch,
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_USERNAME="user",
        KAFKA_SASL_PASSWORD="secret",
        KAFKA_SASL_MECHANISM="GSSAPI",
    )
    with pytest.raises(ValidationError, match="KAFKA_SASL_MECHANISM"):
        metrics_configuration_factory()


def test_unknown_security_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(monkeypatch, KAFKA_SECURITY_PROTOCOL="CARRIER_PIGEON")
    with pytest.raises(ValidationError, match="KAFKA_SECURITY_PROTOCOL"):
        metrics_configuration_factory()


def test_client_cert_without_key(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(
        monkeypatch, KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_CLIENT_CERT_PATH="/c.pem"
    )
    with pytest.raises(ValidationError, match="KAFKA_CLIENT_KEY_PATH"):
        metrics_configuration_factory()


# -- Our own settings -----------------------------------------------------------


async def test_trace_context_off(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        METRICS_ENABLED="false",
        METRICS_APPLICATION="e",
        METRICS_TRACE_CONTEXT="false",
    )
    config = metrics_configuration_factory()
    assert config.telemetry.trace_context is False
    manager = config.make_manager()
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    names = {f["name"] for f in publisher.avro_schema["fields"]}
    assert not names & TRACE_FIELDS
    assert "n" in names


async def test_trace_context_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, METRICS_ENABLED="false", METRICS_APPLICATION="e")
    manager = metrics_configuration_factory().make_manager()
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    assert {f["name"] for f in publisher.avro_schema["fields"]} >= TRACE_FIELDS


def test_telemetry_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        METRICS_ENABLED="false",
        METRICS_APPLICATION="f",
        METRICS_OTEL_LOGS="true",
        METRICS_PRODUCER_SPANS="true",
    )
    config = metrics_configuration_factory()
    options = config.telemetry
    assert (options.logs, options.producer_spans, options.trace_context) == (
        True,
        True,
        True,
    )


def test_delivery_and_buffer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(
        monkeypatch,
        METRICS_DELIVERY_TIMEOUT="7.5",
        METRICS_BUFFER_MAX_EVENTS="10",
        METRICS_BUFFER_MAX_BYTES="2048",
        METRICS_BUFFER_OVERFLOW="drop_newest",
    )
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    assert config.delivery.delivery_timeout == 7.5
    buffer = config.delivery.buffer
    assert (buffer.max_events, buffer.max_bytes) == (10, 2048)
    assert buffer.overflow is OverflowPolicy.DROP_NEWEST


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False)])
def test_raise_on_error_is_read(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    kafka_env(monkeypatch, METRICS_RAISE_ON_ERROR=value)
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    assert config.raise_on_error is expected


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("false", False), ("true", True)]
)
def test_enable_idempotence_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool | None
) -> None:
    # Unset means "use it unless the broker refuses it"; the fallback itself
    # is tested against Tansu in test_kafka_lifecycle.py.
    if value is None:
        kafka_env(monkeypatch)
    else:
        kafka_env(monkeypatch, METRICS_ENABLE_IDEMPOTENCE=value)
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    assert config.delivery.enable_idempotence is expected


def test_close_timeout_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(monkeypatch)
    default = metrics_configuration_factory()
    assert isinstance(default, KafkaMetricsConfiguration)
    assert default.delivery.close_timeout == 15.0
    assert default.make_manager().options.close_timeout == 15.0
    kafka_env(monkeypatch, METRICS_CLOSE_TIMEOUT="7.5")
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    assert config.make_manager().options.close_timeout == 7.5
    kafka_env(monkeypatch, METRICS_CLOSE_TIMEOUT="0")
    with pytest.raises(ValidationError, match=r"close_timeout"):
        metrics_configuration_factory()


async def test_raise_on_error_reaches_the_manager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(
        monkeypatch,
        METRICS_RAISE_ON_ERROR="true",
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{unused_port()}",
    )
    manager = metrics_configuration_factory().make_manager()
    try:
        with pytest.raises(BrokerUnavailableError):
            await manager.initialize()
    finally:
        await manager.aclose(timeout=1)


async def test_without_raise_on_error_initialize_does_not_raise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(
        monkeypatch,
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{unused_port()}",
        SCHEMA_MANAGER_REGISTRY_URL=f"http://127.0.0.1:{unused_port()}",
    )
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    manager = config.make_manager()
    # Logs, and keeps trying in the background while events are buffered.
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    await publisher.publish(Ping(n=1))
    assert manager.stats.buffered == 1
    assert await manager.aclose(timeout=0.2) == 1


# -- A manager built from the environment publishes -----------------------------


async def publish_one_ping() -> tuple[KafkaEventManager, Any]:
    """A manager made from the environment publishes ``Ping(n=5)``, waits
    for it, and closes."""
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    manager = config.make_manager(enable_idempotence=capabilities().idempotent_producer)
    try:
        await manager.initialize()
        publisher = await manager.create_publisher("ping", Ping)
        event = await publisher.publish(Ping(n=5), wait=True)
    finally:
        assert await manager.aclose(timeout=10) == 0
    return manager, event


async def test_manager_from_environment_publishes(
    monkeypatch: pytest.MonkeyPatch, local_kafka_stack: LocalKafkaStack
) -> None:
    application = f"cfg_{uuid.uuid4().hex[:10]}"
    prefix = "test.config"
    set_env(
        monkeypatch,
        METRICS_APPLICATION=application,
        METRICS_EVENTS_TOPIC_PREFIX=prefix,
        KAFKA_BOOTSTRAP_SERVERS=local_kafka_stack.bootstrap_servers,
        KAFKA_SECURITY_PROTOCOL="PLAINTEXT",
        SCHEMA_MANAGER_REGISTRY_URL=local_kafka_stack.registry_url,
        SCHEMA_MANAGER_SUFFIX="_cfg",
        METRICS_RAISE_ON_ERROR="true",
    )
    topic = f"{prefix}.{application}"
    await local_kafka_stack.create_topic(topic)
    manager, event = await publish_one_ping()
    (record,) = await local_kafka_stack.consume(topic, 1)
    decoded = await decode(record.value, local_kafka_stack.registry_url)
    assert (decoded["n"], decoded["application"]) == (5, application)
    assert decoded["id"] == event.id
    found = await manager.registry.latest_schema(f"{topic}.ping_cfg")
    assert found is not None


# -- Producer spans and the log export --------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("false", False), ("event", "event"), ("batch", "batch")],
)
def test_producer_spans_setting(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: object
) -> None:
    kafka_env(monkeypatch, METRICS_PRODUCER_SPANS=value)
    config = KafkaMetricsConfiguration()
    assert config.telemetry.producer_spans == expected


def test_unknown_producer_spans_value_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(monkeypatch, METRICS_PRODUCER_SPANS="sometimes")
    with pytest.raises(ValidationError, match="producer_spans"):
        KafkaMetricsConfiguration()


def test_log_export_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(monkeypatch, METRICS_OTEL_LOGS="true")
    assert KafkaMetricsConfiguration().telemetry.log_export is None


def test_log_export_settings_describe_a_log_export(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(
        monkeypatch,
        METRICS_OTEL_LOGS="true",
        METRICS_LOG_EXPORT_KAFKA="true",
        METRICS_LOG_EXPORT_TOPIC="collector_logs",
        METRICS_LOG_EXPORT_ENCODING="otlp_json",
        METRICS_LOG_EXPORT_PARTITION_BY_TRACE_ID="true",
        METRICS_LOG_EXPORT_OTLP_ENDPOINT="http://collector:4318/v1/logs",
        METRICS_LOG_EXPORT_DIRECT="true",
        METRICS_LOG_EXPORT_TIMEOUT="2.5",
        METRICS_LOG_EXPORT_MAX_PENDING="500",
    )
    options = KafkaMetricsConfiguration().telemetry
    assert options.logs
    assert options.log_export == LogExportOptions(
        kafka=True,
        topic="collector_logs",
        encoding="otlp_json",
        partition_by_trace_id=True,
        otlp_endpoint="http://collector:4318/v1/logs",
        direct=True,
        timeout=2.5,
        max_pending=500,
    )


def test_an_otlp_endpoint_alone_exports_there_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(
        monkeypatch,
        METRICS_OTEL_LOGS="true",
        METRICS_LOG_EXPORT_OTLP_ENDPOINT="http://collector:4318/v1/logs",
    )
    export = KafkaMetricsConfiguration().telemetry.log_export
    assert export is not None
    assert (export.kafka, export.otlp_endpoint) == (
        False,
        "http://collector:4318/v1/logs",
    )


def test_log_export_without_otel_logs_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(monkeypatch, METRICS_LOG_EXPORT_KAFKA="true")
    with pytest.raises(ValidationError, match="METRICS_OTEL_LOGS=true"):
        KafkaMetricsConfiguration()


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("METRICS_LOG_EXPORT_ENCODING", "protobuf", "encoding"),
        ("METRICS_LOG_EXPORT_TIMEOUT", "0", "timeout"),
        ("METRICS_LOG_EXPORT_MAX_PENDING", "0", "max_pending"),
        ("METRICS_LOG_EXPORT_TOPIC", "", "topic"),
    ],
)
def test_bad_log_export_settings_name_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    kafka_env(
        monkeypatch,
        METRICS_OTEL_LOGS="true",
        METRICS_LOG_EXPORT_KAFKA="true",
        **{variable: value},
    )
    with pytest.raises(ValidationError, match=field):
        KafkaMetricsConfiguration()


async def test_log_export_from_the_environment_writes_otlp_records(
    monkeypatch: pytest.MonkeyPatch, local_kafka_stack: LocalKafkaStack
) -> None:
    from opentelemetry.proto.logs.v1.logs_pb2 import LogsData

    application = f"cfg_{uuid.uuid4().hex[:10]}"
    prefix = "test.config"
    log_topic = f"otlp_{uuid.uuid4().hex[:10]}"
    set_env(
        monkeypatch,
        METRICS_APPLICATION=application,
        METRICS_EVENTS_TOPIC_PREFIX=prefix,
        KAFKA_BOOTSTRAP_SERVERS=local_kafka_stack.bootstrap_servers,
        SCHEMA_MANAGER_REGISTRY_URL=local_kafka_stack.registry_url,
        METRICS_RAISE_ON_ERROR="true",
        METRICS_OTEL_LOGS="true",
        METRICS_LOG_EXPORT_KAFKA="true",
        METRICS_LOG_EXPORT_TOPIC=log_topic,
        METRICS_LOG_EXPORT_DIRECT="true",
    )
    topic = f"{prefix}.{application}"
    await local_kafka_stack.create_topic(topic)
    await local_kafka_stack.create_topic(log_topic)
    manager, event = await publish_one_ping()
    assert manager.log_export_stats["kafka"].exported == 1
    (record,) = await local_kafka_stack.consume(log_topic, 1)
    logs = LogsData.FromString(record.value)
    (log,) = logs.resource_logs[0].scope_logs[0].log_records
    attributes = {a.key: a.value for a in log.attributes}
    assert log.event_name == f"{topic}.ping"
    assert attributes["id"].string_value == str(event.id)
    assert attributes["n"].int_value == 5


async def test_broker_down_with_raise_on_error_is_a_kafka_connection_error() -> None:
    # Safir's services catch aiokafka's error: ours is one.
    from aiokafka.errors import KafkaConnectionError

    manager = KafkaEventManager(
        application="shop",
        topic_prefix="what.ever",
        bootstrap_servers="127.0.0.1:1",
        registry_url="http://127.0.0.1:1",
        raise_on_error=True,
    )
    try:
        with pytest.raises(KafkaConnectionError) as caught:
            await manager.initialize()
        assert isinstance(caught.value, BrokerUnavailableError)
        assert "127.0.0.1:1" in str(caught.value)
    finally:
        await manager.aclose(timeout=5)
