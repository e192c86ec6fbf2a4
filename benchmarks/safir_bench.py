"""Scenario 6: Safir's ``safir.metrics`` publishing the benchmark payload.

Runs inside a Python >= 3.12 virtual environment with ``safir[kafka]`` (made
by ``benchmarks/run.py`` in a cache directory outside the tree), against the
broker and schema registry of the main run. It times Safir's
``KafkaEventManager`` built the way a Safir application builds it (from
``KafkaMetricsConfiguration`` and the usual environment variables) and, in
the same process, a raw aiokafka ``send()`` loop of a value of the same size
with the producer options FastStream gives aiokafka, and prints one JSON
object on stdout.

Throughput is measured as in the main run: from the first ``publish`` until
the producer has flushed everything (Safir publishes with
``no_confirm=True``, so it never waits for acknowledgements itself).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

_POOL = 1024


def _configure_logging() -> None:
    # As a deployed Safir application would run: INFO and up, so the per-event
    # debug call still builds its arguments but prints nothing; to stderr, so
    # stdout carries only the JSON result.
    import structlog

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


async def _measure(
    run_once: Callable[[int], Awaitable[tuple[float, float]]],
    events: int,
    repeats: int,
    warmup: int,
) -> list[dict[str, float]]:
    if warmup:
        await run_once(warmup)
    runs = []
    for _ in range(repeats):
        gc.collect()
        enqueue_s, total_s = await run_once(events)
        runs.append(
            {
                "events": events,
                "enqueue_s": enqueue_s,
                "total_s": total_s,
                "rate": events / total_s,
                "enqueue_rate": events / enqueue_s,
            }
        )
    return runs


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.update(
        {
            "METRICS_APPLICATION": args.application,
            "METRICS_EVENTS_TOPIC_PREFIX": args.topic_prefix,
            "KAFKA_BOOTSTRAP_SERVERS": args.bootstrap_servers,
            "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
            "SCHEMA_MANAGER_REGISTRY_URL": args.registry_url,
        }
    )
    from aiokafka import AIOKafkaProducer
    from safir.metrics import (  # type: ignore[import-not-found, unused-ignore]
        EventPayload,
        KafkaMetricsConfiguration,
    )

    class BenchPayload(EventPayload):  # type: ignore[misc, unused-ignore]
        route: str
        status: int
        duration: float
        cached: bool

    payloads = [
        BenchPayload(
            route=f"/api/v1/items/{i % 97}",
            status=200 if i % 10 else 404,
            duration=0.001 * (i % 500) + 0.0005,
            cached=bool(i % 3),
        )
        for i in range(_POOL)
    ]
    mask = _POOL - 1

    manager: Any = KafkaMetricsConfiguration().make_manager()
    await manager.initialize()
    publisher: Any = await manager.create_publisher("bench", BenchPayload)
    if type(publisher).__name__ != "KafkaEventPublisher":
        raise RuntimeError(f"Safir gave a {type(publisher).__name__}, not Kafka")
    # Safir's producer lives in the FastStream broker the manager created.
    producer: Any = manager._broker.config.producer
    sample = await manager._schema_manager.serialize(
        publisher.construct_event(payloads[0])
    )
    publish = publisher.publish

    async def safir_once(events: int) -> tuple[float, float]:
        start = time.perf_counter()
        for i in range(events):
            await publish(payloads[i & mask])
        enqueued = time.perf_counter()
        await producer.flush()
        return enqueued - start, time.perf_counter() - start

    safir_runs = await _measure(safir_once, args.events, args.repeats, args.warmup)
    # A swallowed error would turn every publish into a cheap no-op.
    state = manager._state.name
    await manager.aclose()
    if state != "ready_to_publish":
        raise RuntimeError(f"Safir's event manager ended in state {state}")

    # FastStream passes its own defaults to aiokafka (16 KiB batches, no
    # idempotence, acks=1), which are aiokafka's defaults too.
    raw = AIOKafkaProducer(bootstrap_servers=args.bootstrap_servers)
    await raw.start()
    value = bytes(sample)

    async def raw_once(events: int) -> tuple[float, float]:
        send = raw.send
        start = time.perf_counter()
        for _ in range(events):
            await send(args.raw_topic, value)
        enqueued = time.perf_counter()
        await raw.flush()
        return enqueued - start, time.perf_counter() - start

    try:
        raw_runs = await _measure(raw_once, args.events, args.repeats, args.warmup)
    finally:
        await raw.stop()

    return {
        "safir_runs": safir_runs,
        "raw_runs": raw_runs,
        "value_size": len(value),
        "python": sys.version.split()[0],
        "versions": {
            name: metadata.version(name)
            for name in ("safir", "faststream", "aiokafka", "fastavro")
        },
    }


def main() -> None:
    """Parse arguments, run, print the JSON result."""
    parser = argparse.ArgumentParser(description="Benchmark safir.metrics publishing.")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--registry-url", required=True)
    parser.add_argument("--topic-prefix", required=True)
    parser.add_argument("--application", required=True)
    parser.add_argument("--raw-topic", required=True)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5_000)
    args = parser.parse_args()
    _configure_logging()
    result = asyncio.run(_bench(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
