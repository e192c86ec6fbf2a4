"""The environment configuration against a broker and registry: a manager
made from Safir's variables publishes, and its errors reach the caller.

(What the variables select and how a bad one is reported, with no network,
is in ``tests/unit/test_config.py``.)
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest

from otel_kafka_events import (
    EventPayload,
    KafkaConnectionSettings,
    KafkaEventManager,
    KafkaMetricsConfiguration,
    decode,
    metrics_configuration_factory,
)
from otel_kafka_events.errors import BrokerUnavailableError
from otel_kafka_events_devstack import LocalKafkaStack

from ..broker_support import capabilities
from ..config_support import clean_environment, kafka_env, set_env

__all__ = ["clean_environment"]  # the autouse fixture


class Ping(EventPayload):
    """A minimal payload."""

    n: int


def unused_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- Errors of a manager made from the environment --------------------------------


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


async def test_a_faststream_broker_from_the_settings_connects(
    monkeypatch: pytest.MonkeyPatch, local_kafka_stack: LocalKafkaStack
) -> None:
    # Safir's pattern: KafkaBroker(**KafkaConnectionSettings().to_faststream_params())
    from faststream.kafka import KafkaBroker

    set_env(
        monkeypatch,
        KAFKA_BOOTSTRAP_SERVERS=local_kafka_stack.bootstrap_servers,
        KAFKA_SECURITY_PROTOCOL="PLAINTEXT",
    )
    broker = KafkaBroker(**KafkaConnectionSettings().to_faststream_params())
    await broker.start()
    try:
        assert await broker.ping(timeout=10)
    finally:
        await broker.stop()
