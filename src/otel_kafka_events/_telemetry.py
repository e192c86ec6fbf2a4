"""The OTel parts of a manager, built once from its `TelemetryOptions`."""

from __future__ import annotations

import asyncio
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


async def flush_telemetry(options: TelemetryOptions) -> None:
    """Flush the SDK pipelines the manager fed, without blocking the loop.

    The LoggerProvider when `TelemetryOptions.logs` is on, the TracerProvider
    when `TelemetryOptions.producer_spans` is on (the global ones when none
    was given). ``force_flush`` blocks its calling thread until the batch
    processors have exported, so it runs in a worker thread. Providers
    without ``force_flush`` (the API's no-op ones) are skipped.
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
    for provider in providers:
        flush = getattr(provider, "force_flush", None)
        if flush is not None:
            await asyncio.to_thread(flush)
