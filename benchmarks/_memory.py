"""Scenario 8: memory while the publisher outruns the broker.

Runs in a child process (``python -m benchmarks._memory``) so that its RSS
figures start from a clean interpreter: the earlier scenarios buffer up to
100,000 events at once, and the allocator keeps that memory mapped, which
would hide any growth here.

Many events are published through a small buffer with the BLOCK policy. The
publish loop only yields to the sender when the buffer is full, so the
publisher always outruns the broker and backpressure applies throughout. Peak
RSS is the kernel's high-water mark, reset just before the loop (with a
sampled maximum as fallback); the buffered count is sampled every 16 events.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from otel_kafka_events import BufferOptions, OverflowPolicy, TelemetryOptions

from ._harness import (
    PAYLOAD_MASK,
    BenchPayload,
    Result,
    Settings,
    make_payloads,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
)
from ._publish import Target, open_manager, wait_settled

__all__ = ["memory_result"]

_ROOT = Path(__file__).resolve().parent.parent
_MIB = 1024 * 1024


async def measure_memory(target: Target, events: int, bound: int) -> dict[str, Any]:
    """Publish ``events`` through a buffer of ``bound`` events; memory figures."""
    payloads = make_payloads()
    buffer = BufferOptions(
        max_events=bound, overflow=OverflowPolicy.BLOCK, block_timeout=120.0
    )
    async with open_manager(
        target,
        "mem",
        buffer=buffer,
        telemetry=TelemetryOptions(trace_context=False),
    ) as manager:
        publisher = await manager.create_publisher("bench", BenchPayload)
        publish = publisher.publish
        # One event first, so connections and metadata are in place.
        await publish(payloads[0])
        await wait_settled(manager, 1)
        gc.collect()
        rss_before = rss_bytes()
        exact = reset_peak_rss()
        sampled_peak = rss_before
        max_buffered = max_bytes = 0
        start = time.perf_counter()
        for i in range(events):
            await publish(payloads[i & PAYLOAD_MASK])
            if not i & 15:
                stats = manager.stats
                max_buffered = max(max_buffered, stats.buffered)
                max_bytes = max(max_bytes, stats.buffered_bytes)
                if not i & 1023:
                    sampled_peak = max(sampled_peak, rss_bytes())
        enqueued = time.perf_counter()
        await wait_settled(manager, events + 1)
        elapsed = time.perf_counter() - start
        peak = max(peak_rss_bytes(), sampled_peak) if exact else sampled_peak
        final = manager.stats
    return {
        "events": events,
        "buffer_max_events": bound,
        "seconds": elapsed,
        "enqueue_seconds": enqueued - start,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak,
        "peak_rss_exact": exact,
        "rss_growth_bytes": peak - rss_before,
        "max_buffered": max_buffered,
        "max_buffered_bytes": max_bytes,
        "delivered": final.delivered - 1,
        "dropped": final.dropped,
        "failed": final.failed,
    }


async def memory_result(target: Target, settings: Settings, value_size: int) -> Result:
    """Run the memory scenario in a child process and make its row."""
    command = [
        sys.executable,
        "-m",
        "benchmarks._memory",
        "--bootstrap-servers",
        target.bootstrap_servers,
        "--registry-url",
        target.registry_url,
        "--events",
        str(settings.memory_events),
        "--buffer",
        str(settings.memory_buffer),
    ]
    if target.idempotence:
        command.append("--idempotence")
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_ROOT), environment.get("PYTHONPATH", "")) if p
    )
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=_ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"memory child failed: {' | '.join(tail)}")
    data = json.loads(stdout.decode().strip().splitlines()[-1])
    events = data["events"]
    bound = data["buffer_max_events"]
    growth = data["rss_growth_bytes"]
    return Result(
        id="8",
        title=f"memory: {events:,} events, buffer {bound:,}, BLOCK",
        kind="memory",
        events=events,
        value=events / data["seconds"],
        target=f"buffered <= {bound:,}",
        target_met=data["max_buffered"] <= bound and not data["dropped"],
        detail=(
            f"peak RSS {data['peak_rss_bytes'] / _MIB:,.1f} MiB"
            f" (+{growth / _MIB:,.1f}); max buffered {data['max_buffered']:,}"
            f" ({data['max_buffered_bytes'] / _MIB:,.2f} MiB); values alone"
            f" would be {events * value_size / _MIB:,.0f} MiB"
        ),
        extra={
            **data,
            "enqueue_rate": events / data["enqueue_seconds"],
            "values_bytes": events * value_size,
        },
    )


def main() -> None:
    """Child process entry point: run and print the figures as JSON."""
    parser = argparse.ArgumentParser(description="Scenario 8 (child process).")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--registry-url", required=True)
    parser.add_argument("--idempotence", action="store_true")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--buffer", type=int, required=True)
    args = parser.parse_args()
    target = Target(
        args.bootstrap_servers,
        args.registry_url,
        idempotence=args.idempotence,
        broker="parent's",
    )
    data = asyncio.run(measure_memory(target, args.events, args.buffer))
    print(json.dumps(data))


if __name__ == "__main__":
    main()
