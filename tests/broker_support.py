"""Which broker the integration suite runs against, and what it can't do.

The suite runs once per broker kind (``OTEL_KAFKA_EVENTS_TEST_BROKER``). Every
broker-specific skip goes through `requires`, so the full list of skips and
their reasons is the `_LIMITS` table below.
"""

from __future__ import annotations

import os

import pytest

from otel_kafka_events_devstack import BROKER_ENV_VAR, BrokerCapabilities

__all__ = ["BROKER_KIND", "capabilities", "only_in_leg", "requires"]

BROKER_KIND = os.environ.get(BROKER_ENV_VAR, "tansu").strip().lower() or "tansu"


def capabilities() -> BrokerCapabilities:
    """Capabilities of the broker kind this run uses (without starting it)."""
    if BROKER_KIND == "noida":
        from otel_kafka_events_devstack import NoidaBroker

        return NoidaBroker.capabilities
    if BROKER_KIND in ("kafka", "cluster"):
        # The cluster leg runs Apache Kafka nodes (`KafkaCluster`).
        from otel_kafka_events_devstack._apache_kafka import ApacheKafkaBroker

        return ApacheKafkaBroker.capabilities
    from otel_kafka_events_devstack import TansuBroker

    return TansuBroker.capabilities


# capability -> why a test needing it cannot run on a broker without it.
_LIMITS = {
    "idempotent_producer": "Tansu refuses InitProducerId v0, so aiokafka's"
    " idempotent producer cannot start",
    "enforces_message_size": "the broker accepts records above message.max.bytes",
    "keeps_data_across_restart": "Tansu's memory storage loses every record on restart",
    "keeps_acknowledged_writes": "the broker loses writes it acknowledged around a"
    " restart (Tansu keeps nothing; noida-db drops what it acknowledged during"
    " its shutdown save)",
    "topic_absence": "the broker auto-creates any topic a metadata request names,"
    " so a missing topic cannot be observed",
    "consumer_groups": "consumer group rebalancing is slow or broken on this broker",
}


def requires(capability: str) -> pytest.MarkDecorator:
    """Skip the test unless the run's broker has ``capability``."""
    caps = capabilities()
    if capability == "topic_absence":
        missing = caps.auto_creates_topics
    else:
        missing = not getattr(caps, capability)
    return pytest.mark.skipif(missing, reason=f"{BROKER_KIND}: {_LIMITS[capability]}")


def only_in_leg(kind: str) -> pytest.MarkDecorator:
    """Run a module only in the ``kind`` leg of ``scripts/test``.

    For tests that start their own broker of that kind (its launcher, its
    security listeners): running them in every leg would test the same thing
    three times.
    """
    return pytest.mark.skipif(
        kind != BROKER_KIND,
        reason=f"starts its own {kind} broker; runs in the {kind} leg only",
    )
