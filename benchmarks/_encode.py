"""Scenario 7: the per-event encode path against bare fastavro.

Three loops over the same record (the traced event of scenario 3):

- ``enrich``: `EventType.enrich` per payload inside an active SDK span
  (id, clock, trace ids, the value, and the event model instance, whose
  values are made on first use: the loop never reads them);
- ``encode``: `EventType.encode` with the arguments ``enrich`` hands to the
  event type's generated writer: Confluent header, metadata and payload
  fields (converters included) written by one function;
- fastavro: ``schemaless_writer`` of the whole event record into a new
  ``BytesIO`` with the schema parsed once, then ``getvalue()``: what a
  hand-written producer would do.
"""

from __future__ import annotations

import gc
import io
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastavro import parse_schema, schemaless_writer

from otel_kafka_events._encoding._event_type import EventType

from ._harness import (
    PAYLOAD_MASK,
    TOPIC_PREFIX,
    BenchPayload,
    Result,
    Settings,
    make_payloads,
)
from ._publish import OtelSetup

__all__ = ["encode_results"]


def _capture_encode_call(
    event_type: EventType[BenchPayload], payload: BenchPayload, otel: OtelSetup
) -> tuple[tuple[Any, ...], Any]:
    """Run ``enrich`` once; keep the arguments `EventType.encode` takes (those
    ``enrich`` gives the generated writer, less the header) and the event."""
    real = event_type.writer
    seen: list[tuple[Any, ...]] = []

    def spy(*args: Any) -> bytearray:
        seen.append(args[1:])
        return real(*args)

    event_type.writer = spy
    try:
        with otel.active_span():
            enriched = event_type.enrich(payload)
    finally:
        event_type.writer = real
    return seen[0], enriched.event


def _time_loops(
    loops: dict[str, Callable[[int], None]], settings: Settings
) -> dict[str, list[float]]:
    """Seconds per event of each timed run, per loop, after one warm-up each.

    The loops take turns within every repeat, so that a change in machine
    load affects all of them alike.
    """
    for loop in loops.values():
        loop(max(settings.warmup, 1))
    per_event: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(settings.repeats):
        for name, loop in loops.items():
            gc.collect()
            start = time.perf_counter()
            loop(settings.events)
            per_event[name].append((time.perf_counter() - start) / settings.events)
    return per_event


def encode_results(settings: Settings, otel: OtelSetup) -> list[Result]:
    """Rows 7a (enrich+encode) and 7b (encode alone), against fastavro."""
    event_type = EventType(
        "bench", f"{TOPIC_PREFIX}.encode", "encode", BenchPayload, trace_context=True
    )
    event_type.set_schema_id(1)
    payloads = make_payloads()
    arguments, event = _capture_encode_call(event_type, payloads[0], otel)
    # The whole record as fastavro takes it: UUID and datetime objects for
    # the logical types, as the event holds them.
    datum: Mapping[str, Any] = dict(event.__dict__)
    parsed = parse_schema(event_type.schema)

    def fastavro_loop(events: int) -> None:
        for _ in range(events):
            stream = io.BytesIO()
            schemaless_writer(stream, parsed, datum)
            stream.getvalue()

    encode = event_type.encode

    def encode_loop(events: int) -> None:
        for _ in range(events):
            encode(*arguments)

    enrich = event_type.enrich

    def enrich_loop(events: int) -> None:
        with otel.active_span():
            for i in range(events):
                enrich(payloads[i & PAYLOAD_MASK])

    # Same bytes from both writers, or the comparison means nothing.
    stream = io.BytesIO()
    schemaless_writer(stream, parsed, datum)
    if bytes(encode(*arguments))[5:] != stream.getvalue():
        raise RuntimeError("EventType.encode and fastavro disagree on the encoding")

    timings = _time_loops(
        {"fastavro": fastavro_loop, "7a": enrich_loop, "7b": encode_loop}, settings
    )
    baseline = timings["fastavro"]
    base = min(baseline)
    results = []
    for result_id, title in (
        ("7a", "encode path: EventType.enrich (+encode)"),
        ("7b", "encode alone: EventType.encode"),
    ):
        times = timings[result_id]
        best = min(times)
        results.append(
            Result(
                id=result_id,
                title=title,
                kind="encode",
                events=settings.events,
                value=1 / best,
                baseline_id="fastavro",
                baseline_value=1 / base,
                ratio=base / best,
                detail=(
                    f"{best * 1e6:.2f} us/event vs fastavro"
                    f" {base * 1e6:.2f} us ({best / base:.2f}x)"
                ),
                runs=[{"seconds_per_event": t} for t in times],
                extra={"fastavro_seconds_per_event": baseline},
            )
        )
    return results
