"""The arq integration against a real Redis and a real arq worker."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Worker

from otel_kafka_events import NOT_NONE, MockEventManager
from otel_kafka_events.arq import (
    ARQ_EVENTS_CONTEXT_KEY,
    ArqEvents,
    ArqMetricsError,
    initialize_arq_metrics,
    make_on_job_start,
    publish_queue_stats,
)
from otel_kafka_events.testing import consume_events
from otel_kafka_events_devstack import LocalKafkaStack, RedisServer

from ..conftest import ManagerFactory

QUEUE = "reports"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    # CI installs redis-server (.ci/run) and must not skip.
    if shutil.which("redis-server") is None and os.environ.get("CI") != "true":
        pytest.skip("no redis-server on PATH (Debian: apt-get install redis-server)")
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_settings(redis_server: RedisServer) -> RedisSettings:
    return RedisSettings(host=redis_server.host, port=redis_server.port)


@pytest_asyncio.fixture
async def redis(redis_settings: RedisSettings) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(redis_settings)
    await pool.flushall()
    yield pool
    await pool.aclose()


async def make_report(ctx: dict[Any, Any]) -> str:
    return "done"


def worker(redis: ArqRedis, **hooks: Any) -> Worker:
    return Worker(
        functions=[make_report],
        queue_name=QUEUE,
        redis_pool=redis,
        burst=True,
        poll_delay=0,
        handle_signals=False,
        **hooks,
    )


async def test_job_events_from_a_real_worker(redis: ArqRedis) -> None:
    manager = MockEventManager("reporter", "what.ever")
    await manager.initialize()

    async def startup(ctx: dict[Any, Any]) -> None:
        await initialize_arq_metrics(manager, ctx)

    job = await redis.enqueue_job("make_report", _queue_name=QUEUE)
    assert job is not None
    # A job deferred by 0.3 s: its wait before that is not time in queue.
    await redis.enqueue_job(
        "make_report", _queue_name=QUEUE, _defer_by=timedelta(seconds=0.3)
    )
    await asyncio.sleep(0.4)
    running = worker(redis, on_startup=startup, on_job_start=make_on_job_start(QUEUE))
    try:
        await running.main()
    finally:
        await running.close()
    assert running.jobs_complete == 2
    assert await job.result() == "done"
    events = running.ctx[ARQ_EVENTS_CONTEXT_KEY]
    published = events.arq_queue_job_event.published
    published.assert_published_all([{"queue": QUEUE, "time_in_queue": NOT_NONE}] * 2)
    deferred, due = sorted(payload.time_in_queue for payload in published)
    # The job due at once waited through the whole sleep; the deferred one
    # only from its due time on.
    assert due >= timedelta(seconds=0.4)
    assert timedelta(0) <= deferred < timedelta(seconds=0.3)


async def test_worker_without_initialize_fails_clearly(redis: ArqRedis) -> None:
    await redis.enqueue_job("make_report", _queue_name=QUEUE)
    running = worker(redis, on_job_start=make_on_job_start(QUEUE))
    try:
        with pytest.raises(ArqMetricsError, match="initialize_arq_metrics"):
            await running.main()
    finally:
        await running.close()


async def test_queue_stats_to_kafka(
    redis: ArqRedis,
    redis_settings: RedisSettings,
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
) -> None:
    for _ in range(3):
        await redis.enqueue_job("make_report", _queue_name=QUEUE)
    manager = await make_kafka_manager()
    events = ArqEvents()
    await events.initialize(manager)
    await publish_queue_stats(QUEUE, redis_settings, events)
    await manager.aclose()
    assert manager.stats.delivered == 1
    (record,) = await consume_events(local_kafka_stack, manager.topic, count=1)
    assert record.event == "arq_queue_stats"
    assert record.value is not None
    assert (record.value["num_queued"], record.value["queue"]) == (3, QUEUE)
