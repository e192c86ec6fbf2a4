"""A registry that cannot serve says so, naming its URL and its answer.

Real HTTP servers on 127.0.0.1 stand in for a registry behind a broken
ingress (HTML with 503), one that refuses the service's credentials (401),
and one that is not there at all; the manager runs against a real broker.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from otel_kafka_events import EventPayload
from otel_kafka_events.errors import SchemaRegistryError

from ..conftest import ManagerFactory


class Ping(EventPayload):
    """A minimal payload."""

    n: int


def serve(status: int, body: bytes, content_type: str) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def ingress_down() -> Iterator[str]:
    yield from serve(503, b"<html><h1>503 Service Unavailable</h1></html>", "text/html")


@pytest.fixture
def refusing() -> Iterator[str]:
    body = json.dumps({"error_code": 40101, "message": "Unauthorized"}).encode()
    yield from serve(401, body, "application/json")


@pytest.fixture
def nowhere() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize(
    ("registry", "answer"),
    [("ingress_down", "HTTP 503"), ("refusing", "HTTP 401"), ("nowhere", None)],
)
async def test_registration_errors_name_the_registry_and_its_answer(
    make_kafka_manager: ManagerFactory,
    request: pytest.FixtureRequest,
    registry: str,
    answer: str | None,
) -> None:
    url = request.getfixturevalue(registry)
    manager = await make_kafka_manager(registry_url=url, raise_on_error=True)
    with pytest.raises(SchemaRegistryError) as caught:
        await manager.create_publisher("ping", Ping)
    message = str(caught.value)
    assert url.removeprefix("http://") in message
    if answer is not None:
        assert answer in message
