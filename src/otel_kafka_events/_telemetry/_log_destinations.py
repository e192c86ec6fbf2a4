"""Where the log records of a Kafka event manager's `LogExportOptions` go.

A `Destination` takes ``ExportLogsServiceRequest`` messages (with their
Kafka keys) and answers with a `concurrent.futures.Future`; its `Counts`
say how many records it exported, failed or dropped. Kafka is reached
through the event manager's own producer (the direct path, on the
manager's event loop) or a `ProducerThread` of its own; OTLP/HTTP through
a daemon thread that posts protobuf.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._delivery._transport import Transport
from .._foreign import contained, own_cancellation
from .._options import LogExportOptions
from .._secrets import basic_auth, split_credentials
from ._producer_thread import Message, ProducerThread

__all__ = [
    "Counts",
    "Destination",
    "LogExportStats",
    "counting",
    "http_destination",
    "kafka_thread_destination",
    "transport_destination",
]


@dataclass(frozen=True)
class LogExportStats:
    """Log records of events exported by one destination of `LogExportOptions`.

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
        (`LogExportOptions.max_pending`, direct path only).
    """

    destination: str
    exported: int
    failed: int
    dropped: int


class Counts:
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


class _HttpSender:
    """POSTs OTLP/HTTP protobuf requests from a daemon thread of its own."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        # Credentials in the URL go in a header: urllib would not send them,
        # and a URL may end up in an error message.
        self._endpoint, credentials = split_credentials(endpoint)
        self._headers = {"Content-Type": "application/x-protobuf"}
        if credentials is not None:
            self._headers["Authorization"] = basic_auth(credentials)
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
            self._endpoint, data=data, headers=self._headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self._timeout) as response:
            response.read()

    def close(self, timeout: float) -> None:
        thread = self._thread
        self._queue.put(None)
        if thread is not None:
            thread.join(max(timeout, 0.0))


class Destination:
    """Where requests go, with its counters."""

    def __init__(
        self,
        counts: Counts,
        send: Callable[[list[Message]], concurrent.futures.Future[None]],
        close: Callable[[float], None],
    ) -> None:
        self.counts = counts
        self.send = send
        self.close = close


def kafka_thread_destination(
    export: LogExportOptions,
    bootstrap_servers: str | list[str],
    kafka_options: Mapping[str, Any],
) -> Destination:
    from ._otlp_kafka import encoder

    producer = ProducerThread(
        bootstrap_servers,
        export.topic,
        kafka_options,
        timeout=export.timeout,
        encode=encoder(export.encoding),
    )
    return Destination(Counts("kafka"), producer.send, producer.close)


def transport_destination(
    export: LogExportOptions, transport: Transport
) -> Destination:
    """Kafka through the event manager's own transport, on its event loop.

    The direct path runs on that loop already (the session's listeners call
    it), so its records take the manager's connection without a thread or a
    client of their own, through the same seam as the events.
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
                await asyncio.gather(
                    *(
                        contained(
                            transport.produce(
                                topic, key, encode(value) if encode else value
                            )
                        )
                        for key, value in messages
                    )
                )
        except BaseException as exc:
            # Whatever the transport raises fails these records only; our
            # own cancellation (the loop going away) goes on.
            future.set_exception(exc)
            if own_cancellation(exc):
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

    # The manager stops its transport itself.
    return Destination(Counts("kafka"), send, lambda timeout: None)


def http_destination(export: LogExportOptions) -> Destination:
    assert export.otlp_endpoint is not None
    sender = _HttpSender(export.otlp_endpoint, export.timeout)

    def send(messages: list[Message]) -> concurrent.futures.Future[None]:
        return sender.send([value for _, value in messages])

    return Destination(Counts("otlp"), send, sender.close)


def counting(exporter: Any, counts: Counts) -> Any:
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
