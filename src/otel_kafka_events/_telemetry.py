"""The OTel parts of a manager, built once from its `TelemetryOptions`."""

from __future__ import annotations

from ._options import TelemetryOptions
from .otel._logs import EventLogEmitter
from .otel._propagation import HeaderInjector
from .otel._spans import ProducerSpans

__all__ = ["Telemetry"]


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
