"""Telling everyone concerned how events were settled.

The ledger has already counted a `Settlement` when it reaches `Reporter`;
here its waiters are resolved, its producer spans ended, the failure
callback called and a log line written; with the direct log export
(`LogExport.direct`), delivered events become log records here and failed
ones are forgotten. Each of these runs on its own, in
that order, so a span processor, callback or log handler that raises cannot
leave a waiter hanging or skip the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .._telemetry._spans import end_producer_span
from ..errors import (
    EventDeliveryAbortedError,
    EventDeliveryError,
    EventDeliveryTimeoutError,
    EventDroppedError,
    EventRejectedError,
)
from ._ledger import (
    Batch,
    DeliveredEvent,
    DeliveryFailure,
    PendingEvent,
    Settled,
    Settlement,
)
from ._ratelimit import RateLimitedLog

__all__ = ["FailureCallback", "Reporter", "delivery_error"]

FailureCallback = Callable[[DeliveryFailure], None]


class SettledEventsHook(Protocol):
    """Told which events were delivered and which failed (the direct log
    export, `DirectLogRecords`)."""

    def delivered(self, events: list[PendingEvent]) -> None:
        """Events Kafka acknowledged, in their queue order."""

    def failed(self, events: list[PendingEvent]) -> None:
        """Events that will never be delivered."""


_WAITING_FOR = {
    Settled.TIMED_OUT_REGISTRY: "registry",
    Settled.TIMED_OUT_KAFKA: "kafka",
    Settled.NOT_ACKNOWLEDGED: "acknowledgement",
}


def delivery_error(
    event: PendingEvent, outcome: Settled, error: BaseException
) -> EventDeliveryError:
    """The error ``publish(..., wait=True)`` raises for a failed event.

    Its class says why (`EventDroppedError`, `EventDeliveryTimeoutError`,
    `EventRejectedError`, `EventDeliveryAbortedError`); its message names
    the outcome and the underlying error, which is also its ``__cause__``.
    """
    reason = f"{outcome.value} ({type(error).__name__}: {error})"
    result: EventDeliveryError
    if outcome is Settled.DROPPED:
        result = EventDroppedError(event.event_id, event.event_name, reason)
    elif outcome in _WAITING_FOR:
        result = EventDeliveryTimeoutError(
            event.event_id, event.event_name, reason, _WAITING_FOR[outcome]
        )
    elif outcome is Settled.CLOSED:
        result = EventDeliveryAbortedError(event.event_id, event.event_name, reason)
    else:
        result = EventRejectedError(event.event_id, event.event_name, reason)
    result.__cause__ = error
    return result


class Reporter:
    """Resolves waiters, ends spans, calls back and logs settlements.

    Parameters
    ----------
    topic
        The events topic, for log lines and `DeliveredEvent`.
    on_failure
        Called once per event that was not delivered.
    log
        Rate-limited error log for failures.
    settled_events
        Also told about every settlement's events, last.
    """

    def __init__(
        self,
        topic: str,
        on_failure: FailureCallback | None,
        log: RateLimitedLog,
        *,
        settled_events: SettledEventsHook | None = None,
    ) -> None:
        self._topic = topic
        self._on_failure = on_failure
        self._log = log
        self._settled_events = settled_events

    def report(self, settlements: Iterable[Settlement]) -> None:
        """Notify everyone concerned by ``settlements``."""
        for settlement in settlements:
            if settlement.outcome is Settled.DELIVERED:
                self._delivered(settlement)
            else:
                self._failed(settlement)

    def retrying(self, batch: Batch, error: BaseException) -> None:
        """Log (rate-limited) that a batch failed and will be sent again."""
        self._guard(
            "log",
            self._log.error,
            "retry",
            "Kafka send failed, will retry",
            topic=self._topic,
            count=len(batch.events),
            first_event_id=batch.events[0].event_id,
            error=f"{type(error).__name__}: {error}",
        )

    def _delivered(self, settlement: Settlement) -> None:
        partition = settlement.partition
        base = settlement.base_offset
        assert partition is not None
        assert base is not None
        for index, event in enumerate(settlement.events):
            if event.waiter is not None:
                self._resolve(
                    event.waiter, DeliveredEvent(self._topic, partition, base + index)
                )
            if event.span is not None:
                self._guard(
                    "span",
                    end_producer_span,
                    event.span,
                    partition=partition,
                    offset=base + index,
                )
        if self._settled_events is not None:
            self._guard("log export", self._settled_events.delivered, settlement.events)

    def _failed(self, settlement: Settlement) -> None:
        outcome = settlement.outcome
        error = settlement.error
        assert error is not None
        events = settlement.events
        for event in events:
            if event.waiter is not None:
                self._resolve(event.waiter, delivery_error(event, outcome, error))
        for event in events:
            if event.span is not None:
                self._guard("span", end_producer_span, event.span, error=error)
        if self._on_failure is not None:
            reason = outcome.reason
            for event in events:
                self._guard(
                    "callback",
                    self._on_failure,
                    DeliveryFailure(event.event_id, event.event_name, reason, error),
                )
        if events:
            self._guard(
                "log",
                self._log.error,
                f"events-{outcome.reason}",
                f"Events not delivered to Kafka ({outcome.reason})",
                topic=self._topic,
                count=len(events),
                first_event_id=events[0].event_id,
                event_name=events[0].event_name,
                cause=outcome.value,
                error=f"{type(error).__name__}: {error}",
            )
        if self._settled_events is not None:
            self._guard("log export", self._settled_events.failed, events)

    @staticmethod
    def _resolve(waiter: asyncio.Future[Any], outcome: Any) -> None:
        if waiter.done():  # its publish was cancelled
            return
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)

    def _guard(
        self, what: str, function: Callable[..., Any], *args: Any, **kw: Any
    ) -> None:
        """Run one notification; what it raises is logged, never propagated."""
        try:
            function(*args, **kw)
        except Exception as exc:
            self.notification_failed(what, exc)

    def notification_failed(self, what: str, error: Exception) -> None:
        """Log that a notification (``what``: span, callback...) raised."""
        with contextlib.suppress(Exception):
            self._log.logger.error(
                f"Event delivery {what} raised",
                error=f"{type(error).__name__}: {error}",
            )
