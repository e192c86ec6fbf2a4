"""The library's environment variables, as the commands read them.

The commands take their settings from the variables a service uses
(``KAFKA_*``, ``SCHEMA_MANAGER_*``, ``METRICS_*``), so that a command run
in the service's environment sees the same broker, registry, topic and
subjects as the service. ``--bootstrap-servers``, ``--registry-url`` and
``--application`` override the variable of the same meaning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from schema_registry.client import AsyncSchemaRegistryClient

from .._options import TelemetryOptions
from ..config import (
    EventsConfiguration,
    KafkaConnectionSettings,
    SchemaManagerSettings,
    options_from_environment,
)
from ._errors import CliError

__all__ = [
    "EventSettings",
    "application_option",
    "bootstrap_option",
    "kafka_client_options",
    "registry_option",
    "remember",
    "require",
]

F = TypeVar("F", bound=Callable[..., Any])


class EventSettings:
    """The settings that decide topics, schemas and subjects, read from the
    environment through the library's own settings models (all optional
    here: a command that needs one says so)."""

    def __init__(self) -> None:
        self.topic_prefix = EventsConfiguration().topic_prefix
        self.trace_context = options_from_environment(TelemetryOptions).trace_context
        registry = schema_manager_settings()
        self.schema_suffix = registry.suffix
        self.compatibility = registry.compatibility

    def topic(self, application: str) -> str:
        """The events topic of ``application``, as its manager names it."""
        return f"{self.topic_prefix}.{application}"


def schema_manager_settings(url: str | None = None) -> SchemaManagerSettings:
    """``SCHEMA_MANAGER_*`` as the library reads them, with ``url`` (or a
    placeholder, for commands that need no registry) as the URL."""
    return SchemaManagerSettings(registry_url=url or _NO_REGISTRY)


_NO_REGISTRY = "http://registry.unset.invalid"


def bootstrap_option(function: F) -> F:
    """The ``--bootstrap-servers`` option, defaulting to the environment."""
    return click.option(
        "--bootstrap-servers",
        envvar="KAFKA_BOOTSTRAP_SERVERS",
        show_envvar=True,
        metavar="HOST:PORT[,...]",
        help="Kafka brokers to connect to.",
    )(function)


def registry_option(function: F) -> F:
    """The ``--registry-url`` option, defaulting to the environment."""
    return click.option(
        "--registry-url",
        envvar="SCHEMA_MANAGER_REGISTRY_URL",
        show_envvar=True,
        metavar="URL",
        help="Confluent-compatible schema registry.",
    )(function)


def application_option(function: F) -> F:
    """The ``--application`` option, defaulting to the environment."""
    return click.option(
        "--application",
        envvar="METRICS_APPLICATION",
        show_envvar=True,
        metavar="NAME",
        help="Application name: the topic is METRICS_EVENTS_TOPIC_PREFIX.NAME.",
    )(function)


def require(value: str | None, variable: str, option: str, why: str) -> str:
    """Return a setting, or fail naming the variable and the option.

    Raises
    ------
    CliError
        If ``value`` is None or empty.
    """
    if value:
        return value
    raise CliError(
        f"{variable} is not set ({why})",
        f"export it (`otel-kafka-events stack` prints the lines for a local"
        f" stack) or pass {option}",
        exit_code=2,
    )


def kafka_client_options(bootstrap_servers: str) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client, security settings included.

    Reads ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` and the certificate
    paths as the library does.
    """
    settings = KafkaConnectionSettings(bootstrap_servers=bootstrap_servers)
    return {"bootstrap_servers": bootstrap_servers, **settings.to_client_options()}


def remember(**values: str | None) -> None:
    """Record what a command talks to, so error messages can name it."""
    context = click.get_current_context()
    shared = context.find_root().ensure_object(dict)
    shared.update({key: value for key, value in values.items() if value})


def registry_client(url: str) -> AsyncSchemaRegistryClient:
    """A registry client for ``url`` with the service's registry credentials
    and timeout (``SCHEMA_MANAGER_REGISTRY_USERNAME``, ``_PASSWORD``,
    ``_TIMEOUT``) read as the library reads them."""
    return schema_manager_settings(url).make_registry_client()
