"""Secrets never leak: not in reprs, dumps, logs, warnings or errors.

A canary password is set in every variable that holds a secret
(``KAFKA_SASL_PASSWORD``, ``SCHEMA_MANAGER_REGISTRY_PASSWORD`` or the
password in ``SCHEMA_MANAGER_REGISTRY_URL``, a misspelt
``KAFKA_SASL_PASSWROD``, and in the ``otlp`` cases the password in
``METRICS_LOG_EXPORT_OTLP_ENDPOINT``); a test fails if it appears anywhere
a person or a log pipeline could see it: ``repr``, ``str``, JSON and dumps
of the settings, a `ConfigurationError`'s text, ``args``, pydantic details
and traceback, an application's own `pydantic.ValidationError`, warnings,
and the logs and errors of a manager whose registry refuses it. Whole
processes, with real brokers and the command line, are in
``tests/integration/test_secret_canary.py``.
"""

from __future__ import annotations

import logging
import traceback
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings

from otel_kafka_events import (
    EventPayload,
    KafkaEventManager,
    MetricsConfiguration,
    metrics_configuration_factory,
)
from otel_kafka_events._encoding._registry import (
    HttpSchemaRegistry,
    make_registry_client,
)
from otel_kafka_events._secrets import (
    MASK,
    hide_secrets,
    is_secret_name,
    mask_url,
    split_credentials,
)
from otel_kafka_events.config import KafkaMetricsConfiguration
from otel_kafka_events.errors import ConfigurationError
from otel_kafka_events.testing import MemoryTransport

from ..config_support import clean_environment

__all__ = ["clean_environment"]  # the autouse fixture

CANARY = "CANARY-pw-7f3a91"


class Ordered(EventPayload):
    item: str


def assert_clean(text: str, where: str) -> None:
    assert CANARY not in text, f"the canary leaked in {where}: {text[:2000]}"


def exception_texts(error: BaseException) -> Iterator[str]:
    """Everything an error can show: its text and repr, its ``args``, its
    pydantic details, the traceback Python would print (with causes and
    contexts), and the same of every error it chains to."""
    yield "".join(traceback.format_exception(error))
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(current.args)
        if isinstance(current, ValidationError):
            yield repr(current.errors())
            yield current.json()
        current = current.__cause__ or current.__context__


def secret_env(
    monkeypatch: pytest.MonkeyPatch, *, in_url: bool, otlp: bool = False
) -> None:
    monkeypatch.setenv("METRICS_APPLICATION", "shop")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", CANARY)
    monkeypatch.setenv("KAFKA_SASL_PASSWROD", CANARY)  # misspelt
    if in_url:
        monkeypatch.setenv(
            "SCHEMA_MANAGER_REGISTRY_URL", f"http://svc:{CANARY}@127.0.0.1:1"
        )
    else:
        monkeypatch.setenv("SCHEMA_MANAGER_REGISTRY_URL", "http://127.0.0.1:1")
        monkeypatch.setenv("SCHEMA_MANAGER_REGISTRY_USERNAME", "svc")
        monkeypatch.setenv("SCHEMA_MANAGER_REGISTRY_PASSWORD", CANARY)
    if otlp:
        monkeypatch.setenv("METRICS_OTEL_LOGS", "true")
        monkeypatch.setenv(
            "METRICS_LOG_EXPORT_OTLP_ENDPOINT",
            f"http://svc:{CANARY}@127.0.0.1:1/v1/logs",
        )


SECRETS = [
    pytest.param({"in_url": False}, id="settings"),
    pytest.param({"in_url": True}, id="url"),
    pytest.param({"in_url": False, "otlp": True}, id="otlp"),
]


@pytest.mark.parametrize("where", SECRETS)
def test_configuration_never_shows_secrets(
    monkeypatch: pytest.MonkeyPatch, where: dict[str, bool]
) -> None:
    secret_env(monkeypatch, **where)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    # The secrets are there, for the clients.
    options = config.kafka.to_client_options()
    assert options["sasl_plain_password"] == CANARY
    for model in (config, config.kafka, config.schema_manager, config.telemetry):
        name = type(model).__name__
        assert_clean(repr(model), f"repr({name})")
        assert_clean(str(model), f"str({name})")
        assert_clean(model.model_dump_json(), f"{name} JSON")
        assert_clean(str(model.model_dump()), f"{name} dump")
    assert_clean(repr(config.telemetry.log_export), "repr(LogExportOptions)")
    # The misspelt variable is named, its value never shown.
    assert any("KAFKA_SASL_PASSWROD" in str(w.message) for w in caught)
    for warning in caught:
        assert_clean(str(warning.message), "a warning")
    if where["in_url"]:
        assert "svc:**********@127.0.0.1:1" in repr(config.schema_manager)


# Configurations that cannot work, with every secret set (None: unset).
BROKEN: dict[str, dict[str, str | None]] = {
    "sasl-without-username": {"KAFKA_SASL_USERNAME": None},
    "bad-value-beside-secrets": {"METRICS_ENABLED": "flase"},
    "registry-password-alone": {
        "SCHEMA_MANAGER_REGISTRY_USERNAME": None,
        "SCHEMA_MANAGER_REGISTRY_PASSWORD": CANARY,
    },
    "strict-with-a-misspelt-password": {"METRICS_STRICT_ENV": "true"},
    "a-bound-broken-beside-secrets": {"METRICS_BUFFER_MAX_BYTES": "1"},
}


@pytest.mark.parametrize("problem", list(BROKEN))
@pytest.mark.parametrize("where", SECRETS)
def test_configuration_errors_never_show_secrets(
    monkeypatch: pytest.MonkeyPatch, where: dict[str, bool], problem: str
) -> None:
    secret_env(monkeypatch, **where)
    for name, value in BROKEN[problem].items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the misspelt password's warning
        with pytest.raises(ConfigurationError) as caught:
            metrics_configuration_factory()
    assert caught.value.problems
    for text in exception_texts(caught.value):
        assert_clean(text, f"a configuration error ({problem})")


def test_the_sasl_error_the_issue_met(monkeypatch: pytest.MonkeyPatch) -> None:
    # A password and no username: pydantic's text quoted every value given.
    secret_env(monkeypatch, in_url=False)
    monkeypatch.delenv("KAFKA_SASL_USERNAME")
    monkeypatch.delenv("KAFKA_SASL_PASSWROD")
    with pytest.raises(ValidationError) as caught:
        metrics_configuration_factory()
    [detail] = caught.value.errors()
    assert detail["input"]["KAFKA_SASL_PASSWORD"] == MASK
    assert "input_value" not in str(caught.value)
    assert CANARY not in str(caught.value)


def test_an_applications_own_validation_error_never_shows_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Safir's YAML style: the settings given as data to the application's
    # model, whose error (not ours) quotes what our settings refused.
    class Config(BaseSettings):
        metrics: MetricsConfiguration = Field(
            default_factory=metrics_configuration_factory
        )

    data: dict[str, Any] = {
        "metrics": {
            "application": "shop",
            "kafka": {
                "bootstrapServers": "h:1",
                "securityProtocol": "SASL_SSL",
                "saslPassword": CANARY,
            },
            "schemaManager": {"registryUrl": f"https://svc:{CANARY}@registry"},
        }
    }
    with pytest.raises(ValidationError) as caught:
        Config.model_validate(data)
    assert "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_USERNAME" in str(
        caught.value
    )
    for text in exception_texts(caught.value):
        assert_clean(text, "the application's validation error")


def refusing_registry(url: str) -> HttpSchemaRegistry:
    """The real registry client; every answer is 401 (no socket)."""

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error_code": 40101, "message": "No"})

    client = make_registry_client(url)
    client.client_kwargs["transport"] = httpx.MockTransport(refuse)
    return HttpSchemaRegistry(client)


@pytest.mark.parametrize("raise_on_error", [False, True])
async def test_a_refusing_registry_never_shows_secrets(
    caplog: pytest.LogCaptureFixture, raise_on_error: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    transport = MemoryTransport()
    transport.create_topic("events.shop")
    manager = KafkaEventManager(
        application="shop",
        topic_prefix="events",
        transport=transport,
        registry=refusing_registry(f"http://svc:{CANARY}@registry.test"),
        raise_on_error=raise_on_error,
        delivery_timeout=0.2,
        retry_backoff=0.01,
        backoff_interval=0.05,
    )
    errors: list[BaseException] = []
    with structlog.testing.capture_logs() as entries:
        await manager.initialize()
        try:
            publisher = await manager.create_publisher("ordered", Ordered)
            await publisher.publish(Ordered(item="x"), wait=True)
        except Exception as exc:
            errors.append(exc)
        await manager.aclose()
    assert errors, "nothing failed: the test tested nothing"
    assert any("HTTP 401" in str(error) for error in errors) or any(
        "HTTP 401" in repr(entry) for entry in entries
    )
    for error in errors:
        for text in exception_texts(error):
            assert_clean(text, "an error")
    for entry in entries:
        assert_clean(repr(entry), "a structlog entry")
    for record in caplog.records:
        assert_clean(record.getMessage(), "a stdlib log record")
        assert_clean(repr(record.__dict__), "a stdlib log record")


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://u:p%40ss@r.example/x", "https://u:**********@r.example/x"),
        ("https://token@r.example", "https://**********@r.example"),
        ("http://r.example:8081", "http://r.example:8081"),
        ("http://u:p@[::1", MASK),  # unreadable, with an "@": all hidden
        ("not a url", "not a url"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_split_credentials_decodes() -> None:
    clean, credentials = split_credentials("https://u%3A1:p%40ss@r.example:1/x")
    assert clean == "https://r.example:1/x"
    assert credentials == ("u:1", "p@ss")


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("KAFKA_SASL_PASSWORD", True),
        ("saslPassword", True),
        ("registry_password", True),
        ("METRICS_LOG_EXPORT_OTLP_TOKEN", True),
        ("client_secret", True),
        ("KAFKA_SASL_USERNAME", False),
        ("registry_url", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_hide_secrets_reaches_every_value() -> None:
    given = {
        "kafka": {"saslPassword": "s", "saslUsername": "u"},
        "urls": ["http://u:p@h", ("https://t@h",)],
        "n": 1,
    }
    assert hide_secrets(given) == {
        "kafka": {"saslPassword": MASK, "saslUsername": "u"},
        "urls": ["http://u:**********@h", ("https://**********@h",)],
        "n": 1,
    }
