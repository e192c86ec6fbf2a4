"""Settling events: their waiters first, then the listeners.

The ledger has already counted a `Settlement` when it reaches `Settler`.
Waiters (``publish(..., wait=True)``) are resolved here, by our own code,
before any listener runs; the listeners (spans, log records, the failure
log, the application's callback) are then told through `Listeners`, each
call guarded, so none of them can keep a waiter waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from ..errors import (
    EventDeliveryAbortedError,
    EventDeliveryError,
    EventDeliveryTimeoutError,
    EventDroppedError,
    EventRejectedError,
)
from ._ledger import PendingEvent, Settled, Settlement
from ._listeners import Listeners

__all__ = ["Settler", "delivery_error"]

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


class Settler:
    """Resolves waiters, then tells the listeners.

    Parameters
    ----------
    listeners
        Told about every settlement, after its waiters.
    """

    def __init__(self, listeners: Listeners) -> None:
        self._listeners = listeners

    def settle(self, settlements: Iterable[Settlement]) -> None:
        """Resolve the waiters of ``settlements`` and tell the listeners."""
        listeners = self._listeners
        for settlement in settlements:
            outcome = settlement.outcome
            if outcome is Settled.DELIVERED:
                for event in settlement.events:
                    if event.waiter is not None:
                        _resolve(event.waiter, None)
            else:
                error = settlement.error
                assert error is not None
                for event in settlement.events:
                    if event.waiter is not None:
                        _resolve(event.waiter, delivery_error(event, outcome, error))
            listeners.settled(settlement)


def _resolve(waiter: asyncio.Future[Any], error: BaseException | None) -> None:
    if waiter.done():  # its publish was cancelled
        return
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(None)
