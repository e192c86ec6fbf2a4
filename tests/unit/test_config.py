"""The environment configuration, with Safir's variable names, and its errors.

A service configured for ``safir.metrics`` must start unchanged: the same
variables pick the same kind of manager with the same topic. A problem is
reported as one line naming the variable, what is wrong and the fix, in a
`ConfigurationError` that is also pydantic's ``ValidationError``; a
variable that looks like a setting and is not gives a warning, or with
``METRICS_STRICT_ENV=true`` an error. Every test starts from an environment
without any ``METRICS_``, ``KAFKA_`` or ``SCHEMA_MANAGER_`` variable; none
uses the network.
"""

from __future__ import annotations

import ssl
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings

from otel_kafka_events import (
    DeliveryOptions,
    DisabledMetricsConfiguration,
    EventManagerUsageError,
    EventPayload,
    EventsConfiguration,
    KafkaConnectionSettings,
    KafkaEventManager,
    KafkaMetricsConfiguration,
    LogExportOptions,
    MetricsConfiguration,
    MockEventManager,
    MockMetricsConfiguration,
    NoopEventManager,
    OverflowPolicy,
    SchemaManagerSettings,
    TelemetryOptions,
    metrics_configuration_factory,
)
from otel_kafka_events._cli import cli
from otel_kafka_events._options import env_fields
from otel_kafka_events.config import options_from_environment
from otel_kafka_events.errors import ConfigurationError, UnknownSettingWarning

from ..config_support import clean_environment, kafka_env, set_env

__all__ = ["clean_environment"]  # the autouse fixture

DEFAULT_PREFIX = "lsst.square.metrics.events"
TRACE_FIELDS = {"trace_id", "span_id", "trace_flags"}


class Ping(EventPayload):
    """A minimal payload."""

    n: int


# -- Which configuration the factory picks --------------------------------------


def test_mock(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        METRICS_ENABLED="false",
        METRICS_MOCK="true",
        METRICS_APPLICATION="a",
    )
    config = metrics_configuration_factory()
    assert isinstance(config, MockMetricsConfiguration)
    manager = config.make_manager()
    assert type(manager) is MockEventManager
    assert manager.topic == f"{DEFAULT_PREFIX}.a"
    assert manager.application == "a"


def test_mock_wins_over_kafka_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(monkeypatch, METRICS_ENABLED="false", METRICS_MOCK="true")
    assert isinstance(metrics_configuration_factory(), MockMetricsConfiguration)


@pytest.mark.parametrize("mock", [None, "false"])
def test_disabled(monkeypatch: pytest.MonkeyPatch, mock: str | None) -> None:
    set_env(monkeypatch, METRICS_ENABLED="false", METRICS_APPLICATION="b")
    if mock is not None:
        monkeypatch.setenv("METRICS_MOCK", mock)
    config = metrics_configuration_factory()
    assert isinstance(config, DisabledMetricsConfiguration)
    manager = config.make_manager()
    assert type(manager) is NoopEventManager
    assert manager.topic == f"{DEFAULT_PREFIX}.b"


@pytest.mark.parametrize("enabled", [None, "true"])
async def test_kafka(monkeypatch: pytest.MonkeyPatch, enabled: str | None) -> None:
    kafka_env(monkeypatch)
    if enabled is not None:
        monkeypatch.setenv("METRICS_ENABLED", enabled)
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert config.schema_manager.registry_url == "http://127.0.0.1:8081"
    manager = config.make_manager()
    assert type(manager) is KafkaEventManager
    assert manager.topic == f"{DEFAULT_PREFIX}.myapp"
    assert manager.subject_for("ping") == f"{DEFAULT_PREFIX}.myapp.ping"
    assert await manager.aclose() == 0


def test_mock_needs_enabled_false(monkeypatch: pytest.MonkeyPatch) -> None:
    # As in Safir: METRICS_MOCK alone does not disable Kafka.
    kafka_env(monkeypatch, METRICS_MOCK="true")
    assert isinstance(metrics_configuration_factory(), KafkaMetricsConfiguration)


def test_topic_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        METRICS_ENABLED="false",
        METRICS_APPLICATION="c",
        METRICS_EVENTS_TOPIC_PREFIX="my.events",
    )
    config = metrics_configuration_factory()
    assert config.events.topic_prefix == "my.events"
    assert config.make_manager().topic == "my.events.c"


def test_schema_suffix_and_compatibility(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(
        monkeypatch,
        SCHEMA_MANAGER_SUFFIX="_dev",
        SCHEMA_MANAGER_COMPATIBILITY="FORWARD",
    )
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    assert config.schema_manager.compatibility == "FORWARD"
    manager = config.make_manager()
    assert manager.subject_for("ping") == f"{DEFAULT_PREFIX}.myapp.ping_dev"


# -- Validation errors name the setting ----------------------------------------


def test_missing_bootstrap_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        METRICS_APPLICATION="d",
        SCHEMA_MANAGER_REGISTRY_URL="http://127.0.0.1:8081",
    )
    with pytest.raises(ValidationError) as caught:
        metrics_configuration_factory()
    assert "KAFKA_BOOTSTRAP_SERVERS" in str(caught.value)


def test_missing_registry_url(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, METRICS_APPLICATION="d", KAFKA_BOOTSTRAP_SERVERS="h:1")
    with pytest.raises(ValidationError) as caught:
        metrics_configuration_factory()
    assert "SCHEMA_MANAGER_REGISTRY_URL" in str(caught.value)


def test_missing_application(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, METRICS_ENABLED="false")
    with pytest.raises(ValidationError) as caught:
        metrics_configuration_factory()
    # The disabled configuration's problem, not the Kafka settings.
    assert caught.value.problems == [  # type: ignore[attr-defined]
        "METRICS_APPLICATION is not set; set it (Name of the application"
        " publishing events)"
    ]


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_without_username(monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    kafka_env(monkeypatch, KAFKA_SECURITY_PROTOCOL=protocol, KAFKA_SASL_PASSWORD="pw")
    with pytest.raises(ValidationError) as caught:
        metrics_configuration_factory()
    message = str(caught.value)
    assert "KAFKA_SASL_USERNAME" in message
    assert "KAFKA_SASL_PASSWORD" not in message


def test_sasl_options(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(
        monkeypatch,
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_USERNAME="user",
        KAFKA_SASL_PASSWORD="secret",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
    )
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    assert config.kafka.to_client_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "user",
        "sasl_plain_password": "secret",
    }
    # Safir's name for the same options, with the brokers.
    assert config.kafka.to_aiokafka_params() == {
        "bootstrap_servers": "127.0.0.1:9092",
        **config.kafka.to_client_options(),
    }


def test_unknown_sasl_mechanism(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(
        monkeypatch,
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_USERNAME="user",
        KAFKA_SASL_PASSWORD="secret",
        KAFKA_SASL_MECHANISM="GSSAPI",
    )
    with pytest.raises(ValidationError, match="KAFKA_SASL_MECHANISM"):
        metrics_configuration_factory()


def test_unknown_security_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(monkeypatch, KAFKA_SECURITY_PROTOCOL="CARRIER_PIGEON")
    with pytest.raises(ValidationError, match="KAFKA_SECURITY_PROTOCOL"):
        metrics_configuration_factory()


def test_client_cert_without_key(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(
        monkeypatch, KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_CLIENT_CERT_PATH="/c.pem"
    )
    with pytest.raises(ValidationError, match="KAFKA_CLIENT_KEY_PATH"):
        metrics_configuration_factory()


# -- Our own settings -----------------------------------------------------------


async def test_trace_context_off(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        METRICS_ENABLED="false",
        METRICS_APPLICATION="e",
        METRICS_TRACE_CONTEXT="false",
    )
    config = metrics_configuration_factory()
    assert config.telemetry.trace_context is False
    manager = config.make_manager()
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    names = {f["name"] for f in publisher.avro_schema["fields"]}
    assert not names & TRACE_FIELDS
    assert "n" in names


async def test_trace_context_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, METRICS_ENABLED="false", METRICS_APPLICATION="e")
    manager = metrics_configuration_factory().make_manager()
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    assert {f["name"] for f in publisher.avro_schema["fields"]} >= TRACE_FIELDS


def test_telemetry_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        METRICS_ENABLED="false",
        METRICS_APPLICATION="f",
        METRICS_OTEL_LOGS="true",
        METRICS_PRODUCER_SPANS="true",
    )
    config = metrics_configuration_factory()
    options = config.telemetry
    assert (options.logs, options.producer_spans, options.trace_context) == (
        True,
        True,
        True,
    )


def test_delivery_and_buffer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(
        monkeypatch,
        METRICS_DELIVERY_TIMEOUT="7.5",
        METRICS_BUFFER_MAX_EVENTS="10",
        METRICS_BUFFER_MAX_BYTES="2048",
        METRICS_BUFFER_OVERFLOW="drop_newest",
    )
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    assert config.delivery.delivery_timeout == 7.5
    buffer = config.delivery.buffer
    assert (buffer.max_events, buffer.max_bytes) == (10, 2048)
    assert buffer.overflow is OverflowPolicy.DROP_NEWEST


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False)])
def test_raise_on_error_is_read(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    kafka_env(monkeypatch, METRICS_RAISE_ON_ERROR=value)
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    assert config.raise_on_error is expected


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("false", False), ("true", True)]
)
def test_enable_idempotence_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool | None
) -> None:
    # Unset means "use it unless the broker refuses it"; the fallback itself
    # is tested against Tansu in test_kafka_lifecycle.py.
    if value is None:
        kafka_env(monkeypatch)
    else:
        kafka_env(monkeypatch, METRICS_ENABLE_IDEMPOTENCE=value)
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    assert config.delivery.enable_idempotence is expected


def test_close_timeout_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(monkeypatch)
    default = metrics_configuration_factory()
    assert isinstance(default, KafkaMetricsConfiguration)
    assert default.delivery.close_timeout == 15.0
    assert default.make_manager().options.close_timeout == 15.0
    kafka_env(monkeypatch, METRICS_CLOSE_TIMEOUT="7.5")
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    assert config.make_manager().options.close_timeout == 7.5
    kafka_env(monkeypatch, METRICS_CLOSE_TIMEOUT="0")
    with pytest.raises(ValidationError, match=r"METRICS_CLOSE_TIMEOUT='0'"):
        metrics_configuration_factory()


# -- Producer spans and the log export --------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("false", False), ("event", "event"), ("batch", "batch")],
)
def test_producer_spans_setting(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: object
) -> None:
    kafka_env(monkeypatch, METRICS_PRODUCER_SPANS=value)
    config = KafkaMetricsConfiguration()
    assert config.telemetry.producer_spans == expected


def test_unknown_producer_spans_value_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(monkeypatch, METRICS_PRODUCER_SPANS="sometimes")
    with pytest.raises(ValidationError, match="METRICS_PRODUCER_SPANS='sometimes'"):
        KafkaMetricsConfiguration()


def test_log_export_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(monkeypatch, METRICS_OTEL_LOGS="true")
    assert KafkaMetricsConfiguration().telemetry.log_export is None


def test_log_export_settings_describe_a_log_export(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(
        monkeypatch,
        METRICS_OTEL_LOGS="true",
        METRICS_LOG_EXPORT_KAFKA="true",
        METRICS_LOG_EXPORT_TOPIC="collector_logs",
        METRICS_LOG_EXPORT_ENCODING="otlp_json",
        METRICS_LOG_EXPORT_PARTITION_BY_TRACE_ID="true",
        METRICS_LOG_EXPORT_OTLP_ENDPOINT="http://collector:4318/v1/logs",
        METRICS_LOG_EXPORT_DIRECT="true",
        METRICS_LOG_EXPORT_TIMEOUT="2.5",
        METRICS_LOG_EXPORT_MAX_PENDING="500",
    )
    options = KafkaMetricsConfiguration().telemetry
    assert options.logs
    assert options.log_export == LogExportOptions(
        kafka=True,
        topic="collector_logs",
        encoding="otlp_json",
        partition_by_trace_id=True,
        otlp_endpoint="http://collector:4318/v1/logs",
        direct=True,
        timeout=2.5,
        max_pending=500,
    )


def test_an_otlp_endpoint_alone_exports_there_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(
        monkeypatch,
        METRICS_OTEL_LOGS="true",
        METRICS_LOG_EXPORT_OTLP_ENDPOINT="http://collector:4318/v1/logs",
    )
    export = KafkaMetricsConfiguration().telemetry.log_export
    assert export is not None
    assert (export.kafka, export.otlp_endpoint) == (
        False,
        "http://collector:4318/v1/logs",
    )


def test_log_export_without_otel_logs_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(monkeypatch, METRICS_LOG_EXPORT_KAFKA="true")
    with pytest.raises(ValidationError, match="METRICS_OTEL_LOGS=true"):
        KafkaMetricsConfiguration()


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("METRICS_LOG_EXPORT_ENCODING", "protobuf", "'otlp_proto' or 'otlp_json'"),
        ("METRICS_LOG_EXPORT_TIMEOUT", "0", "greater than 0"),
        ("METRICS_LOG_EXPORT_MAX_PENDING", "0", "greater than or equal to 1"),
        ("METRICS_LOG_EXPORT_TOPIC", "", "at least 1 character"),
    ],
)
def test_bad_log_export_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    kafka_env(
        monkeypatch,
        METRICS_OTEL_LOGS="true",
        METRICS_LOG_EXPORT_KAFKA="true",
        **{variable: value},
    )
    with pytest.raises(ValidationError) as caught:
        KafkaMetricsConfiguration()
    [line] = caught.value.problems  # type: ignore[attr-defined]
    assert line.startswith(f"{variable}={value!r}: ")
    assert problem in line


# -- Problems: one line each, naming the variable, what is wrong, the fix ------


@pytest.mark.parametrize(
    ("environment", "line"),
    [
        (
            {"METRICS_ENABLED": "flase"},
            "METRICS_ENABLED='flase': input should be a valid boolean, unable to"
            " interpret input; use true or false",
        ),
        (
            {"KAFKA_BOOTSTRAP_SERVERS": None},
            "KAFKA_BOOTSTRAP_SERVERS is not set; set it (Comma-separated"
            " host:port list of Kafka brokers), or set METRICS_ENABLED=false to"
            " publish no events",
        ),
        (
            {"SCHEMA_MANAGER_REGISTRY_URL": ""},
            "SCHEMA_MANAGER_REGISTRY_URL='': string should have at least 1"
            " character; give a non-empty value",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_PASSWORD": "pw"},
            "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs KAFKA_SASL_USERNAME;"
            " set it, or use PLAINTEXT or SSL",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_USERNAME and"
            " KAFKA_SASL_PASSWORD; set them, or use PLAINTEXT or SSL",
        ),
        (
            {"KAFKA_CLIENT_CERT_PATH": "/c.pem"},
            "KAFKA_CLIENT_CERT_PATH and KAFKA_CLIENT_KEY_PATH go together: set"
            " both (TLS client authentication) or neither",
        ),
        (
            {"METRICS_DELIVERY_TIMEOUT": "soon"},
            "METRICS_DELIVERY_TIMEOUT='soon': input should be a valid number,"
            " unable to parse string as a number; use seconds (such as 2.5) or a"
            " duration such as 30s, 5m or 1h30m",
        ),
        (
            # Safir's unprefixed name: the line names the variable that is set.
            {"BACKOFF_INTERVAL": "soon"},
            "BACKOFF_INTERVAL='soon': input should be a valid number, unable to"
            " parse string as a number; use seconds (such as 2.5) or a duration"
            " such as 30s, 5m or 1h30m",
        ),
        (
            {"METRICS_BUFFER_OVERFLOW": "explode"},
            "METRICS_BUFFER_OVERFLOW='explode': input should be 'block',"
            " 'drop_newest' or 'raise'",
        ),
        (
            {"METRICS_BUFFER_MAX_EVENTS": "many"},
            "METRICS_BUFFER_MAX_EVENTS='many': input should be a valid integer,"
            " unable to parse string as an integer; use a whole number",
        ),
        (
            {"SCHEMA_MANAGER_COMPATIBILITY": "BACKWARDS"},
            "SCHEMA_MANAGER_COMPATIBILITY='BACKWARDS': not a compatibility level;"
            " use one of NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD,"
            " FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, or leave it unset for"
            " the registry's default",
        ),
        (
            {"SCHEMA_MANAGER_REGISTRY_USERNAME": "svc"},
            "SCHEMA_MANAGER_REGISTRY_USERNAME and SCHEMA_MANAGER_REGISTRY_PASSWORD"
            " go together: set both (HTTP basic authentication) or neither",
        ),
        (
            {"METRICS_RETRY_BACKOFF": "10"},
            "retry_backoff (METRICS_RETRY_BACKOFF, 10.0 s) must not exceed"
            " backoff_interval (METRICS_BACKOFF_INTERVAL, 5.0 s); lower the first"
            " or raise the second",
        ),
        (
            {"METRICS_MAX_IN_FLIGHT": "3", "METRICS_ENABLE_IDEMPOTENCE": "false"},
            "max_in_flight (METRICS_MAX_IN_FLIGHT, 3) above 1 needs Kafka's"
            " idempotent producer, which enable_idempotence=False"
            " (METRICS_ENABLE_IDEMPOTENCE) turns off: without it a retried batch"
            " could be written after the batches sent behind it; set"
            " max_in_flight to 1 or leave enable_idempotence unset",
        ),
        (
            {"METRICS_LOG_EXPORT_KAFKA": "true"},
            "log_export (METRICS_LOG_EXPORT_*) needs logs=True: it exports the"
            " events' log records; set METRICS_OTEL_LOGS=true, or unset every"
            " METRICS_LOG_EXPORT_* variable",
        ),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else None,
)
def test_each_problem_is_one_line_naming_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str | None], line: str
) -> None:
    kafka_env(monkeypatch)
    for name, value in environment.items():
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        metrics_configuration_factory()
    assert caught.value.problems == [line]
    assert str(caught.value) == (
        f"1 problem in the otel-kafka-events configuration:\n- {line}"
    )


def test_every_problem_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        METRICS_ENABLED="flase",
        METRICS_CLOSE_TIMEOUT="0",
        METRICS_PRODUCER_SPANS="sometimes",
    )
    with pytest.raises(ConfigurationError) as caught:
        metrics_configuration_factory()
    problems = caught.value.problems
    assert [problem.split(maxsplit=1)[0].split("=")[0] for problem in problems] == [
        "METRICS_APPLICATION",
        "METRICS_PRODUCER_SPANS",
        "METRICS_ENABLED",
        "KAFKA_BOOTSTRAP_SERVERS",
        "SCHEMA_MANAGER_REGISTRY_URL",
        "METRICS_CLOSE_TIMEOUT",
    ]
    # A value two members of a union refuse is one problem, saying what fits.
    assert problems[1] == (
        "METRICS_PRODUCER_SPANS='sometimes' is not valid; expected: PRODUCER"
        " spans 'send {topic}': event (or true) for one per event, a child of"
        " the caller's span; batch for one per batch sent, linked to its events'"
        " spans"
    )
    assert str(caught.value).splitlines()[0] == (
        "6 problems in the otel-kafka-events configuration:"
    )


def test_lines_never_name_internal_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, METRICS_ENABLED="flase", KAFKA_SECURITY_PROTOCOL="SSL")
    with pytest.raises(ConfigurationError) as caught:
        metrics_configuration_factory()
    text = str(caught.value)
    for alias in ("appName", "bootstrapServers", "registryUrl", "schemaManager"):
        assert alias not in text
    assert "input_value" not in text
    assert "METRICS_APPLICATION is not set" in text


def test_a_configuration_error_is_pydantics_validation_error_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Safir's settings raise pydantic's ValidationError, and its users catch
    # that; ours is one, and a ValueError, and one of the library's errors.
    kafka_env(monkeypatch, METRICS_ENABLED="flase")
    with pytest.raises(ValidationError) as caught:
        metrics_configuration_factory()
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, ValueError)
    assert isinstance(error, EventManagerUsageError)
    # pydantic's details, for code that wants them.
    [detail] = error.errors()
    assert detail["type"] == "bool_parsing"
    # By field name, or by variable with older pydantic-settings.
    assert detail["loc"] in (("enabled",), ("METRICS_ENABLED",))
    assert detail["input"] == "flase"
    assert error.error_count() == 1
    assert error.title == "KafkaMetricsConfiguration"


def test_keyword_arguments_are_named_as_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(monkeypatch)
    monkeypatch.delenv("METRICS_APPLICATION")  # given as an argument here
    with pytest.raises(ConfigurationError) as caught:
        KafkaMetricsConfiguration(
            application="shop",
            enableIdempotence=False,  # type: ignore[call-arg]
            raiseOnError="maybe",
        )
    assert caught.value.problems == [
        "argument delivery.raise_on_error='maybe': input should be a valid"
        " boolean, unable to interpret input; use true or false",
        "argument enableIdempotence is not a setting of"
        " KafkaMetricsConfiguration; did you mean 'enable_idempotence'?",
    ]


def test_an_applications_own_settings_get_the_error_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Safir's pattern: the factory as the default of an application's field.
    class Config(BaseSettings):
        metrics: MetricsConfiguration = Field(
            default_factory=metrics_configuration_factory
        )

    kafka_env(monkeypatch, METRICS_BUFFER_MAX_EVENTS="0")
    with pytest.raises(ConfigurationError) as caught:
        Config()
    assert caught.value.problems == [
        "METRICS_BUFFER_MAX_EVENTS='0': input should be greater than or equal to 1"
    ]


def test_each_settings_class_raises_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_env(
        monkeypatch,
        KAFKA_SECURITY_PROTOCOL="CARRIER_PIGEON",
        SCHEMA_MANAGER_REGISTRY_TIMEOUT="0",
        METRICS_TRACE_CONTEXT="maybe",
    )
    with pytest.raises(ConfigurationError) as kafka:
        KafkaConnectionSettings(bootstrap_servers="h:1")
    assert kafka.value.problems == [
        "KAFKA_SECURITY_PROTOCOL='CARRIER_PIGEON': input should be 'PLAINTEXT',"
        " 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'"
    ]
    with pytest.raises(ConfigurationError, match="SCHEMA_MANAGER_REGISTRY_TIMEOUT='0'"):
        SchemaManagerSettings(registry_url="http://h")
    with pytest.raises(ConfigurationError, match="METRICS_TRACE_CONTEXT='maybe'"):
        options_from_environment(TelemetryOptions)


# -- Variables that look like settings and are not -------------------------------


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("METRICS_ENABLD", "METRICS_ENABLED"),
        ("KAFKA_BOOTSTRAP_SERVER", "KAFKA_BOOTSTRAP_SERVERS"),
        ("SCHEMA_MANAGER_REGISTRY_URI", "SCHEMA_MANAGER_REGISTRY_URL"),
        ("METRICS_LOG_EXPORT_TOPICS", "METRICS_LOG_EXPORT_TOPIC"),
        ("METRICS_BUFFER_MAX_EVENT", "METRICS_BUFFER_MAX_EVENTS"),
        ("METRICS_OTEL_LOG", "METRICS_OTEL_LOGS"),
    ],
)
def test_a_misspelt_variable_gives_one_warning_with_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, closest: str
) -> None:
    kafka_env(monkeypatch, **{variable: "false"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(2):  # read twice from one place: warned once
            config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    [warning] = caught
    assert warning.category is UnknownSettingWarning
    assert str(warning.message) == (
        f"{variable} is set, but no setting reads it; did you mean {closest}?"
        " (set METRICS_STRICT_ENV=true to make this an error)"
    )
    # Attributed to the line that read the configuration, not to ours.
    assert warning.filename == __file__


def test_a_name_close_to_no_setting_gets_no_suggestion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(monkeypatch, METRICS_SOMETHING_ELSE_ENTIRELY="1")
    with pytest.warns(UnknownSettingWarning) as caught:
        metrics_configuration_factory()
    assert str(caught[0].message).startswith(
        "METRICS_SOMETHING_ELSE_ENTIRELY is set, but no setting reads it ("
    )


@pytest.mark.parametrize(
    "variable",
    [
        # Kubernetes' service links for Services named kafka, schema-manager,
        # metrics.
        "KAFKA_SERVICE_HOST",
        "KAFKA_SERVICE_PORT",
        "KAFKA_SERVICE_PORT_TCP_CLIENT",
        "KAFKA_PORT",
        "KAFKA_PORT_9092_TCP",
        "KAFKA_PORT_9092_TCP_ADDR",
        "SCHEMA_MANAGER_SERVICE_HOST",
        "METRICS_PORT_8080_TCP_PROTO",
        # Apache Kafka's own scripts.
        "KAFKA_HEAP_OPTS",
        "KAFKA_OPTS",
        "KAFKA_JMX_OPTS",
        "KAFKA_HOME",
    ],
)
def test_variables_of_other_tools_are_not_reported(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    kafka_env(monkeypatch, METRICS_STRICT_ENV="true", **{variable: "x"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(metrics_configuration_factory(), KafkaMetricsConfiguration)


def test_every_variable_a_setting_reads_is_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The names come from the models: every variable of the configuration
    # reference, and any field added later, is known without a list to keep.
    names = {
        env
        for model in (DeliveryOptions, TelemetryOptions)
        for env, _, _ in env_fields(model)
    }
    names |= {
        f"KAFKA_{field.upper()}" for field in KafkaConnectionSettings.model_fields
    }
    names |= {
        f"SCHEMA_MANAGER_{field.upper()}"
        for field in SchemaManagerSettings.model_fields
    }
    names |= {
        "METRICS_APPLICATION",
        "METRICS_ENABLED",
        "METRICS_MOCK",
        "METRICS_EVENTS_TOPIC_PREFIX",
        "METRICS_STRICT_ENV",
    }
    for name in names:
        monkeypatch.setenv(name, "x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigurationError) as caught:
            metrics_configuration_factory()
    assert not [line for line in caught.value.problems if "no setting reads" in line]


def test_strict_env_makes_an_unknown_variable_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env(monkeypatch, METRICS_STRICT_ENV="true", METRICS_ENABLD="false")
    with pytest.raises(ConfigurationError) as caught:
        metrics_configuration_factory()
    assert caught.value.problems == [
        "METRICS_ENABLD is set, but no setting reads it; did you mean METRICS_ENABLED?"
    ]
    [detail] = caught.value.errors()
    assert (detail["type"], detail["loc"]) == ("unknown_setting", ("METRICS_ENABLD",))


def test_strict_env_joins_the_other_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        METRICS_STRICT_ENV="1",
        METRICS_APLICATION="shop",
        METRICS_ENABLED="false",
    )
    with pytest.raises(ConfigurationError) as caught:
        metrics_configuration_factory()
    assert caught.value.problems == [
        "METRICS_APLICATION is set, but no setting reads it; did you mean"
        " METRICS_APPLICATION?",
        "METRICS_APPLICATION is not set; set it (Name of the application"
        " publishing events)",
    ]


def test_strict_env_as_an_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_env(monkeypatch, KAFKA_BOOTSTRAP_SERVER="h:1")
    with pytest.raises(ConfigurationError, match="KAFKA_BOOTSTRAP_SERVER is set"):
        KafkaMetricsConfiguration(strict_env=True)


def test_each_class_checks_its_own_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        KAFKA_SASL_USER="svc",
        METRICS_OTEL_LOG="true",
        SCHEMA_MANAGER_SUFIX="_dev",
    )
    readers: list[tuple[Callable[[], object], str]] = [
        (lambda: KafkaConnectionSettings(bootstrap_servers="h:1"), "KAFKA_SASL_USER"),
        (
            lambda: SchemaManagerSettings(registry_url="http://h"),
            "SCHEMA_MANAGER_SUFIX",
        ),
        (lambda: EventsConfiguration(), "METRICS_OTEL_LOG"),
        (lambda: options_from_environment(TelemetryOptions), "METRICS_OTEL_LOG"),
    ]
    for read, variable in readers:
        with pytest.warns(UnknownSettingWarning) as caught:
            read()
        assert [str(w.message).split()[0] for w in caught] == [variable]


def test_a_misspelt_variable_inside_an_applications_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Config(BaseSettings):
        metrics: MetricsConfiguration = Field(
            default_factory=metrics_configuration_factory
        )

    kafka_env(monkeypatch, METRICS_ENABLED="false", METRICS_MOKC="true")
    with pytest.warns(UnknownSettingWarning, match="did you mean METRICS_MOCK?"):
        config = Config()
    assert isinstance(config.metrics, DisabledMetricsConfiguration)


# -- FastStream, as in Safir --------------------------------------------------------


def faststream_security() -> Any:
    """FastStream's security classes; not a dependency (the dev extra has
    FastStream, for these tests)."""
    return pytest.importorskip("faststream.security")


def test_faststream_params_plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    faststream = faststream_security()
    kafka_env(monkeypatch)
    params = KafkaConnectionSettings().to_faststream_params()
    assert params["bootstrap_servers"] == "127.0.0.1:9092"
    security = params["security"]
    assert type(security) is faststream.BaseSecurity
    assert security.ssl_context is None


@pytest.mark.parametrize(
    ("protocol", "mechanism", "kind"),
    [
        ("SASL_PLAINTEXT", "SCRAM-SHA-512", "SASLScram512"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256", "SASLScram256"),
        ("SASL_SSL", "PLAIN", "SASLPlaintext"),
    ],
)
def test_faststream_params_sasl(
    monkeypatch: pytest.MonkeyPatch, protocol: str, mechanism: str, kind: str
) -> None:
    faststream = faststream_security()
    kafka_env(
        monkeypatch,
        KAFKA_SECURITY_PROTOCOL=protocol,
        KAFKA_SASL_MECHANISM=mechanism,
        KAFKA_SASL_USERNAME="svc",
        KAFKA_SASL_PASSWORD="pw",
    )
    security: Any = KafkaConnectionSettings().to_faststream_params()["security"]
    assert type(security) is getattr(faststream, kind)
    assert (security.username, security.password) == ("svc", "pw")
    if protocol == "SASL_SSL":
        assert isinstance(security.ssl_context, ssl.SSLContext)
    else:
        assert security.ssl_context is None


def test_faststream_params_ssl_relaxes_strict_verification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    faststream = faststream_security()
    kafka_env(monkeypatch, KAFKA_SECURITY_PROTOCOL="SSL")
    settings = KafkaConnectionSettings()
    security = settings.to_faststream_params()["security"]
    assert type(security) is faststream.BaseSecurity
    context = security.ssl_context
    assert isinstance(context, ssl.SSLContext)
    # As Safir: Strimzi's broker certificates lack the key identifier that
    # strict verification (Python 3.13's default) requires.
    assert not context.verify_flags & ssl.VERIFY_X509_STRICT
    options = settings.to_client_options()
    assert not options["ssl_context"].verify_flags & ssl.VERIFY_X509_STRICT


# -- The command line says the same ------------------------------------------------


def test_the_command_line_prints_the_same_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_env(monkeypatch, METRICS_TRACE_CONTEXT="maybe", METRICS_OTEL_LOG="true")
    with (
        pytest.warns(UnknownSettingWarning),
        pytest.raises(ConfigurationError) as library,
    ):
        options_from_environment(TelemetryOptions)
    result = CliRunner().invoke(cli, ["schema", "json:JSONDecoder"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "warning: METRICS_OTEL_LOG is set, but no setting reads it; did you mean"
        " METRICS_OTEL_LOGS? (set METRICS_STRICT_ENV=true to make this an error)",
        f"error: {str(library.value).splitlines()[0]}",
        *(f"- {problem}" for problem in library.value.problems),
    ]
