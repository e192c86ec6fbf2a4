"""Secrets never leak: not in reprs, dumps, logs or error messages.

Every secret the configuration takes is set to a marker string; the test
fails if the marker appears anywhere a person or a log pipeline could see it.
"""

from __future__ import annotations

import io
import logging
import urllib.request
from collections.abc import Iterator
from datetime import timedelta

import pytest
import structlog

from otel_kafka_events import (
    EventPayload,
    LogExportOptions,
    metrics_configuration_factory,
)
from otel_kafka_events._secrets import basic_auth, mask_url, split_credentials
from otel_kafka_events._telemetry._log_destinations import http_destination
from otel_kafka_events.config import KafkaMetricsConfiguration

SASL_MARKER = "MARKER-sasl-7f3a"
REGISTRY_MARKER = "MARKER-registry-9c1d"
URL_MARKER = "MARKER-url-4b2e"
OTLP_MARKER = "MARKER-otlp-5e8a"
MARKERS = (SASL_MARKER, REGISTRY_MARKER, URL_MARKER, OTLP_MARKER)


class Ordered(EventPayload):
    item: str
    waited: timedelta


def assert_clean(text: str, where: str) -> None:
    for marker in MARKERS:
        assert marker not in text, f"{marker} leaked in {where}: {text[:500]}"


def exception_texts(error: BaseException) -> Iterator[str]:
    """The message and repr of an error and of every error it chains to."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        current = current.__cause__ or current.__context__


def secret_env(monkeypatch: pytest.MonkeyPatch, *, in_url: bool) -> None:
    monkeypatch.setenv("METRICS_APPLICATION", "shop")
    monkeypatch.setenv("METRICS_OTEL_LOGS", "true")
    monkeypatch.setenv(
        "METRICS_LOG_EXPORT_OTLP_ENDPOINT",
        f"http://otel:{OTLP_MARKER}@127.0.0.1:1/v1/logs",
    )
    monkeypatch.setenv("METRICS_LOG_EXPORT_DIRECT", str(in_url).lower())
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", SASL_MARKER)
    if in_url:
        monkeypatch.setenv(
            "SCHEMA_MANAGER_REGISTRY_URL", f"http://svc:{URL_MARKER}@127.0.0.1:1"
        )
    else:
        monkeypatch.setenv("SCHEMA_MANAGER_REGISTRY_URL", "http://127.0.0.1:1")
        monkeypatch.setenv("SCHEMA_MANAGER_REGISTRY_USERNAME", "svc")
        monkeypatch.setenv("SCHEMA_MANAGER_REGISTRY_PASSWORD", REGISTRY_MARKER)


@pytest.mark.parametrize("in_url", [False, True], ids=["settings", "url"])
def test_configuration_never_shows_secrets(
    monkeypatch: pytest.MonkeyPatch, in_url: bool
) -> None:
    secret_env(monkeypatch, in_url=in_url)
    config = metrics_configuration_factory()
    assert isinstance(config, KafkaMetricsConfiguration)
    # The secrets are there, for the clients.
    options = config.kafka.to_client_options()
    assert options["sasl_plain_password"] == SASL_MARKER
    export = config.telemetry.log_export
    assert export is not None
    assert export.otlp_endpoint is not None
    assert OTLP_MARKER in export.otlp_endpoint
    for model in (
        config,
        config.kafka,
        config.schema_manager,
        config.telemetry,
        export,
    ):
        assert_clean(repr(model), f"repr({type(model).__name__})")
        assert_clean(str(model), f"str({type(model).__name__})")
        assert_clean(model.model_dump_json(), f"{type(model).__name__} JSON")
        assert_clean(str(model.model_dump()), f"{type(model).__name__} dump")
    if in_url:
        assert "svc:**********@127.0.0.1:1" in repr(config.schema_manager)
    assert "otel:**********@127.0.0.1:1" in repr(export)


@pytest.mark.parametrize("raise_on_error", [False, True])
@pytest.mark.parametrize("in_url", [False, True], ids=["settings", "url"])
async def test_failed_connections_never_show_secrets(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    raise_on_error: bool,
    in_url: bool,
) -> None:
    secret_env(monkeypatch, in_url=in_url)
    monkeypatch.setenv("METRICS_RAISE_ON_ERROR", str(raise_on_error).lower())
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    # Structlog sends through the standard library, at every level.
    structlog.configure(
        processors=[structlog.stdlib.render_to_log_kwargs],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    try:
        with structlog.testing.capture_logs() as entries:
            config = metrics_configuration_factory()
            manager = config.make_manager(
                close_timeout=2, delivery_timeout=1, retry_backoff=0.05
            )
            try:
                await manager.initialize()
            except Exception as exc:
                errors.append(exc)
            try:
                await manager.initialize()
                publisher = await manager.create_publisher("ordered", Ordered)
                await publisher.publish(
                    Ordered(item="x", waited=timedelta(0)), wait=True
                )
            except Exception as exc:
                errors.append(exc)
            await manager.aclose()
    finally:
        structlog.reset_defaults()
    assert errors or entries, "nothing failed: the test tested nothing"
    for error in errors:
        for text in exception_texts(error):
            assert_clean(text, "an error message")
    for entry in entries:
        assert_clean(repr(entry), "a structlog entry")
    for record in caplog.records:
        assert_clean(record.getMessage(), "a stdlib log record")
        assert_clean(repr(record.__dict__), "a stdlib log record")
    if raise_on_error:
        assert errors


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://u:p%40ss@r.example/x", "https://u:**********@r.example/x"),
        ("https://token@r.example", "https://**********@r.example"),
        ("http://r.example:8081", "http://r.example:8081"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_basic_auth_header() -> None:
    # RFC 7617's example.
    assert (
        basic_auth(("Aladdin", "open sesame")) == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    )


def test_otlp_requests_carry_credentials_as_a_header_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[urllib.request.Request] = []

    class Answer(io.BytesIO):
        def __enter__(self) -> Answer:
            return self

    def urlopen(request: urllib.request.Request, timeout: float) -> Answer:
        sent.append(request)
        return Answer(b"")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    export = LogExportOptions(
        otlp_endpoint=f"https://otel:{OTLP_MARKER}@collector.example/v1/logs"
    )
    destination = http_destination(export)
    destination.send([(None, b"request")]).result(timeout=5)
    destination.close(1.0)
    [request] = sent
    assert request.full_url == "https://collector.example/v1/logs"
    assert request.get_header("Authorization") == basic_auth(("otel", OTLP_MARKER))


def test_split_credentials_decodes() -> None:
    clean, credentials = split_credentials("https://u%3A1:p%40ss@r.example:1/x")
    assert clean == "https://r.example:1/x"
    assert credentials == ("u:1", "p@ss")
