"""Delivery counters as OpenTelemetry metrics.

The counters live on the manager (`KafkaEventManager.stats`); these
observable instruments read them at collection time, so publishing pays
nothing for them. With only the OTel API installed they are no-ops.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

__all__ = ["register_delivery_metrics"]


def register_delivery_metrics(
    source: Any, topic: str, meter_provider: Any = None
) -> None:
    """Create observable instruments for a manager's delivery counters.

    Instruments (all with attribute ``messaging.destination.name``):
    ``otel_kafka_events.events.published`` / ``.delivered`` / ``.failed`` /
    ``.dropped`` (counters, ``{event}``) and ``otel_kafka_events.events.buffered``
    (gauge of events waiting for acknowledgement).

    Parameters
    ----------
    source
        An object with a ``stats`` property (`DeliveryStats`), held weakly:
        a MeterProvider keeps its callbacks for life, and must not keep every
        manager ever created alive with them.
    topic
        The events topic.
    meter_provider
        The MeterProvider; the global one when None.
    """
    from .. import __version__

    meter = metrics.get_meter(
        "otel_kafka_events", __version__, meter_provider=meter_provider
    )
    attributes = {"messaging.destination.name": topic}

    source_ref = weakref.ref(source)

    def reader(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            current = source_ref()
            if current is not None:
                yield Observation(getattr(current.stats, field), attributes)

        return observe

    for field, description in (
        ("published", "Events accepted by publish"),
        ("delivered", "Events acknowledged by Kafka"),
        ("failed", "Events Kafka did not acknowledge in time or refused"),
        ("dropped", "Events dropped because the buffer was full"),
    ):
        meter.create_observable_counter(
            f"otel_kafka_events.events.{field}",
            callbacks=[reader(field)],
            unit="{event}",
            description=description,
        )
    meter.create_observable_gauge(
        "otel_kafka_events.events.buffered",
        callbacks=[reader("buffered")],
        unit="{event}",
        description="Events waiting for Kafka's acknowledgement",
    )
