"""A minimal OTLP/HTTP receiver, to test what a service exports to OTel.

It stands in for an OpenTelemetry Collector: a stdlib ``ThreadingHTTPServer``
on 127.0.0.1 that accepts protobuf ``POST /v1/logs`` and ``POST /v1/traces``
requests (optionally gzip-compressed), decodes them with the
``opentelemetry-proto`` messages and keeps the records as plain Python values.
Going through the real OTLP exporter and a real HTTP hop is the point: it
proves that what the library hands to the SDK survives protobuf encoding.

Examples
--------
>>> with OtlpReceiver() as receiver:  # doctest: +SKIP
...     exporter = OTLPLogExporter(endpoint=receiver.logs_endpoint)
...     ...
...     records = receiver.wait_for_logs(1)
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ._lifecycle import StartStop

__all__ = ["OtlpReceiver", "ReceivedLog", "ReceivedSpan", "any_value"]


def any_value(value: AnyValue) -> Any:
    """Convert an OTLP ``AnyValue`` to the Python value it encodes."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return key_values(value.kvlist_value.values)
    return getattr(value, kind)


def key_values(pairs: Any) -> dict[str, Any]:
    """Convert repeated OTLP ``KeyValue`` messages to a dict."""
    result: dict[str, Any] = {}
    pair: KeyValue
    for pair in pairs:
        result[pair.key] = any_value(pair.value)
    return result


@dataclass(frozen=True)
class ReceivedLog:
    """One log record as the receiver decoded it."""

    event_name: str
    time_unix_nano: int
    observed_time_unix_nano: int
    severity_number: int
    severity_text: str
    body: Any
    attributes: dict[str, Any]
    trace_id: str
    """32 hex digits, or ``""`` when the record has no trace."""
    span_id: str
    """16 hex digits, or ``""`` when the record has no span."""
    flags: int
    scope: str
    resource: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver decoded it."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    scope: str
    resource: dict[str, Any] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            data = gzip.decompress(data)
        elif encoding == "deflate":
            data = zlib.decompress(data)
        receiver = self.server.receiver
        try:
            if self.path == "/v1/logs":
                receiver._add_logs(data)
                reply = ExportLogsServiceResponse().SerializeToString()
            elif self.path == "/v1/traces":
                receiver._add_spans(data)
                reply = ExportTraceServiceResponse().SerializeToString()
            else:
                self.send_error(404)
                return
        except Exception as exc:  # a bad request must fail loudly, not hang
            receiver._errors.append(f"{self.path}: {exc!r}")
            self.send_error(400, str(exc))
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        # Keep test output clean; failures are recorded in `errors`.
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: OtlpReceiver


class OtlpReceiver(StartStop):
    """Receives OTLP/HTTP logs and traces on a free port of 127.0.0.1.

    Use as a (sync) context manager, or call `start` and `stop`. Records are
    stored as they arrive; each request is decoded before the exporter gets
    its response, so once an exporter's flush returns its records are here.
    """

    def __init__(self) -> None:
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Condition()
        self._logs: list[ReceivedLog] = []
        self._spans: list[ReceivedSpan] = []
        self._errors: list[str] = []
        self.requests = 0
        """How many export requests arrived (logs and traces)."""

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Bind a free port and serve in a daemon thread."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.receiver = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="otlp-receiver", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- addresses -------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Base URL, as for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        if self._server is None:
            raise RuntimeError("the receiver is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def logs_endpoint(self) -> str:
        """URL for ``OTLPLogExporter(endpoint=...)``."""
        return f"{self.endpoint}/v1/logs"

    @property
    def traces_endpoint(self) -> str:
        """URL for ``OTLPSpanExporter(endpoint=...)``."""
        return f"{self.endpoint}/v1/traces"

    # -- received data ---------------------------------------------------------

    @property
    def logs(self) -> list[ReceivedLog]:
        """Every log record received so far."""
        with self._lock:
            return list(self._logs)

    @property
    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far."""
        with self._lock:
            return list(self._spans)

    @property
    def errors(self) -> list[str]:
        """Requests that could not be decoded."""
        with self._lock:
            return list(self._errors)

    def wait_for_logs(self, count: int, timeout: float = 10.0) -> list[ReceivedLog]:
        """Block until at least ``count`` log records arrived; return them all.

        Raises
        ------
        TimeoutError
            If fewer arrived within ``timeout`` seconds.
        """
        logs: list[ReceivedLog] = self._wait(
            lambda: self._logs, count, timeout, "log records"
        )
        return logs

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Block until at least ``count`` spans arrived; return them all."""
        spans: list[ReceivedSpan] = self._wait(
            lambda: self._spans, count, timeout, "spans"
        )
        return spans

    def _wait(self, items: Any, count: int, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(items()) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(items())} of {count} {what} received in {timeout} s"
                        f" (decode errors: {self._errors})"
                    )
                self._lock.wait(remaining)
            return list(items())

    # -- decoding (called from handler threads) --------------------------------

    def _add_logs(self, data: bytes) -> None:
        request = ExportLogsServiceRequest.FromString(data)
        received: list[ReceivedLog] = []
        for resource_logs in request.resource_logs:
            resource = key_values(resource_logs.resource.attributes)
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    received.append(
                        ReceivedLog(
                            event_name=record.event_name,
                            time_unix_nano=record.time_unix_nano,
                            observed_time_unix_nano=record.observed_time_unix_nano,
                            severity_number=record.severity_number,
                            severity_text=record.severity_text,
                            body=any_value(record.body),
                            attributes=key_values(record.attributes),
                            trace_id=record.trace_id.hex(),
                            span_id=record.span_id.hex(),
                            flags=record.flags,
                            scope=scope_logs.scope.name,
                            resource=resource,
                        )
                    )
        with self._lock:
            self.requests += 1
            self._logs.extend(received)
            self._lock.notify_all()

    def _add_spans(self, data: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(data)
        received: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource = key_values(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=key_values(span.attributes),
                            scope=scope_spans.scope.name,
                            resource=resource,
                        )
                    )
        with self._lock:
            self.requests += 1
            self._spans.extend(received)
            self._lock.notify_all()
