"""The option models: what the environment and the manager's keywords set.

Each setting is declared once, in `otel_kafka_events._options`; these tests
check the two ways in that the documentation promises: the environment
variables the models name, and `KafkaEventManager`'s keyword arguments.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from otel_kafka_events import (
    BufferOptions,
    DeliveryOptions,
    EventManagerUsageError,
    KafkaEventManager,
    OverflowPolicy,
    TelemetryOptions,
    metrics_configuration_factory,
)
from otel_kafka_events.config import options_from_environment
from otel_kafka_events.testing import MemorySchemaRegistry, MemoryTransport


def test_every_telemetry_setting_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "METRICS_ENABLED": "false",
        "METRICS_APPLICATION": "shop",
        "METRICS_TRACE_CONTEXT": "false",
        "METRICS_PROPAGATION_HEADERS": "false",
        "METRICS_BAGGAGE": "tenant, region",
        "METRICS_PRODUCER_SPANS": "batch",
        "METRICS_OTEL_LOGS": "true",
        "METRICS_LOG_MODE": "body",
    }.items():
        monkeypatch.setenv(name, value)
    options = metrics_configuration_factory().telemetry
    assert not options.trace_context
    assert not options.propagation_headers
    assert options.baggage_keys == frozenset({"tenant", "region"})
    assert options.producer_spans == "batch"
    assert options.logs
    assert options.log_mode == "body"


@pytest.mark.parametrize(("value", "keys"), [("true", None), ("false", None)])
def test_baggage_on_or_off_from_the_environment(
    value: str, keys: frozenset[str] | None
) -> None:
    options = options_from_environment(TelemetryOptions, {"METRICS_BAGGAGE": value})
    assert options.baggage is (value == "true")
    assert options.baggage_keys == keys


def test_delivery_settings_from_the_environment() -> None:
    options = options_from_environment(
        DeliveryOptions,
        {
            "METRICS_RETRY_BACKOFF": "0.5",
            "METRICS_BACKOFF_INTERVAL": "1m",
            "METRICS_BUFFER_BLOCK_TIMEOUT": "2",
        },
    )
    assert (options.retry_backoff, options.backoff_interval) == (0.5, 60.0)
    assert options.buffer.block_timeout == 2.0


def manager(**options: object) -> KafkaEventManager:
    return KafkaEventManager(
        application="shop",
        topic_prefix="events",
        transport=MemoryTransport(),
        registry=MemorySchemaRegistry(),
        **options,  # type: ignore[arg-type]
    )


def test_keywords_override_the_delivery_options() -> None:
    made = manager(
        delivery=DeliveryOptions(delivery_timeout=30, close_timeout=5),
        close_timeout=2,
        backoff_interval=timedelta(minutes=1),  # as Safir takes it
        buffer=BufferOptions(overflow=OverflowPolicy.RAISE),
    )
    assert made.options.delivery_timeout == 30
    assert made.options.close_timeout == 2
    assert made.options.backoff_interval == 60
    assert made.options.buffer.overflow is OverflowPolicy.RAISE


def test_an_unknown_keyword_is_refused_by_name() -> None:
    with pytest.raises(
        EventManagerUsageError, match=r"'delivery_timout'.*'delivery_timeout'"
    ):
        manager(delivery_timout=5)
    # The clients of your own go to the transport.
    with pytest.raises(EventManagerUsageError, match=r"transport=AiokafkaTransport\("):
        manager(producer=object())


def test_an_invalid_value_names_the_option() -> None:
    with pytest.raises(EventManagerUsageError, match="close_timeout"):
        manager(close_timeout=-1)
    with pytest.raises(EventManagerUsageError, match="retry_backoff"):
        manager(retry_backoff=10, backoff_interval=1)


def test_max_in_flight_is_bounded_by_name() -> None:
    assert manager().options.max_in_flight is None
    assert manager(max_in_flight=3).options.max_in_flight == 3
    for bad in (0, 6):
        with pytest.raises(EventManagerUsageError, match="max_in_flight"):
            manager(max_in_flight=bad)
    env = options_from_environment(DeliveryOptions, {"METRICS_MAX_IN_FLIGHT": "2"})
    assert env.max_in_flight == 2


def test_max_in_flight_without_idempotence_names_both_settings() -> None:
    with pytest.raises(
        EventManagerUsageError, match=r"max_in_flight.*enable_idempotence=False"
    ):
        manager(max_in_flight=2, enable_idempotence=False)
    # One at a time needs no idempotence; unset idempotence may be granted.
    assert manager(max_in_flight=1, enable_idempotence=False).options.max_in_flight
    assert manager(max_in_flight=5).options.max_in_flight == 5
