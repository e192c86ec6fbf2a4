"""Shared pieces of the benchmarks: settings, payload, timing and results.

Every throughput figure is events per second from the first publish (or
``send``) call until the broker has acknowledged the last event of the run;
the time until the loop of calls returns is kept as the "enqueue" rate. A
scenario is warmed up once, then timed ``repeats`` times, and the fastest
run is kept ("best of"), which is the least disturbed by other processes on
a shared machine.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from otel_kafka_events import EventPayload

__all__ = [
    "PAYLOAD_MASK",
    "TOPIC_PREFIX",
    "BenchPayload",
    "Result",
    "Run",
    "Settings",
    "best_run",
    "machine_info",
    "make_payloads",
    "measure",
    "measure_interleaved",
    "peak_rss_bytes",
    "percentile",
    "reset_peak_rss",
    "rss_bytes",
    "run_records",
]

TOPIC_PREFIX = "bench.events"


class BenchPayload(EventPayload):
    """The payload of every scenario: one field of each scalar kind."""

    route: str
    status: int
    duration: float
    cached: bool


# Payloads are taken round-robin from a pool of this size (a power of two, so
# the index is a mask), so the encoder never sees one object over and over.
PAYLOAD_POOL = 1024
PAYLOAD_MASK = PAYLOAD_POOL - 1


def make_payloads(count: int = PAYLOAD_POOL) -> list[BenchPayload]:
    """Return ``count`` distinct, deterministic payloads."""
    return [
        BenchPayload(
            route=f"/api/v1/items/{i % 97}",
            status=200 if i % 10 else 404,
            duration=0.001 * (i % 500) + 0.0005,
            cached=bool(i % 3),
        )
        for i in range(count)
    ]


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark session.

    Attributes
    ----------
    events
        Events per timed throughput or encode run.
    repeats
        Timed runs per scenario (best kept).
    warmup
        Events of the untimed warm-up run.
    latency_events
        Awaited publishes per latency run.
    memory_events
        Events published in the memory scenario.
    memory_buffer
        ``BufferOptions.max_events`` of the memory scenario.
    event_types
        Registered event types in scenario 2x200.
    smoke
        Quick check mode (few events, no Safir venv creation).
    """

    events: int
    repeats: int
    warmup: int
    latency_events: int
    memory_events: int
    memory_buffer: int
    event_types: int
    smoke: bool


@dataclass(frozen=True)
class Run:
    """One timed run: events, seconds until the loop returned, until acked."""

    events: int
    enqueue_s: float
    total_s: float

    @property
    def rate(self) -> float:
        """Delivered events per second."""
        return self.events / self.total_s

    @property
    def enqueue_rate(self) -> float:
        """Events per second until the publish loop returned."""
        return self.events / self.enqueue_s


@dataclass
class Result:
    """One row of the results table.

    ``ratio`` is always "speed relative to the baseline": baseline cost over
    our cost, so 1.0 is parity and 0.5 means twice as slow.
    """

    id: str
    title: str
    kind: str
    """``throughput``, ``latency``, ``encode`` or ``memory``."""
    events: int = 0
    value: float | None = None
    """Events/s (throughput, encode, memory) or p50 seconds (latency)."""
    baseline_id: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    target: str = ""
    target_met: bool | None = None
    detail: str = ""
    skipped: str | None = None
    runs: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The result as plain JSON data."""
        return {
            "id": self.id,
            "title": self.title,
            "kind": self.kind,
            "events": self.events,
            "value": self.value,
            "baseline_id": self.baseline_id,
            "baseline_value": self.baseline_value,
            "ratio": self.ratio,
            "target": self.target,
            "target_met": self.target_met,
            "detail": self.detail,
            "skipped": self.skipped,
            "runs": self.runs,
            "extra": self.extra,
        }


async def measure(
    run_once: Callable[[int], Awaitable[Run]], settings: Settings
) -> list[Run]:
    """Warm up once, then time ``settings.repeats`` runs of ``settings.events``."""
    [runs] = await measure_interleaved([run_once], settings)
    return runs


async def measure_interleaved(
    loops: Sequence[Callable[[int], Awaitable[Run]]], settings: Settings
) -> list[list[Run]]:
    """As `measure`, for several loops whose timed runs take turns.

    Each repeat runs every loop once with ``settings.events``, the order
    rotating from one repeat to the next, so that a machine whose speed
    drifts during the session, as shared virtual machines do, slows all of
    them alike instead of whichever runs later.

    Returns
    -------
    list
        The runs of each loop, in the order of ``loops``.
    """
    if settings.warmup:
        for once in loops:
            await once(settings.warmup)
    runs: list[list[Run]] = [[] for _ in loops]
    order = list(range(len(loops)))
    for repeat in range(settings.repeats):
        shift = repeat % len(order)
        for index in order[shift:] + order[:shift]:
            # Collect now so that a run does not pay for the previous one's
            # garbage.
            gc.collect()
            runs[index].append(await loops[index](settings.events))
    return runs


def best_run(runs: Sequence[Run]) -> Run:
    """The fastest run (shortest time until everything was acknowledged)."""
    return min(runs, key=lambda r: r.total_s / r.events)


def run_records(runs: Sequence[Run]) -> list[dict[str, float]]:
    """Runs as JSON data."""
    return [
        {
            "events": r.events,
            "enqueue_s": r.enqueue_s,
            "total_s": r.total_s,
            "rate": r.rate,
            "enqueue_rate": r.enqueue_rate,
        }
        for r in runs
    ]


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of ``samples`` (``fraction`` in 0..1)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak is the best available figure
        return peak_rss_bytes()


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """Peak resident set size since start or the last `reset_peak_rss`."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(broker: str) -> dict[str, Any]:
    """What the numbers depend on: CPUs, interpreter, library versions."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "aiokafka": _version("aiokafka"),
        "fastavro": _version("fastavro"),
        "opentelemetry_sdk": _version("opentelemetry-sdk"),
        "otel_kafka_events": _version("otel-kafka-events"),
        "broker": broker,
        "load_average_at_start": [round(x, 2) for x in load],
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
