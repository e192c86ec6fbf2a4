"""Delivery's own listeners: the failure log and the application's callback."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ._ledger import DeliveryFailure, PendingEvent, Settled, Settlement
from ._listeners import DeliveryListener, Guard
from ._ratelimit import RateLimitedLog

__all__ = ["FailureCallback", "FailureCallbackListener", "FailureLog"]

FailureCallback = Callable[[DeliveryFailure], None]
"""Called with a `DeliveryFailure` for every event not delivered."""


class FailureLog(DeliveryListener):
    """Logs failed events and retried batches, rate-limited.

    Parameters
    ----------
    topic
        The events topic, named in each line.
    log
        The rate-limited log.
    """

    name = "failure log"

    def __init__(self, topic: str, log: RateLimitedLog) -> None:
        self._topic = topic
        self._log = log

    def retrying(self, events: Sequence[PendingEvent], error: BaseException) -> None:
        self._log.error(
            "retry",
            "Kafka send failed, will retry",
            topic=self._topic,
            count=len(events),
            first_event_id=events[0].event_id if events else None,
            error=f"{type(error).__name__}: {error}",
        )

    def settled(self, settlement: Settlement) -> None:
        outcome = settlement.outcome
        if outcome is Settled.DELIVERED or not settlement.events:
            return
        events = settlement.events
        error = settlement.error
        self._log.error(
            f"events-{outcome.reason}",
            f"Events not delivered to Kafka ({outcome.reason})",
            topic=self._topic,
            count=len(events),
            first_event_id=events[0].event_id,
            event_name=events[0].event_name,
            cause=outcome.value,
            error=f"{type(error).__name__}: {error}",
        )


class FailureCallbackListener(DeliveryListener):
    """Calls the application's ``on_delivery_error`` once per failed event.

    Parameters
    ----------
    callback
        The application's callback.
    guard
        Runs each call, so that one failing call does not cost the other
        events of the settlement theirs.
    """

    name = "on_delivery_error"

    def __init__(self, callback: FailureCallback, guard: Guard) -> None:
        self._callback = callback
        self._guard = guard

    def settled(self, settlement: Settlement) -> None:
        if settlement.outcome is Settled.DELIVERED:
            return
        error = settlement.error
        assert error is not None
        reason = settlement.outcome.reason
        for event in settlement.events:
            self._guard(
                self.name,
                self._callback,
                DeliveryFailure(event.event_id, event.event_name, reason, error),
            )
