"""The environment a service needs to publish to a local stack.

Shared by ``otel-kafka-events stack``, which prints it, and the pytest
plugin, which sets it: both tell a service configured from the environment
(`metrics_configuration_factory`) where the local broker and registry are
and what the broker cannot do.
"""

from __future__ import annotations

__all__ = ["stack_environment"]


def stack_environment(
    bootstrap_servers: str,
    registry_url: str,
    *,
    idempotent_producer: bool,
    application: str | None = None,
    topic_prefix: str | None = None,
    otlp_endpoint: str | None = None,
) -> dict[str, str]:
    """The ``KAFKA_*`` / ``SCHEMA_MANAGER_*`` / ``METRICS_*`` settings.

    Parameters
    ----------
    bootstrap_servers, registry_url
        Where the broker and registry listen.
    idempotent_producer
        Whether the broker supports Kafka's idempotent producer; if not,
        ``METRICS_ENABLE_IDEMPOTENCE=false`` is included (Tansu).
    application
        ``METRICS_APPLICATION``, if known.
    topic_prefix
        ``METRICS_EVENTS_TOPIC_PREFIX``, if not the default.
    otlp_endpoint
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` of an OTLP receiver.
    """
    environment = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "SCHEMA_MANAGER_REGISTRY_URL": registry_url,
    }
    if not idempotent_producer:
        environment["METRICS_ENABLE_IDEMPOTENCE"] = "false"
    if application:
        environment["METRICS_APPLICATION"] = application
    if topic_prefix:
        environment["METRICS_EVENTS_TOPIC_PREFIX"] = topic_prefix
    if otlp_endpoint:
        environment["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint
    return environment
