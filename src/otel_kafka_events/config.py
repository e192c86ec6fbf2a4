"""Environment-driven configuration, compatible with Safir's settings.

A service configured for ``safir.metrics`` starts unchanged: the same
environment variables (``METRICS_ENABLED``, ``METRICS_APPLICATION``,
``KAFKA_BOOTSTRAP_SERVERS``, ``SCHEMA_MANAGER_REGISTRY_URL`` ...) select and
configure the same kind of manager. Our own settings are not declared here:
they are the fields of `DeliveryOptions` and `TelemetryOptions` (with their
nested `BufferOptions` and `LogExportOptions`), read from the environment
variables those models name (``METRICS_DELIVERY_TIMEOUT``,
``METRICS_OTEL_LOGS``, ``METRICS_BUFFER_MAX_EVENTS``,
``METRICS_LOG_EXPORT_KAFKA`` ...).

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
import contextvars
import enum
import os
import ssl
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from structlog.stdlib import BoundLogger

from ._config_errors import explain
from ._encoding._registry import (
    COMPATIBILITY_LEVELS,
    SchemaRegistrar,
    make_registry_client,
)
from ._kafka import KafkaEventManager
from ._manager import EventManager, MockEventManager, NoopEventManager
from ._options import (
    DeliveryOptions,
    TelemetryOptions,
    env_fields,
    normalize_safir_names,
)
from ._secrets import hide_error_inputs, mask_url, split_credentials
from ._unknown_env import (
    PREFIXES,
    STRICT_VARIABLE,
    UnknownVariable,
    known_names,
    parse_bool,
    strict_requested,
    unknown_variables,
    warn_about,
)
from .errors import ConfigurationError

if TYPE_CHECKING:
    from schema_registry.client import AsyncSchemaRegistryClient

__all__ = [
    "BaseMetricsConfiguration",
    "DisabledMetricsConfiguration",
    "EventsConfiguration",
    "KafkaConnectionSettings",
    "KafkaMetricsConfiguration",
    "KafkaSecurityProtocol",
    "MetricsConfiguration",
    "MockMetricsConfiguration",
    "SchemaManagerSettings",
    "metrics_configuration_factory",
    "options_from_environment",
]

DEFAULT_TOPIC_PREFIX = "lsst.square.metrics.events"

_O = TypeVar("_O", bound=BaseModel)
_T = TypeVar("_T")


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


def _environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables, by upper-case name (pydantic-settings ignores case)."""
    source = os.environ if environ is None else environ
    return {name.upper(): value for name, value in source.items()}


# Set while a configuration reads the environment: the settings nested in it
# (and the candidates `metrics_configuration_factory` tries) leave the check
# for misspelt variables and the error's wording to the outermost one.
_reading: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "otel_kafka_events_reading_settings", default=False
)


def _read_settings(
    model: type[BaseModel],
    build: Callable[[], _T],
    *,
    given: Mapping[str, Any] | None = None,
    prefixes: tuple[str, ...] = PREFIXES,
    environ: Mapping[str, str] | None = None,
) -> _T:
    """Run ``build``, which reads settings of ``model`` from the environment.

    The outermost reading first looks for variables with one of
    ``prefixes`` that no setting reads (`UnknownSettingWarning`, or with
    ``METRICS_STRICT_ENV=true`` a problem), and turns pydantic's
    `ValidationError` into a `ConfigurationError`: one line per problem,
    naming the variable, no secret shown.

    Raises
    ------
    ConfigurationError
        If a setting is missing or invalid, or (strict) a variable unknown.
    """
    if _reading.get():
        # Nested: the outermost reading explains the problems. The error
        # joins an application's own when these settings are part of its
        # configuration, so it must not quote a secret either.
        try:
            return build()
        except ValidationError as exc:
            hidden = ValidationError.from_exception_data(
                exc.title, hide_error_inputs(exc.errors())
            )
        raise hidden
    variables = _environment(environ)
    token = _reading.set(True)
    try:
        unknown = unknown_variables(variables, prefixes, _known_variables())
        strict = strict_requested(variables, (given or {}).get("strict_env"))
        if unknown and not strict:
            warn_about(unknown)
        problems = [variable.line() for variable in unknown] if strict else []
        try:
            result = build()
        except ValidationError as exc:
            failure = explain(
                exc,
                model,
                variables,
                given=given,
                missing_hints=getattr(model, "_missing_hints", None),
                extra=problems,
            )
        else:
            if not problems:
                return result
            failure = ConfigurationError.from_problems(
                model.__name__, problems, _unknown_details(unknown)
            )
    finally:
        _reading.reset(token)
    # Raised outside the except clause: pydantic's error, which quotes the
    # values given, is not chained to it.
    raise failure


def _unknown_details(unknown: list[UnknownVariable]) -> list[Any]:
    """pydantic-style details of unknown variables (never their values)."""
    return hide_error_inputs(
        [
            {
                "type": "unknown_setting",
                "loc": (variable.name,),
                "msg": variable.line(),
                "input": None,
            }
            for variable in unknown
        ]
    )


class _Settings(BaseSettings):
    """What our settings classes share: read from the environment through
    `_read_settings`. pydantic calls ``__init__`` for a nested settings
    class too (pydantic-settings defines one), so this covers them when
    they are part of an application's configuration."""

    _env_prefixes: ClassVar[tuple[str, ...]] = PREFIXES

    def __init__(self, **values: Any) -> None:
        _read_settings(
            type(self),
            lambda: super(_Settings, self).__init__(**values),
            given=values,
            prefixes=self._env_prefixes,
        )


def _from_environment() -> Any:
    """The default of a nested group of settings: nothing given, so that
    validating it (``validate_default``) reads the environment and any
    problem joins the others in one error instead of stopping it."""
    return {}


class KafkaSecurityProtocol(enum.StrEnum):
    """How to talk to the Kafka brokers."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class KafkaConnectionSettings(_Settings):
    """Kafka connection settings (``KAFKA_*``), as in Safir.

    Raises
    ------
    ConfigurationError
        When built from the environment with a setting missing or invalid,
        naming the variable (a `pydantic.ValidationError` too, as Safir's
        class raises).
    """

    model_config = SettingsConfigDict(
        env_prefix="KAFKA_", extra="ignore", populate_by_name=True
    )
    _env_prefixes: ClassVar[tuple[str, ...]] = ("KAFKA_",)

    # The environment variable comes first among the aliases, so that a
    # validation error names it.
    bootstrap_servers: str = Field(
        ...,
        min_length=1,
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
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL={protocol} needs"
                    f" {' and '.join(missing)}; set"
                    f" {'them' if len(missing) > 1 else 'it'}, or use PLAINTEXT"
                    " or SSL"
                )
            if self.sasl_mechanism not in ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"):
                raise ValueError(
                    f"KAFKA_SASL_MECHANISM={self.sasl_mechanism!r} is not supported;"
                    " use SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN"
                )
        if (self.client_cert_path is None) != (self.client_key_path is None):
            raise ValueError(
                "KAFKA_CLIENT_CERT_PATH and KAFKA_CLIENT_KEY_PATH go together: set"
                " both (TLS client authentication) or neither"
            )
        return self

    def _ssl_context(self) -> ssl.SSLContext:
        """A TLS context with these settings' CA and client certificate."""
        from aiokafka.helpers import create_ssl_context

        context: ssl.SSLContext = create_ssl_context(
            cafile=str(self.cluster_ca_path) if self.cluster_ca_path else None,
            certfile=str(self.client_cert_path) if self.client_cert_path else None,
            keyfile=str(self.client_key_path) if self.client_key_path else None,
        )
        # Python 3.13 verifies certificates strictly by default, which refuses
        # broker certificates without an Authority Key Identifier, such as
        # those Strimzi generates; Safir relaxes the same flag.
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
        return context

    def to_client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol.value}
        if self.security_protocol in (
            KafkaSecurityProtocol.SSL,
            KafkaSecurityProtocol.SASL_SSL,
        ):
            options["ssl_context"] = self._ssl_context()
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

    def to_faststream_params(self) -> dict[str, Any]:
        """Keyword arguments for a FastStream ``KafkaBroker``, as Safir's
        method of the same name returns them: ``bootstrap_servers`` and a
        ``security`` object for the protocol (TLS context, SASL mechanism
        and credentials).

        Examples
        --------
        >>> from faststream.kafka import KafkaBroker
        >>> broker = KafkaBroker(**KafkaConnectionSettings().to_faststream_params())

        Raises
        ------
        ImportError
            If FastStream is not installed.
        """
        try:
            from faststream.security import (
                BaseSecurity,
                SASLPlaintext,
                SASLScram256,
                SASLScram512,
            )
        except ImportError as exc:
            raise ImportError(
                "to_faststream_params needs FastStream: pip install 'faststream[kafka]'"
            ) from exc
        protocol = self.security_protocol
        tls = protocol in (KafkaSecurityProtocol.SSL, KafkaSecurityProtocol.SASL_SSL)
        context = self._ssl_context() if tls else None
        security: Any
        if protocol in (
            KafkaSecurityProtocol.SASL_PLAINTEXT,
            KafkaSecurityProtocol.SASL_SSL,
        ):
            mechanism = {
                "SCRAM-SHA-512": SASLScram512,
                "SCRAM-SHA-256": SASLScram256,
                "PLAIN": SASLPlaintext,
            }[self.sasl_mechanism]
            password = self.sasl_password
            security = mechanism(
                username=self.sasl_username or "",
                password=password.get_secret_value() if password else "",
                ssl_context=context,
            )
        else:
            security = BaseSecurity(ssl_context=context)
        return {"bootstrap_servers": self.bootstrap_servers, "security": security}


class SchemaManagerSettings(_Settings):
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
    _env_prefixes: ClassVar[tuple[str, ...]] = ("SCHEMA_MANAGER_",)

    registry_url: Annotated[str, BeforeValidator(_url_text)] = Field(
        ...,
        min_length=1,
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
                " go together: set both (HTTP basic authentication) or neither"
            )
        if given[0] and split_credentials(self.registry_url)[1] is not None:
            raise ValueError(
                "Schema registry credentials given twice: in"
                " SCHEMA_MANAGER_REGISTRY_URL and as SCHEMA_MANAGER_REGISTRY_USERNAME"
                " and _PASSWORD; give them once"
            )
        return self

    @field_validator("compatibility")
    @classmethod
    def _known_level(cls, level: str | None) -> str | None:
        if level is not None and level not in COMPATIBILITY_LEVELS:
            raise ValueError(
                "not a compatibility level; use one of"
                f" {', '.join(COMPATIBILITY_LEVELS)}, or leave it unset for the"
                " registry's default"
            )
        return level

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


class EventsConfiguration(_Settings):
    """Settings of the events topic (``METRICS_EVENTS_TOPIC_PREFIX``)."""

    model_config = SettingsConfigDict(env_prefix="METRICS_", populate_by_name=True)
    _env_prefixes: ClassVar[tuple[str, ...]] = ("METRICS_",)

    topic_prefix: str = Field(
        DEFAULT_TOPIC_PREFIX,
        validation_alias=AliasChoices("topicPrefix", "METRICS_EVENTS_TOPIC_PREFIX"),
    )


class _OptionsFromEnvironment(PydanticBaseSettingsSource):
    """Reads the option models' fields (`DeliveryOptions`,
    `TelemetryOptions`) from the variables `env_fields` names.

    A nested optional model (`TelemetryOptions.log_export`) is given only
    when one of its variables is set.
    """

    def __init__(
        self, settings_cls: type[BaseSettings], environ: Mapping[str, str]
    ) -> None:
        super().__init__(settings_cls)
        self._environ = {key.upper(): value for key, value in environ.items()}

    def get_field_value(
        self, field: FieldInfo, field_name: str
    ) -> tuple[Any, str, bool]:
        # Not used: `__call__` builds the whole dict at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, model in _option_groups(self.settings_cls).items():
            group = _environment_values(model, self._environ)
            if group:
                values[name] = group
        return values


def _environment_values(model: Any, environ: Mapping[str, str]) -> dict[str, Any]:
    """The values the environment gives the fields of an options model."""
    group: dict[str, Any] = {}
    for env, path, _ in env_fields(model):
        if env in environ and not _has(group, path):
            _put(group, path, environ[env])
    return group


def options_from_environment(
    model: type[_O], environ: Mapping[str, str] | None = None
) -> _O:
    """An options model (`DeliveryOptions`, `TelemetryOptions` ...) with the
    values of the environment variables it names, defaults otherwise.

    Like the configuration classes, it warns about a ``METRICS_`` variable
    that no setting reads (see `metrics_configuration_factory`).

    Raises
    ------
    ConfigurationError
        If a variable's value is not valid for its setting, naming it.
    """
    variables = _environment(environ)
    values = _environment_values(model, variables)
    prefix = getattr(model, "env_prefix", "") or "METRICS_"
    return _read_settings(
        model,
        lambda: model.model_validate(values),
        prefixes=(prefix,),
        environ=variables,
    )


def _option_groups(settings_cls: type[BaseSettings]) -> dict[str, Any]:
    """The fields of a configuration that hold option models."""
    groups = {}
    for name, info in settings_cls.model_fields.items():
        if info.annotation in (DeliveryOptions, TelemetryOptions):
            groups[name] = info.annotation
    return groups


def _has(target: dict[str, Any], path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(target, dict) or key not in target:
            return False
        target = target[key]
    return True


def _put(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


class _EnvWithoutOptionGroups(EnvSettingsSource):
    """pydantic-settings' own environment source, minus the option groups
    (which it would read as one JSON variable named like the field)."""

    def get_field_value(
        self, field: FieldInfo, field_name: str
    ) -> tuple[Any, str, bool]:
        if field.annotation in (DeliveryOptions, TelemetryOptions):
            return None, field_name, False
        return super().get_field_value(field, field_name)


class BaseMetricsConfiguration(_Settings, abc.ABC):
    """Settings shared by every kind of manager, including OpenTelemetry.

    ``telemetry`` is a `TelemetryOptions`, read from the variables it names
    (``METRICS_TRACE_CONTEXT``, ``METRICS_OTEL_LOGS``,
    ``METRICS_PRODUCER_SPANS``, ``METRICS_LOG_EXPORT_*`` ...).

    Raises
    ------
    ConfigurationError
        If a setting is missing or invalid (one line per problem, naming
        the variable), or with ``METRICS_STRICT_ENV=true`` if a variable
        with a prefix of the settings is not one; without it, such a
        variable gives an `UnknownSettingWarning`.
    """

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    application: str = Field(
        ...,
        description="Name of the application publishing events.",
        validation_alias=AliasChoices("appName", "application", "METRICS_APPLICATION"),
    )
    events: EventsConfiguration = Field(
        default_factory=_from_environment, validate_default=True
    )
    strict_env: bool = Field(
        False,
        description=(
            "Refuse to start, instead of warning, when a variable starting"
            " with METRICS_, KAFKA_ or SCHEMA_MANAGER_ is not a setting"
            " (a misspelt name)."
        ),
        validation_alias=AliasChoices("strictEnv", "strict_env", STRICT_VARIABLE),
    )
    telemetry: TelemetryOptions = Field(
        default_factory=TelemetryOptions,
        description="How events connect to OpenTelemetry.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments first, then the environment: Safir's variables
        and the option models' own."""
        return (
            init_settings,
            _EnvWithoutOptionGroups(settings_cls),
            _OptionsFromEnvironment(settings_cls, os.environ),
            dotenv_settings,
            file_secret_settings,
        )

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
        kwargs.setdefault("telemetry", self.telemetry)
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
        kwargs.setdefault("telemetry", self.telemetry)
        return MockEventManager(
            self.application, self.events.topic_prefix, logger, **kwargs
        )


class KafkaMetricsConfiguration(BaseMetricsConfiguration):
    """Events published to Kafka (the default when enabled).

    ``delivery`` is a `DeliveryOptions`, read from the variables it names
    (``METRICS_DELIVERY_TIMEOUT``, ``METRICS_CLOSE_TIMEOUT``,
    ``METRICS_RAISE_ON_ERROR``, ``METRICS_BACKOFF_INTERVAL``,
    ``METRICS_BUFFER_*`` ...). Safir's ``raiseOnError`` and
    ``backoffInterval`` (and our option names given flat) are accepted at
    the top level too.

    Unknown settings given as keywords are refused, as Safir refuses them.
    """

    model_config = SettingsConfigDict(populate_by_name=True, extra="forbid")
    _missing_hints: ClassVar[dict[str, str]] = {
        prefix: "set METRICS_ENABLED=false to publish no events"
        for prefix in ("KAFKA_", "SCHEMA_MANAGER_")
    }

    enabled: Annotated[bool, _must_be(True)] = Field(
        True, validation_alias=AliasChoices("enabled", "METRICS_ENABLED")
    )
    kafka: KafkaConnectionSettings = Field(
        default_factory=_from_environment, validate_default=True
    )
    schema_manager: SchemaManagerSettings = Field(
        default_factory=_from_environment,
        validate_default=True,
        validation_alias=AliasChoices("schemaManager", "schema_manager"),
    )
    delivery: DeliveryOptions = Field(
        default_factory=DeliveryOptions,
        description="How events are delivered to Kafka.",
    )

    @model_validator(mode="before")
    @classmethod
    def _delivery_names(cls, data: Any) -> Any:
        """Safir's top-level names and our flat ones go into ``delivery``."""
        if isinstance(data, dict):
            return normalize_safir_names(data)
        return data

    @property
    def raise_on_error(self) -> bool:
        """Safir's name for ``delivery.raise_on_error``."""
        return self.delivery.raise_on_error

    @property
    def backoff_interval(self) -> timedelta:
        """Safir's name for ``delivery.backoff_interval``."""
        return timedelta(seconds=self.delivery.backoff_interval)

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
        the broker, as with Safir. Keyword arguments override the settings
        (``telemetry=``, ``delivery=``, or any `DeliveryOptions` field).
        """
        kwargs.setdefault("telemetry", self.telemetry)
        kwargs.setdefault("delivery", self.delivery)
        if "transport" not in kwargs:
            kwargs.setdefault("bootstrap_servers", self.kafka.bootstrap_servers)
        if "registry" not in kwargs and "registry_url" not in kwargs:
            kwargs.setdefault("schema_manager", self.schema_manager.make_manager())
        else:
            kwargs.setdefault("schema_suffix", self.schema_manager.suffix)
            kwargs.setdefault("schema_compatibility", self.schema_manager.compatibility)
        if kafka_broker is not None:
            kwargs["kafka_broker"] = kafka_broker
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
    (``METRICS_ENABLED=false``) and Kafka; the Kafka configuration's error
    is raised if none fits, since it names the missing settings.

    First, every variable starting with ``METRICS_``, ``KAFKA_`` or
    ``SCHEMA_MANAGER_`` that no setting reads gives one
    `UnknownSettingWarning` naming the closest setting ("did you mean
    METRICS_ENABLED?"), or with ``METRICS_STRICT_ENV=true`` is a problem
    of the `ConfigurationError`.

    Raises
    ------
    ConfigurationError
        One line per problem, each naming the variable, what is wrong and
        what to do; also a `pydantic.ValidationError`, as Safir raises.
    """
    return _read_settings(KafkaMetricsConfiguration, _pick_configuration)


def _pick_configuration() -> MetricsConfiguration:
    # Safir tries mock, then disabled, then Kafka, and reports Kafka's error
    # whatever failed; choosing by the two switches first picks the same
    # configuration when it is valid, and when it is not, reports the
    # problems of the one the switches ask for (METRICS_ENABLED=false with
    # no METRICS_APPLICATION is not a request for Kafka settings).
    variables = _environment()
    enabled = parse_bool(variables.get("METRICS_ENABLED"))
    if enabled is False:
        if parse_bool(variables.get("METRICS_MOCK")) is True:
            try:
                return MockMetricsConfiguration()
            except ValidationError:
                pass  # As in Safir: then the disabled configuration.
        return DisabledMetricsConfiguration()
    return KafkaMetricsConfiguration()


@cache
def _known_variables() -> frozenset[str]:
    """Every variable a setting reads (for the misspelt-variable check)."""
    return known_names(
        [
            MockMetricsConfiguration,
            DisabledMetricsConfiguration,
            KafkaMetricsConfiguration,
        ]
    )
