"""Events about arq jobs and queues, as ``safir.metrics.arq`` publishes them.

Two event types: ``arq_job_run`` (`ArqQueueJobEvent`, one per job a worker
starts, with how long it waited past its scheduled time) and
``arq_queue_stats`` (`ArqQueueStatsEvent`, the number of jobs queued, when
`publish_queue_stats` is called). A worker calls `initialize_arq_metrics`
from its ``on_startup`` and uses `make_on_job_start` as its
``on_job_start``. Needs the ``arq`` extra.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

try:
    from arq.connections import RedisSettings, create_pool
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "otel_kafka_events.arq needs arq: pip install 'otel-kafka-events[arq]'"
    ) from exc

from ._encoding._models import EventPayload
from ._manager import EventManager, EventPublisher

__all__ = [
    "ARQ_EVENTS_CONTEXT_KEY",
    "ArqEvents",
    "ArqMetricsError",
    "ArqQueueJobEvent",
    "ArqQueueStatsEvent",
    "initialize_arq_metrics",
    "make_on_job_start",
    "publish_queue_stats",
]

ARQ_EVENTS_CONTEXT_KEY = "_arq_events"
"""The key of the worker context under which `initialize_arq_metrics` puts
the `ArqEvents` (the same key as Safir's)."""


class ArqQueueJobEvent(EventPayload):
    """A job started; published by the hook of `make_on_job_start`."""

    time_in_queue: timedelta
    """How late the job started: now minus the time it was due (its score),
    so a deferred or cron job's planned wait is not counted."""

    queue: str
    """The queue the job came from."""


class ArqQueueStatsEvent(EventPayload):
    """How many jobs an arq queue holds; published by `publish_queue_stats`."""

    num_queued: int
    """Jobs in the queue, due or deferred."""

    queue: str
    """The queue."""


class ArqMetricsError(Exception):
    """The arq worker is not set up for these events (no `ArqEvents` in its
    context, or a job context without its score)."""


class ArqEvents:
    """The publishers of the two arq event types."""

    arq_queue_job_event: EventPublisher[ArqQueueJobEvent]
    arq_queue_stats: EventPublisher[ArqQueueStatsEvent]

    async def initialize(self, manager: EventManager) -> None:
        """Create both publishers with an initialized manager."""
        self.arq_queue_job_event = await manager.create_publisher(
            "arq_job_run", ArqQueueJobEvent
        )
        self.arq_queue_stats = await manager.create_publisher(
            "arq_queue_stats", ArqQueueStatsEvent
        )


async def initialize_arq_metrics(
    event_manager: EventManager, ctx: dict[Any, Any]
) -> None:
    """Create the arq publishers and put them in a worker's context.

    Call from the worker's ``on_startup``, after ``event_manager.initialize()``.

    Parameters
    ----------
    event_manager
        An initialized event manager.
    ctx
        The worker context; gets `ARQ_EVENTS_CONTEXT_KEY`.
    """
    events = ArqEvents()
    await events.initialize(event_manager)
    ctx[ARQ_EVENTS_CONTEXT_KEY] = events


def make_on_job_start(
    queue_name: str,
) -> Callable[[dict[Any, Any]], Awaitable[None]]:
    """An ``on_job_start`` hook publishing an `ArqQueueJobEvent` per job.

    Parameters
    ----------
    queue_name
        The queue the worker reads, put in every event.

    Returns
    -------
    callable
        The hook. It raises `ArqMetricsError` if `initialize_arq_metrics`
        did not run in ``on_startup``.
    """

    async def on_job_start(ctx: dict[Any, Any]) -> None:
        events = ctx.get(ARQ_EVENTS_CONTEXT_KEY)
        score = ctx.get("score")
        if not isinstance(events, ArqEvents) or not isinstance(score, int | float):
            raise ArqMetricsError(
                "The arq job context has no arq events: call"
                " initialize_arq_metrics(manager, ctx) in the worker's on_startup"
            )
        # arq's score is the time the job was due, in milliseconds.
        due = datetime.fromtimestamp(score / 1000, tz=UTC)
        await events.arq_queue_job_event.publish(
            ArqQueueJobEvent(time_in_queue=datetime.now(tz=UTC) - due, queue=queue_name)
        )

    return on_job_start


async def publish_queue_stats(
    queue: str, redis_settings: RedisSettings, arq_events: ArqEvents
) -> None:
    """Publish an `ArqQueueStatsEvent` with the number of jobs in ``queue``.

    Parameters
    ----------
    queue
        The arq queue name.
    redis_settings
        Where its Redis is.
    arq_events
        The publishers (from `initialize_arq_metrics` or `ArqEvents`).
    """
    redis = await create_pool(redis_settings)
    try:
        queued = await redis.zcard(queue)
    finally:
        await redis.aclose()
    await arq_events.arq_queue_stats.publish(
        ArqQueueStatsEvent(num_queued=queued, queue=queue)
    )
