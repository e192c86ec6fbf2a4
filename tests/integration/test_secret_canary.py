"""A canary password in every secret variable appears in nothing a process
writes.

The canary is set in ``KAFKA_SASL_PASSWORD``, ``SCHEMA_MANAGER_REGISTRY_PASSWORD``
(or as the password in ``SCHEMA_MANAGER_REGISTRY_URL``), a misspelt
``KAFKA_SASL_PASSWROD`` and, in the ``otlp`` cases, the password in
``METRICS_LOG_EXPORT_OTLP_ENDPOINT``. Each scenario is a real process
(`secret_scenarios.py`, or the command line) whose every output is read:
configuration errors and their tracebacks, printed configurations, logs at
DEBUG (ours, structlog's, aiokafka's, httpx's), warnings, failed
connections to a broker that refuses SASL and to a registry that refuses
the credentials (401) or is not there, a manager never closed, and the
commands' errors. Each scenario also checks that it failed the way it meant
to, so a test that tests nothing cannot pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from otel_kafka_events_devstack import LocalKafkaStack

CANARY = "CANARY-pw-3e9f61"
TOPIC = "lsst.square.metrics.events.shop"
SCENARIOS = Path(__file__).with_name("secret_scenarios.py")


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def refusing_registry() -> Iterator[str]:
    """A registry that refuses every request with 401, as one does for a
    wrong password."""

    body = json.dumps({"error_code": 40101, "message": "Unauthorized"}).encode()

    class Handler(BaseHTTPRequestHandler):
        def _refuse(self) -> None:
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _refuse  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass(frozen=True)
class Secrets:
    """Where the canary goes: the registry's password as its own setting or
    in its URL, and the OTLP endpoint's password or not."""

    in_url: bool
    otlp: bool

    def environment(self, broker: str, registry: str, **extra: str) -> dict[str, str]:
        base = {
            name: value
            for name, value in os.environ.items()
            if not name.upper().startswith(
                ("METRICS_", "KAFKA_", "SCHEMA_MANAGER_", "OTEL_")
            )
        }
        values = {
            "METRICS_APPLICATION": "shop",
            "KAFKA_BOOTSTRAP_SERVERS": broker,
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_USERNAME": "svc",
            "KAFKA_SASL_PASSWORD": CANARY,
            "KAFKA_SASL_PASSWROD": CANARY,  # misspelt: reported, never shown
        }
        if self.in_url:
            values["SCHEMA_MANAGER_REGISTRY_URL"] = f"http://svc:{CANARY}@{registry}"
        else:
            values["SCHEMA_MANAGER_REGISTRY_URL"] = f"http://{registry}"
            values["SCHEMA_MANAGER_REGISTRY_USERNAME"] = "svc"
            values["SCHEMA_MANAGER_REGISTRY_PASSWORD"] = CANARY
        if self.otlp:
            endpoint = f"http://svc:{CANARY}@127.0.0.1:{unused_port()}/v1/logs"
            values["METRICS_OTEL_LOGS"] = "true"
            values["METRICS_LOG_EXPORT_OTLP_ENDPOINT"] = endpoint
        return {**base, **values, **extra}


SECRETS = [
    pytest.param(Secrets(in_url=False, otlp=False), id="settings"),
    pytest.param(Secrets(in_url=True, otlp=False), id="url"),
    pytest.param(Secrets(in_url=False, otlp=True), id="otlp"),
]


def run(command: list[str], environment: dict[str, str]) -> str:
    """Everything the process writes, stdout and stderr."""
    done = subprocess.run(
        command,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return f"{done.stdout}\n{done.stderr}\nexit status {done.returncode}"


def scenario(name: str, environment: dict[str, str], *flags: str) -> str:
    return run([sys.executable, "-X", "dev", str(SCENARIOS), name, *flags], environment)


def assert_no_canary(output: str) -> None:
    assert CANARY not in output, output


@pytest.mark.parametrize("secrets", SECRETS)
def test_printed_configuration(secrets: Secrets) -> None:
    output = scenario("configuration", secrets.environment("h:1", "127.0.0.1:1"))
    assert "KafkaMetricsConfiguration" in output
    assert "KAFKA_SASL_PASSWROD is set, but no setting reads it" in output
    assert_no_canary(output)


# Configurations that cannot work, each with every secret set (None: unset).
BROKEN: dict[str, dict[str, str | None]] = {
    "no SASL username": {"KAFKA_SASL_USERNAME": None},
    "a bad value beside them": {"METRICS_ENABLED": "flase"},
    "strict": {"METRICS_STRICT_ENV": "true"},
    "registry password alone": {
        "SCHEMA_MANAGER_REGISTRY_USERNAME": None,
        "SCHEMA_MANAGER_REGISTRY_PASSWORD": CANARY,
    },
}


@pytest.mark.parametrize("problem", list(BROKEN))
@pytest.mark.parametrize("secrets", SECRETS)
def test_configuration_errors(secrets: Secrets, problem: str) -> None:
    environment = secrets.environment("h:1", "127.0.0.1:1")
    for name, value in BROKEN[problem].items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    output = scenario("configuration", environment, "crash")
    assert "in the otel-kafka-events configuration:" in output
    assert "Traceback" in output
    assert output.endswith("exit status 1")
    assert_no_canary(output)


@pytest.mark.parametrize("raise_on_error", ["false", "true"])
@pytest.mark.parametrize("secrets", SECRETS)
async def test_a_broker_refusing_sasl(
    secrets: Secrets, raise_on_error: str, local_kafka_stack: LocalKafkaStack
) -> None:
    # The local broker knows no SASL: the handshake fails, and the error
    # says so (Tansu and noida-db answer UnsupportedSaslMechanism, Apache
    # Kafka IllegalSaslState).
    environment = secrets.environment(
        local_kafka_stack.bootstrap_servers,
        f"127.0.0.1:{unused_port()}",
        METRICS_RAISE_ON_ERROR=raise_on_error,
    )
    output = await asyncio.to_thread(scenario, "publish", environment)
    assert "Kafka refused the SASL handshake" in output
    assert "unreachable" not in output
    assert f"Cannot connect to Kafka at {local_kafka_stack.bootstrap_servers}" in output
    assert_no_canary(output)


@pytest.mark.parametrize("raise_on_error", ["false", "true"])
@pytest.mark.parametrize("secrets", SECRETS)
async def test_a_registry_refusing_the_password(
    secrets: Secrets,
    raise_on_error: str,
    local_kafka_stack: LocalKafkaStack,
    refusing_registry: str,
) -> None:
    # The broker lets the client in (the SASL settings stay in the
    # environment, unused); the registry answers 401.
    await local_kafka_stack.create_topic(TOPIC, exist_ok=True)
    environment = secrets.environment(
        local_kafka_stack.bootstrap_servers,
        refusing_registry,
        METRICS_RAISE_ON_ERROR=raise_on_error,
        KAFKA_SECURITY_PROTOCOL="PLAINTEXT",
    )
    output = await asyncio.to_thread(scenario, "publish", environment)
    assert f"Schema registry at http://{refusing_registry}/ refused" in output
    assert "HTTP 401" in output
    assert_no_canary(output)


@pytest.mark.parametrize("secrets", SECRETS)
def test_nothing_answers(secrets: Secrets) -> None:
    environment = secrets.environment(
        f"127.0.0.1:{unused_port()}",
        f"127.0.0.1:{unused_port()}",
        METRICS_RAISE_ON_ERROR="true",
    )
    output = scenario("publish", environment)
    assert "Cannot connect" in output or "unreachable" in output, output
    assert_no_canary(output)


@pytest.mark.parametrize("secrets", SECRETS)
def test_a_forgotten_close(secrets: Secrets) -> None:
    environment = secrets.environment(
        f"127.0.0.1:{unused_port()}", f"127.0.0.1:{unused_port()}"
    )
    output = scenario("forget", environment)
    assert "was not closed: 1 event accepted by publish() were never" in output
    assert "ResourceWarning" in output
    assert_no_canary(output)


COMMANDS = {
    "tail": ["tail", "lsst.square.metrics.events.shop"],
    "subjects": ["subjects"],
    "schema": ["schema", "--subject", "lsst.square.metrics.events.shop.ping"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("secrets", SECRETS)
def test_command_line(
    secrets: Secrets,
    command: str,
    local_kafka_stack: LocalKafkaStack,
    refusing_registry: str,
) -> None:
    environment = secrets.environment(
        local_kafka_stack.bootstrap_servers, refusing_registry
    )
    cli = [sys.executable, "-m", "otel_kafka_events", *COMMANDS[command]]
    output = run(cli, environment)
    assert "error:" in output
    assert_no_canary(output)
    # And with a configuration that cannot work.
    environment.pop("KAFKA_SASL_USERNAME")
    environment["METRICS_TRACE_CONTEXT"] = "maybe"
    output = run(cli, environment)
    assert "error:" in output
    assert_no_canary(output)
