"""Expected failures of the command line, as one line each.

A user who points the command at the wrong broker, registry or module needs
the cause and what to do, not a traceback. `CliError` carries both;
`explain` recognises the library's, aiokafka's, httpx's and the registry
client's exceptions for the failures a user can fix and turns them into a
`CliError`; anything it does not recognise is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

import httpx
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import ValidationError
from schema_registry.client.errors import ClientError

from .._secrets import mask_url
from ..errors import (
    BrokerUnavailableError,
    ConfigurationError,
    EventManagerUsageError,
    SchemaRegistryError,
)

__all__ = ["CliError", "explain"]

_START_STACK = "or start a local one with `otel-kafka-events stack`"


class CliError(Exception):
    """A failure the user can act on.

    Parameters
    ----------
    cause
        What went wrong, naming the thing (URL, topic, module) involved.
    remedy
        What to do about it.
    exit_code
        The process exit status.
    """

    def __init__(
        self, cause: str, remedy: str | None = None, exit_code: int = 1
    ) -> None:
        super().__init__(cause)
        self.cause = cause
        self.remedy = remedy
        self.exit_code = exit_code

    def line(self) -> str:
        """The message: the cause, then the remedy."""
        return f"{self.cause}; {self.remedy}" if self.remedy else self.cause


def explain(exc: BaseException, context: dict[str, Any]) -> CliError | None:
    """Turn an expected exception into a `CliError`, or None for a bug.

    Parameters
    ----------
    exc
        The exception a command raised.
    context
        What the command was talking to: ``bootstrap_servers`` and
        ``registry_url`` when known, to name them in the message.
    """
    servers = context.get("bootstrap_servers") or "(KAFKA_BOOTSTRAP_SERVERS)"
    registry = context.get("registry_url") or "(SCHEMA_MANAGER_REGISTRY_URL)"
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, KafkaConnectionError | BrokerUnavailableError):
        return CliError(
            f"cannot reach the Kafka broker at {servers} ({exc})",
            f"check KAFKA_BOOTSTRAP_SERVERS, {_START_STACK}",
        )
    if isinstance(exc, KafkaError):
        return CliError(
            f"the Kafka broker at {servers} answered {type(exc).__name__}: {exc}",
            "check KAFKA_BOOTSTRAP_SERVERS and the KAFKA_SECURITY_PROTOCOL / SASL"
            " settings",
        )
    if isinstance(exc, ClientError):
        return _registry_refusal(exc, registry)
    if isinstance(exc, httpx.HTTPError | SchemaRegistryError):
        return CliError(
            f"cannot reach the schema registry at {mask_url(registry)}"
            f" ({type(exc).__name__}: {exc})",
            f"check SCHEMA_MANAGER_REGISTRY_URL, {_START_STACK}",
        )
    if isinstance(exc, ConfigurationError):
        # The library's own lines: each names the variable and the fix.
        return CliError(str(exc), exit_code=2)
    if isinstance(exc, EventManagerUsageError):
        return CliError(str(exc))
    if isinstance(exc, ValidationError):
        return _settings_error(exc)
    return None


def _registry_refusal(exc: ClientError, registry: str) -> CliError:
    code = exc.http_code
    if code in (401, 403):
        return CliError(
            f"the schema registry at {mask_url(registry)} refused our credentials"
            f" (HTTP {code})",
            "set SCHEMA_MANAGER_REGISTRY_USERNAME and SCHEMA_MANAGER_REGISTRY_PASSWORD"
            " (or put them in SCHEMA_MANAGER_REGISTRY_URL, https://USER:PASSWORD@host)"
            " and check they may read subjects",
        )
    detail = exc.server_traceback
    message = detail.get("message") if isinstance(detail, dict) else None
    return CliError(
        f"the schema registry at {mask_url(registry)} answered HTTP {code}:"
        f" {message or exc.message}",
        "check SCHEMA_MANAGER_REGISTRY_URL points at a Confluent-compatible registry",
    )


def _settings_error(exc: ValidationError) -> CliError:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        problems.append(f"{where}: {error['msg']}")
    return CliError(
        "invalid settings in the environment: " + "; ".join(problems),
        "see docs/configuration.md for the METRICS_*, KAFKA_* and SCHEMA_MANAGER_*"
        " variables",
    )
