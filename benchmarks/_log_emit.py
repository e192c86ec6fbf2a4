"""Scenario 4s: the OTel SDK's own cost per log record, the ceiling of 4.

Scenario 4 is scenario 3 plus one ``Logger.emit`` per event. This row times
that emission alone: the records of scenario 4 (same event type, same
payloads, same span, same attributes) handed by `EventLogEmitter` to the
SDK's `BatchLogRecordProcessor`, with no Kafka and no encoding. Since
scenario 4 does a ``publish`` and an emission per event, its ratio is at
most ``1 / (1 / r3 + 1 / r4s)``, and below ``1 / (1 + 1 / r4s)`` even if
``publish`` cost no more than a raw send.
"""

from __future__ import annotations

import time

from opentelemetry._logs import SeverityNumber

from otel_kafka_events._encoding._event_type import EventType
from otel_kafka_events._telemetry._logs import EventLogEmitter

from ._harness import (
    PAYLOAD_MASK,
    TOPIC_PREFIX,
    BenchPayload,
    Result,
    Run,
    Settings,
    best_run,
    make_payloads,
    measure_interleaved,
    run_records,
)
from ._publish import OtelSetup, RawSender

__all__ = ["log_emit_result"]


async def log_emit_result(
    settings: Settings, otel: OtelSetup, baseline: RawSender
) -> Result:
    """Row 4s: records per second the SDK accepts from our emitter, timed
    next to raw aiokafka runs of the same size (`measure_interleaved`)."""
    topic = f"{TOPIC_PREFIX}.logemit"
    event_type = EventType("bench", topic, "logemit", BenchPayload, trace_context=True)
    event_type.set_schema_id(1)
    emitter = EventLogEmitter(otel.logger_provider)
    payloads = make_payloads()
    full_name = event_type.full_name
    severity = SeverityNumber.INFO
    exported = 0

    async def run_once(events: int) -> Run:
        nonlocal exported
        # Untimed: the events of scenario 4, then an empty SDK pipeline.
        with otel.active_span():
            enriched = [
                event_type.enrich(payloads[i & PAYLOAD_MASK]) for i in range(events)
            ]
        exported += otel.drain_logs()
        emit = emitter.emit
        start = time.perf_counter()
        for event in enriched:
            # The values the publish path gives the emitter in attributes mode.
            emit(
                full_name,
                {"application": "logemit", **event.fields},
                event.event_id,
                event.span_context,
                severity,
                timestamp_ns=event.timestamp_ns,
            )
        elapsed = time.perf_counter() - start
        return Run(events, elapsed, elapsed)

    runs, raw_runs = await measure_interleaved([run_once, baseline.run_once], settings)
    exported += otel.drain_logs()
    best = best_run(runs)
    paired = best_run(raw_runs).rate
    ratio = best.rate / paired
    # Scenario 4 spends a publish and an emission per event: even if the
    # publish cost no more than a raw send (ratio 1), its ratio would be
    # 1 / (1 + 1 / ratio of this row).
    bound = 1 / (1 + 1 / ratio)
    detail = (
        f"{best.total_s / best.events * 1e6:.1f} us/record; caps 4 at"
        f" {bound:.2f} even if publish() matched a raw send"
    )
    expected = settings.warmup + settings.repeats * settings.events
    if exported < expected:
        detail += f"; {expected - exported:,} records dropped by SDK"
    return Result(
        id="4s",
        title="SDK Logger.emit alone, 4's records",
        kind="throughput",
        events=best.events,
        value=best.rate,
        baseline_id="1",
        baseline_value=paired,
        ratio=ratio,
        detail=detail,
        runs=run_records(runs),
        extra={
            "log_records_exported": exported,
            "bound_for_4": bound,
            "paired_baseline_runs": run_records(raw_runs),
        },
    )
