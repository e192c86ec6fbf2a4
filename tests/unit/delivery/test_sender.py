"""The sender's timing rules, on the in-memory transport (no broker).

These are the rules a busy broker hides: an event times out by its own
deadline even while other partitions keep delivering, whether it is still
queued or already sent, and a retried batch keeps its order.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import time
import warnings
from typing import Any

import structlog
from structlog.testing import capture_logs

from otel_kafka_events import BufferOptions, DeliveryFailure
from otel_kafka_events._delivery._ledger import PendingEvent
from otel_kafka_events._delivery._listeners import DeliveryListener
from otel_kafka_events._delivery._session import DeliverySession
from otel_kafka_events._delivery._transport import RecordBatch, SendDone
from otel_kafka_events._encoding._registry import SchemaRegistrar
from otel_kafka_events.errors import (
    EventDeliveryError,
    EventDeliveryTimeoutError,
    NotAcknowledgedError,
)
from otel_kafka_events.testing import (
    MemorySchemaRegistry,
    MemoryTransport,
    SendError,
    SendOutcome,
)

TOPIC = "topic"


def event(name: str, n: int, timeout: float, waiter: Any = None) -> PendingEvent:
    value = bytearray(f"{name}:{n}".encode())
    return PendingEvent(
        name, value, None, 0, f"{name}-{n}", 10, time.monotonic() + timeout, waiter
    )


async def started_session(
    transport: MemoryTransport,
    failures: list[DeliveryFailure],
    *,
    partitions: int = 1,
    listeners: tuple[DeliveryListener, ...] = (),
    max_in_flight: int | None = None,
    logger: Any = None,
    backoff: tuple[float, float] = (0.01, 0.05),
) -> DeliverySession:
    transport.create_topic(TOPIC, partitions)
    session = DeliverySession(
        topic=TOPIC,
        transport=transport,
        registrar=SchemaRegistrar(MemorySchemaRegistry()),
        buffer=BufferOptions(),
        delivery_timeout=0.3,
        backoff=backoff,
        raise_on_error=False,
        listeners=listeners,
        on_delivery_error=failures.append,
        logger=logger or structlog.get_logger(),
        max_in_flight=max_in_flight,
    )
    await session.start()
    return session


def values(transport: MemoryTransport, partition: int) -> list[bytes]:
    return [r.value for r in transport.records if r.partition == partition]


async def test_a_queued_event_times_out_while_another_partition_delivers() -> None:
    transport = MemoryTransport()
    transport.stalled_partitions.add(0)  # partition 0 never answers
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures, partitions=2)
    ledger, sender = session.ledger, session.sender
    ledger.register("slow", 0)
    ledger.register("fast", 1)
    ledger.accept(event("slow", 1, 0.5))  # goes out, never acknowledged
    sender.wake()
    await asyncio.sleep(0.05)
    # Queued behind it, with an earlier deadline (a shorter timeout).
    ledger.accept(event("slow", 2, 0.2))
    expired_at = None
    # Partition 1 keeps delivering the whole time.
    for n in range(60):
        ledger.accept(event("fast", n, 5))
        sender.wake()
        await asyncio.sleep(0.01)
        if expired_at is None and failures:
            expired_at = n
    assert [(f.event_id, type(f.error)) for f in failures] == [
        ("slow-2", TimeoutError),
        ("slow-1", NotAcknowledgedError),
    ]
    # It expired on time, with deliveries going on all along.
    assert expired_at is not None
    assert expired_at < 40
    assert ledger.stats.delivered == 60
    # The expired one was never handed to the transport.
    assert transport.held == 1
    await session.close(1.0)


async def test_each_event_of_a_sent_batch_fails_at_its_own_deadline() -> None:
    transport = MemoryTransport()
    transport.stalled = True
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    ledger = session.ledger
    ledger.register("t", 0)
    loop = asyncio.get_running_loop()
    old, young = loop.create_future(), loop.create_future()
    ledger.accept(event("t", 1, 0.1, old))
    ledger.accept(event("t", 2, 1.0, young))  # same batch
    session.sender.wake()
    started = time.monotonic()
    # The old event is reported at its own deadline, not the batch's.
    await asyncio.wait({old}, timeout=0.5)
    assert old.done()
    assert time.monotonic() - started < 0.3
    assert [f.event_id for f in failures] == ["t-1"]
    assert isinstance(failures[0].error, NotAcknowledgedError)
    # The broker answers after all: the young event is delivered.
    transport.release()
    await asyncio.wait_for(young, 1.0)
    assert ledger.stats.delivered == 1
    assert ledger.stats.failed == 1
    assert ledger.stats.buffered == 0
    await session.close(1.0)


async def test_a_retriable_failure_resends_in_order() -> None:
    transport = MemoryTransport(batch_size=8)
    transport.fail_next(SendOutcome.RETRIABLE)
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    session.ledger.register("t", 0)
    for n in range(5):
        session.ledger.accept(event("t", n, 5))
    session.sender.wake()
    await asyncio.sleep(0.2)
    assert values(transport, 0) == [f"t:{n}".encode() for n in range(5)]
    assert failures == []
    await session.close(1.0)


async def test_a_restart_retries_what_was_never_written() -> None:
    transport = MemoryTransport()
    transport.fail_next(SendOutcome.RESTART)
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    session.ledger.register("t", 0)
    for n in range(3):
        session.ledger.accept(event("t", n, 5))
    session.sender.wake()
    await asyncio.sleep(0.3)
    assert transport.starts == 2
    assert values(transport, 0) == [f"t:{n}".encode() for n in range(3)]
    assert failures == []
    await session.close(1.0)


async def test_no_answer_without_idempotence_is_not_resent() -> None:
    transport = MemoryTransport(idempotent=False)
    transport.fail_next(SendOutcome.NO_ANSWER, written=True)
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    session.ledger.register("t", 0)
    session.ledger.accept(event("t", 0, 5))
    session.sender.wake()
    await asyncio.sleep(0.1)
    # Written once, reported not acknowledged, never written twice.
    assert values(transport, 0) == [b"t:0"]
    assert [f.event_id for f in failures] == ["t-0"]
    assert session.ledger.stats.failed == 1
    # One type says "may be on the topic", whatever the transport answered.
    error = failures[0].error
    assert isinstance(error, NotAcknowledgedError)
    assert error.__cause__ is not None
    assert type(error.__cause__).__name__ in str(error)
    await session.close(1.0)


class _Batches(DeliveryListener):
    """Records every batch start and end."""

    name = "batches"

    def __init__(self) -> None:
        self.ended: list[tuple[int, int | None, BaseException | None]] = []

    def batch_started(self, partition: int, events: Any) -> Any:
        return len(events)

    def batch_ended(
        self,
        token: Any,
        partition: int,
        base_offset: int | None,
        error: BaseException | None,
    ) -> None:
        self.ended.append((token, base_offset, error))


async def test_batch_listeners_hear_how_each_send_ended() -> None:
    transport = MemoryTransport()
    transport.fail_next(SendOutcome.RETRIABLE)
    failures: list[DeliveryFailure] = []
    batches = _Batches()
    session = await started_session(transport, failures, listeners=(batches,))
    session.ledger.register("t", 0)
    for n in range(3):
        session.ledger.accept(event("t", n, 5))
    session.sender.wake()
    await asyncio.sleep(0.2)
    assert session.ledger.stats.delivered == 3
    (count, offset, error), (count2, offset2, error2) = batches.ended
    assert (count, offset) == (3, None)
    assert isinstance(error, SendError)
    assert (count2, offset2, error2) == (3, 0, None)
    await session.close(1.0)


# --- Handing batches over ---------------------------------------------------------


async def test_an_awaited_event_is_handed_over_before_its_publisher_yields() -> None:
    transport = MemoryTransport()
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures, partitions=2)
    session.ledger.register("waited", 0)
    session.ledger.register("later", 1)
    waiter = asyncio.get_running_loop().create_future()
    # As the intake does for an event its publisher waits for.
    waited = event("waited", 0, 5, waiter)
    assert session.ledger.accept(waited)
    assert session.sender.send_now(waited.deadline)
    assert transport.sends == 1  # before any turn of the event loop
    # Events nobody waits for wait for the sender's turn, and go with
    # whatever else arrives by then.
    assert session.ledger.accept(event("later", 0, 5))
    session.sender.wake()
    assert session.ledger.accept(event("later", 1, 5))
    session.sender.wake()
    assert transport.sends == 1
    await asyncio.wait_for(waiter, 1.0)
    await asyncio.sleep(0.05)
    assert transport.sends == 2
    assert values(transport, 1) == [b"later:0", b"later:1"]
    assert failures == []
    await session.close(1.0)


def send_awaited(session: DeliverySession, timeout: float) -> asyncio.Future[Any]:
    """Queue event ``t-0`` of partition 0 and send it at once, as the intake
    does for an event its publisher waits for; its waiter."""
    session.ledger.register("t", 0)
    waiter = asyncio.get_running_loop().create_future()
    sent = event("t", 0, timeout, waiter)
    assert session.ledger.accept(sent)
    assert session.sender.send_now(sent.deadline)
    return waiter


class _TaskBound(MemoryTransport):
    """A transport whose `send` holds a timeout across a wait: safe only in
    a task of its own, so it does not send eagerly."""

    sends_eagerly = False

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def send(
        self, batch: RecordBatch, topic: str, partition: int, done: SendDone
    ) -> None:
        self.tasks.append(asyncio.current_task())
        async with asyncio.timeout(1.0):
            await asyncio.sleep(0)
        await super().send(batch, topic, partition, done)


async def test_a_transport_that_does_not_send_eagerly_sends_from_a_task() -> None:
    transport = _TaskBound()
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    waiter = send_awaited(session, 5)
    assert transport.tasks == []
    await asyncio.wait_for(waiter, 1.0)
    (task,) = transport.tasks
    assert task is not None
    assert task is not asyncio.current_task()
    assert values(transport, 0) == [b"t:0"]
    await session.close(1.0)


class _Slow(MemoryTransport):
    """Takes ``delay`` seconds to take a batch (a full producer queue)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.cancelled = 0

    async def send(
        self, batch: RecordBatch, topic: str, partition: int, done: SendDone
    ) -> None:
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        await super().send(batch, topic, partition, done)


async def test_an_eager_send_that_has_to_wait_goes_on_in_a_task() -> None:
    transport = _Slow(0.05)
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    waiter = send_awaited(session, 5)
    await asyncio.wait_for(waiter, 1.0)
    assert values(transport, 0) == [b"t:0"]
    assert failures == []
    await session.close(1.0)


async def test_an_eager_send_that_waits_past_the_deadline_is_given_up() -> None:
    transport = _Slow(5.0)
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    started = time.monotonic()
    waiter = send_awaited(session, 0.1)
    await asyncio.wait({waiter}, timeout=1.0)
    assert isinstance(waiter.exception(), EventDeliveryTimeoutError)
    assert time.monotonic() - started < 0.5
    assert transport.cancelled == 1  # the wait inside the transport ended
    assert [f.event_id for f in failures] == ["t-0"]
    assert isinstance(failures[0].error, TimeoutError)
    assert transport.records == []
    await session.close(1.0)


_CALLER = contextvars.ContextVar("caller", default="none")


class _Noting(MemoryTransport):
    """Notes the context its `send` and its answers run in."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    async def send(
        self, batch: RecordBatch, topic: str, partition: int, done: SendDone
    ) -> None:
        self.seen.append(_CALLER.get())

        def noted(offset: int | None, error: BaseException | None) -> None:
            self.seen.append(_CALLER.get())
            done(offset, error)

        await super().send(batch, topic, partition, noted)


async def test_a_send_started_by_a_publisher_runs_outside_its_context() -> None:
    transport = _Noting()
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    _CALLER.set("publisher")
    waiter = send_awaited(session, 5)
    await asyncio.wait_for(waiter, 1.0)
    assert transport.seen == ["none", "none"]
    await session.close(1.0)


async def test_a_defect_while_sending_at_once_is_left_to_the_loop() -> None:
    transport = MemoryTransport()
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    session.ledger.register("t", 0)
    take = session.ledger.take
    calls = [0]

    def flaky_take(*args: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("a defect")
        return take(*args)

    session.ledger.take = flaky_take  # type: ignore[method-assign,assignment]
    waiter = asyncio.get_running_loop().create_future()
    sent = event("t", 0, 5, waiter)
    assert session.ledger.accept(sent)
    # The publisher is not told: its event is accepted. The loop sends it.
    assert session.sender.send_now(sent.deadline) is False
    assert session.guard.failures == 1
    session.sender.wake()
    await asyncio.wait_for(waiter, 1.0)
    assert values(transport, 0) == [b"t:0"]
    await session.close(1.0)


class _RaisingAtTheCall(MemoryTransport):
    """A transport whose ``send`` (a plain function) raises when called, the
    first ``failing`` times."""

    def __init__(self, failing: int, error: BaseException) -> None:
        super().__init__()
        self.failing = failing
        self.error = error
        self.calls = 0

    def send(
        self, batch: RecordBatch, topic: str, partition: int, done: SendDone
    ) -> Any:
        self.calls += 1
        if self.calls <= self.failing:
            raise self.error
        return super().send(batch, topic, partition, done)


async def test_a_send_that_raises_at_the_call_is_retried() -> None:
    transport = _RaisingAtTheCall(1, RuntimeError("at the call"))
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    waiter = send_awaited(session, 5)
    await asyncio.wait_for(waiter, 1.0)
    assert transport.calls == 2
    assert values(transport, 0) == [b"t:0"]
    assert failures == []
    await session.close(1.0)


async def test_a_batch_that_cannot_be_built_is_retried_after_a_backoff() -> None:
    transport = MemoryTransport()
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    new_batch = transport.new_batch
    calls = [0]

    def failing_once() -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("no batch")
        return new_batch()

    transport.new_batch = failing_once  # type: ignore[method-assign]
    await asyncio.sleep(0.05)
    # The loop is idle: only the backoff's timer can bring the event back.
    waiter = send_awaited(session, 5)
    await asyncio.wait_for(waiter, 1.0)
    assert calls[0] == 2
    assert values(transport, 0) == [b"t:0"]
    await session.close(1.0)


async def test_a_send_cancelled_at_once_backs_off_and_lets_the_loop_run() -> None:
    transport = _RaisingAtTheCall(10**9, asyncio.CancelledError())
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticking = asyncio.ensure_future(ticker())
    waiter = send_awaited(session, 0.3)
    await asyncio.wait({waiter}, timeout=1.0)
    ticking.cancel()
    assert isinstance(waiter.exception(), EventDeliveryTimeoutError)
    # Backed off between tries (0.01 s, doubling to 0.05 s), and the event
    # loop kept turning all along.
    assert transport.calls < 40
    assert ticks > 100
    await session.close(1.0)


async def test_the_alarm_serves_deadlines_after_it_rang() -> None:
    transport = MemoryTransport()
    transport.stalled = True
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    session.ledger.register("t", 0)
    for n in range(2):
        # Each sent and never answered: given up at its own deadline, which
        # only the alarm can tell the idle loop.
        waiter = asyncio.get_running_loop().create_future()
        sent = event("t", n, 0.1, waiter)
        assert session.ledger.accept(sent)
        assert session.sender.send_now(sent.deadline)
        started = time.monotonic()
        await asyncio.wait({waiter}, timeout=1.0)
        assert waiter.done()
        assert isinstance(waiter.exception(), EventDeliveryTimeoutError)
        assert time.monotonic() - started < 0.3
    assert [f.event_id for f in failures] == ["t-0", "t-1"]
    transport.release()
    await session.close(1.0)


async def test_a_handover_stopped_before_it_ran_leaves_no_coroutine_behind() -> None:
    transport = _TaskBound()
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    waiter = send_awaited(session, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Before the handover task's first step.
        await session.sender.stop(RuntimeError("sent"), RuntimeError("queued"))
        await session.close(1.0)
        for _ in range(3):
            await asyncio.sleep(0)
        del session
        gc.collect()
    assert transport.tasks == []
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
    assert isinstance(waiter.exception(), EventDeliveryError)


# -- Several batches in flight per partition ---------------------------------------


async def test_three_batches_go_out_at_once_for_one_partition() -> None:
    transport = MemoryTransport(max_in_flight=3, batch_size=1)  # a record each
    transport.stalled = True
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    session.ledger.register("t", 0)
    for n in range(4):
        session.ledger.accept(event("t", n, 5))
    session.sender.wake()
    await asyncio.sleep(0.05)
    assert transport.held == 3  # the fourth waits for room
    transport.release()
    await asyncio.sleep(0.05)
    assert values(transport, 0) == [f"t:{n}".encode() for n in range(4)]
    assert failures == []
    await session.close(1.0)


async def test_a_failure_in_the_middle_of_a_pipeline_resends_in_order() -> None:
    transport = MemoryTransport(max_in_flight=3, batch_size=1)
    transport.stalled = True
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures)
    ledger, sender = session.ledger, session.sender
    ledger.register("t", 0)
    ledger.accept(event("t", 0, 5))
    sender.wake()
    await asyncio.sleep(0.02)
    assert transport.held == 1
    # The next send fails unwritten; the one behind it fails with it.
    transport.fail_next(SendOutcome.RETRIABLE)
    for n in (1, 2):
        ledger.accept(event("t", n, 5))
    sender.wake()
    await asyncio.sleep(0.1)  # well past the backoff
    # Their events wait for the first batch: nothing more was sent.
    assert transport.sends == 3
    assert ledger.stats.buffered == 3
    ledger.accept(event("t", 3, 5))
    sender.wake()
    await asyncio.sleep(0.05)
    assert transport.sends == 3
    transport.release()
    await asyncio.sleep(0.1)
    assert values(transport, 0) == [f"t:{n}".encode() for n in range(4)]
    assert failures == []
    assert ledger.stats.delivered == 4
    await session.close(1.0)


async def test_an_acknowledgement_after_a_failure_does_not_cut_its_backoff() -> None:
    transport = MemoryTransport(max_in_flight=3, batch_size=1)
    transport.stalled = True
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures, backoff=(0.4, 1.0))
    ledger, sender = session.ledger, session.sender
    ledger.register("t", 0)
    ledger.accept(event("t", 0, 5))
    sender.wake()
    await asyncio.sleep(0.02)
    assert transport.held == 1
    # The second batch fails at once; the first, still out, then succeeds.
    transport.fail_next(SendOutcome.RETRIABLE)
    ledger.accept(event("t", 1, 5))
    sender.wake()
    await asyncio.sleep(0.02)
    assert transport.sends == 2
    transport.release()
    await asyncio.sleep(0.15)
    # The first batch's acknowledgement leaves the second's backoff running.
    assert ledger.stats.delivered == 1
    assert transport.sends == 2
    await asyncio.sleep(0.5)
    assert values(transport, 0) == [b"t:0", b"t:1"]
    assert failures == []
    await session.close(1.0)


async def test_max_in_flight_caps_what_the_transport_takes() -> None:
    transport = MemoryTransport(max_in_flight=5, batch_size=1)
    transport.stalled = True
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures, max_in_flight=2)
    session.ledger.register("t", 0)
    for n in range(4):
        session.ledger.accept(event("t", n, 5))
    session.sender.wake()
    await asyncio.sleep(0.05)
    assert transport.held == 2
    assert session.ledger.max_in_flight == 2
    transport.release()
    await asyncio.sleep(0.1)
    assert values(transport, 0) == [f"t:{n}".encode() for n in range(4)]
    await session.close(1.0)


async def test_more_in_flight_than_order_allows_is_lowered_with_one_warning() -> None:
    transport = MemoryTransport(idempotent=False, batch_size=1)
    transport.stalled = True
    failures: list[DeliveryFailure] = []
    with capture_logs() as logs:
        session = await started_session(transport, failures, max_in_flight=3)
        session.ledger.register("t", 0)
        for n in range(3):
            session.ledger.accept(event("t", n, 5))
        session.sender.wake()
        await asyncio.sleep(0.05)
        assert transport.held == 1
        session.sender.connected()  # as after a restart: no second warning
    warnings = [log for log in logs if log["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "max_in_flight=3 lowered to 1" in warnings[0]["event"]
    assert "idempotent producer" in warnings[0]["event"]
    transport.release()
    await session.close(1.0)


async def test_a_transport_without_max_in_flight_takes_one_at_a_time() -> None:
    class Plain(MemoryTransport):
        max_in_flight = "many"  # type: ignore[assignment]

    transport = Plain(batch_size=1)
    transport.stalled = True
    failures: list[DeliveryFailure] = []
    session = await started_session(transport, failures, max_in_flight=3)
    session.ledger.register("t", 0)
    for n in range(3):
        session.ledger.accept(event("t", n, 5))
    session.sender.wake()
    await asyncio.sleep(0.05)
    assert transport.held == 1
    # A defect of the transport, counted like the others.
    assert session.guard.failures == 1
    transport.release()
    await session.close(1.0)
