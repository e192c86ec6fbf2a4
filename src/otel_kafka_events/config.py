"""Environment-driven configuration, compatible with Safir's settings.

A service configured for ``safir.metrics`` starts unchanged: the same
environment variables (``METRICS_ENABLED``, ``METRICS_APPLICATION``,
``KAFKA_BOOTSTRAP_SERVERS``, ``SCHEMA_MANAGER_REGISTRY_URL`` ...) select and
configure the same kind of manager. Our additions use the ``METRICS_`` prefix
(``METRICS_TRACE_CONTEXT``, ``METRICS_OTEL_LOGS``, ``METRICS_PRODUCER_SPANS``,
``METRICS_RAISE_ON_ERROR``...).

Examples
--------
>>> from pydantic_settings import BaseSettings
>>> class Config(BaseSettings):
...     metrics: MetricsConfiguration = Field(
...         default_factory=metrics_configuration_factory
...     )
"""

from __future__ import annotations

import abc
import enum
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from structlog.stdlib import BoundLogger

from ._encoding._registry import SchemaRegistrar, make_registry_client
from ._kafka import KafkaEventManager
from ._manager import (
    DEFAULT_CLOSE_TIMEOUT,
    EventManager,
    MockEventManager,
    NoopEventManager,
)
from ._options import BufferOptions, LogExport, OverflowPolicy, TelemetryOptions
from ._secrets import mask_url, split_credentials

if TYPE_CHECKING:
    from schema_registry.client import AsyncSchemaRegistryClient

__all__ = [
    "BaseMetricsConfiguration",
    "DisabledMetricsConfiguration",
    "EventsConfiguration",
    "KafkaConnectionSettings",
    "KafkaMetricsConfiguration",
    "KafkaSecurityProtocol",
    "LogExportSettings",
    "MetricsConfiguration",
    "MockMetricsConfiguration",
    "SchemaManagerSettings",
    "metrics_configuration_factory",
]

DEFAULT_TOPIC_PREFIX = "lsst.square.metrics.events"


def _must_be(wanted: bool) -> Any:
    def check(value: bool) -> bool:
        if value != wanted:
            raise ValueError(f"Input should be {wanted}")
        return value

    return AfterValidator(check)


def _url_text(value: Any) -> Any:
    """Accept pydantic URL objects (``HttpUrl``, ``AnyUrl``) as text."""
    if value is not None and not isinstance(value, str | bytes):
        return str(value)
    return value


_HUMAN_INTERVAL = re.compile(r"^\s*(?:\d+\s*[wdhms]\s*)+$", re.IGNORECASE)
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def _interval(value: Any) -> Any:
    """Read ``5m``, ``1h30m`` (as Safir's ``HumanTimedelta`` does) as well as
    seconds and what pydantic reads as a ``timedelta``."""
    if isinstance(value, str) and _HUMAN_INTERVAL.match(value):
        return timedelta(
            seconds=sum(
                int(number) * _UNIT_SECONDS[unit.lower()]
                for number, unit in re.findall(r"(\d+)\s*([wdhms])", value, re.I)
            )
        )
    return value


def _positive(value: timedelta | None) -> timedelta | None:
    if value is not None and value.total_seconds() <= 0:
        raise ValueError("Input should be a positive interval")
    return value


class KafkaSecurityProtocol(enum.StrEnum):
    """How to talk to the Kafka brokers."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class KafkaConnectionSettings(BaseSettings):
    """Kafka connection settings (``KAFKA_*``), as in Safir."""

    model_config = SettingsConfigDict(
        env_prefix="KAFKA_", extra="ignore", populate_by_name=True
    )

    # The environment variable comes first among the aliases, so that a
    # validation error names it.
    bootstrap_servers: str = Field(
        ...,
        description="Comma-separated host:port list of Kafka brokers.",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "bootstrapServers"),
    )
    security_protocol: KafkaSecurityProtocol = Field(
        KafkaSecurityProtocol.PLAINTEXT,
        description="How to talk to the brokers.",
        validation_alias=AliasChoices("KAFKA_SECURITY_PROTOCOL", "securityProtocol"),
    )
    cluster_ca_path: Path | None = Field(
        None,
        description="CA certificate (PEM).",
        validation_alias=AliasChoices("KAFKA_CLUSTER_CA_PATH", "clusterCaPath"),
    )
    client_cert_path: Path | None = Field(
        None,
        description="Client certificate.",
        validation_alias=AliasChoices("KAFKA_CLIENT_CERT_PATH", "clientCertPath"),
    )
    client_key_path: Path | None = Field(
        None,
        description="Client private key.",
        validation_alias=AliasChoices("KAFKA_CLIENT_KEY_PATH", "clientKeyPath"),
    )
    sasl_mechanism: str = Field(
        "SCRAM-SHA-512",
        description="SASL mechanism.",
        validation_alias=AliasChoices("KAFKA_SASL_MECHANISM", "saslMechanism"),
    )
    sasl_username: str | None = Field(
        None,
        description="SASL username.",
        validation_alias=AliasChoices("KAFKA_SASL_USERNAME", "saslUsername"),
    )
    sasl_password: SecretStr | None = Field(
        None,
        description="SASL password; never shown (repr, str, JSON dumps).",
        validation_alias=AliasChoices("KAFKA_SASL_PASSWORD", "saslPassword"),
    )

    @model_validator(mode="after")
    def _check_security(self) -> KafkaConnectionSettings:
        protocol = self.security_protocol
        if protocol in (
            KafkaSecurityProtocol.SASL_PLAINTEXT,
            KafkaSecurityProtocol.SASL_SSL,
        ):
            missing = [
                name
                for name, value in (
                    ("KAFKA_SASL_USERNAME", self.sasl_username),
                    ("KAFKA_SASL_PASSWORD", self.sasl_password),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"{protocol} needs {' and '.join(missing)}")
            if self.sasl_mechanism not in ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"):
                raise ValueError(
                    "KAFKA_SASL_MECHANISM must be SCRAM-SHA-512, SCRAM-SHA-256 or"
                    f" PLAIN, got {self.sasl_mechanism!r}"
                )
        if (self.client_cert_path is None) != (self.client_key_path is None):
            raise ValueError(
                "KAFKA_CLIENT_CERT_PATH and KAFKA_CLIENT_KEY_PATH must be set together"
            )
        return self

    def to_client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol.value}
        if self.security_protocol in (
            KafkaSecurityProtocol.SSL,
            KafkaSecurityProtocol.SASL_SSL,
        ):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=str(self.cluster_ca_path) if self.cluster_ca_path else None,
                certfile=str(self.client_cert_path) if self.client_cert_path else None,
                keyfile=str(self.client_key_path) if self.client_key_path else None,
            )
        if self.security_protocol in (
            KafkaSecurityProtocol.SASL_PLAINTEXT,
            KafkaSecurityProtocol.SASL_SSL,
        ):
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return options

    def to_aiokafka_params(self) -> dict[str, Any]:
        """Keyword arguments for an aiokafka client, ``bootstrap_servers``
        included, as Safir's method of the same name returns them."""
        return {"bootstrap_servers": self.bootstrap_servers, **self.to_client_options()}


class SchemaManagerSettings(BaseSettings):
    """Schema registry settings (``SCHEMA_MANAGER_*``), as in Safir, plus
    basic authentication and a request timeout.

    Credentials in ``registry_url`` (``https://user:pass@host``) work too;
    either way the password is never shown: ``repr()``, ``str()`` and JSON
    dumps of these settings hide it, and the registry client receives it
    separately from the URL.
    """

    model_config = SettingsConfigDict(
        env_prefix="SCHEMA_MANAGER_", extra="ignore", populate_by_name=True
    )

    registry_url: Annotated[str, BeforeValidator(_url_text)] = Field(
        ...,
        description="URL of the schema registry.",
        validation_alias=AliasChoices("SCHEMA_MANAGER_REGISTRY_URL", "registryUrl"),
    )
    suffix: str = Field(
        "",
        description="Appended to every subject name.",
        validation_alias=AliasChoices("SCHEMA_MANAGER_SUFFIX", "suffix"),
    )
    compatibility: str | None = Field(
        None,
        description="Compatibility level for each subject (registry default if unset).",
        validation_alias=AliasChoices("SCHEMA_MANAGER_COMPATIBILITY", "compatibility"),
    )
    registry_username: str | None = Field(
        None,
        description="Username for the registry's HTTP basic authentication.",
        validation_alias=AliasChoices(
            "SCHEMA_MANAGER_REGISTRY_USERNAME", "registryUsername"
        ),
    )
    registry_password: SecretStr | None = Field(
        None,
        description="Password for the registry's HTTP basic authentication.",
        validation_alias=AliasChoices(
            "SCHEMA_MANAGER_REGISTRY_PASSWORD", "registryPassword"
        ),
    )
    registry_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds each request to the registry may take.",
        validation_alias=AliasChoices(
            "SCHEMA_MANAGER_REGISTRY_TIMEOUT", "registryTimeout"
        ),
    )

    @model_validator(mode="after")
    def _check_credentials(self) -> SchemaManagerSettings:
        given = (self.registry_username is not None, self.registry_password is not None)
        if given[0] != given[1]:
            raise ValueError(
                "SCHEMA_MANAGER_REGISTRY_USERNAME and SCHEMA_MANAGER_REGISTRY_PASSWORD"
                " must be set together"
            )
        if given[0] and split_credentials(self.registry_url)[1] is not None:
            raise ValueError(
                "Schema registry credentials given twice: in"
                " SCHEMA_MANAGER_REGISTRY_URL and as SCHEMA_MANAGER_REGISTRY_USERNAME"
                " and _PASSWORD; give them once"
            )
        return self

    @field_serializer("registry_url")
    def _hide_url_password(self, url: str) -> str:
        return mask_url(url)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name == "registry_url" else value

    def make_registry_client(self) -> AsyncSchemaRegistryClient:
        """A registry client with these settings' credentials and timeout."""
        auth = None
        if self.registry_username is not None and self.registry_password is not None:
            auth = (self.registry_username, self.registry_password.get_secret_value())
        return make_registry_client(self.registry_url, self.registry_timeout, auth=auth)

    def make_manager(self) -> SchemaRegistrar:
        """The schema manager `KafkaEventManager` takes as ``schema_manager``.

        Safir's method of the same name returns its own schema manager; this
        one registers schemas as our managers do.
        """
        return SchemaRegistrar(
            self.make_registry_client(),
            suffix=self.suffix,
            compatibility=self.compatibility,
        )


class EventsConfiguration(BaseSettings):
    """Settings of the events topic (``METRICS_EVENTS_TOPIC_PREFIX``)."""

    model_config = SettingsConfigDict(env_prefix="METRICS_", populate_by_name=True)

    topic_prefix: str = Field(
        DEFAULT_TOPIC_PREFIX,
        validation_alias=AliasChoices("topicPrefix", "METRICS_EVENTS_TOPIC_PREFIX"),
    )


class LogExportSettings(BaseSettings):
    """Settings of the Kafka manager's own log export (``METRICS_LOG_EXPORT_*``).

    Off unless ``METRICS_LOG_EXPORT_KAFKA`` is true or
    ``METRICS_LOG_EXPORT_OTLP_ENDPOINT`` is set; either needs
    ``METRICS_OTEL_LOGS=true``. See `LogExport`.
    """

    model_config = SettingsConfigDict(
        env_prefix="METRICS_LOG_EXPORT_", populate_by_name=True, extra="forbid"
    )

    kafka: bool = Field(
        False,
        description=(
            "Write the events' log records as OTLP to a topic of the events'"
            " broker, for the Collector's kafka receiver."
        ),
    )
    topic: str = Field("otlp_logs", min_length=1, description="That topic.")
    encoding: Literal["otlp_proto", "otlp_json"] = Field(
        "otlp_proto", description="`otlp_proto` or `otlp_json`, as the receiver's."
    )
    partition_by_trace_id: bool = Field(
        False, description="Key each record by its trace id."
    )
    otlp_endpoint: str | None = Field(
        None,
        description="Also send them to this OTLP/HTTP logs URL.",
    )
    direct: bool = Field(
        False,
        description=(
            "Write the records without the OpenTelemetry SDK, one for each"
            " event Kafka acknowledged."
        ),
    )
    timeout: float = Field(
        10.0, gt=0, description="Seconds one export may take before it fails."
    )
    max_pending: int = Field(
        100_000,
        ge=1,
        description="With direct: records waiting for export at most (then dropped).",
    )

    @property
    def enabled(self) -> bool:
        """Whether any destination is set."""
        return self.kafka or self.otlp_endpoint is not None

    def to_log_export(self) -> LogExport | None:
        """The `LogExport` these settings describe (None when off)."""
        if not self.enabled:
            return None
        return LogExport(
            kafka=self.kafka,
            topic=self.topic,
            encoding=self.encoding,
            partition_by_trace_id=self.partition_by_trace_id,
            otlp_endpoint=self.otlp_endpoint,
            direct=self.direct,
            timeout=self.timeout,
            max_pending=self.max_pending,
        )


class BaseMetricsConfiguration(BaseSettings, abc.ABC):
    """Settings shared by every kind of manager, including OpenTelemetry."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    application: str = Field(
        ...,
        description="Name of the application publishing events.",
        validation_alias=AliasChoices("appName", "application", "METRICS_APPLICATION"),
    )
    events: EventsConfiguration = Field(default_factory=EventsConfiguration)
    trace_context: bool = Field(
        True,
        description="Put the caller's trace ids in every event.",
        validation_alias=AliasChoices(
            "traceContext", "trace_context", "METRICS_TRACE_CONTEXT"
        ),
    )
    otel_logs: bool = Field(
        False,
        description="Emit every event as an OpenTelemetry log record.",
        validation_alias=AliasChoices("otelLogs", "otel_logs", "METRICS_OTEL_LOGS"),
    )
    producer_spans: bool | Literal["event", "batch"] = Field(
        False,
        description=(
            "PRODUCER spans: `event` (or true) for one per event, `batch` for"
            " one per batch sent, linked to its events' spans."
        ),
        validation_alias=AliasChoices(
            "producerSpans", "producer_spans", "METRICS_PRODUCER_SPANS"
        ),
    )

    def telemetry_options(self, **overrides: Any) -> TelemetryOptions:
        """The `TelemetryOptions` these settings describe."""
        values: dict[str, Any] = {
            "trace_context": self.trace_context,
            "logs": self.otel_logs,
            "producer_spans": self.producer_spans,
        }
        values.update(overrides)
        return TelemetryOptions(**values)

    @abc.abstractmethod
    def make_manager(
        self,
        logger: BoundLogger | None = None,
        *,
        kafka_broker: Any = None,
        **kwargs: Any,
    ) -> EventManager:
        """Build the event manager these settings describe.

        Parameters
        ----------
        logger
            Logger for the manager.
        kafka_broker
            A FastStream ``KafkaBroker`` the service already has, as in
            Safir: the Kafka manager publishes through its producer, and
            the no-op and mock managers ignore it, so that the same call
            works in every configuration.
        **kwargs
            Extra keyword arguments for the manager's constructor; a
            ``telemetry`` given here replaces the one from the settings.
        """


class DisabledMetricsConfiguration(BaseMetricsConfiguration):
    """Events disabled (``METRICS_ENABLED=false``): a `NoopEventManager`."""

    enabled: Annotated[bool, _must_be(False)] = Field(
        ..., validation_alias=AliasChoices("enabled", "METRICS_ENABLED")
    )

    def make_manager(
        self,
        logger: BoundLogger | None = None,
        *,
        kafka_broker: Any = None,
        **kwargs: Any,
    ) -> NoopEventManager:
        """Build a `NoopEventManager` (``kafka_broker`` is ignored)."""
        kwargs.setdefault("telemetry", self.telemetry_options())
        return NoopEventManager(
            self.application, self.events.topic_prefix, logger, **kwargs
        )


class MockMetricsConfiguration(BaseMetricsConfiguration):
    """Mocked events (``METRICS_ENABLED=false``, ``METRICS_MOCK=true``)."""

    enabled: Annotated[bool, _must_be(False)] = Field(
        ..., validation_alias=AliasChoices("enabled", "METRICS_ENABLED")
    )
    mock: Annotated[bool, _must_be(True)] = Field(
        ..., validation_alias=AliasChoices("mock", "METRICS_MOCK")
    )

    def make_manager(
        self,
        logger: BoundLogger | None = None,
        *,
        kafka_broker: Any = None,
        **kwargs: Any,
    ) -> MockEventManager:
        """Build a `MockEventManager` (``kafka_broker`` is ignored)."""
        kwargs.setdefault("telemetry", self.telemetry_options())
        return MockEventManager(
            self.application, self.events.topic_prefix, logger, **kwargs
        )


class KafkaMetricsConfiguration(BaseMetricsConfiguration):
    """Events published to Kafka (the default when enabled).

    Unknown settings are refused, as Safir refuses them, so that a
    misspelled option fails at startup instead of being ignored.
    """

    model_config = SettingsConfigDict(populate_by_name=True, extra="forbid")

    enabled: Annotated[bool, _must_be(True)] = Field(
        True, validation_alias=AliasChoices("enabled", "METRICS_ENABLED")
    )
    kafka: KafkaConnectionSettings = Field(default_factory=KafkaConnectionSettings)
    schema_manager: SchemaManagerSettings = Field(
        default_factory=SchemaManagerSettings,
        validation_alias=AliasChoices("schemaManager", "schema_manager"),
    )
    backoff_interval: Annotated[
        timedelta | None, BeforeValidator(_interval), AfterValidator(_positive)
    ] = Field(
        None,
        description=(
            "Longest wait between two attempts to reconnect to Kafka or to"
            " register a schema after a failure (5 s if unset). Safir's"
            " setting of this name: there it is a pause in publishing."
        ),
        validation_alias=AliasChoices(
            "backoffInterval",
            "backoff_interval",
            "METRICS_BACKOFF_INTERVAL",
            "BACKOFF_INTERVAL",
        ),
    )
    raise_on_error: bool = Field(
        False,
        description="Raise broker and registry errors instead of logging them.",
        validation_alias=AliasChoices(
            "raiseOnError", "raise_on_error", "METRICS_RAISE_ON_ERROR", "RAISE_ON_ERROR"
        ),
    )
    delivery_timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds an event may take to be acknowledged.",
        validation_alias=AliasChoices(
            "deliveryTimeout", "delivery_timeout", "METRICS_DELIVERY_TIMEOUT"
        ),
    )
    buffer_max_events: int = Field(
        100_000,
        ge=1,
        validation_alias=AliasChoices(
            "bufferMaxEvents", "buffer_max_events", "METRICS_BUFFER_MAX_EVENTS"
        ),
    )
    buffer_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        validation_alias=AliasChoices(
            "bufferMaxBytes", "buffer_max_bytes", "METRICS_BUFFER_MAX_BYTES"
        ),
    )
    buffer_overflow: OverflowPolicy = Field(
        OverflowPolicy.BLOCK,
        validation_alias=AliasChoices(
            "bufferOverflow", "buffer_overflow", "METRICS_BUFFER_OVERFLOW"
        ),
    )
    close_timeout: float = Field(
        DEFAULT_CLOSE_TIMEOUT,
        gt=0,
        description=(
            "Seconds aclose() takes at most: delivering pending events,"
            " stopping the clients and flushing telemetry."
        ),
        validation_alias=AliasChoices(
            "closeTimeout", "close_timeout", "METRICS_CLOSE_TIMEOUT"
        ),
    )
    enable_idempotence: bool | None = Field(
        None,
        description=(
            "Kafka's idempotent producer: true requires it, false never uses"
            " it; unset uses it unless the broker refuses it (such as Tansu),"
            " then warns once and goes on without it."
        ),
        validation_alias=AliasChoices(
            "enableIdempotence", "enable_idempotence", "METRICS_ENABLE_IDEMPOTENCE"
        ),
    )
    log_export: LogExportSettings = Field(
        default_factory=LogExportSettings,
        validation_alias=AliasChoices("logExport", "log_export"),
    )

    @model_validator(mode="after")
    def _log_export_needs_logs(self) -> KafkaMetricsConfiguration:
        if self.log_export.enabled and not self.otel_logs:
            raise ValueError(
                "METRICS_LOG_EXPORT_KAFKA / METRICS_LOG_EXPORT_OTLP_ENDPOINT"
                " export the events' log records: set METRICS_OTEL_LOGS=true"
                " as well"
            )
        return self

    def telemetry_options(self, **overrides: Any) -> TelemetryOptions:
        """The `TelemetryOptions` these settings describe, with the log
        export of ``METRICS_LOG_EXPORT_*``."""
        export = self.log_export.to_log_export()
        if export is not None:
            overrides.setdefault("log_export", export)
        return super().telemetry_options(**overrides)

    def make_manager(
        self,
        logger: BoundLogger | None = None,
        *,
        kafka_broker: Any = None,
        **kwargs: Any,
    ) -> KafkaEventManager:
        """Build a `KafkaEventManager` that creates and owns its clients.

        With ``kafka_broker`` (a FastStream ``KafkaBroker``), events go
        through that broker's producer instead; the caller starts and stops
        the broker, as with Safir.
        """
        kwargs.setdefault("telemetry", self.telemetry_options())
        kwargs.setdefault("bootstrap_servers", self.kafka.bootstrap_servers)
        if "registry" not in kwargs and "registry_url" not in kwargs:
            kwargs.setdefault("schema_manager", self.schema_manager.make_manager())
        else:
            kwargs.setdefault("schema_suffix", self.schema_manager.suffix)
            kwargs.setdefault("schema_compatibility", self.schema_manager.compatibility)
        if kafka_broker is not None:
            kwargs["kafka_broker"] = kafka_broker
        if self.backoff_interval is not None:
            kwargs.setdefault("backoff_interval", self.backoff_interval)
        kwargs.setdefault("raise_on_error", self.raise_on_error)
        kwargs.setdefault("delivery_timeout", self.delivery_timeout)
        kwargs.setdefault("close_timeout", self.close_timeout)
        kwargs.setdefault("enable_idempotence", self.enable_idempotence)
        kwargs.setdefault(
            "buffer",
            BufferOptions(
                max_events=self.buffer_max_events,
                max_bytes=self.buffer_max_bytes,
                overflow=self.buffer_overflow,
            ),
        )
        options = self.kafka.to_client_options()
        options.update(kwargs.pop("kafka_options", None) or {})
        return KafkaEventManager(
            application=self.application,
            topic_prefix=self.events.topic_prefix,
            kafka_options=options,
            logger=logger,
            **kwargs,
        )


MetricsConfiguration = (
    MockMetricsConfiguration | DisabledMetricsConfiguration | KafkaMetricsConfiguration
)
"""Any of the three configurations; use with `metrics_configuration_factory`."""


def metrics_configuration_factory() -> MetricsConfiguration:
    """Pick the configuration the environment describes.

    Tries, in order, mock (``METRICS_MOCK=true``), disabled
    (``METRICS_ENABLED=false``) and Kafka; the Kafka configuration's
    validation error is raised if none fits, since it names the missing
    settings.
    """
    for candidate in (MockMetricsConfiguration, DisabledMetricsConfiguration):
        try:
            return candidate()
        except ValidationError:
            continue
    return KafkaMetricsConfiguration()
