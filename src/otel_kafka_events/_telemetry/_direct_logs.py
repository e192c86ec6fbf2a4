"""The direct log path: OTLP records of delivered events, without the SDK.

`DirectLogRecords` stands in for `EventLogEmitter` when
`LogExportOptions.direct` is on; see its docstring and docs/opentelemetry.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import SpanContext

from .._delivery._ratelimit import RateLimitedLog
from .._encoding._keys import key_text
from .._options import LogExportOptions
from . import _otlp_wire as wire
from ._log_destinations import Destination
from ._logs import KEY_ATTRIBUTE, SCOPE, not_copied, record_fields
from ._producer_thread import Message
from ._values import PLAIN_TYPES, otel_value

__all__ = ["DirectLogRecords"]


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
        export: LogExportOptions,
        destinations: Sequence[Destination],
        resource: Any,
        *,
        body_mode: bool,
        log: RateLimitedLog | None,
        max_message_bytes: int = 512 * 1024,
    ) -> None:
        from .._version import __version__

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
        timestamp_ns: int,
        key: bytes | None = None,
    ) -> None:
        """Write an accepted event's record and keep it until Kafka settles
        the event.

        The parameters are those of `EventLogEmitter.emit`. A record that
        cannot be written is counted as failed and reported; ``publish``
        goes on.
        """
        try:
            record = self._encode(
                full_name,
                values,
                event_id,
                span_context,
                severity,
                trace_fields,
                timestamp_ns,
                key,
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
        timestamp_ns: int,
        record_key: bytes | None,
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
                full_name,
                values,
                event_id,
                body_mode=True,
                trace_fields=trace_fields,
                key=record_key,
            )
            middle = wire.body_field(body) + wire.attributes_field(
                wire.ATTRIBUTE, attributes
            )
            head = head[: -len(wire.EMPTY_BODY)]
        else:
            middle = wire.event_attributes(
                event_id, values, plan, otel_value, PLAIN_TYPES
            )
            if record_key is not None:
                # Last, as `record_fields` puts it.
                middle += wire.attributes_field(
                    wire.ATTRIBUTE, {KEY_ATTRIBUTE: key_text(record_key)}
                )
        start = b"".join((wire.time_field(timestamp_ns), head, middle, trace))
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
        id with `LogExportOptions.partition_by_trace_id`, else None)."""
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
        self, destination: Destination, messages: list[Message], count: int
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

    def _report(self, destination: Destination, count: int, reason: str) -> None:
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

    async def drained(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds, on the event loop, for the exports
        in flight (the manager calls it before it stops its producer, which
        carries the Kafka exports)."""
        with self._lock:
            futures = [asyncio.wrap_future(f) for f in self._in_flight]
        for future in futures:
            # Failures are counted and reported by `_send`; these copies
            # must not warn that nobody read them.
            future.add_done_callback(_retrieve)
        if futures:
            await asyncio.wait(futures, timeout=max(timeout, 0.0))

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the exports in flight."""
        with self._lock:
            futures = list(self._in_flight)
        if futures:
            concurrent.futures.wait(futures, timeout=max(timeout, 0.0))


# The pipeline -------------------------------------------------------------------


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
