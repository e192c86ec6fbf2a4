"""The OpenTelemetry Collector as the OTLP peer of the tests.

`OtlpReceiver` is our own reading of OTLP; `OtelCollector` runs the real
collector, built from the Go module proxy by ``scripts/build-collector`` of
this repository (the OTLP receiver over HTTP and gRPC, the Kafka receiver,
the file exporter), with a configuration written for each instance. What its
file exporter wrote (OTLP/JSON lines) is read back into the same
`ReceivedLog` records that `OtlpReceiver` produces, so that one set of
expectations judges both.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._otlp import ReceivedLog
from ._process import find_free_port
from ._server_process import ServerProcess

__all__ = [
    "COLLECTOR_VERSION",
    "KafkaLogsSource",
    "OtelCollector",
    "collector_cache_dir",
    "find_collector",
    "read_exported_logs",
]

COLLECTOR_VERSION = "0.165.0"
"""The collector release ``scripts/build-collector`` builds."""

BINARY_ENV_VAR = "OTEL_KAFKA_EVENTS_OTELCOL"
"""Environment variable naming a collector binary to use instead."""

CACHE_ENV_VAR = "OTEL_KAFKA_EVENTS_OTELCOL_CACHE"
"""Environment variable naming the folder that holds ``otelcol-<version>/``."""

_BINARY_NAME = "otelcol-oke"
_READY_MARKER = "Everything is ready. Begin running and processing data."
BUILD_HINT = (
    "build it with 'bash scripts/build-collector' from a checkout of "
    "otel-kafka-events (needs Go 1.26+ from https://go.dev/dl/ and access to "
    f"the Go module proxy), or point {BINARY_ENV_VAR} at a collector with the "
    "otlp and kafka receivers and the file exporter"
)
"""What to do when `find_collector` finds nothing."""


def collector_cache_dir(version: str = COLLECTOR_VERSION) -> Path:
    """The folder where ``scripts/build-collector`` puts the collector."""
    base = os.environ.get(CACHE_ENV_VAR)
    if base:
        root = Path(base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "otel-kafka-events"
    return root / f"otelcol-{version}"


def find_collector() -> Path | None:
    """Return the collector binary: `BINARY_ENV_VAR`, else the built one.

    A binary in the cache counts only once its build completed (the build
    script writes a ``complete`` marker last).
    """
    given = os.environ.get(BINARY_ENV_VAR)
    if given:
        path = Path(given).expanduser()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    cache = collector_cache_dir()
    binary = cache / _BINARY_NAME
    if binary.is_file() and (cache / "complete").is_file():
        return binary
    return None


@dataclass(frozen=True)
class KafkaLogsSource:
    """A topic for the collector's Kafka receiver to read log records from.

    Parameters
    ----------
    bootstrap_servers
        ``host:port`` of the broker.
    topic
        The topic holding one OTLP logs export request per record.
    encoding
        ``"otlp_proto"`` (serialized ``ExportLogsServiceRequest``) or
        ``"otlp_json"``.
    group_id
        The consumer group; by default one of its own per collector.
    protocol_version
        The Kafka protocol version the receiver speaks. Left to itself, the
        franz-go client asks for request versions newer than Tansu and
        noida-db answer (they close the connection); 2.1.0 works with every
        broker here.
    """

    bootstrap_servers: str
    topic: str
    encoding: str = "otlp_proto"
    group_id: str | None = None
    protocol_version: str = "2.1.0"


def _any_value(value: dict[str, Any]) -> Any:
    """Convert an OTLP/JSON ``AnyValue`` to the Python value it encodes."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        # 64-bit integers are strings in OTLP/JSON.
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return _key_values(value["kvlistValue"].get("values", []))
    return None


def _key_values(pairs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {pair["key"]: _any_value(pair.get("value", {})) for pair in pairs}


def read_exported_logs(lines: Iterable[str]) -> list[ReceivedLog]:
    """Parse the file exporter's OTLP/JSON lines into `ReceivedLog` records.

    One line may hold several export requests' records (when a batch
    processor merged them); every ``resourceLogs[*].scopeLogs[*].logRecords``
    entry becomes one record, in file order. A last line cut off mid-write
    is skipped.
    """
    records: list[ReceivedLog] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except ValueError:
            continue
        for resource_logs in document.get("resourceLogs", []):
            resource = _key_values(
                resource_logs.get("resource", {}).get("attributes", [])
            )
            for scope_logs in resource_logs.get("scopeLogs", []):
                scope = scope_logs.get("scope", {}).get("name", "")
                for record in scope_logs.get("logRecords", []):
                    records.append(
                        ReceivedLog(
                            event_name=record.get("eventName", ""),
                            time_unix_nano=int(record.get("timeUnixNano", 0)),
                            observed_time_unix_nano=int(
                                record.get("observedTimeUnixNano", 0)
                            ),
                            severity_number=int(record.get("severityNumber", 0)),
                            severity_text=record.get("severityText", ""),
                            body=_any_value(record.get("body", {})),
                            attributes=_key_values(record.get("attributes", [])),
                            trace_id=record.get("traceId", ""),
                            span_id=record.get("spanId", ""),
                            flags=int(record.get("flags", 0)),
                            scope=scope,
                            resource=resource,
                        )
                    )
    return records


class OtelCollector(ServerProcess):
    """An OpenTelemetry Collector on 127.0.0.1 that writes logs to a file.

    Its OTLP receiver listens for HTTP (`http_endpoint`) and gRPC
    (`grpc_endpoint`) on free ports; with ``kafka`` its Kafka receiver also
    reads a topic. Every log record goes to the file exporter, read back by
    `logs` and `wait_for_logs`. The configuration is written into the
    instance's own work folder at each start. Starting takes well under a
    second.

    Parameters
    ----------
    kafka
        A topic to read OTLP log records from, or `None`.
    binary
        The collector executable; `find_collector` by default.
    start_timeout, stop_timeout
        Seconds to wait for readiness, and for exit before ``SIGKILL``.

    Raises
    ------
    RuntimeError
        From `start`, if no collector binary is found (with `BUILD_HINT`).

    Examples
    --------
    >>> with OtelCollector() as collector:  # doctest: +SKIP
    ...     exporter = OTLPLogExporter(endpoint=collector.logs_endpoint)
    ...     ...
    ...     [record] = collector.wait_for_logs(1)
    """

    name = "otelcol"
    ready_marker = _READY_MARKER

    def __init__(
        self,
        *,
        kafka: KafkaLogsSource | None = None,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.kafka = kafka
        self._binary = Path(binary) if binary is not None else None
        self._http_port = 0
        self._grpc_port = 0
        self._output: Path | None = None

    # -- addresses ------------------------------------------------------------------

    @property
    def http_endpoint(self) -> str:
        """Base URL of OTLP/HTTP, as for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        if self._http_port == 0:
            raise RuntimeError("OtelCollector has no port until start()")
        return f"http://127.0.0.1:{self._http_port}"

    @property
    def logs_endpoint(self) -> str:
        """URL for the OTLP/HTTP ``OTLPLogExporter(endpoint=...)``."""
        return f"{self.http_endpoint}/v1/logs"

    @property
    def grpc_endpoint(self) -> str:
        """``host:port`` for the OTLP/gRPC exporters (plain text)."""
        if self._grpc_port == 0:
            raise RuntimeError("OtelCollector has no port until start()")
        return f"127.0.0.1:{self._grpc_port}"

    @property
    def output_path(self) -> Path | None:
        """The file exporter's output file, while started."""
        return self._output

    # -- what the collector wrote ---------------------------------------------------

    @property
    def logs(self) -> list[ReceivedLog]:
        """Every log record the file exporter wrote so far."""
        if self._output is None or not self._output.is_file():
            return []
        with self._output.open(encoding="utf-8") as lines:
            return read_exported_logs(lines)

    def wait_for_logs(self, count: int, timeout: float = 10.0) -> list[ReceivedLog]:
        """Block until the file holds at least ``count`` records; return all.

        Raises
        ------
        TimeoutError
            If fewer were written within ``timeout`` seconds; the message
            ends with the tail of the collector's log.
        """
        deadline = time.monotonic() + timeout
        while True:
            logs = self.logs
            if len(logs) >= count:
                return logs
            if time.monotonic() > deadline:
                tail = self.log_text()[-3000:]
                raise TimeoutError(
                    f"{len(logs)} of {count} log records written by the "
                    f"collector in {timeout} s\n--- collector log (tail) ---\n{tail}"
                )
            time.sleep(0.05)

    # -- ServerProcess ----------------------------------------------------------------

    def start(self) -> None:
        """Write the configuration, start the collector, wait until ready.

        Raises
        ------
        RuntimeError
            If no collector binary is found or it does not come up.
        """
        self._executable()
        super().start()

    def _executable(self) -> Path:
        binary = self._binary or find_collector()
        if binary is None:
            raise RuntimeError(f"no OpenTelemetry Collector found: {BUILD_HINT}")
        return binary

    def _choose_ports(self) -> None:
        self._http_port = find_free_port()
        self._grpc_port = find_free_port()
        while self._grpc_port == self._http_port:
            self._grpc_port = find_free_port()

    def _command(self, workdir: Path) -> list[str]:
        self._output = workdir / "logs.jsonl"
        config = workdir / "config.json"
        # JSON is YAML: no YAML writer needed.
        config.write_text(json.dumps(self._config(self._output), indent=2))
        return [str(self._executable()), "--config", f"file:{config}"]

    def _config(self, output: Path) -> dict[str, Any]:
        receivers: dict[str, Any] = {
            "otlp": {
                "protocols": {
                    "http": {"endpoint": f"127.0.0.1:{self._http_port}"},
                    "grpc": {"endpoint": f"127.0.0.1:{self._grpc_port}"},
                }
            }
        }
        if self.kafka is not None:
            receivers["kafka"] = {
                "brokers": [self.kafka.bootstrap_servers],
                "protocol_version": self.kafka.protocol_version,
                "group_id": self.kafka.group_id or f"otelcol-{self._http_port}",
                "initial_offset": "earliest",
                "logs": {
                    "topics": [self.kafka.topic],
                    "encoding": self.kafka.encoding,
                },
            }
        return {
            "receivers": receivers,
            "exporters": {
                "file": {"path": str(output), "flush_interval": "100ms"},
            },
            "service": {
                # No metrics endpoint on 0.0.0.0:8888, no extra threads.
                "telemetry": {"metrics": {"level": "none"}},
                "pipelines": {
                    "logs": {"receivers": list(receivers), "exporters": ["file"]}
                },
            },
        }

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The collector's own SDK would read these and export its telemetry.
        for name in list(env):
            if name.startswith("OTEL_") and not name.startswith("OTEL_KAFKA_EVENTS"):
                env.pop(name)
        return env

    def stop(self) -> None:
        """Stop the collector (its file exporter flushes on the way out) and
        remove its work folder. Idempotent."""
        super().stop()
        self._output = None


def which_go() -> str | None:
    """The ``go`` command that ``scripts/build-collector`` would use."""
    return shutil.which("go")
