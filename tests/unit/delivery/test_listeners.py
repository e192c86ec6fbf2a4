"""A listener that raises, at any call site, with any exception, changes
nothing about delivery: every event is settled once, the sender lives on,
``publish`` never raises after acceptance, and the failure is counted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from otel_kafka_events import EventPayload, KafkaEventManager
from otel_kafka_events._delivery._ledger import PendingEvent, Settlement
from otel_kafka_events._delivery._listeners import DeliveryListener, Guard, Listeners
from otel_kafka_events.testing import (
    MemorySchemaRegistry,
    MemoryTransport,
    SendOutcome,
)

HOOKS = ("accepted", "batch_started", "batch_ended", "retrying", "settled", "closing")
ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
)


class Ping(EventPayload):
    n: int


class Raising(DeliveryListener):
    """Raises ``error`` from ``hook``; counts the calls of every hook."""

    name = "raising"

    def __init__(self, hook: str, error: type[BaseException]) -> None:
        self.hook = hook
        self.error = error
        self.calls: dict[str, int] = dict.fromkeys(HOOKS, 0)

    def _maybe_raise(self, hook: str) -> None:
        self.calls[hook] += 1
        if hook == self.hook:
            raise self.error(f"{hook} failed")

    def accepted(self, event: PendingEvent, source: Any) -> None:
        self._maybe_raise("accepted")

    def batch_started(self, partition: int, events: Sequence[PendingEvent]) -> Any:
        self._maybe_raise("batch_started")
        return None

    def batch_ended(
        self,
        token: Any,
        partition: int,
        base_offset: int | None,
        error: BaseException | None,
    ) -> None:
        self._maybe_raise("batch_ended")

    def retrying(self, events: Sequence[PendingEvent], error: BaseException) -> None:
        self._maybe_raise("retrying")

    def settled(self, settlement: Settlement) -> None:
        self._maybe_raise("settled")

    async def closing(self, timeout: float) -> None:
        self._maybe_raise("closing")


def test_the_guard_counts_and_logs_each_kind_once() -> None:
    guard = Guard(structlog.get_logger())
    with capture_logs() as logs:
        for _ in range(3):
            assert guard("spans", _raise, RuntimeError) is None
        assert guard("spans", _raise, asyncio.CancelledError) is None
        assert guard("spans", lambda: 7) == 7
    assert guard.failures == 4
    assert [entry["listener"] for entry in logs] == ["spans", "spans"]
    assert "RuntimeError" in logs[0]["error"]


def _raise(error: type[BaseException]) -> None:
    raise error("boom")


def test_only_overridden_hooks_are_called() -> None:
    class Quiet(DeliveryListener):
        def settled(self, settlement: Settlement) -> None:
            pass

    listeners = Listeners(Guard(structlog.get_logger()), [Quiet()])
    assert not listeners.hears_accepted
    assert listeners.batch_started(0, []) is None


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("hook", HOOKS)
async def test_a_raising_listener_changes_nothing(
    hook: str, error: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = Raising(hook, error)
    transport = MemoryTransport()
    transport.fail_next(SendOutcome.RETRIABLE)  # so that "retrying" is called
    manager = KafkaEventManager(
        application="shop",
        topic_prefix="events",
        transport=transport,
        registry=MemorySchemaRegistry(),
        retry_backoff=0.01,
        backoff_interval=0.05,
    )
    # The telemetry of a manager is where listeners come from; here one more
    # joins each session it makes.
    original = manager._telemetry.for_session

    def with_listener(**kwargs: Any) -> Any:
        parts = original(**kwargs)
        parts.listeners.append(listener)
        return parts

    monkeypatch.setattr(manager._telemetry, "for_session", with_listener)
    await manager.initialize()
    publisher = await manager.create_publisher("ping", Ping)
    for n in range(5):
        # Never raises after acceptance, whatever the listener does.
        await publisher.publish(Ping(n=n), wait=(n == 4))
    stats = manager.stats
    assert stats.delivered == 5
    assert stats.buffered == 0
    assert await manager.aclose(timeout=2) == 0
    assert len(transport.records) == 5
    assert listener.calls[hook] >= 1
    assert manager.stats.listener_errors >= 1
