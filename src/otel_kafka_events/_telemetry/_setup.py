"""The OpenTelemetry side of an event manager, built from its
`TelemetryOptions`: what ``publish`` adds to each event (trace headers, a
producer span) and the listeners each delivery session registers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import Span, SpanContext

from .._delivery._listeners import DeliveryListener, Guard
from .._delivery._ratelimit import RateLimitedLog
from .._delivery._transport import Headers, Transport
from .._options import TelemetryOptions
from ._listeners import (
    BatchSpanListener,
    DirectLogListener,
    EventLogListener,
    LogSource,
    ProducerSpanListener,
    emit_record,
)
from ._log_export import LogExportPipeline
from ._logs import EventLogEmitter
from ._propagation import HeaderInjector
from ._spans import BatchSpans, ProducerSpans

__all__ = ["SessionTelemetry", "Telemetry", "flush_telemetry"]


@dataclass
class SessionTelemetry:
    """The telemetry of one delivery session.

    Attributes
    ----------
    listeners
        To register with the session.
    log_export
        The manager's own log export (`TelemetryOptions.log_export`), if
        any: closed after the session.
    """

    listeners: list[DeliveryListener] = field(default_factory=list)
    log_export: LogExportPipeline | None = None


class Telemetry:
    """What `TelemetryOptions` turn on, each part None when off.

    Parameters
    ----------
    options
        What to enable.
    topic
        The events topic, for span names and attributes.
    """

    def __init__(self, options: TelemetryOptions, topic: str) -> None:
        self.options = options
        self.body_mode = options.log_mode == "body"
        """Log records carry the whole event in their body."""
        self.injector = (
            HeaderInjector(
                allow_baggage=bool(options.baggage),
                baggage_keys=options.baggage_keys,
            )
            if options.propagation_headers
            else None
        )
        """Builds each record's trace headers, or None."""
        self.event_spans = (
            ProducerSpans(topic, options.tracer_provider)
            if options.producer_spans in (True, "event")
            else None
        )
        """Starts a span per event (``producer_spans="event"``), or None."""
        self.batch_spans = (
            BatchSpans(topic, options.tracer_provider)
            if options.producer_spans == "batch"
            else None
        )
        """Starts a span per batch (``producer_spans="batch"``), or None."""
        self.emitter = (
            EventLogEmitter(options.logger_provider, options.log_mode)
            if options.logs and options.log_export is None
            else None
        )
        """Emits log records through the application's LoggerProvider."""
        self.wants_log_source = options.logs
        """Whether publishers pass a `LogSource` along with each event."""

    def start_event_span(
        self, guard: Guard, event_id: str, timestamp_ns: int, key: bytes | None = None
    ) -> tuple[Span | None, SpanContext | None]:
        """Start an event's producer span as a child of the current context
        (``key``: the event's record key, or None).

        Returns
        -------
        tuple
            The span (None if starting it failed: the guard counted it), and
            its context when it is recorded (the ``traceparent`` then names
            it), else None.
        """
        assert self.event_spans is not None
        try:
            span = self.event_spans.start(
                otel_context.get_current(), event_id, timestamp_ns, key
            )
            context = span.get_span_context()
        except BaseException as exc:
            guard.failed("producer spans", exc)
            return None, None
        return span, context if context.is_valid else None

    def headers(
        self, guard: Guard, span_context: SpanContext | None, span: Span | None
    ) -> tuple[Headers | None, int]:
        """The trace headers of a record and their size (None, 0 when off or
        when the propagator raised: the guard counted it)."""
        injector = self.injector
        if injector is None:
            return None, 0
        try:
            return injector.headers(span_context, span)
        except BaseException as exc:
            guard.failed("propagation", exc)
            return None, 0

    def emit_now(
        self,
        guard: Guard,
        event_id: str,
        source: LogSource,
        key: bytes | None = None,
    ) -> None:
        """Emit an event's log record at once (managers without delivery)."""
        emitter = self.emitter
        if emitter is not None:
            guard(
                "log records",
                emit_record,
                emitter,
                event_id,
                source,
                self.body_mode,
                key,
            )

    def for_session(
        self,
        *,
        transport: Transport,
        bootstrap_servers: str | list[str] | None,
        kafka_options: Mapping[str, Any],
        log: RateLimitedLog,
    ) -> SessionTelemetry:
        """The listeners (and log export) of a new delivery session."""
        session = SessionTelemetry()
        export = self.options.log_export
        if export is not None:
            pipeline = LogExportPipeline(
                export,
                log_mode=self.options.log_mode,
                logger_provider=self.options.logger_provider,
                bootstrap_servers=bootstrap_servers,
                kafka_options=kafka_options,
                transport=transport,
                log=log,
            )
            session.log_export = pipeline
            if pipeline.direct is not None:
                session.listeners.append(
                    DirectLogListener(pipeline.direct, body_mode=self.body_mode)
                )
            else:
                session.listeners.append(
                    EventLogListener(pipeline.emitter, body_mode=self.body_mode)
                )
        elif self.emitter is not None:
            session.listeners.append(
                EventLogListener(self.emitter, body_mode=self.body_mode)
            )
        if self.event_spans is not None:
            session.listeners.append(ProducerSpanListener())
        if self.batch_spans is not None:
            session.listeners.append(BatchSpanListener(self.batch_spans))
        return session


async def flush_telemetry(
    telemetry: Telemetry,
    timeout: float,
    log_export: LogExportPipeline | None = None,
) -> None:
    """Flush the SDK pipelines the manager fed, within ``timeout`` seconds.

    The manager's own log export (`TelemetryOptions.log_export`), which is
    closed, else the LoggerProvider when `TelemetryOptions.logs` is on; the
    TracerProvider when `TelemetryOptions.producer_spans` is on (the global
    ones when none was given). ``force_flush`` blocks its calling thread until the batch
    processors have exported, and the SDK's log processor ignores its
    timeout (an unreachable OTLP endpoint holds it for the exporter's
    retries), so each flush runs in a daemon thread that is waited for only
    until the deadline. Providers without ``force_flush`` (the API's no-op
    ones) are skipped.
    """
    options = telemetry.options
    providers: list[Any] = []
    if options.logs and options.log_export is None:
        provider = options.logger_provider
        if provider is None:
            from opentelemetry._logs import get_logger_provider

            provider = get_logger_provider()
        providers.append(provider)
    if options.producer_spans:
        provider = options.tracer_provider
        if provider is None:
            from opentelemetry.trace import get_tracer_provider

            provider = get_tracer_provider()
        providers.append(provider)
    millis = max(int(timeout * 1000), 1)
    flushes = [
        _in_daemon_thread(flush, millis)
        for flush in (getattr(p, "force_flush", None) for p in providers)
        if flush is not None
    ]
    if log_export is not None:
        export = log_export
        flushes.append(_in_daemon_thread(lambda ms: export.close(ms / 1000), millis))
    if flushes:
        await asyncio.wait(flushes, timeout=max(timeout, 0.0))


def _in_daemon_thread(function: Any, timeout_millis: int) -> asyncio.Future[Any]:
    """Run ``function(timeout_millis)`` in a thread nobody has to join.

    ``asyncio.to_thread`` would do, except that ``asyncio.run`` joins the
    default executor's threads at exit: a flush stuck past the deadline
    would then hold up the application's exit after all.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def finish(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result = function(timeout_millis)
        except BaseException as exc:  # reported to the awaiting side
            _call_soon(loop, finish, None, exc)
        else:
            _call_soon(loop, finish, result, None)

    threading.Thread(target=run, name="otel-kafka-events-flush", daemon=True).start()
    future.add_done_callback(_retrieve)
    return future


def _call_soon(loop: asyncio.AbstractEventLoop, *args: Any) -> None:
    # The loop may be closed by the time a late flush returns.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(*args)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
