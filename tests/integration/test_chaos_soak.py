"""A bounded chaos soak: every event's fate is known exactly once, and true.

Several publisher tasks (some waiting for acknowledgements) publish through
a tiny buffer with a short delivery timeout while the broker is paused
(SIGSTOP / SIGCONT), restarted where it keeps acknowledged writes, and the
schema registry is switched off and on behind a proxy. At the end:

- every published event settled exactly once (callback for failures,
  counters for all), and ``published == delivered + failed + dropped``;
- every delivered event is on the topic exactly once;
- an event reported failed for time or dropped was never handed to the
  producer, so it is not on the topic; one sent but not acknowledged may be.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

from otel_kafka_events import (
    BufferOptions,
    DeliveryFailure,
    EventDeliveryError,
    KafkaEventManager,
    OverflowPolicy,
)
from otel_kafka_events.errors import EventManagerClosedError, NotAcknowledgedError
from otel_kafka_events_devstack import LocalKafkaStack, TcpProxy
from otel_kafka_events_devstack._broker_base import SubprocessBroker

from ..broker_support import capabilities
from .test_reliability_delivery import Numbered, decode_all, new_broker, read_all

SOAK_SECONDS = 25.0


async def chaos(
    stack: LocalKafkaStack, proxy: TcpProxy, stop: asyncio.Event
) -> list[str]:
    """Pause the broker, take the registry away, restart the broker; repeat."""
    broker = stack.broker
    assert isinstance(broker, SubprocessBroker)
    done: list[str] = []
    restarts = capabilities().keeps_acknowledged_writes
    step = 0
    while not stop.is_set():
        await asyncio.sleep(1.5)
        kind = step % 3
        step += 1
        if kind == 0:
            process = broker.process
            assert process is not None
            os.kill(process.pid, signal.SIGSTOP)
            await asyncio.sleep(random.uniform(0.5, 2.5))
            os.kill(process.pid, signal.SIGCONT)
            done.append("pause")
        elif kind == 1:
            proxy.switch_off()
            await asyncio.sleep(random.uniform(0.5, 2.0))
            proxy.switch_on()
            done.append("registry")
        elif restarts:
            await asyncio.to_thread(broker.restart)
            done.append("restart")
    return done


async def test_chaos_soak_every_fate_known_once_and_true() -> None:
    random.seed(1234)
    failures: list[DeliveryFailure] = []
    with LocalKafkaStack(new_broker()) as stack:
        registry_port = int(stack.registry_url.rstrip("/").rsplit(":", 1)[1])
        async with TcpProxy(registry_port) as proxy:
            manager = KafkaEventManager(
                application="soak",
                topic_prefix="chaos",
                bootstrap_servers=stack.bootstrap_servers,
                registry_url=proxy.url,
                enable_idempotence=capabilities().idempotent_producer,
                buffer=BufferOptions(
                    max_events=50, overflow=OverflowPolicy.BLOCK, block_timeout=0.5
                ),
                delivery_timeout=3.0,
                retry_backoff=0.05,
                on_delivery_error=failures.append,
                kafka_options={"request_timeout_ms": 2000},
            )
            await stack.create_topic(manager.topic, partitions=3)
            await manager.initialize()
            kinds = [f"k{i}" for i in range(4)]
            publishers = {k: await manager.create_publisher(k, Numbered) for k in kinds}
            stop = asyncio.Event()
            published: dict[str, str] = {}  # event id -> kind:n
            confirmed: set[str] = set()  # wait=True returned
            refused: list[BaseException] = []

            async def publish_loop(kind: str, waits: bool) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    wait = waits and n % 5 == 0
                    try:
                        event = await publishers[kind].publish(
                            Numbered(kind=kind, n=n), wait=wait
                        )
                    except EventDeliveryError as exc:
                        published[exc.event_id] = f"{kind}:{n}"
                        continue
                    except EventManagerClosedError as exc:
                        refused.append(exc)
                        return
                    published[str(event.id)] = f"{kind}:{n}"
                    if wait:
                        confirmed.add(str(event.id))
                    await asyncio.sleep(random.uniform(0, 0.01))

            chaos_task = asyncio.create_task(chaos(stack, proxy, stop))
            loops = [
                asyncio.create_task(publish_loop(kind, waits=i % 2 == 0))
                for i, kind in enumerate(kinds)
            ]
            started = time.monotonic()
            await asyncio.sleep(SOAK_SECONDS)
            stop.set()
            actions = await chaos_task
            await asyncio.gather(*loops)
            undelivered = await manager.aclose(timeout=10)
            soak_time = time.monotonic() - started

        stats = manager.stats
        records = await read_all(stack.bootstrap_servers, manager.topic)
        values = await decode_all(stack.registry_url, records)

    # Every fate known exactly once.
    assert stats.buffered == 0
    assert stats.published == stats.delivered + stats.failed + stats.dropped
    assert stats.published == len(published)
    failed_ids = [f.event_id for f in failures]
    assert len(failed_ids) == len(set(failed_ids)), "an event failed twice"
    assert len(failed_ids) == stats.failed + stats.dropped
    assert set(failed_ids) <= set(published)
    # Every delivered event is on the topic exactly once; failed ones never
    # handed to the producer are not there.
    on_topic: dict[str, int] = {}
    for value in values:
        on_topic[str(value["id"])] = on_topic.get(str(value["id"]), 0) + 1
    # Without idempotence aiokafka itself resends a request that timed out,
    # which the broker may have written already: at least once, then.
    exactly_once = capabilities().idempotent_producer
    delivered = set(published) - set(failed_ids)
    assert len(delivered) == stats.delivered
    for event_id in delivered:
        count = on_topic.get(event_id, 0)
        assert count == 1 if exactly_once else count >= 1, published[event_id]
    for failure in failures:
        count = on_topic.get(failure.event_id, 0)
        if _maybe_written(failure):
            assert count <= 1 or not exactly_once
        else:
            assert count == 0, f"{failure} is on the topic"
    assert confirmed <= delivered
    assert set(on_topic) <= set(published)
    # The soak did what it says.
    assert "pause" in actions
    assert "registry" in actions
    assert stats.delivered > 100
    assert soak_time < 90
    # aclose counts what it could not deliver, each also reported.
    assert 0 <= undelivered <= stats.failed
    timeouts = sum(isinstance(f.error, TimeoutError) for f in failures)
    print(f"soak: {stats}, actions {actions}, timeouts {timeouts}")


def _maybe_written(failure: DeliveryFailure) -> bool:
    """Whether the event was handed to the producer before it failed: the
    library says so with one error type, whatever the producer answered."""
    return isinstance(failure.error, NotAcknowledgedError)
