"""Scenarios against the broker: the raw aiokafka baseline, ``publish()``
with various telemetry options, and awaited-delivery latency.

Every scenario uses a fresh single-partition topic, so that the baseline and
our publisher write to the same kind of log, and deletes it afterwards so
that an in-memory broker does not keep millions of records.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import Tracer

from otel_kafka_events import (
    EventPublisher,
    KafkaEventManager,
    KafkaEventPublisher,
    TelemetryOptions,
)
from otel_kafka_events._encoding._event_type import EventType

from ._harness import (
    PAYLOAD_MASK,
    TOPIC_PREFIX,
    BenchPayload,
    Result,
    Run,
    Settings,
    best_run,
    make_payloads,
    measure,
    measure_interleaved,
    percentile,
    run_records,
)

__all__ = [
    "PRODUCER_OPTIONS",
    "OtelSetup",
    "PublishSpec",
    "RawSender",
    "Target",
    "latency",
    "open_manager",
    "publish_throughput",
    "raw_throughput",
    "sample_value",
    "throughput_result",
    "wait_settled",
]

PRODUCER_OPTIONS: dict[str, Any] = {
    "max_batch_size": 512 * 1024,
    "linger_ms": 0,
    "acks": "all",
}
"""The producer options `KafkaEventManager` uses by default, given to the raw
baseline too so that the ratio measures our code and not batching settings."""

_POLL = 0.0002  # seconds between two looks at the delivery counters
_SETTLE_TIMEOUT = 300.0


@dataclass
class Target:
    """The broker and registry the scenarios run against."""

    bootstrap_servers: str
    registry_url: str
    idempotence: bool
    """Whether the broker accepts aiokafka's idempotent producer."""
    broker: str
    topics: set[str] = field(default_factory=set)

    def new_application(self, label: str) -> str:
        """A fresh application name (and so a fresh topic)."""
        return f"{label}_{uuid.uuid4().hex[:10]}"

    async def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create a topic; one partition unless said otherwise."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(name, num_partitions=partitions, replication_factor=1)]
            )
        finally:
            await admin.close()
        self.topics.add(name)

    async def delete_topic(self, name: str) -> None:
        """Delete a topic, ignoring errors (this is cleanup)."""
        self.topics.discard(name)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        with contextlib.suppress(Exception):
            await admin.start()
            await admin.delete_topics([name])
        with contextlib.suppress(Exception):
            await admin.close()


class OtelSetup:
    """SDK providers shared by the scenarios that need OpenTelemetry.

    Spans go to a `BatchSpanProcessor` and log records to a
    `BatchLogRecordProcessor`, both with in-memory exporters, as a service
    exporting over OTLP would have them minus the network.
    """

    def __init__(self) -> None:
        self.span_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(self.span_exporter))
        self.tracer: Tracer = self.tracer_provider.get_tracer("benchmarks")
        # The SDK leaves this constructor unannotated.
        self.log_exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(self.log_exporter)
        )

    @contextlib.contextmanager
    def active_span(self) -> Iterator[None]:
        """Run the body inside an active, recording SDK span."""
        with self.tracer.start_as_current_span("benchmark-request"):
            yield

    def drain_logs(self) -> int:
        """Export what is queued, forget it, and return how many were exported."""
        self.logger_provider.force_flush()
        count = len(self.log_exporter.get_finished_logs())
        self.log_exporter.clear()
        return count

    def drain_spans(self) -> int:
        """Export queued spans, forget them, and return how many there were."""
        self.tracer_provider.force_flush()
        count = len(self.span_exporter.get_finished_spans())
        self.span_exporter.clear()
        return count

    def shutdown(self) -> None:
        """Stop the processors' threads."""
        self.logger_provider.shutdown()
        self.tracer_provider.shutdown()


def sample_value(otel: OtelSetup) -> bytes:
    """Our encoded event with trace context, as the raw baseline's value.

    Encoded inside an active span so that the trace fields are filled in, as
    in scenario 3; it is the largest of our values.
    """
    event_type = EventType(
        "bench", f"{TOPIC_PREFIX}.sample", "sample", BenchPayload, trace_context=True
    )
    event_type.set_schema_id(1)
    with otel.active_span():
        return bytes(event_type.enrich(make_payloads(1)[0]).value)


# Raw aiokafka ------------------------------------------------------------


class RawSender:
    """``await producer.send()`` of pre-encoded bytes, then ``flush()``: the
    loop a user would write by hand, on a topic of its own.

    ``options`` None means aiokafka's own defaults.
    """

    def __init__(
        self, target: Target, value: bytes, options: dict[str, Any] | None
    ) -> None:
        self.target = target
        self.value = value
        self.topic = f"{TOPIC_PREFIX}.{target.new_application('raw')}"
        kwargs = dict(options) if options is not None else {}
        if options is not None:
            kwargs["enable_idempotence"] = target.idempotence
        self._producer = AIOKafkaProducer(
            bootstrap_servers=target.bootstrap_servers, **kwargs
        )

    async def __aenter__(self) -> RawSender:
        await self.target.create_topic(self.topic)
        await self._producer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self._producer.stop()
        finally:
            await self.target.delete_topic(self.topic)

    async def run_once(self, events: int) -> Run:
        """Send ``events`` values and wait until all are acknowledged."""
        send, topic, value = self._producer.send, self.topic, self.value
        start = time.perf_counter()
        for _ in range(events):
            await send(topic, value)
        enqueued = time.perf_counter()
        await self._producer.flush()
        return Run(events, enqueued - start, time.perf_counter() - start)


async def raw_throughput(
    target: Target,
    settings: Settings,
    value: bytes,
    *,
    result_id: str,
    title: str,
    options: dict[str, Any] | None,
) -> Result:
    """The raw baseline's own row."""
    async with RawSender(target, value, options) as sender:
        runs = await measure(sender.run_once, settings)
    return throughput_result(result_id, title, runs, value_size=len(value))


# Our publish() -----------------------------------------------------------


@dataclass(frozen=True)
class PublishSpec:
    """One ``publish()`` throughput scenario."""

    id: str
    title: str
    telemetry: TelemetryOptions
    event_types: int = 1
    """Event types registered."""
    round_robin: bool = True
    """Publish to every registered type in turn; else only to the first."""
    in_span: bool = False
    """Publish inside an active SDK span."""
    log_topic: bool = False
    """Give ``telemetry.log_export`` a fresh topic of its own (one
    partition), deleted afterwards."""


@contextlib.asynccontextmanager
async def open_manager(
    target: Target, label: str, *, partitions: int = 1, **kwargs: Any
) -> AsyncIterator[KafkaEventManager]:
    """An initialized manager on a fresh topic of ``partitions`` partitions,
    closed and cleaned up after."""
    application = target.new_application(label)
    topic = f"{TOPIC_PREFIX}.{application}"
    await target.create_topic(topic, partitions)
    manager = KafkaEventManager(
        application=application,
        topic_prefix=TOPIC_PREFIX,
        bootstrap_servers=target.bootstrap_servers,
        registry_url=target.registry_url,
        enable_idempotence=target.idempotence,
        # Setup problems must fail the benchmark, not be retried quietly.
        raise_on_error=True,
        **kwargs,
    )
    await manager.initialize()
    try:
        yield manager
    finally:
        await manager.aclose(timeout=60)
        await target.delete_topic(topic)


async def wait_settled(manager: KafkaEventManager, expected: int) -> None:
    """Wait until ``expected`` events in total have left the buffer.

    Raises
    ------
    RuntimeError
        If any event failed or was dropped: the run would not be comparable.
    """
    deadline = time.monotonic() + _SETTLE_TIMEOUT
    while True:
        stats = manager.stats
        if stats.delivered + stats.failed + stats.dropped >= expected:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"events not acknowledged in time: {stats}")
        await asyncio.sleep(_POLL)
    if stats.failed or stats.dropped:
        raise RuntimeError(f"events were lost during the benchmark: {stats}")
    if manager.telemetry_options.log_export is not None:
        await wait_logs_exported(manager, expected, deadline)


async def wait_logs_exported(
    manager: KafkaEventManager, expected: int, deadline: float
) -> None:
    """Wait until the manager's own log export (`LogExport`) has had
    ``expected`` records in total acknowledged by every destination.

    Raises
    ------
    RuntimeError
        If a record failed or was dropped.
    """
    while True:
        stats = list(manager.log_export_stats.values())
        if all(s.exported + s.failed + s.dropped >= expected for s in stats):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"log records not exported in time: {stats}")
        await asyncio.sleep(_POLL)
    if any(s.failed or s.dropped for s in stats):
        raise RuntimeError(f"log records were lost during the benchmark: {stats}")


async def register_publishers(
    manager: KafkaEventManager, count: int
) -> list[EventPublisher[BenchPayload]]:
    """Register ``count`` event types of the benchmark payload."""
    if count == 1:
        return [await manager.create_publisher("bench", BenchPayload)]
    return [
        await manager.create_publisher(f"bench_{i:03d}", BenchPayload)
        for i in range(count)
    ]


class _PublishLoop:
    """The timed ``publish()`` loop of one scenario, on an open manager."""

    def __init__(
        self,
        manager: KafkaEventManager,
        publishers: list[EventPublisher[BenchPayload]],
        spec: PublishSpec,
        otel: OtelSetup,
        wrap: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]] | None,
    ) -> None:
        self.manager = manager
        self.spec = spec
        self.otel = otel
        self.wrap = wrap
        self.publish = [p.publish for p in publishers]
        self.kinds = len(self.publish) if spec.round_robin else 1
        self.payloads = make_payloads()
        self.logs_exported = 0
        self.spans_exported = 0
        self.warmed = False

    async def _loop(self, events: int) -> float:
        # The same loop shape for one and many types keeps runs comparable.
        publish, kinds, payloads = self.publish, self.kinds, self.payloads
        for i in range(events):
            await publish[i % kinds](payloads[i & PAYLOAD_MASK])
        return time.perf_counter()

    async def run_once(self, events: int) -> Run:
        """Publish ``events`` events and wait until all are acknowledged."""
        manager, spec, otel = self.manager, self.spec, self.otel
        expected = manager.stats.published + events
        marks: list[float] = []

        async def body() -> None:
            start = time.perf_counter()
            marks.append(start)
            if spec.in_span:
                with otel.active_span():
                    marks.append(await self._loop(events))
                    await wait_settled(manager, expected)
            else:
                marks.append(await self._loop(events))
                await wait_settled(manager, expected)
            marks.append(time.perf_counter())

        if self.wrap is not None and self.warmed:
            await self.wrap(body)
        else:
            await body()
        # Untimed: hand the telemetry pipelines their work and forget it,
        # so memory does not pile up across runs.
        if spec.telemetry.logs and spec.telemetry.log_export is None:
            self.logs_exported += otel.drain_logs()
        if spec.in_span or spec.telemetry.producer_spans:
            self.spans_exported += otel.drain_spans()
        self.warmed = True
        return Run(events, marks[1] - marks[0], marks[2] - marks[0])


@contextlib.asynccontextmanager
async def _open_loop(
    target: Target,
    spec: PublishSpec,
    otel: OtelSetup,
    extra: dict[str, Any],
    wrap: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]] | None = None,
) -> AsyncIterator[_PublishLoop]:
    telemetry = spec.telemetry
    log_topic = None
    if spec.log_topic and telemetry.log_export is not None:
        log_topic = f"{TOPIC_PREFIX}.{target.new_application('otlp')}"
        await target.create_topic(log_topic)
        telemetry = telemetry.model_copy(
            update={
                "log_export": telemetry.log_export.model_copy(
                    update={"topic": log_topic}
                )
            }
        )
    try:
        async with open_manager(target, f"s{spec.id}", telemetry=telemetry) as manager:
            started = time.perf_counter()
            publishers = await register_publishers(manager, spec.event_types)
            extra["registration_s"] = time.perf_counter() - started
            yield _PublishLoop(manager, publishers, spec, otel, wrap)
            if telemetry.log_export is not None:
                extra["log_export"] = {
                    name: dataclasses.asdict(stats)
                    for name, stats in manager.log_export_stats.items()
                }
    finally:
        if log_topic is not None:
            await target.delete_topic(log_topic)


async def publish_throughput(
    target: Target,
    settings: Settings,
    spec: PublishSpec,
    otel: OtelSetup,
    *,
    baseline: RawSender | None = None,
    reference: PublishSpec | None = None,
    wrap: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]] | None = None,
) -> Result:
    """Time ``publish()`` loops of one scenario.

    With ``baseline``, each timed run takes turns with a raw run of the same
    size (`measure_interleaved`) and the row's ratio is to those raw runs.
    With ``reference`` too, a loop of that scenario on a manager of its own
    takes its turn as well, and ``extra["relative_to_reference"]`` is the
    median ratio of this scenario's runs to the reference's. ``wrap`` (profiling) is
    given each timed loop to run.
    """
    extra: dict[str, Any] = {}
    raw_runs: list[Run] = []
    reference_runs: list[Run] = []
    async with contextlib.AsyncExitStack() as stack:
        ours = await stack.enter_async_context(
            _open_loop(target, spec, otel, extra, wrap)
        )
        loops = [ours.run_once]
        if baseline is not None:
            loops.append(baseline.run_once)
        if reference is not None:
            other = await stack.enter_async_context(
                _open_loop(target, reference, otel, {})
            )
            loops.append(other.run_once)
        timed = await measure_interleaved(loops, settings)
        runs = timed[0]
        if baseline is not None:
            raw_runs = timed[1]
        if reference is not None:
            reference_runs = timed[-1]
    logs_exported, spans_exported = ours.logs_exported, ours.spans_exported
    total = settings.warmup + settings.repeats * settings.events
    sdk_logs = spec.telemetry.logs and spec.telemetry.log_export is None
    if sdk_logs:
        extra["log_records_exported"] = logs_exported
        extra["log_records_expected"] = total
    if spec.telemetry.producer_spans:
        extra["spans_exported"] = spans_exported
    result = throughput_result(spec.id, spec.title, runs)
    result.extra.update(extra)
    if raw_runs:
        paired = best_run(raw_runs).rate
        result.baseline_id = "1"
        result.baseline_value = paired
        result.ratio = result.value / paired if result.value else None
        result.extra["paired_baseline_runs"] = run_records(raw_runs)
    if reference_runs and result.value:
        # Two loops of our own code are close, so the drift between runs
        # matters more than for the raw ratio: the median of the ratios of
        # runs taken one after the other.
        result.extra["reference_runs"] = run_records(reference_runs)
        result.extra["relative_to_reference"] = statistics.median(
            mine.rate / theirs.rate
            for mine, theirs in zip(runs, reference_runs, strict=True)
        )
    # The SDK's batch processors drop records when their queue is full.
    if sdk_logs and logs_exported < total:
        result.detail += f"; {total - logs_exported:,} log records dropped by SDK"
    if spec.telemetry.producer_spans == "batch":
        # Spans per batch: their number depends on the batches, so the
        # detail says how many events each one covered on average.
        batches = spans_exported - (1 + settings.repeats if spec.in_span else 0)
        result.extra["batch_spans"] = batches
        if batches > 0:
            result.detail += (
                f"; {batches:,} batch spans, {total / batches:,.0f} events each"
            )
    elif spec.telemetry.producer_spans:
        # One producer span per event, plus the request span of each run.
        expected_spans = total + (1 + settings.repeats if spec.in_span else 0)
        result.extra["spans_expected"] = expected_spans
        if spans_exported < expected_spans:
            result.detail += (
                f"; {expected_spans - spans_exported:,} spans dropped by SDK"
            )
    return result


def throughput_result(
    result_id: str, title: str, runs: list[Run], **extra: Any
) -> Result:
    best = best_run(runs)
    return Result(
        id=result_id,
        title=title,
        kind="throughput",
        events=best.events,
        value=best.rate,
        detail=f"enqueue {best.enqueue_rate:,.0f}/s",
        runs=run_records(runs),
        extra={"enqueue_rate": best.enqueue_rate, **extra},
    )


# Awaited delivery --------------------------------------------------------


async def _latency_runs(
    ours: Callable[[], Awaitable[Any]],
    raw: Callable[[], Awaitable[Any]],
    settings: Settings,
) -> tuple[list[list[float]], list[list[float]]]:
    """Alternate our call and the raw one, so both see the same machine load."""
    for _ in range(min(100, settings.latency_events)):
        await ours()
        await raw()
    our_runs, raw_runs = [], []
    clock = time.perf_counter
    for _ in range(settings.repeats):
        mine: list[float] = []
        theirs: list[float] = []
        for i in range(settings.latency_events):
            # Swap the order every call: neither side always goes first.
            pair = (
                ((ours, mine), (raw, theirs))
                if i & 1
                else ((raw, theirs), (ours, mine))
            )
            for call, samples in pair:
                start = clock()
                await call()
                samples.append(clock() - start)
        our_runs.append(mine)
        raw_runs.append(theirs)
    return our_runs, raw_runs


async def latency(target: Target, settings: Settings, value: bytes) -> Result:
    """``publish(payload, wait=True)`` against ``send_and_wait``, one at a time.

    Calls alternate between the two; for each side the run with the lowest
    p50 is kept, and the ratio is the raw p50 over ours.
    """
    payload = make_payloads(1)[0]
    topic = f"{TOPIC_PREFIX}.{target.new_application('rawlat')}"
    await target.create_topic(topic)
    producer = AIOKafkaProducer(
        bootstrap_servers=target.bootstrap_servers,
        enable_idempotence=target.idempotence,
        **PRODUCER_OPTIONS,
    )
    await producer.start()
    try:
        async with open_manager(
            target, "lat", telemetry=TelemetryOptions(trace_context=False)
        ) as manager:
            publisher = await manager.create_publisher("bench", BenchPayload)
            assert isinstance(publisher, KafkaEventPublisher)

            async def ours() -> None:
                await publisher.publish(payload, wait=True)

            async def raw() -> None:
                await producer.send_and_wait(topic, value)

            our_runs, raw_runs = await _latency_runs(ours, raw, settings)
    finally:
        await producer.stop()
        await target.delete_topic(topic)

    def summary(
        runs: list[list[float]],
    ) -> tuple[float, float, list[dict[str, float]]]:
        stats = [
            {"p50": percentile(s, 0.5), "p99": percentile(s, 0.99), "n": len(s)}
            for s in runs
        ]
        best = min(stats, key=lambda s: s["p50"])
        return best["p50"], best["p99"], stats

    our_p50, _, our_stats = summary(our_runs)
    raw_p50, _, raw_stats = summary(raw_runs)
    # The tail of one run is a few dozen calls: p99 is taken over every
    # call of every run, each side's, which the alternation keeps fair.
    our_p99 = percentile([t for run in our_runs for t in run], 0.99)
    raw_p99 = percentile([t for run in raw_runs for t in run], 0.99)
    return Result(
        id="5",
        title="publish(wait=True) latency vs send_and_wait",
        kind="latency",
        events=settings.latency_events,
        value=our_p50,
        baseline_id="send_and_wait",
        baseline_value=raw_p50,
        ratio=raw_p50 / our_p50,
        detail=(
            f"p99 {our_p99 * 1e6:,.0f} us (ratio {raw_p99 / our_p99:.2f}, all"
            f" runs); raw p50 {raw_p50 * 1e6:,.0f} / p99 {raw_p99 * 1e6:,.0f} us"
        ),
        runs=our_stats,
        extra={
            "p50_s": our_p50,
            "p99_s": our_p99,
            "raw_p50_s": raw_p50,
            "raw_p99_s": raw_p99,
            "p99_ratio": raw_p99 / our_p99,
            "raw_runs": raw_stats,
        },
    )
