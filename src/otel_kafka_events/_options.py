"""Options shared by every event manager: telemetry and buffering."""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["BufferOptions", "LogExport", "OverflowPolicy", "TelemetryOptions"]


class OverflowPolicy(enum.StrEnum):
    """What ``publish`` does when the pending-event buffer is full."""

    BLOCK = "block"
    """Wait for room up to ``BufferOptions.block_timeout``, then drop the event
    (reported as dropped) or, with ``raise_on_error``, raise."""

    DROP_NEWEST = "drop_newest"
    """Drop the event being published; it is counted and reported."""

    RAISE = "raise"
    """Raise `EventBufferFullError` to the caller."""


@dataclass(frozen=True)
class BufferOptions:
    """Bounds on events accepted by ``publish`` but not yet acknowledged.

    Attributes
    ----------
    max_events
        Most events held at once.
    max_bytes
        Most encoded bytes (values and headers) held at once.
    overflow
        The policy applied when either bound would be exceeded.
    block_timeout
        Seconds the `OverflowPolicy.BLOCK` policy waits for room.
    """

    max_events: int = 100_000
    max_bytes: int = 64 * 1024 * 1024
    overflow: OverflowPolicy = OverflowPolicy.BLOCK
    block_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {self.max_events}")
        if self.max_bytes < 1024:
            raise ValueError(f"max_bytes must be at least 1024, got {self.max_bytes}")
        if self.block_timeout < 0:
            raise ValueError(
                f"block_timeout must not be negative, got {self.block_timeout}"
            )
        object.__setattr__(self, "overflow", OverflowPolicy(self.overflow))


@dataclass(frozen=True)
class LogExport:
    """Where a Kafka event manager sends its events' log records itself.

    With `TelemetryOptions.log_export` set, the manager exports the log
    records of its events (`TelemetryOptions.logs`) to OTLP on a Kafka
    topic of its own broker, to an OTLP/HTTP endpoint, or both, instead of
    handing them to an application's LoggerProvider.

    Attributes
    ----------
    kafka
        Write the records to ``topic`` on the event manager's broker, with
        its connection settings (security included), for the Collector's
        ``kafka`` receiver. Needs the ``otlp-kafka`` extra.
    topic
        The topic; ``otlp_logs``, the receiver's default.
    encoding
        ``"otlp_proto"`` or ``"otlp_json"``, as the receiver's ``encoding``.
    partition_by_trace_id
        One Kafka record per trace, keyed by the trace id in hex.
    otlp_endpoint
        Also (or only, with ``kafka=False``) send them to this OTLP/HTTP
        logs URL, e.g. ``http://collector:4318/v1/logs``.
    direct
        Build the OTLP records from each batch of events Kafka acknowledged,
        without the OpenTelemetry SDK's per-record objects (several times
        cheaper per event). A record then goes out for every *delivered*
        event, once Kafka acknowledged it; see docs/opentelemetry.md. When
        False, records go through an SDK LoggerProvider of the manager's own
        with a batch processor per destination, emitted at ``publish``.
    timeout
        Seconds one export to a destination may take before it counts as
        failed.
    max_pending
        With ``direct``: most records exported but not yet acknowledged by
        the destinations; records beyond it are dropped and counted.
    """

    kafka: bool = True
    topic: str = "otlp_logs"
    encoding: Literal["otlp_proto", "otlp_json"] = "otlp_proto"
    partition_by_trace_id: bool = False
    otlp_endpoint: str | None = None
    direct: bool = False
    timeout: float = 10.0
    max_pending: int = 100_000

    def __post_init__(self) -> None:
        if not self.kafka and not self.otlp_endpoint:
            raise ValueError("LogExport needs kafka=True or an otlp_endpoint")
        if self.encoding not in ("otlp_proto", "otlp_json"):
            raise ValueError(
                f"encoding must be 'otlp_proto' or 'otlp_json', got {self.encoding!r}"
            )
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {self.max_pending}")


@dataclass(frozen=True)
class TelemetryOptions:
    """How published events connect to OpenTelemetry.

    Attributes
    ----------
    trace_context
        Add ``trace_id``, ``span_id`` and ``trace_flags`` of the caller's span
        to every event's metadata. When False the schema has no trace fields.
    propagation_headers
        Inject the trace context into Kafka record headers (``traceparent``,
        ``tracestate``) through the global propagator.
    baggage
        Also propagate W3C baggage: False (the default, since baggage may
        carry personal data), True for every entry, or a collection of the
        keys allowed through.
    producer_spans
        PRODUCER spans ``send {topic}``. ``"event"`` (or True): one per
        event, a child of the caller's span that ends when the broker
        acknowledges the event; the record's ``traceparent`` names it.
        ``"batch"``: one per batch sent, linked to the callers' spans of its
        events, whose ``traceparent`` names the caller's span. Off by
        default: a span per event costs several times the rest of the
        publish path; a span per batch costs next to nothing per event.
    logs
        Emit every event as an OTel log record through the Logs API.
    logger_provider
        The LoggerProvider for `logs`; the global one when None. With
        `log_export`, only its resource is used (the records' resource).
    log_mode
        ``"attributes"``: payload and metadata in the record's attributes
        (current event conventions); ``"body"``: all of it as a map in the
        body, for backends that ignore complex attributes.
    log_export
        With `logs`: the Kafka manager exports the records itself, to OTLP
        on Kafka and/or an OTLP/HTTP endpoint (see `LogExport`), instead of
        through ``logger_provider``. Kafka managers only.
    tracer_provider
        The TracerProvider for producer spans; the global one when None.
    meter_provider
        The MeterProvider for the delivery counters of a Kafka manager; the
        global one when None (a no-op unless an SDK provider is installed).
    """

    trace_context: bool = True
    propagation_headers: bool = True
    baggage: bool | Collection[str] = False
    producer_spans: bool | Literal["event", "batch"] = False
    logs: bool = False
    logger_provider: Any = None
    log_mode: Literal["attributes", "body"] = "attributes"
    tracer_provider: Any = None
    meter_provider: Any = None
    log_export: LogExport | None = None
    _baggage_keys: frozenset[str] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.producer_spans not in (False, True, "event", "batch"):
            raise ValueError(
                "producer_spans must be False, True, 'event' or 'batch', got"
                f" {self.producer_spans!r}"
            )
        if self.log_mode not in ("attributes", "body"):
            raise ValueError(
                f"log_mode must be 'attributes' or 'body', got {self.log_mode!r}"
            )
        if self.log_export is not None and not self.logs:
            raise ValueError("log_export needs logs=True")
        if not isinstance(self.baggage, bool):
            object.__setattr__(self, "_baggage_keys", frozenset(self.baggage))
