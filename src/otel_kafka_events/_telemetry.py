"""The OTel parts of a manager, built once from its `TelemetryOptions`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from ._options import TelemetryOptions
from .otel._logs import EventLogEmitter
from .otel._propagation import HeaderInjector
from .otel._spans import ProducerSpans

__all__ = ["Telemetry", "flush_telemetry"]


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
        self.log_emitter = (
            EventLogEmitter(options.logger_provider, options.log_mode)
            if options.logs
            else None
        )
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
            if options.producer_spans
            else None
        )


async def flush_telemetry(options: TelemetryOptions, timeout: float) -> None:
    """Flush the SDK pipelines the manager fed, within ``timeout`` seconds.

    The LoggerProvider when `TelemetryOptions.logs` is on, the TracerProvider
    when `TelemetryOptions.producer_spans` is on (the global ones when none
    was given). ``force_flush`` blocks its calling thread until the batch
    processors have exported, and the SDK's log processor ignores its
    timeout (an unreachable OTLP endpoint holds it for the exporter's
    retries), so each flush runs in a daemon thread that is waited for only
    until the deadline. Providers without ``force_flush`` (the API's no-op
    ones) are skipped.
    """
    providers: list[Any] = []
    if options.logs:
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
    flushes = [
        _in_daemon_thread(flush, max(int(timeout * 1000), 1))
        for flush in (getattr(p, "force_flush", None) for p in providers)
        if flush is not None
    ]
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
