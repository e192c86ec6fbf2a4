"""The launchers of the peers: Java discovery, Apicurio and the Collector."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import (
    LogRecord,
    ResourceLogs,
    ScopeLogs,
    SeverityNumber,
)

from otel_kafka_events_devstack import _apicurio, _java
from otel_kafka_events_devstack._apicurio import ApicurioRegistry
from otel_kafka_events_devstack._otelcol import (
    KafkaLogsSource,
    OtelCollector,
    read_exported_logs,
)
from otel_kafka_events_devstack._stack import LocalKafkaStack

from ..peer_support import require_collector

# -- finding Java ------------------------------------------------------------------


def fake_jdk(root: Path, name: str, version: str) -> Path:
    """A folder laid out like a JDK whose ``release`` file names ``version``."""
    home = root / name
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text("#!/bin/sh\nexit 0\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    (home / "release").write_text(f'JAVA_VERSION="{version}"\n')
    return java


@pytest.fixture
def no_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A machine without Java anywhere the search looks; returns a JVM dir."""
    jvm = tmp_path / "jvm"
    jvm.mkdir()
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.setattr(_java, "JVM_DIRECTORIES", (jvm,))
    return jvm


def test_new_enough_jdk_found_beside_an_old_one(no_java: Path) -> None:
    fake_jdk(no_java, "java-17-openjdk", "17.0.2")
    newer = fake_jdk(no_java, "temurin-25-jdk", "25.0.3")

    found = _java.find_java_at_least(21)

    assert found == _java.JavaRuntime(str(newer), 25)
    assert _java.find_java_at_least(26) is None


def test_java_home_wins_when_new_enough(
    no_java: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_jdk(no_java, "temurin-25-jdk", "25")
    home_java = fake_jdk(no_java.parent, "chosen", "21.0.1")
    monkeypatch.setenv("JAVA_HOME", str(home_java.parent.parent))

    found = _java.find_java_at_least(21)

    assert found is not None
    assert (found.executable, found.release) == (str(home_java), 21)


def test_missing_java_is_reported_with_what_was_found(no_java: Path) -> None:
    old = fake_jdk(no_java, "java-17-openjdk", "17.0.2")

    message = _java.describe_java_search(21)

    assert "Java 21 or newer" in message
    assert "JAVA_HOME" in message
    assert f"{old} (17)" in message


def test_apicurio_without_java_21_names_what_is_missing(
    no_java: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_jdk(no_java, "java-17-openjdk", "17")
    # Must fail on Java before looking at (or fetching) the distribution.
    monkeypatch.setenv(_apicurio.CACHE_ENV_VAR, str(tmp_path / "no-cache"))
    monkeypatch.setattr(
        _apicurio, "resolve_apicurio", lambda *a: pytest.fail("fetched")
    )
    registry = ApicurioRegistry()

    with pytest.raises(RuntimeError, match="Apicurio Registry needs Java 21"):
        registry.start()
    assert not registry.running


def test_apicurio_refuses_unknown_levels() -> None:
    with pytest.raises(ValueError, match="SIDEWAYS"):
        ApicurioRegistry(global_compatibility="SIDEWAYS")


# -- Apicurio ------------------------------------------------------------------------


def test_apicurio_serves_only_on_loopback(
    apicurio_registry: ApicurioRegistry,
) -> None:
    log = apicurio_registry.log_text()
    port, management = apicurio_registry.port, apicurio_registry.management_port

    health = httpx.get(f"http://127.0.0.1:{management}/health/ready", timeout=10)

    assert apicurio_registry.url == f"http://127.0.0.1:{port}/apis/ccompat/v7"
    assert f"Listening on: http://127.0.0.1:{port}" in log
    assert f"Management interface listening on http://127.0.0.1:{management}" in log
    assert 9000 not in (port, management)
    assert health.status_code == 200


# -- the Collector -----------------------------------------------------------------


def test_exported_lines_are_read_as_records() -> None:
    line = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "s"}}
                    ]
                },
                "scopeLogs": [
                    {
                        "scope": {"name": "sc"},
                        "logRecords": [
                            {
                                "timeUnixNano": "5",
                                "severityNumber": 9,
                                "eventName": "e",
                                "traceId": "ab" * 16,
                                "spanId": "cd" * 8,
                                "flags": 1,
                                "body": {
                                    "kvlistValue": {
                                        "values": [{"key": "n", "value": {}}]
                                    }
                                },
                                "attributes": [
                                    {
                                        "key": "i",
                                        "value": {"intValue": "9007199254740993"},
                                    },
                                    {"key": "b", "value": {"bytesValue": "AP8="}},
                                    {
                                        "key": "l",
                                        "value": {
                                            "arrayValue": {
                                                "values": [
                                                    {"doubleValue": 1.5},
                                                    {"boolValue": True},
                                                ]
                                            }
                                        },
                                    },
                                ],
                            },
                            {"eventName": "second"},
                        ],
                    }
                ],
            }
        ]
    }
    lines = [json.dumps(line), json.dumps(line), '{"resourceLogs": [{"scopeL']

    records = read_exported_logs(lines)

    assert [r.event_name for r in records] == ["e", "second", "e", "second"]
    first = records[0]
    assert (first.time_unix_nano, first.severity_number, first.flags) == (5, 9, 1)
    assert (first.trace_id, first.span_id, first.scope) == ("ab" * 16, "cd" * 8, "sc")
    assert first.body == {"n": None}
    assert first.attributes == {
        "i": 9007199254740993,
        "b": b"\x00\xff",
        "l": [1.5, True],
    }
    assert first.resource == {"service.name": "s"}


def test_collector_config_stays_on_loopback_and_stop_cleans_up(
    otel_collector: OtelCollector,
) -> None:
    workdir = otel_collector.workdir
    assert workdir is not None
    config = json.loads((workdir / "config.json").read_text())
    endpoints = [
        p["endpoint"] for p in config["receivers"]["otlp"]["protocols"].values()
    ]
    process = otel_collector._process

    otel_collector.stop()

    assert all(e.startswith("127.0.0.1:") for e in endpoints)
    assert config["service"]["telemetry"] == {"metrics": {"level": "none"}}
    assert process is not None
    assert process.poll() is not None
    assert not workdir.exists()
    assert not otel_collector.running


def test_collector_missing_binary_says_how_to_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_KAFKA_EVENTS_OTELCOL", str(tmp_path / "nothing"))

    with pytest.raises(RuntimeError, match="scripts/build-collector"):
        OtelCollector().start()


def otlp_request(event_name: str, trace_id: bytes) -> bytes:
    """One serialized ``ExportLogsServiceRequest`` with one log record."""
    record = LogRecord(
        time_unix_nano=1_700_000_000_000_000_123,
        severity_number=SeverityNumber.SEVERITY_NUMBER_INFO,
        severity_text="INFO",
        event_name=event_name,
        trace_id=trace_id,
        span_id=bytes(range(1, 9)),
        attributes=[KeyValue(key="n", value=AnyValue(int_value=7))],
    )
    request = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[record])])]
    )
    data: bytes = request.SerializeToString()
    return data


async def test_collector_kafka_receiver_reads_otlp_from_the_broker(
    local_kafka_stack: LocalKafkaStack, kafka_topic: str
) -> None:
    # The judge for OTLP log records carried by Kafka: the collector's own
    # Kafka receiver (franz-go), not our consumer.
    trace_id = bytes(range(16))
    producer = AIOKafkaProducer(bootstrap_servers=local_kafka_stack.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(kafka_topic, otlp_request("on.kafka", trace_id))
    finally:
        await producer.stop()
    require_collector()
    source = KafkaLogsSource(local_kafka_stack.bootstrap_servers, kafka_topic)

    with OtelCollector(kafka=source) as collector:
        [record] = await asyncio.to_thread(collector.wait_for_logs, 1, 60.0)

    assert record.event_name == "on.kafka"
    assert record.trace_id == trace_id.hex()
    assert record.span_id == bytes(range(1, 9)).hex()
    assert record.time_unix_nano == 1_700_000_000_000_000_123
    assert record.attributes == {"n": 7}
