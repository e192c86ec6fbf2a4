"""Listeners: how the rest of the world hears about deliveries, safely.

Delivery knows nothing of spans, log records or metrics. Telemetry, the
failure log and the application's ``on_delivery_error`` callback are
`DeliveryListener` objects; delivery tells them what happens through
`Listeners`, and every call into them goes through one `Guard`. A listener
that raises anything at all (``CancelledError`` and other
``BaseException`` subclasses included) is logged and counted; it can never
stop the sender, leave an event unsettled, or make ``publish`` raise after
its event was accepted.
"""

from __future__ import annotations

import contextlib
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from structlog.stdlib import BoundLogger

from ._ledger import PendingEvent, Settlement

__all__ = ["DeliveryListener", "Guard", "Listeners"]

T = TypeVar("T")


class Guard:
    """Calls code we do not own; what it raises is logged once and counted.

    The first failure of each (call site, exception type) is logged at
    error level with its traceback; later ones are only counted, so a
    listener that fails on every event cannot flood the log.

    Parameters
    ----------
    logger
        Where failures are logged.
    """

    def __init__(self, logger: BoundLogger) -> None:
        self._logger = logger
        self._lock = threading.Lock()  # metric readers call from their thread
        self._seen: set[tuple[str, type[BaseException]]] = set()
        self.failures = 0
        """How many guarded calls raised."""

    def __call__(self, site: str, function: Callable[..., T], *args: Any) -> T | None:
        """Call ``function(*args)``; None if it raised."""
        try:
            return function(*args)
        except BaseException as exc:
            self.failed(site, exc)
            return None

    def failed(self, site: str, error: BaseException) -> None:
        """Count (and the first time, log) that a call at ``site`` raised."""
        key = (site, type(error))
        with self._lock:
            self.failures += 1
            first = key not in self._seen
            self._seen.add(key)
        if not first:
            return
        # A failing log handler cannot be told about itself.
        with contextlib.suppress(Exception):
            self._logger.error(
                "A delivery listener (or the transport) raised; the event is"
                " settled anyway, and later failures of this kind are only"
                " counted",
                listener=site,
                error=f"{type(error).__name__}: {error}",
                traceback="".join(traceback.format_exception(error)),
            )


class DeliveryListener:
    """Told what delivery does; override the hooks you need.

    Every hook runs on the event loop, inside the `Guard`: what it raises
    is logged and counted, and delivery goes on.

    Attributes
    ----------
    name
        The listener's name in the guard's log lines.
    """

    name = "listener"

    def accepted(self, event: PendingEvent, source: Any) -> None:
        """``publish`` accepted ``event``; ``source`` is what the publisher
        passed along (the enriched event), opaque to delivery."""

    def refused(self, event: PendingEvent, error: BaseException) -> None:
        """``publish`` refused ``event`` (never accepted, never counted)."""

    def batch_started(self, partition: int, events: Sequence[PendingEvent]) -> Any:
        """A batch is being handed to the transport; what this returns is
        given back to `batch_ended`."""
        return None

    def batch_ended(
        self,
        token: Any,
        partition: int,
        base_offset: int | None,
        error: BaseException | None,
    ) -> None:
        """The send of a batch ended: acknowledged at ``base_offset``, or
        with ``error`` (a retry may follow)."""

    def retrying(self, events: Sequence[PendingEvent], error: BaseException) -> None:
        """A batch failed and its events will be sent again."""

    def settled(self, settlement: Settlement) -> None:
        """Events left the ledger: delivered, or failed for good."""

    async def closing(self, timeout: float) -> None:
        """The session is closing and its sender has stopped; work that
        rides on the transport (log records sent with its producer) may
        finish within ``timeout`` seconds, before the transport stops."""


def _overrides(listener: DeliveryListener, hook: str) -> bool:
    return getattr(type(listener), hook) is not getattr(DeliveryListener, hook)


class Listeners:
    """The listeners of one delivery session, each call guarded.

    Only the hooks a listener overrides are called, so the publish path
    pays nothing for hooks nobody listens to.

    Parameters
    ----------
    guard
        Runs every call.
    listeners
        The listeners, called in this order.
    """

    def __init__(self, guard: Guard, listeners: Sequence[DeliveryListener]) -> None:
        self.guard = guard
        self._all = tuple(listeners)

        def hooked(hook: str) -> tuple[DeliveryListener, ...]:
            return tuple(item for item in listeners if _overrides(item, hook))

        self._accepted = hooked("accepted")
        self._refused = hooked("refused")
        self._batches = tuple(
            item
            for item in listeners
            if _overrides(item, "batch_started") or _overrides(item, "batch_ended")
        )
        self._retrying = hooked("retrying")
        self._settled = hooked("settled")
        self.closers = hooked("closing")
        """The listeners with a `DeliveryListener.closing` step."""
        self.hears_accepted = bool(self._accepted)
        """Whether any listener wants `accepted` (the publisher skips the
        call otherwise)."""

    def accepted(self, event: PendingEvent, source: Any) -> None:
        """Tell listeners an event was accepted."""
        guard = self.guard
        for listener in self._accepted:
            guard(listener.name, listener.accepted, event, source)

    def refused(self, event: PendingEvent, error: BaseException) -> None:
        """Tell listeners an event was refused."""
        for listener in self._refused:
            self.guard(listener.name, listener.refused, event, error)

    def batch_started(
        self, partition: int, events: Sequence[PendingEvent]
    ) -> tuple[Any, ...] | None:
        """Tell listeners a batch leaves; their tokens, or None if none
        listens."""
        if not self._batches:
            return None
        return tuple(
            self.guard(item.name, item.batch_started, partition, events)
            for item in self._batches
        )

    def batch_ended(
        self,
        tokens: tuple[Any, ...] | None,
        partition: int,
        base_offset: int | None,
        error: BaseException | None,
    ) -> None:
        """Tell listeners how a batch's send ended."""
        if tokens is None:
            return
        for item, token in zip(self._batches, tokens, strict=True):
            self.guard(
                item.name, item.batch_ended, token, partition, base_offset, error
            )

    def retrying(self, events: Sequence[PendingEvent], error: BaseException) -> None:
        """Tell listeners a batch will be sent again."""
        for listener in self._retrying:
            self.guard(listener.name, listener.retrying, events, error)

    def settled(self, settlement: Settlement) -> None:
        """Tell listeners events were settled."""
        guard = self.guard
        for listener in self._settled:
            guard(listener.name, listener.settled, settlement)
