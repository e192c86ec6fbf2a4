"""Delivery counters as OpenTelemetry metrics.

The counters live on the manager (`KafkaEventManager.stats`); observable
instruments read them at collection time, so publishing pays nothing for
them. With only the OTel API installed they are no-ops.

A MeterProvider keeps one instrument per name: a second
``create_observable_counter`` with the same name hands back the first and
drops the new callback. So the instruments are created once per provider,
and their callbacks observe every manager registered with that provider,
one data point per topic.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

__all__ = ["register_delivery_metrics"]

_COUNTERS = (
    ("published", "Events accepted by publish"),
    ("delivered", "Events acknowledged by Kafka"),
    ("failed", "Events Kafka did not acknowledge in time or refused"),
    ("dropped", "Events dropped because the buffer was full"),
)


class _Sources:
    """The managers whose counters one MeterProvider reports, held weakly:
    a provider keeps its callbacks for life, and must not keep every manager
    ever created alive with them."""

    def __init__(self) -> None:
        self._sources: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # collection runs on the reader's thread

    def add(self, source: Any, topic: str) -> None:
        with self._lock:
            self._sources[source] = topic

    def reader(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                sources = list(self._sources.items())
            totals: dict[str, int] = {}
            for source, topic in sources:
                totals[topic] = totals.get(topic, 0) + getattr(source.stats, field)
            return [
                Observation(value, {"messaging.destination.name": topic})
                for topic, value in totals.items()
            ]

        return observe


# One `_Sources` per MeterProvider; the provider's instruments hold it.
_by_provider: weakref.WeakKeyDictionary[Any, _Sources] = weakref.WeakKeyDictionary()
_by_provider_lock = threading.Lock()


def register_delivery_metrics(
    source: Any, topic: str, meter_provider: Any = None
) -> None:
    """Report a manager's delivery counters through a MeterProvider.

    Instruments (all with attribute ``messaging.destination.name``):
    ``otel_kafka_events.events.published`` / ``.delivered`` / ``.failed`` /
    ``.dropped`` (counters, ``{event}``) and ``otel_kafka_events.events.buffered``
    (gauge of events waiting for acknowledgement). Managers of one topic on
    one provider are summed.

    Parameters
    ----------
    source
        An object with a ``stats`` property (`DeliveryStats`), held weakly.
    topic
        The events topic.
    meter_provider
        The MeterProvider; the global one when None.
    """
    provider = meter_provider or metrics.get_meter_provider()
    with _by_provider_lock:
        sources = _by_provider.get(provider)
        created = sources is None
        if sources is None:
            sources = _by_provider[provider] = _Sources()
    sources.add(source, topic)
    if not created:
        return
    from .._version import __version__

    meter = metrics.get_meter("otel_kafka_events", __version__, meter_provider=provider)
    for field, description in _COUNTERS:
        meter.create_observable_counter(
            f"otel_kafka_events.events.{field}",
            callbacks=[sources.reader(field)],
            unit="{event}",
            description=description,
        )
    meter.create_observable_gauge(
        "otel_kafka_events.events.buffered",
        callbacks=[sources.reader("buffered")],
        unit="{event}",
        description="Events waiting for Kafka's acknowledgement",
    )
