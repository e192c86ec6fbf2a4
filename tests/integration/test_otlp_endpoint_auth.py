"""An OTLP endpoint URL with credentials: basic authentication, never shown.

`LogExportOptions.otlp_endpoint` may carry ``user:password@``, as a
Collector behind an authenticating ingress needs. Both export paths (the
direct one's own HTTP sender, the SDK's OTLPLogExporter) send them as an
``Authorization: Basic`` header to the URL without them; the password shows
nowhere: not in the options, the log lines, or the requests' URLs. The
endpoint here refuses (401) any request without the right header.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from structlog.testing import capture_logs

from otel_kafka_events import EventPayload, LogExportOptions, TelemetryOptions
from otel_kafka_events._secrets import basic_auth

from ..conftest import ManagerFactory

SECRET = "MARKER-otlp-pass-3c9d"


class Login(EventPayload):
    username: str


class _Handler(BaseHTTPRequestHandler):
    server: AuthenticatingEndpoint

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        authorization = self.headers.get("Authorization")
        self.server.seen.append((self.path, authorization))
        self.send_response(200 if authorization == self.server.expected else 401)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class AuthenticatingEndpoint(ThreadingHTTPServer):
    """An OTLP/HTTP logs endpoint that takes only ``otel:SECRET``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.expected = basic_auth(("otel", SECRET))
        self.seen: list[tuple[str, str | None]] = []


@pytest.fixture
def endpoint() -> Iterator[AuthenticatingEndpoint]:
    server = AuthenticatingEndpoint()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "sdk"])
async def test_an_otlp_endpoint_with_credentials_is_reached_with_basic_auth(
    make_kafka_manager: ManagerFactory, endpoint: AuthenticatingEndpoint, direct: bool
) -> None:
    port = endpoint.server_address[1]
    url = f"http://otel:{SECRET}@127.0.0.1:{port}/v1/logs"
    options = TelemetryOptions(
        logs=True,
        log_export=LogExportOptions(
            kafka=False, otlp_endpoint=url, direct=direct, timeout=5.0
        ),
    )
    with capture_logs() as logs:
        manager = await make_kafka_manager(telemetry=options)
        publisher = await manager.create_publisher("login", Login)
        for name in ("ada", "grace", "edsger"):
            await publisher.publish(Login(username=name), wait=True)
        assert await manager.aclose(timeout=10) == 0
    [stats] = manager.log_export_stats.values()
    assert (stats.exported, stats.failed) == (3, 0)
    assert endpoint.seen
    assert {path for path, _ in endpoint.seen} == {"/v1/logs"}
    assert {authorization for _, authorization in endpoint.seen} == {endpoint.expected}
    for text in (repr(options), str(options), options.model_dump_json(), repr(logs)):
        assert SECRET not in text
