"""The ``otel-kafka-events`` commands, end to end against the local stack.

Commands run in-process through Click's runner (``python -m`` and the
long-running ``stack`` run as subprocesses in
devstack/test_stack_command.py); events are published by a real
`KafkaEventManager` and read back by the commands.
Error paths check for one line naming the cause and no traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from opentelemetry.sdk.trace import TracerProvider

from otel_kafka_events import EventPayload, KafkaEventManager, TelemetryOptions
from otel_kafka_events._cli import cli
from otel_kafka_events._version import __version__
from otel_kafka_events.testing import EventsTopic
from otel_kafka_events_devstack import LocalKafkaStack

from ..broker_support import capabilities

pytestmark = pytest.mark.integration

SAMPLE_SRC = Path(__file__).resolve().parents[1] / "sample_project" / "src"


class Opened(EventPayload):
    """A door opened."""

    door: str


class Closed(EventPayload):
    """A door closed."""

    door: str
    seconds: float


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run the command line in-process; stdout and stderr kept apart."""
    environment: dict[str, str | None] = {
        name: None
        for name in (
            "KAFKA_BOOTSTRAP_SERVERS",
            "SCHEMA_MANAGER_REGISTRY_URL",
            "METRICS_APPLICATION",
            "METRICS_EVENTS_TOPIC_PREFIX",
            "SCHEMA_MANAGER_SUFFIX",
            "SCHEMA_MANAGER_COMPATIBILITY",
        )
    }
    environment.update(env or {})
    return CliRunner().invoke(cli, list(args), env=environment, catch_exceptions=False)


def assert_one_line_error(result: Result, exit_code: int, *needles: str) -> None:
    """An expected failure: the exit status, the cause, no traceback."""
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def stack_env(stack: LocalKafkaStack) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        "SCHEMA_MANAGER_REGISTRY_URL": stack.registry_url,
    }


def new_topic(stack: LocalKafkaStack) -> EventsTopic:
    topic = EventsTopic("test.cli", f"app_{uuid.uuid4().hex[:12]}")
    asyncio.run(stack.create_topic(topic.name))
    return topic


def manager_for(
    stack: LocalKafkaStack, topic: EventsTopic, **options: Any
) -> KafkaEventManager:
    return KafkaEventManager(
        application=topic.application,
        topic_prefix=topic.topic_prefix,
        bootstrap_servers=stack.bootstrap_servers,
        registry_url=stack.registry_url,
        enable_idempotence=capabilities().idempotent_producer,
        **options,
    )


@pytest.fixture
def published(local_kafka_stack: LocalKafkaStack) -> tuple[EventsTopic, str]:
    """A topic with opened(a), closed(a) in one trace, then opened(b) alone."""
    topic = new_topic(local_kafka_stack)
    tracer = TracerProvider().get_tracer("test")

    async def publish() -> str:
        manager = manager_for(
            local_kafka_stack, topic, telemetry=TelemetryOptions(trace_context=True)
        )
        await manager.initialize()
        opened = await manager.create_publisher("opened", Opened)
        closed = await manager.create_publisher("closed", Closed)
        with tracer.start_as_current_span("request") as span:
            await opened.publish(Opened(door="a"))
            await closed.publish(Closed(door="a", seconds=1.5))
            trace_id = format(span.get_span_context().trace_id, "032x")
        await opened.publish(Opened(door="b"))
        assert await manager.aclose() == 0
        return trace_id

    return topic, asyncio.run(publish())


def json_lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return [json.loads(line) for line in result.stdout.splitlines()]


# -- general -----------------------------------------------------------------------


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"otel-kafka-events, version {__version__}"


def test_python_dash_m_runs_the_same_command() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "otel_kafka_events", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    for command in ("stack", "tail", "schema", "subjects", "check", "demo"):
        assert command in completed.stdout


# -- tail --------------------------------------------------------------------------


def test_tail_prints_decoded_events_as_json_lines(
    local_kafka_stack: LocalKafkaStack, published: tuple[EventsTopic, str]
) -> None:
    topic, trace_id = published
    records = json_lines(invoke("tail", topic.name, env=stack_env(local_kafka_stack)))
    assert [(r["event"], r["value"]["door"]) for r in records] == [
        ("opened", "a"),
        ("closed", "a"),
        ("opened", "b"),
    ]
    assert [r["offset"] for r in records] == [0, 1, 2]
    assert {r["partition"] for r in records} == {0}
    assert records[1]["value"]["seconds"] == 1.5
    assert records[0]["trace_id"] == records[1]["trace_id"] == trace_id
    # The W3C header a consumer continues the trace from.
    assert records[0]["headers"]["traceparent"].split("-")[1] == trace_id
    assert records[2]["trace_id"] is None
    assert records[2]["headers"] == {}
    assert all(r["topic"] == topic.name for r in records)


def test_tail_filters_by_event_and_trace(
    local_kafka_stack: LocalKafkaStack, published: tuple[EventsTopic, str]
) -> None:
    topic, trace_id = published
    env = stack_env(local_kafka_stack)
    by_event = json_lines(invoke("tail", topic.name, "--event", "opened", env=env))
    assert [r["value"]["door"] for r in by_event] == ["a", "b"]
    by_trace = json_lines(
        invoke("tail", topic.name, "--trace-id", trace_id.upper(), env=env)
    )
    assert [r["event"] for r in by_trace] == ["opened", "closed"]


def test_tail_lines_and_from_beginning(
    local_kafka_stack: LocalKafkaStack, published: tuple[EventsTopic, str]
) -> None:
    topic, _ = published
    env = stack_env(local_kafka_stack)
    last = json_lines(invoke("tail", topic.name, "-n", "1", env=env))
    assert [r["offset"] for r in last] == [2]
    everything = json_lines(
        invoke("tail", topic.name, "-n", "0", "--from-beginning", env=env)
    )
    assert [r["offset"] for r in everything] == [0, 1, 2]


def test_tail_table(
    local_kafka_stack: LocalKafkaStack, published: tuple[EventsTopic, str]
) -> None:
    topic, trace_id = published
    result = invoke("tail", topic.name, "--table", env=stack_env(local_kafka_stack))
    assert result.exit_code == 0, result.stderr
    assert trace_id in result.stdout
    assert result.stdout.count("opened") == 2
    assert '"seconds": 1.5' in result.stdout
    assert "traceparent" in result.stdout
    assert "3 records shown" in result.stderr


def test_tail_unknown_topic(local_kafka_stack: LocalKafkaStack) -> None:
    result = invoke("tail", "no.such.topic", env=stack_env(local_kafka_stack))
    assert_one_line_error(
        result, 1, "'no.such.topic' does not exist", "UNKNOWN_TOPIC_OR_PARTITION"
    )
    # Asking must not have created it.
    again = invoke("tail", "no.such.topic", env=stack_env(local_kafka_stack))
    assert again.exit_code == 1


def test_tail_unreachable_broker(local_kafka_stack: LocalKafkaStack) -> None:
    env = {**stack_env(local_kafka_stack), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    assert_one_line_error(
        invoke("tail", "t", env=env),
        1,
        "cannot reach the Kafka broker at 127.0.0.1:1",
        "KAFKA_BOOTSTRAP_SERVERS",
    )


def test_tail_without_settings() -> None:
    assert_one_line_error(
        invoke("tail", "t"), 2, "KAFKA_BOOTSTRAP_SERVERS is not set", "stack"
    )


def test_tail_refuses_a_malformed_trace_id(local_kafka_stack: LocalKafkaStack) -> None:
    result = invoke("tail", "t", "--trace-id", "xyz", env=stack_env(local_kafka_stack))
    assert result.exit_code == 2
    assert "32 hex digits" in result.stderr


# -- schema, subjects --------------------------------------------------------------


def test_schema_is_what_create_publisher_registers(
    local_kafka_stack: LocalKafkaStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(SAMPLE_SRC))
    topic = new_topic(local_kafka_stack)
    from sample_shop import CheckoutCompleted

    async def register() -> tuple[dict[str, Any], str]:
        manager = manager_for(local_kafka_stack, topic)
        await manager.initialize()
        publisher = await manager.create_publisher(
            "checkout_completed", CheckoutCompleted
        )
        await manager.aclose()
        return publisher.avro_schema, manager.subject_for("checkout_completed")

    registered, subject = asyncio.run(register())
    env = {
        **stack_env(local_kafka_stack),
        "METRICS_EVENTS_TOPIC_PREFIX": topic.topic_prefix,
    }
    derived = invoke(
        "schema",
        "sample_shop:CheckoutCompleted",
        "--application",
        topic.application,
        env=env,
    )
    assert derived.exit_code == 0, derived.stderr
    assert json.loads(derived.stdout) == registered
    assert f"Subject: {subject}" in derived.stderr

    stored = invoke("schema", "--subject", subject, "--version", "1", env=env)
    assert stored.exit_code == 0, stored.stderr
    assert json.loads(stored.stdout) == registered

    listing = invoke("subjects", env=env)
    assert listing.exit_code == 0, listing.stderr
    assert subject in listing.stdout


def test_schema_errors(
    local_kafka_stack: LocalKafkaStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(SAMPLE_SRC))
    env = {**stack_env(local_kafka_stack), "METRICS_APPLICATION": "shop"}
    assert_one_line_error(
        invoke("schema", "no_such_module:Model", env=env),
        2,
        "cannot import module 'no_such_module'",
    )
    assert_one_line_error(
        invoke("schema", "sample_shop:Nope", env=env),
        2,
        "has no attribute 'Nope'",
        "it defines CheckoutCompleted, EVENTS",
    )
    assert_one_line_error(
        invoke("schema", "sample_shop", env=env), 2, "is not of the form MODULE:ATTR"
    )
    assert_one_line_error(
        invoke("schema", "sample_shop:Shop", env=env), 2, "not an EventPayload"
    )
    assert_one_line_error(
        invoke(
            "schema", "sample_shop:CheckoutCompleted", env=stack_env(local_kafka_stack)
        ),
        2,
        "METRICS_APPLICATION is not set",
    )
    assert_one_line_error(
        invoke("schema", "--subject", "no.such.subject", env=env),
        1,
        "has no subject 'no.such.subject'",
    )


class _Refusing(BaseHTTPRequestHandler):
    """A registry that refuses every request as unauthenticated."""

    def do_GET(self) -> None:
        body = b'{"error_code": 401, "message": "Unauthorized"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_registry() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_registry_auth_failure(refusing_registry: str) -> None:
    env = {"SCHEMA_MANAGER_REGISTRY_URL": refusing_registry}
    assert_one_line_error(
        invoke("subjects", env=env),
        1,
        "refused our credentials (HTTP 401)",
        "SCHEMA_MANAGER_REGISTRY_URL",
    )


def test_unreachable_registry() -> None:
    assert_one_line_error(
        invoke("subjects", env={"SCHEMA_MANAGER_REGISTRY_URL": "http://127.0.0.1:1"}),
        1,
        "cannot reach the schema registry at http://127.0.0.1:1",
    )


# -- check -------------------------------------------------------------------------

SERVICE_V2 = """
from otel_kafka_events import EventPayload


class Opened(EventPayload):
    door: str
    {opened_change}


class Closed(EventPayload):
    door: str
    seconds: float


EVENTS = {{"opened": Opened, "closed": Closed}}
PAIRS = [("opened", Opened)]
"""


def write_service(directory: Path, opened_change: str) -> str:
    """A service module whose ``opened`` event has one field changed."""
    name = f"service_{uuid.uuid4().hex[:8]}"
    (directory / f"{name}.py").write_text(
        SERVICE_V2.format(opened_change=opened_change)
    )
    return name


@pytest.fixture
def registered_v1(local_kafka_stack: LocalKafkaStack) -> dict[str, str]:
    """Version 1 of ``opened`` registered; the env a service's CI would have."""
    topic = new_topic(local_kafka_stack)

    async def register() -> None:
        manager = manager_for(local_kafka_stack, topic)
        await manager.initialize()
        await manager.create_publisher("opened", Opened)
        await manager.aclose()

    asyncio.run(register())
    return {
        **stack_env(local_kafka_stack),
        "METRICS_APPLICATION": topic.application,
        "METRICS_EVENTS_TOPIC_PREFIX": topic.topic_prefix,
    }


def test_check_catches_an_incompatible_change(
    registered_v1: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = write_service(tmp_path, "colour: str  # no default: old events lack it")
    result = invoke("check", f"{module}:EVENTS", env=registered_v1)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "FAIL opened: incompatible with" in result.stdout
    assert "under BACKWARD" in result.stdout
    # The registry's reason, naming the field.
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in result.stdout
    assert "fields: ['colour']" in result.stdout
    # closed has never been registered: a new subject passes.
    assert "ok   closed: new subject" in result.stdout
    assert_one_line_error(
        result, 1, "1 of 2 event schemas would break compatibility (opened)"
    )


def test_check_passes_a_compatible_change(
    registered_v1: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = write_service(tmp_path, "colour: str | None = None")
    for target in (f"{module}:EVENTS", f"{module}:PAIRS"):
        result = invoke("check", target, env=registered_v1)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        assert "ok   opened: compatible with" in result.stdout
        assert "can be registered" in result.stderr
    single = invoke("check", f"{module}:Opened", "--name", "opened", env=registered_v1)
    assert single.exit_code == 0, single.stderr
    assert "ok   opened: compatible with" in single.stdout


def test_check_errors(
    registered_v1: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = write_service(tmp_path, "")
    assert_one_line_error(
        invoke("check", f"{module}:EVENTS", "--name", "x", env=registered_v1),
        2,
        "--name applies to a single class",
    )
    assert_one_line_error(
        invoke("check", "missing_service:EVENTS", env=registered_v1),
        2,
        "cannot import module 'missing_service'",
    )
    unreachable = {**registered_v1, "SCHEMA_MANAGER_REGISTRY_URL": "http://127.0.0.1:1"}
    assert_one_line_error(
        invoke("check", f"{module}:EVENTS", env=unreachable),
        1,
        "cannot reach the schema registry",
    )


def test_tail_follow_prints_new_events_until_ctrl_c(
    local_kafka_stack: LocalKafkaStack, published: tuple[EventsTopic, str]
) -> None:
    topic, _ = published
    env = {**os.environ, **stack_env(local_kafka_stack)}
    tail = subprocess.Popen(
        [sys.executable, "-m", "otel_kafka_events", "tail", topic.name, "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert tail.stdout is not None
        # The three records already there come first.
        seen = [json.loads(tail.stdout.readline()) for _ in range(3)]
        assert [r["offset"] for r in seen] == [0, 1, 2]

        async def publish_one() -> None:
            manager = manager_for(local_kafka_stack, topic)
            await manager.initialize()
            opened = await manager.create_publisher("opened", Opened)
            await opened.publish(Opened(door="late"), wait=True)
            assert await manager.aclose() == 0

        asyncio.run(publish_one())
        late = json.loads(tail.stdout.readline())
        assert (late["event"], late["value"]["door"], late["offset"]) == (
            "opened",
            "late",
            3,
        )
    finally:
        tail.send_signal(signal.SIGINT)
        _, stderr = tail.communicate(timeout=30)
    # Ctrl-C is how --follow ends: no failure, no traceback.
    assert tail.returncode == 0, stderr
    assert "Traceback" not in stderr
