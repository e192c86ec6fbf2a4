"""A Kafka event manager's own export of its events' log records.

Built from `LogExport` by `LogExportPipeline`, in one of two ways:

- **SDK** (``direct=False``): a LoggerProvider of the manager's own, with a
  batch processor per destination (`KafkaLogRecordExporter`, the SDK's
  OTLP/HTTP exporter); records are emitted at ``publish`` as with
  `TelemetryOptions.logs` alone.
- **Direct** (``direct=True``): `DirectLogRecords` keeps each accepted
  event's values until Kafka settles it. For each batch Kafka acknowledged,
  the records are written in the OTLP wire format at once (`_otlp_wire`)
  and handed to the destinations; events that fail get no record.

Destinations run in threads of their own and report back through futures;
their successes and failures are counted (`LogExportStats`) and failures
logged, and nothing they do touches Kafka delivery of the events.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import SpanContext

from .._options import LogExport
from .._ratelimit import RateLimitedLog
from . import _otlp_wire as wire
from ._logs import SCOPE, EventLogEmitter, not_copied, record_fields
from ._producer_thread import Message, ProducerThread
from ._values import PLAIN_TYPES, otel_value

__all__ = ["DirectLogRecords", "LogExportPipeline", "LogExportStats"]


@dataclass(frozen=True)
class LogExportStats:
    """Log records of events exported by one destination of `LogExport`.

    Attributes
    ----------
    destination
        ``"kafka"`` or ``"otlp"``.
    exported
        Records the destination acknowledged.
    failed
        Records whose export failed (destination down, timeout, refusal).
    dropped
        Records not exported because too many were waiting
        (`LogExport.max_pending`, direct path only).
    """

    destination: str
    exported: int
    failed: int
    dropped: int


class _Counts:
    """Counters of one destination, updated from its thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.exported = 0
        self.failed = 0
        self.dropped = 0
        self.pending = 0
        self._lock = threading.Lock()

    def snapshot(self) -> LogExportStats:
        with self._lock:
            return LogExportStats(self.name, self.exported, self.failed, self.dropped)

    def add(self, *, exported: int = 0, failed: int = 0, dropped: int = 0) -> None:
        with self._lock:
            self.exported += exported
            self.failed += failed
            self.dropped += dropped

    def reserve(self, count: int, limit: int) -> bool:
        with self._lock:
            if self.pending + count > limit:
                self.dropped += count
                return False
            self.pending += count
            return True

    def release(self, count: int, *, ok: bool) -> None:
        with self._lock:
            self.pending -= count
            if ok:
                self.exported += count
            else:
                self.failed += count


# Destinations ---------------------------------------------------------------


class _HttpSender:
    """POSTs OTLP/HTTP protobuf requests from a daemon thread of its own."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self._endpoint = endpoint
        self._timeout = timeout
        self._queue: queue.SimpleQueue[
            tuple[concurrent.futures.Future[None], list[bytes]] | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def send(self, requests: list[bytes]) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="otel-kafka-events-otlp-http", daemon=True
                )
                self._thread.start()
        self._queue.put((future, requests))
        return future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, requests = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                for data in requests:
                    self._post(data)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)

    def _post(self, data: bytes) -> None:
        request = urllib.request.Request(
            self._endpoint,
            data=data,
            headers={"Content-Type": "application/x-protobuf"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self._timeout) as response:
            response.read()

    def close(self, timeout: float) -> None:
        thread = self._thread
        self._queue.put(None)
        if thread is not None:
            thread.join(max(timeout, 0.0))


class _Destination:
    """Where requests go, with its counters."""

    def __init__(
        self,
        counts: _Counts,
        send: Callable[[list[Message]], concurrent.futures.Future[None]],
        close: Callable[[float], None],
    ) -> None:
        self.counts = counts
        self.send = send
        self.close = close


def _kafka_destination(
    export: LogExport,
    bootstrap_servers: str | list[str],
    kafka_options: Mapping[str, Any],
) -> _Destination:
    from ._otlp_kafka import encoder

    producer = ProducerThread(
        bootstrap_servers,
        export.topic,
        kafka_options,
        timeout=export.timeout,
        encode=encoder(export.encoding),
    )
    return _Destination(_Counts("kafka"), producer.send, producer.close)


def _manager_producer_destination(
    export: LogExport, transport: Callable[[], Any]
) -> _Destination:
    """Kafka through the event manager's own producer, on its event loop.

    The direct path runs on that loop already (the reporter calls it), so
    its records take the manager's connection without a thread or a client
    of their own. ``transport`` returns the manager's current transport
    (None while it is not connected: the export then fails).
    """
    from ._otlp_kafka import encoder

    encode = encoder(export.encoding)
    topic, timeout = export.topic, export.timeout
    tasks: set[asyncio.Task[None]] = set()

    async def produce(
        messages: list[Message], future: concurrent.futures.Future[None]
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                producer = getattr(transport(), "producer", None)
                if producer is None:
                    raise ConnectionError("the event manager is not connected")
                acks = [
                    await producer.send(
                        topic, value=encode(value) if encode else value, key=key
                    )
                    for key, value in messages
                ]
                await asyncio.gather(*acks)
        except Exception as exc:
            future.set_exception(exc)
        except BaseException as exc:  # cancelled: the loop is going away
            future.set_exception(exc)
            raise
        else:
            future.set_result(None)

    def send(messages: list[Message]) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        task = asyncio.get_running_loop().create_task(produce(messages, future))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return future

    # The manager stops its producer itself.
    return _Destination(_Counts("kafka"), send, lambda timeout: None)


def _http_destination(export: LogExport) -> _Destination:
    assert export.otlp_endpoint is not None
    sender = _HttpSender(export.otlp_endpoint, export.timeout)

    def send(messages: list[Message]) -> concurrent.futures.Future[None]:
        return sender.send([value for _, value in messages])

    return _Destination(_Counts("otlp"), send, sender.close)


# The direct path --------------------------------------------------------------


class DirectLogRecords:
    """Turns the events Kafka acknowledged into OTLP log records.

    Stands in for `EventLogEmitter` on the publish path. `emit` writes the
    event's record in the OTLP wire format at once, all but its observed
    time, and keeps those bytes under the event id until the manager's
    reporter calls `delivered` (the records are completed and exported) or
    `failed` (they are forgotten). Keeping bytes rather than the event's
    values means the garbage collector has nothing more to walk while
    events wait for Kafka.

    Parameters
    ----------
    export
        The destinations and their settings.
    destinations
        Where the requests go.
    resource
        The records' resource (an SDK ``Resource``).
    body_mode
        `TelemetryOptions.log_mode` is ``"body"``.
    log
        Where export failures are reported.
    max_message_bytes
        Largest request written.
    """

    def __init__(
        self,
        export: LogExport,
        destinations: Sequence[_Destination],
        resource: Any,
        *,
        body_mode: bool,
        log: RateLimitedLog | None,
        max_message_bytes: int = 512 * 1024,
    ) -> None:
        from .. import __version__

        self._export = export
        self._destinations = destinations
        self._body_mode = body_mode
        self._log = log
        self._max_bytes = max_message_bytes
        self._by_trace = export.partition_by_trace_id
        # Event id -> (record up to its trace fields, its event name field,
        # its Kafka key): plain values only.
        self._pending: dict[str, tuple[bytes, bytes, bytes | None]] = {}
        self._prefix = wire.resource_logs_prefix(
            resource.attributes, resource.schema_url or "", SCOPE, __version__
        )
        # Full name -> (severity, number of values, severity and empty body
        # fields, event name field, attribute plan).
        self._types: dict[
            str, tuple[SeverityNumber, int, bytes, bytes, wire.AttributePlan]
        ] = {}
        # (span context, its trace fields, its key), as one tuple.
        self._last_trace: tuple[SpanContext | None, bytes, bytes | None] = (
            None,
            b"",
            None,
        )
        self._in_flight: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()

    def emit(
        self,
        full_name: str,
        values: dict[str, Any],
        event_id: str,
        span_context: SpanContext | None,
        severity: SeverityNumber,
        *,
        trace_fields: bool = True,
    ) -> None:
        """Write an accepted event's record and keep it until Kafka settles
        the event.

        The parameters are those of `EventLogEmitter.emit`. A record that
        cannot be written is counted as failed and reported; ``publish``
        goes on.
        """
        try:
            record = self._encode(
                full_name, values, event_id, span_context, severity, trace_fields
            )
        except Exception as exc:
            for destination in self._destinations:
                destination.counts.add(failed=1)
                self._report(destination, 1, f"{type(exc).__name__}: {exc}")
            return
        self._pending[event_id] = record

    def _encode(
        self,
        full_name: str,
        values: dict[str, Any],
        event_id: str,
        span_context: SpanContext | None,
        severity: SeverityNumber,
        trace_fields: bool,
    ) -> tuple[bytes, bytes, bytes | None]:
        last_context, trace, key = self._last_trace
        if span_context is not last_context:
            # Events of one request share its span: once per span.
            trace = wire.trace_fields(span_context)
            key = (
                f"{span_context.trace_id:032x}".encode()
                if span_context is not None and self._by_trace
                else None
            )
            self._last_trace = (span_context, trace, key)
        # What an event type's records share: severity, event name and the
        # attribute plan (its values always have its model's keys, in order).
        shared = self._types.get(full_name)
        if shared is None or shared[0] is not severity or shared[1] != len(values):
            shared = self._types[full_name] = (
                severity,
                len(values),
                wire.severity_fields(severity) + wire.EMPTY_BODY,
                wire.event_name_field(full_name),
                wire.attribute_plan(values, not_copied(trace_fields)),
            )
        _, _, head, name, plan = shared
        if self._body_mode:
            attributes, body = record_fields(
                full_name, values, event_id, body_mode=True, trace_fields=trace_fields
            )
            middle = wire.body_field(body) + wire.attributes_field(
                wire.ATTRIBUTE, attributes
            )
            head = head[: -len(wire.EMPTY_BODY)]
        else:
            middle = wire.event_attributes(
                event_id, values, plan, otel_value, PLAIN_TYPES
            )
        start = b"".join((wire.time_field(values["timestamp_ns"]), head, middle, trace))
        return start, name, key

    def failed(self, events: Iterable[Any]) -> None:
        """Forget events that were not delivered: they get no record."""
        pop = self._pending.pop
        for event in events:
            pop(event.event_id, None)

    def delivered(self, events: Iterable[Any]) -> None:
        """Complete the records of events Kafka acknowledged and export them."""
        groups = self._records(events)
        count = sum(len(group) for group in groups.values())
        if not count:
            return
        messages = self._messages(groups)
        for destination in self._destinations:
            self._send(destination, messages, count)

    def _records(self, events: Iterable[Any]) -> dict[bytes | None, list[bytes]]:
        """The records of the events still pending, by Kafka key (the trace
        id with `LogExport.partition_by_trace_id`, else None)."""
        pop = self._pending.pop
        observed = wire.observed_field(time.time_ns())
        varint = wire.varint
        groups: dict[bytes | None, list[bytes]] = {}
        last_key: Any = groups  # no key is this
        records: list[bytes] = []
        for event in events:
            entry = pop(event.event_id, None)
            if entry is None:
                continue
            start, name, key = entry
            if key is not last_key:
                last_key = key
                records = groups.setdefault(key, [])
            # ``observed`` is 9 bytes.
            size = len(start) + 9 + len(name)
            records.append(b"".join((b"\x12", varint(size), start, observed, name)))
        return groups

    def _messages(self, groups: dict[bytes | None, list[bytes]]) -> list[Message]:
        """Requests of at most ``max_message_bytes`` from the records."""
        messages: list[Message] = []
        limit = self._max_bytes
        prefix = self._prefix
        for key, group in groups.items():
            part: list[bytes] = []
            size = 0
            for record in group:
                if part and size + len(record) > limit:
                    messages.append((key, wire.logs_request(prefix, part)))
                    part, size = [], 0
                part.append(record)
                size += len(record)
            if part:
                messages.append((key, wire.logs_request(prefix, part)))
        return messages

    def _send(
        self, destination: _Destination, messages: list[Message], count: int
    ) -> None:
        counts = destination.counts
        if not counts.reserve(count, self._export.max_pending):
            self._report(destination, count, "too many records waiting for export")
            return
        try:
            future = destination.send(messages)
        except Exception as exc:
            counts.release(count, ok=False)
            self._report(destination, count, f"{type(exc).__name__}: {exc}")
            return
        with self._lock:
            self._in_flight.add(future)

        def done(result: concurrent.futures.Future[None]) -> None:
            with self._lock:
                self._in_flight.discard(result)
            error = None if result.cancelled() else result.exception()
            counts.release(count, ok=error is None and not result.cancelled())
            if error is not None:
                self._report(destination, count, f"{type(error).__name__}: {error}")

        future.add_done_callback(done)

    def _report(self, destination: _Destination, count: int, reason: str) -> None:
        if self._log is None:
            return
        with contextlib.suppress(Exception):
            self._log.error(
                f"log-export-{destination.counts.name}",
                "Log records of delivered events not exported",
                destination=destination.counts.name,
                count=count,
                error=reason,
            )

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the exports in flight."""
        with self._lock:
            futures = list(self._in_flight)
        if futures:
            concurrent.futures.wait(futures, timeout=max(timeout, 0.0))


# The pipeline -------------------------------------------------------------------


def _resource_of(logger_provider: Any) -> Any:
    """The resource of the configured LoggerProvider, or one of our own."""
    from opentelemetry.sdk.resources import Resource

    provider = logger_provider
    if provider is None:
        from opentelemetry._logs import get_logger_provider

        provider = get_logger_provider()
    resource = getattr(provider, "resource", None)
    return resource if isinstance(resource, Resource) else Resource.create()


class LogExportPipeline:
    """The log export of one Kafka event manager (`LogExport`).

    Parameters
    ----------
    export
        What to export where.
    log_mode
        `TelemetryOptions.log_mode`.
    logger_provider
        The application's LoggerProvider (or None: the global one), whose
        resource the records carry.
    bootstrap_servers, kafka_options
        The event manager's Kafka connection: the SDK path's exporter makes
        a client of its own with them.
    transport
        Returns the event manager's transport (or None while it is not
        connected): the direct path produces with its producer.
    log
        Where export failures are reported.
    """

    def __init__(
        self,
        export: LogExport,
        *,
        log_mode: str,
        logger_provider: Any,
        bootstrap_servers: str | list[str] | None,
        kafka_options: Mapping[str, Any],
        transport: Callable[[], Any] | None = None,
        log: RateLimitedLog | None = None,
    ) -> None:
        self.export = export
        resource = _resource_of(logger_provider)
        options = {k: v for k, v in kafka_options.items() if k != "enable_idempotence"}
        self.direct: DirectLogRecords | None = None
        self._provider: Any = None
        self._counts: list[_Counts] = []
        if export.direct:
            destinations = []
            if export.kafka and transport is not None:
                destinations.append(_manager_producer_destination(export, transport))
            elif export.kafka:
                if bootstrap_servers is None:
                    raise ValueError("LogExport(kafka=True) needs bootstrap_servers")
                destinations.append(
                    _kafka_destination(export, bootstrap_servers, options)
                )
            if export.otlp_endpoint:
                destinations.append(_http_destination(export))
            self._destinations = destinations
            self._counts = [d.counts for d in destinations]
            # Half the producer's request limit leaves room for the request's
            # own framing.
            limit = int(kafka_options.get("max_request_size", 1024 * 1024)) // 2
            self.direct = DirectLogRecords(
                export,
                destinations,
                resource,
                body_mode=log_mode == "body",
                log=log,
                max_message_bytes=min(limit, 512 * 1024),
            )
            self.emitter: Any = self.direct
        else:
            if export.kafka and bootstrap_servers is None:
                raise ValueError(
                    "LogExport(kafka=True, direct=False) needs the manager's"
                    " bootstrap_servers (it connects a client of its own)"
                )
            self._destinations = []
            self._provider = self._sdk_provider(
                export, resource, bootstrap_servers, options
            )
            self.emitter = EventLogEmitter(self._provider, log_mode)

    def _sdk_provider(
        self,
        export: LogExport,
        resource: Any,
        bootstrap_servers: str | list[str] | None,
        options: Mapping[str, Any],
    ) -> Any:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        from ._otlp_kafka import KafkaLogRecordExporter

        provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        exporters: list[tuple[str, Any]] = []
        if export.kafka:
            assert bootstrap_servers is not None
            exporters.append(
                (
                    "kafka",
                    KafkaLogRecordExporter(
                        bootstrap_servers,
                        topic=export.topic,
                        encoding=export.encoding,
                        partition_by_trace_id=export.partition_by_trace_id,
                        timeout=export.timeout,
                        kafka_options=options,
                    ),
                )
            )
        if export.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import (
                OTLPLogExporter,
            )

            exporters.append(
                (
                    "otlp",
                    OTLPLogExporter(
                        endpoint=export.otlp_endpoint, timeout=export.timeout
                    ),
                )
            )
        for name, exporter in exporters:
            counts = _Counts(name)
            self._counts.append(counts)
            provider.add_log_record_processor(
                BatchLogRecordProcessor(_counting(exporter, counts))
            )
        return provider

    @property
    def stats(self) -> dict[str, LogExportStats]:
        """Counters by destination."""
        return {counts.name: counts.snapshot() for counts in self._counts}

    def close(self, timeout: float) -> None:
        """Export what is pending and stop, within ``timeout`` seconds
        (blocking: call it from a thread of its own)."""
        deadline = time.monotonic() + timeout
        if self._provider is not None:
            # Flushes the batch processors, then shuts the exporters down.
            self._provider.shutdown()
            return
        if self.direct is not None:
            self.direct.wait(deadline - time.monotonic())
        for destination in self._destinations:
            destination.close(max(deadline - time.monotonic(), 0.1))


def _counting(exporter: Any, counts: _Counts) -> Any:
    """``exporter`` wrapped so that its results are counted."""
    from opentelemetry.sdk._logs.export import (
        LogRecordExporter,
        LogRecordExportResult,
    )

    class Counting(LogRecordExporter):
        def export(self, batch: Any) -> LogRecordExportResult:
            try:
                result: LogRecordExportResult = exporter.export(batch)
            except Exception:
                counts.add(failed=len(batch))
                raise
            if result is LogRecordExportResult.SUCCESS:
                counts.add(exported=len(batch))
            else:
                counts.add(failed=len(batch))
            return result

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(exporter.force_flush(timeout_millis))

    return Counting()
