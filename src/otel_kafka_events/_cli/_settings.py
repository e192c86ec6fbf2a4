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
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from schema_registry.client import AsyncSchemaRegistryClient

from .._encoding._registry import make_registry_client
from ..config import DEFAULT_TOPIC_PREFIX, KafkaConnectionSettings
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


class EventSettings(BaseSettings):
    """The settings that decide topics, schemas and subjects; all optional."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    topic_prefix: str = Field(
        DEFAULT_TOPIC_PREFIX, validation_alias="METRICS_EVENTS_TOPIC_PREFIX"
    )
    trace_context: bool = Field(True, validation_alias="METRICS_TRACE_CONTEXT")
    schema_suffix: str = Field("", validation_alias="SCHEMA_MANAGER_SUFFIX")
    compatibility: str | None = Field(
        None, validation_alias="SCHEMA_MANAGER_COMPATIBILITY"
    )

    def topic(self, application: str) -> str:
        """The events topic of ``application``, as its manager names it."""
        return f"{self.topic_prefix}.{application}"


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
    ``_TIMEOUT``) from the environment."""
    import os

    username = os.environ.get("SCHEMA_MANAGER_REGISTRY_USERNAME")
    password = os.environ.get("SCHEMA_MANAGER_REGISTRY_PASSWORD")
    auth = (username, password) if username and password is not None else None
    timeout = float(os.environ.get("SCHEMA_MANAGER_REGISTRY_TIMEOUT") or 10.0)
    return make_registry_client(url, timeout, auth=auth)
