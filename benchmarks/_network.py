"""Scenario 9: one keyed event type over six partitions, 2 ms from the broker.

Every other scenario talks to a broker on the loopback, where a round trip
costs a few tens of microseconds. Here a `TcpProxy` holds every chunk for
1 ms in each direction (a 2 ms round trip, as within a zone), and the broker
advertises the proxy, so every connection crosses it. Three loops take turns
(`measure_interleaved`):

- ours: ``publish(payload)`` of a publisher keyed by a payload field that
  cycles over `KEYS` values, on a topic of `PARTITIONS` partitions;
- raw: aiokafka ``send(topic, value, key=...)`` with the same keys, values of
  the same size and our producer's options, on a topic of as many partitions;
- ours on a topic of one partition, the same keys.

Row 9 is ours over raw; row 9p ours at six partitions over ours at one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from otel_kafka_events import EventPublisher, KafkaEventManager, TelemetryOptions
from otel_kafka_events._encoding._event_type import EventType

from ._delayed_broker import DELAYABLE, delayed_broker
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
from ._publish import (
    PRODUCER_OPTIONS,
    Target,
    open_manager,
    throughput_result,
    wait_settled,
)

__all__ = [
    "DELAY",
    "KEYS",
    "PARTITIONS",
    "KeyedPayload",
    "keyed_results",
    "make_keyed_payloads",
]

DELAY = 0.001
"""Seconds the proxy adds in each direction."""
KEYS = 64
"""Distinct record keys, taken in turn."""
PARTITIONS = 6
_ROUND_TRIPS = 20  # awaited sends that check the proxy is in the way
_TELEMETRY = TelemetryOptions(trace_context=False)


class KeyedPayload(BenchPayload):
    """The benchmark payload and the field its events are keyed by."""

    user: str


def make_keyed_payloads() -> list[KeyedPayload]:
    """The payload pool of the other scenarios, each with a user of `KEYS`."""
    return [
        KeyedPayload(**payload.model_dump(), user=f"user-{index % KEYS:02d}")
        for index, payload in enumerate(make_payloads())
    ]


def raw_records(payloads: Sequence[KeyedPayload]) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` per payload: our encoding of it, as ours publishes
    it (no trace context), and its user as the key."""
    event_type = EventType(
        "bench", f"{TOPIC_PREFIX}.keyed", "keyed", KeyedPayload, trace_context=False
    )
    event_type.set_schema_id(1)
    return [
        (payload.user.encode(), bytes(event_type.enrich(payload).value))
        for payload in payloads
    ]


class KeyedRawSender:
    """``await producer.send(topic, value, key=key)`` in a loop, then
    ``flush()``, on a topic of its own with ``partitions`` partitions."""

    def __init__(
        self, target: Target, records: list[tuple[bytes, bytes]], partitions: int
    ) -> None:
        self.target = target
        self.records = records
        self.partitions = partitions
        self.topic = f"{TOPIC_PREFIX}.{target.new_application('rawkeyed')}"
        self.producer = AIOKafkaProducer(
            bootstrap_servers=target.bootstrap_servers,
            enable_idempotence=target.idempotence,
            **PRODUCER_OPTIONS,
        )

    async def __aenter__(self) -> KeyedRawSender:
        await self.target.create_topic(self.topic, self.partitions)
        await self.producer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.producer.stop()
        finally:
            await self.target.delete_topic(self.topic)

    async def round_trip(self) -> float:
        """The shortest of a few awaited sends, after checking that the
        broker advertises the address we bootstrapped from (the proxy).

        Raises
        ------
        RuntimeError
            If the broker advertises another address: clients would go
            around the proxy.
        """
        nodes = self.producer.client.cluster.brokers()
        advertised = {f"{node.host}:{node.port}" for node in nodes}
        if advertised != {self.target.bootstrap_servers}:
            raise RuntimeError(
                f"the broker advertises {sorted(advertised)}, not the proxy"
                f" {self.target.bootstrap_servers}: clients would bypass it"
            )
        trips = []
        key, value = self.records[0]
        for _ in range(_ROUND_TRIPS):
            started = time.perf_counter()
            await self.producer.send_and_wait(self.topic, value, key=key)
            trips.append(time.perf_counter() - started)
        return min(trips)

    async def run_once(self, events: int) -> Run:
        """Send ``events`` keyed values and wait until all are acknowledged."""
        send, topic, records = self.producer.send, self.topic, self.records
        start = time.perf_counter()
        for index in range(events):
            key, value = records[index & PAYLOAD_MASK]
            await send(topic, value, key=key)
        enqueued = time.perf_counter()
        await self.producer.flush()
        return Run(events, enqueued - start, time.perf_counter() - start)


class _KeyedLoop:
    """``publish(payload)`` of a keyed publisher, timed until acknowledged."""

    def __init__(
        self,
        manager: KafkaEventManager,
        publisher: EventPublisher[KeyedPayload],
        payloads: list[KeyedPayload],
    ) -> None:
        self.manager = manager
        self.publish = publisher.publish
        self.payloads = payloads

    async def run_once(self, events: int) -> Run:
        """Publish ``events`` events and wait until all are acknowledged."""
        manager, publish, payloads = self.manager, self.publish, self.payloads
        expected = manager.stats.published + events
        start = time.perf_counter()
        for index in range(events):
            await publish(payloads[index & PAYLOAD_MASK])
        enqueued = time.perf_counter()
        await wait_settled(manager, expected)
        return Run(events, enqueued - start, time.perf_counter() - start)


@contextlib.asynccontextmanager
async def _keyed_loop(
    target: Target, label: str, partitions: int, payloads: list[KeyedPayload]
) -> AsyncIterator[_KeyedLoop]:
    async with open_manager(
        target, label, partitions=partitions, telemetry=_TELEMETRY
    ) as manager:
        publisher = await manager.create_publisher("bench", KeyedPayload, key="user")
        yield _KeyedLoop(manager, publisher, payloads)


def _skipped(reason: str) -> list[Result]:
    return [
        Result(id=row_id, title=title, kind="throughput", skipped=reason)
        for row_id, title in (("9", _TITLE_9), ("9p", _TITLE_9P))
    ]


_TITLE_9 = f"keyed publish(), {PARTITIONS} partitions, 2 ms round trip"
_TITLE_9P = f"as 9, {PARTITIONS} partitions vs 1"


async def keyed_results(
    kind: str, registry_url: str, settings: Settings
) -> list[Result]:
    """Rows 9 and 9p, against a ``kind`` broker started behind the proxy.

    ``kind`` is the broker of the session; one that cannot advertise a
    proxy's address (noida-db, or a broker given on the command line) gives
    skipped rows that say why.
    """
    if kind not in DELAYABLE:
        return _skipped(
            f"needs a local {' or '.join(DELAYABLE)} broker to put behind the"
            f" proxy (this session's is {kind})"
        )
    payloads = make_keyed_payloads()
    async with delayed_broker(kind, DELAY) as broker:
        target = Target(
            broker.bootstrap_servers,
            registry_url,
            idempotence=broker.idempotence,
            broker=broker.name,
        )
        async with contextlib.AsyncExitStack() as stack:
            raw = await stack.enter_async_context(
                KeyedRawSender(target, raw_records(payloads), PARTITIONS)
            )
            spread = await stack.enter_async_context(
                _keyed_loop(target, "s9", PARTITIONS, payloads)
            )
            single = await stack.enter_async_context(
                _keyed_loop(target, "s9one", 1, payloads)
            )
            round_trip = await raw.round_trip()
            if round_trip < 2 * DELAY:
                raise RuntimeError(
                    f"an awaited send took {round_trip * 1e3:.2f} ms, less than"
                    f" the proxy's {2 * DELAY * 1e3:g} ms round trip"
                )
            ours, theirs, one = await measure_interleaved(
                [spread.run_once, raw.run_once, single.run_once], settings
            )
    conditions: dict[str, Any] = {
        "broker": broker.name,
        "delay_each_way_s": DELAY,
        "min_send_and_wait_s": round_trip,
        "keys": KEYS,
        "partitions": PARTITIONS,
        "idempotence": broker.idempotence,
    }
    note = (
        f"{KEYS} keys; send_and_wait min {round_trip * 1e3:.2f} ms;"
        f" idempotence {'on' if broker.idempotence else 'off'}"
    )
    keyed = throughput_result("9", _TITLE_9, ours, **conditions)
    _against(keyed, "raw keyed send()", theirs, "paired_baseline_runs")
    keyed.detail += f"; {note}"
    scaled = throughput_result("9p", _TITLE_9P, ours, **conditions)
    _against(scaled, "9 at 1 partition", one, "one_partition_runs")
    scaled.detail += f"; {note}"
    return [keyed, scaled]


def _against(row: Result, baseline_id: str, runs: list[Run], label: str) -> None:
    """Make ``runs`` (their best) the row's baseline."""
    baseline = best_run(runs).rate
    row.baseline_id = baseline_id
    row.baseline_value = baseline
    row.ratio = row.value / baseline if row.value else None
    row.extra[label] = run_records(runs)
