"""The Kafka event manager when code it does not own fails, one test per way
it used to break (issue 21), on the memory transport with no socket.

The registry answering an ingress's HTML page, span and log processors that
raise, an ``on_delivery_error`` raising ``BaseException``, ``aclose`` while
``initialize`` connects, a batch of events with different deadlines, a
registry or broker that accepts and never answers, a topic without a leader
yet, the metrics of a manager started anew, a publisher whose every event
is dropped. The same seams under random faults: ``test_seam_faults.py``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import structlog
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from structlog.stdlib import BoundLogger

from otel_kafka_events import (
    BufferOptions,
    DeliveryFailure,
    EventPayload,
    KafkaEventManager,
    OverflowPolicy,
    TelemetryOptions,
    _kafka,
)
from otel_kafka_events._delivery._transport import TopicInfo
from otel_kafka_events._encoding._registry import make_registry_client
from otel_kafka_events.errors import (
    EventDeliveryTimeoutError,
    EventManagerClosedError,
    EventManagerUsageError,
    EventRejectedError,
)
from otel_kafka_events.testing import (
    MemorySchemaRegistry,
    MemoryTransport,
    SendOutcome,
)

LIMIT = 0.3
"""The foreground limit of startup calls in these tests (3 s in service)."""


class Ping(EventPayload):
    n: int


@pytest.fixture
def short_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_kafka, "FOREGROUND_LIMIT", LIMIT)


def make_manager(
    transport: MemoryTransport | None = None, registry: Any = None, **kwargs: Any
) -> KafkaEventManager:
    kwargs.setdefault("retry_backoff", 0.01)
    kwargs.setdefault("backoff_interval", 0.05)
    return KafkaEventManager(
        application="shop",
        topic_prefix="events",
        transport=transport or MemoryTransport(),
        registry=registry or MemorySchemaRegistry(),
        **kwargs,
    )


def own_tasks() -> list[asyncio.Task[Any]]:
    """The manager's tasks still alive."""
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("otel-kafka-events") and not task.done()
    ]


# --- The registry -------------------------------------------------------------


async def test_a_registry_behind_an_ingress_answering_html_registers_later() -> None:
    # Two requests are answered with the ingress's page, then the registry
    # is back. The HTML used to raise JSONDecodeError out of create_publisher
    # and to end the background registration for good.
    answers = iter(
        [httpx.Response(502, content=b"<html><h1>502 Bad Gateway</h1></html>")] * 2
    )

    def ingress(request: httpx.Request) -> httpx.Response:
        answer = next(answers, None)
        if answer is not None:
            return answer
        if request.url.path.endswith("/versions"):
            return httpx.Response(200, json={"id": 7})
        return httpx.Response(404, json={"error_code": 40401, "message": "new"})

    client = make_registry_client("http://registry.example:8081")
    client.client_kwargs["transport"] = httpx.MockTransport(ingress)
    transport = MemoryTransport()
    failures: list[DeliveryFailure] = []
    manager = make_manager(transport, client, on_delivery_error=failures.append)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    async with asyncio.timeout(5):
        await publisher.publish(Ping(n=1), wait=True)
    assert failures == []
    assert transport.records[0].value[1:5] == (7).to_bytes(4, "big")
    await manager.aclose()


async def test_a_registry_that_never_answers_holds_startup_for_the_limit_only(
    short_limit: None,
) -> None:
    released = asyncio.Event()

    class Silent(MemorySchemaRegistry):
        async def register(self, subject: str, avro_schema: dict[str, Any]) -> int:
            await released.wait()
            return await super().register(subject, avro_schema)

    transport = MemoryTransport()
    manager = make_manager(transport, Silent())
    await manager.initialize()
    started = time.monotonic()
    publisher = await manager.create_publisher("ping", Ping)
    assert LIMIT <= time.monotonic() - started <= LIMIT + 0.1
    waiting = asyncio.ensure_future(publisher.publish(Ping(n=1), wait=True))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    released.set()
    async with asyncio.timeout(2):
        await waiting
    assert len(transport.records) == 1
    await manager.aclose()


async def test_a_registration_attempt_that_never_ends_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The registry accepted the first background request and never answered
    # it; the registration is not held up by it for good.
    from otel_kafka_events._delivery import _registration

    monkeypatch.setattr(_registration, "ATTEMPT_LIMIT", 0.2)
    calls = 0

    class Stuck(MemorySchemaRegistry):
        async def register(self, subject: str, avro_schema: dict[str, Any]) -> int:
            nonlocal calls
            calls += 1
            if calls <= 2:  # the foreground attempt, then the first retry
                await asyncio.Event().wait()
            return await super().register(subject, avro_schema)

    transport = MemoryTransport()
    manager = make_manager(transport, Stuck(), raise_on_error=False)
    monkeypatch.setattr(_kafka, "FOREGROUND_LIMIT", 0.1)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    async with asyncio.timeout(2):
        await publisher.publish(Ping(n=1), wait=True)
    assert calls == 3
    await manager.aclose()


async def test_a_logger_that_raises_stops_nothing() -> None:
    # The application's logging is code we do not own either: the retries
    # that log through it go on.
    def broken(logger: Any, method: str, event: Any) -> Any:
        raise RuntimeError("the log pipeline is broken")

    logger = structlog.wrap_logger(
        structlog.PrintLogger(), processors=[broken], wrapper_class=BoundLogger
    )
    transport = MemoryTransport()
    transport.reachable = False
    registry = MemorySchemaRegistry()
    registry.available = False
    manager = make_manager(transport, registry, logger=logger)
    await manager.initialize()  # logs that Kafka is away
    publisher = await manager.create_publisher("ping", Ping)  # logs, retries
    waiting = asyncio.ensure_future(publisher.publish(Ping(n=1), wait=True))
    await asyncio.sleep(0.1)
    transport.reachable = True
    registry.available = True
    async with asyncio.timeout(2):
        await waiting
    await manager.aclose()


async def test_a_topic_without_a_leader_yet_registers_in_the_background() -> None:
    class Electing(MemoryTransport):
        """Answers LEADER_NOT_AVAILABLE for the first questions."""

        elections = 3

        async def describe_topic(self, topic: str) -> TopicInfo:
            if self.elections:
                self.elections -= 1
                return TopicInfo((), 5, "LEADER_NOT_AVAILABLE", retriable=True)
            return await super().describe_topic(topic)

    transport = Electing()
    manager = make_manager(transport)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)  # not refused
    async with asyncio.timeout(2):
        await publisher.publish(Ping(n=1), wait=True)
    assert transport.elections == 0
    await manager.aclose()


# --- OpenTelemetry and the application's callback --------------------------------


class RaisingSpans(SpanProcessor):
    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise self.error("on_start failed")


class RaisingLogs(LogRecordProcessor):
    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def on_emit(self, log_record: Any) -> None:
        raise self.error("on_emit failed")

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


ERRORS = (RuntimeError, asyncio.CancelledError, KeyboardInterrupt, SystemExit)


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
async def test_a_span_processor_raising_in_on_start_with_batch_spans(
    error: type[BaseException],
) -> None:
    # It used to kill the sender with the batch marked in flight: the other
    # events stayed buffered past their deadline, their waits hung.
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(RaisingSpans(error))
    transport = MemoryTransport(batch_size=64)  # several batches
    manager = make_manager(
        transport,
        delivery_timeout=1.0,
        telemetry=TelemetryOptions(producer_spans="batch", tracer_provider=provider),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    async with asyncio.timeout(1.0 + 1.0):
        await asyncio.gather(
            *(publisher.publish(Ping(n=n), wait=n % 3 == 0) for n in range(30))
        )
        while manager.stats.buffered:  # noqa: ASYNC110 (a third waited only)
            await asyncio.sleep(0.01)
    stats = manager.stats
    assert (stats.delivered, stats.failed) == (30, 0)
    assert stats.listener_errors >= 1
    assert len(transport.records) == 30
    await manager.aclose()


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
async def test_a_log_processor_raising_never_makes_publish_raise(
    error: type[BaseException],
) -> None:
    # publish used to raise after the event was accepted (and delivered): a
    # caller retrying it wrote a duplicate.
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(RaisingLogs(error))
    transport = MemoryTransport()
    manager = make_manager(
        transport, telemetry=TelemetryOptions(logs=True, logger_provider=provider)
    )
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    for n in range(5):
        await publisher.publish(Ping(n=n), wait=n == 4)
    assert len(transport.records) == 5
    assert manager.stats.listener_errors == 5
    await manager.aclose()


@pytest.mark.parametrize(
    "error", [*ERRORS, GeneratorExit, BaseException], ids=lambda e: e.__name__
)
async def test_an_on_delivery_error_raising_anything_is_contained(
    error: type[BaseException],
) -> None:
    # A BaseException (CancelledError) used to escape the guard and kill
    # the sender.
    calls: list[DeliveryFailure] = []

    def callback(failure: DeliveryFailure) -> None:
        calls.append(failure)
        raise error("callback failed")

    transport = MemoryTransport()
    manager = make_manager(transport, on_delivery_error=callback)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    for n in range(3):
        transport.fail_next(SendOutcome.REJECTED)
        with pytest.raises(EventRejectedError):
            await publisher.publish(Ping(n=n), wait=True)
    async with asyncio.timeout(2):
        # The sender lives on: later events are delivered.
        await publisher.publish(Ping(n=3), wait=True)
    assert [call.reason for call in calls] == ["failed"] * 3
    stats = manager.stats
    assert (stats.delivered, stats.failed, stats.listener_errors) == (1, 3, 3)
    await manager.aclose()


# --- Bounds ---------------------------------------------------------------------


async def test_each_wait_raises_by_its_own_deadline_not_its_batchs() -> None:
    # Two events of one batch, published half a delivery timeout apart: the
    # older one's wait used to last until the younger one's deadline.
    timeout = 0.6
    transport = MemoryTransport()
    transport.stalled = True
    manager = make_manager(transport, delivery_timeout=timeout)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    await publisher.publish(Ping(n=0))  # held by the transport
    await asyncio.sleep(0.05)
    older_at = time.monotonic()
    older = asyncio.ensure_future(publisher.publish(Ping(n=1), wait=True))
    await asyncio.sleep(timeout / 2)
    younger_at = time.monotonic()
    younger = asyncio.ensure_future(publisher.publish(Ping(n=2), wait=True))
    await asyncio.sleep(0.01)
    # The first send is answered; the next batch (both events) is held.
    transport.release()
    transport.stalled = True
    await asyncio.wait({older})
    older_took = time.monotonic() - older_at
    await asyncio.wait({younger})
    younger_took = time.monotonic() - younger_at
    for task, took in ((older, older_took), (younger, younger_took)):
        assert isinstance(task.exception(), EventDeliveryTimeoutError)
        assert timeout <= took <= timeout + 0.1, took
    assert transport.held == 1  # they were one batch
    await manager.aclose(timeout=0.5)


async def test_initialize_holds_startup_for_the_limit_only(short_limit: None) -> None:
    released = asyncio.Event()

    class Silent(MemoryTransport):
        """Accepts the connection, answers nothing until released."""

        async def start(self) -> None:
            await released.wait()
            await super().start()

    transport = Silent()
    manager = make_manager(transport)
    started = time.monotonic()
    await manager.initialize()
    assert LIMIT <= time.monotonic() - started <= LIMIT + 0.1
    released.set()
    publisher = await manager.create_publisher("ping", Ping)
    async with asyncio.timeout(2):
        await publisher.publish(Ping(n=1), wait=True)
    await manager.aclose()


async def test_a_usage_error_from_the_transport_is_raised_as_it_is() -> None:
    # Whatever else a transport's start raises means Kafka is away, but the
    # library's own usage errors (an unstarted FastStream broker) say what
    # to change.
    class Unstarted(MemoryTransport):
        async def start(self) -> None:
            raise EventManagerUsageError("start the broker first")

    manager = make_manager(Unstarted())
    with pytest.raises(EventManagerUsageError, match="start the broker first"):
        await manager.initialize()
    await manager.aclose(timeout=0.5)


async def test_aclose_while_initialize_connects_leaves_nothing_running() -> None:
    # It used to leave the sender, the started producer and aiokafka's tasks
    # alive on a closed manager, and to make initialize raise AssertionError.
    entered = asyncio.Event()
    released = asyncio.Event()

    class Slow(MemoryTransport):
        async def start(self) -> None:
            entered.set()
            await released.wait()
            await super().start()

    transport = Slow()
    manager = make_manager(transport)
    starting = asyncio.ensure_future(manager.initialize())
    await entered.wait()
    assert await manager.aclose(timeout=1) == 0
    with pytest.raises(EventManagerClosedError):
        await starting
    released.set()
    await asyncio.sleep(0.01)
    assert not transport.started
    assert own_tasks() == []


# --- Publishing into a full buffer ------------------------------------------------


async def test_a_publisher_whose_events_are_all_dropped_lets_the_sender_run() -> None:
    # A loop publishing into a full buffer under drop_newest never yielded
    # to the event loop: the sender never ran, the buffer never drained.
    transport = MemoryTransport()
    manager = make_manager(
        transport,
        delivery_timeout=0.2,
        buffer=BufferOptions(max_events=4, overflow=OverflowPolicy.DROP_NEWEST),
    )
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    transport.stalled = True
    for n in range(4):
        await publisher.publish(Ping(n=n))
    dropped_before = manager.stats.dropped
    deadline = time.monotonic() + 2.0
    while manager.stats.buffered == 4:
        assert time.monotonic() < deadline, "the sender never ran"
        await publisher.publish(Ping(n=-1))  # dropped, and never suspends
    assert manager.stats.dropped > dropped_before
    await manager.aclose(timeout=0.5)
