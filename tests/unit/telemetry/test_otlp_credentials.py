"""Credentials in an OTLP endpoint URL are sent as HTTP basic
authentication, to the URL without them."""

from __future__ import annotations

import io
import urllib.request

import pytest

from otel_kafka_events import LogExportOptions
from otel_kafka_events._secrets import basic_auth
from otel_kafka_events._telemetry._log_destinations import http_destination

MARKER = "MARKER-otlp-5e8a"


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
        otlp_endpoint=f"https://otel:{MARKER}@collector.example/v1/logs"
    )
    destination = http_destination(export)
    destination.send([(None, b"request")]).result(timeout=5)
    destination.close(1.0)
    [request] = sent
    assert request.full_url == "https://collector.example/v1/logs"
    assert request.get_header("Authorization") == basic_auth(("otel", MARKER))
    assert MARKER not in repr(export)
