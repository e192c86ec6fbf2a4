"""Delivery counters exported as OTel metrics through a real SDK MeterProvider."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from otel_kafka_events import EventPayload, KafkaEventManager, TelemetryOptions

from ..conftest import ManagerFactory


class Ping(EventPayload):
    """A minimal event."""

    n: int


def _points(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, Any] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                (point,) = metric.data.data_points
                assert isinstance(point, NumberDataPoint)
                found[metric.name] = (point.value, dict(point.attributes or {}))
    return found


async def test_delivery_counters_are_exported(
    make_kafka_manager: ManagerFactory,
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    manager = await make_kafka_manager(
        telemetry=TelemetryOptions(meter_provider=provider)
    )
    publisher = await manager.create_publisher("ping", Ping)
    for n in range(25):
        await publisher.publish(Ping(n=n))
    await publisher.publish(Ping(n=99), wait=True)

    points = _points(reader)
    prefix = "otel_kafka_events.events."
    assert points[prefix + "published"][0] == 26
    assert points[prefix + "delivered"][0] == 26
    assert points[prefix + "failed"][0] == 0
    assert points[prefix + "dropped"][0] == 0
    assert points[prefix + "buffered"][0] == 0
    assert points[prefix + "published"][1] == {
        "messaging.destination.name": manager.topic
    }
    provider.shutdown()


def test_meter_provider_does_not_keep_managers_alive() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    manager = KafkaEventManager(
        application="gone",
        topic_prefix="test.events",
        bootstrap_servers="127.0.0.1:1",
        registry_url="http://127.0.0.1:1",
        telemetry=TelemetryOptions(meter_provider=provider),
    )
    assert _points(reader)["otel_kafka_events.events.published"][0] == 0
    manager_ref = weakref.ref(manager)
    del manager
    gc.collect()
    assert manager_ref() is None
    # The callbacks of the collected manager now observe nothing.
    data = reader.get_metrics_data()
    names = [
        metric.name
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.data.data_points
    ]
    assert names == []
    provider.shutdown()
