"""Scenario 4s: the OTel SDK's own cost per log record, the ceiling of 4.

Scenario 4 is scenario 3 plus one ``Logger.emit`` per event. This row times
that emission alone: the records of scenario 4 (same event type, same
payloads, same span, same attributes) handed by `EventLogEmitter` to the
SDK's `BatchLogRecordProcessor`, with no Kafka and no encoding. Its ratio
to the raw baseline is an upper bound for scenario 4, whatever the rest of
``publish`` costs: 4 cannot emit records faster than the SDK accepts them.
"""

from __future__ import annotations

import gc
import time

from opentelemetry._logs import SeverityNumber

from otel_kafka_events._event_type import EnrichedEvent, EventType
from otel_kafka_events.otel._logs import EventLogEmitter

from ._harness import (
    PAYLOAD_MASK,
    TOPIC_PREFIX,
    BenchPayload,
    Result,
    Run,
    Settings,
    best_run,
    make_payloads,
    run_records,
)
from ._publish import OtelSetup

__all__ = ["log_emit_result"]


def log_emit_result(settings: Settings, otel: OtelSetup) -> Result:
    """Row 4s: records per second that the SDK accepts from our emitter."""
    topic = f"{TOPIC_PREFIX}.logemit"
    event_type = EventType("bench", topic, "logemit", BenchPayload, trace_context=True)
    event_type.set_schema_id(1)
    emitter = EventLogEmitter(otel.logger_provider)
    payloads = make_payloads()
    full_name = event_type.full_name
    severity = SeverityNumber.INFO

    def enriched_events(count: int) -> list[EnrichedEvent]:
        with otel.active_span():
            return [event_type.enrich(payloads[i & PAYLOAD_MASK]) for i in range(count)]

    def emit_all(events: list[EnrichedEvent]) -> float:
        emit = emitter.emit
        start = time.perf_counter()
        for event in events:
            emit(
                full_name,
                event.event.__dict__,
                event.event_id,
                event.span_context,
                severity,
            )
        return time.perf_counter() - start

    emit_all(enriched_events(settings.warmup))
    otel.drain_logs()
    runs = []
    exported = 0
    for _ in range(settings.repeats):
        events = enriched_events(settings.events)
        gc.collect()
        elapsed = emit_all(events)
        runs.append(Run(settings.events, elapsed, elapsed))
        # Untimed, as in scenario 4: export what is queued and forget it.
        exported += otel.drain_logs()
    best = best_run(runs)
    detail = f"{best.total_s / best.events * 1e6:.1f} us/record; ceiling of 4"
    if exported < settings.repeats * settings.events:
        detail += f"; {settings.repeats * settings.events - exported:,} dropped"
    return Result(
        id="4s",
        title="SDK Logger.emit alone, 4's records",
        kind="throughput",
        events=best.events,
        value=best.rate,
        detail=detail,
        runs=run_records(runs),
        extra={"log_records_exported": exported},
    )
