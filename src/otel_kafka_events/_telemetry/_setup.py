"""The OTel parts of a manager, built once from its `TelemetryOptions`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._delivery._ratelimit import RateLimitedLog
from .._options import TelemetryOptions
from ._logs import EventLogEmitter
from ._propagation import HeaderInjector
from ._spans import BatchSpans, ProducerSpans

if TYPE_CHECKING:
    from ._log_export import LogExportPipeline

__all__ = ["Telemetry", "flush_telemetry", "log_export_drained"]


class Telemetry:
    """Log emitter, header injector and span factory of one manager.

    Each part is None when its option is off, so the publish path tests one
    attribute instead of re-reading options.

    Parameters
    ----------
    options
        What to enable.
    topic
        The events topic, for span names and attributes.
    """

    def __init__(self, options: TelemetryOptions, topic: str) -> None:
        self.options = options
        # With `TelemetryOptions.log_export`, the Kafka manager's own export
        # (`bind_log_export`) provides the emitter.
        self.log_emitter: Any = (
            EventLogEmitter(options.logger_provider, options.log_mode)
            if options.logs and options.log_export is None
            else None
        )
        self.log_export: LogExportPipeline | None = None
        self.log_body = options.log_mode == "body"
        """Log records carry the whole event in their body."""
        self.injector = (
            HeaderInjector(
                allow_baggage=bool(options.baggage),
                baggage_keys=options._baggage_keys,
            )
            if options.propagation_headers
            else None
        )
        self.producer_spans = (
            ProducerSpans(topic, options.tracer_provider)
            if options.producer_spans in (True, "event")
            else None
        )
        """Starts a span per event (``producer_spans="event"``)."""
        self.batch_spans = (
            BatchSpans(topic, options.tracer_provider)
            if options.producer_spans == "batch"
            else None
        )
        """Starts a span per batch (``producer_spans="batch"``)."""

    def bind_log_export(
        self,
        *,
        bootstrap_servers: str | list[str] | None,
        kafka_options: Mapping[str, Any],
        transport: Callable[[], Any],
        log: RateLimitedLog,
    ) -> LogExportPipeline | None:
        """Build the Kafka manager's own log export, if
        `TelemetryOptions.log_export` asks for one, with the manager's Kafka
        connection (``transport`` returns its current transport); its
        emitter becomes `log_emitter`."""
        export = self.options.log_export
        if export is None:
            return None
        try:
            from ._log_export import LogExportPipeline
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise ImportError(
                "TelemetryOptions.log_export needs the OpenTelemetry SDK and"
                " OTLP packages: install otel-kafka-events[otlp-kafka]"
            ) from exc
        self.log_export = LogExportPipeline(
            export,
            log_mode=self.options.log_mode,
            logger_provider=self.options.logger_provider,
            bootstrap_servers=bootstrap_servers,
            kafka_options=kafka_options,
            transport=transport,
            log=log,
        )
        self.log_emitter = self.log_export.emitter
        return self.log_export


async def log_export_drained(telemetry: Telemetry, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for the direct log export's records in
    flight: before the Kafka manager stops the producer that carries them."""
    export = telemetry.log_export
    if export is not None and export.direct is not None:
        await export.direct.drained(timeout)


async def flush_telemetry(telemetry: Telemetry, timeout: float) -> None:
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
    export = telemetry.log_export
    if export is not None:
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
