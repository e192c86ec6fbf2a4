"""One delivery session: the parts a Kafka event manager builds anew at
each `initialize`, and closes, within a time budget, at `aclose`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from typing import Any

from structlog.stdlib import BoundLogger

from .._encoding._event_type import EventType
from .._encoding._registry import SchemaRegistrar
from .._foreign import own_cancellation
from .._options import BufferOptions
from ..errors import (
    EventManagerClosedError,
    EventManagerUninitializedError,
    NotAcknowledgedError,
)
from ._connection import Connection
from ._intake import Intake
from ._ledger import DeliveryStats, Ledger
from ._listeners import DeliveryListener, Guard, Listeners
from ._ratelimit import RateLimitedLog
from ._registration import Registrations
from ._reporting import FailureCallback, FailureCallbackListener, FailureLog
from ._sender import Sender
from ._settle import Settler
from ._transport import Transport

__all__ = ["CloseBudget", "DeliverySession"]


class CloseBudget:
    """The deadline of a close, which a later ``aclose(timeout=...)`` may
    bring forward (never push back).

    Steps of the close wait through `run`, which gives up on what it
    waits for as soon as the deadline, as it stands at that moment, passes.
    """

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + max(timeout, 0.0)
        self._changed = asyncio.Event()

    def shorten(self, timeout: float) -> None:
        """Bring the deadline forward to ``timeout`` seconds from now."""
        deadline = time.monotonic() + max(timeout, 0.0)
        if deadline < self.deadline:
            self.deadline = deadline
            self._changed.set()

    def remaining(self, reserve: float = 0.0) -> float:
        """Seconds left before the deadline, less ``reserve``."""
        return max(self.deadline - reserve - time.monotonic(), 0.0)

    async def run(self, step: Awaitable[Any], reserve: float = 0.0) -> None:
        """Wait for ``step`` until the deadline less ``reserve``; a step
        still running then is cancelled."""
        task = asyncio.ensure_future(step)
        try:
            while not task.done():
                remaining = self.remaining(reserve)
                if remaining <= 0:
                    break
                self._changed.clear()
                changed = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait(
                    {task, changed},
                    timeout=remaining,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                changed.cancel()
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class DeliverySession:
    """Ledger, connection, sender, registrations and intake of one session.

    Parameters
    ----------
    topic
        The events topic.
    transport
        Carries the events.
    registrar
        Registers the schemas.
    buffer
        The buffer's bounds and overflow policy.
    delivery_timeout
        Seconds an event may take to be acknowledged.
    max_in_flight
        Most batches in flight per partition (None: what the transport
        takes); see `Sender`.
    backoff
        First and longest delay between retries.
    raise_on_error
        See `Intake`.
    listeners
        Told what happens to events (telemetry), after the failure log and
        the callback.
    on_delivery_error
        The application's callback, or None.
    logger
        For the session's messages.
    """

    def __init__(
        self,
        *,
        topic: str,
        transport: Transport,
        registrar: SchemaRegistrar,
        buffer: BufferOptions,
        delivery_timeout: float,
        backoff: tuple[float, float],
        raise_on_error: bool,
        max_in_flight: int | None = None,
        listeners: Sequence[DeliveryListener],
        on_delivery_error: FailureCallback | None,
        logger: BoundLogger,
    ) -> None:
        self.topic = topic
        self.transport = transport
        self.guard = Guard(logger)
        own: list[DeliveryListener] = [FailureLog(topic, RateLimitedLog(logger, 10.0))]
        if on_delivery_error is not None:
            own.append(FailureCallbackListener(on_delivery_error, self.guard))
        self.listeners = Listeners(self.guard, [*own, *listeners])
        self.ledger = Ledger(buffer)
        self.connection = Connection(
            transport, backoff=backoff, logger=logger, on_ready=self._ready
        )
        self.sender = Sender(
            self.ledger,
            Settler(self.listeners),
            self.listeners,
            topic=topic,
            connection=self.connection,
            backoff=backoff,
            delivery_timeout=delivery_timeout,
            max_in_flight=max_in_flight,
            logger=logger,
        )
        self.registrations = Registrations(
            topic=topic,
            registrar=registrar,
            transport=transport,
            is_connected=lambda: self.connection.ready,
            ledger=self.ledger,
            settle=self.sender.settle,
            on_registered=self.sender.wake,
            backoff=backoff,
            logger=logger,
        )
        self.intake = Intake(
            topic=topic,
            ledger=self.ledger,
            sender=self.sender,
            registrations=self.registrations,
            listeners=self.listeners,
            buffer=buffer,
            delivery_timeout=delivery_timeout,
            max_request_size=lambda: transport.max_request_size,
            raise_on_error=raise_on_error,
        )
        self._logger = logger
        self._budget: CloseBudget | None = None
        self._close_task: asyncio.Task[int] | None = None

    def _ready(self) -> None:
        self.intake.refresh_limit()
        self.sender.connected()
        self.registrations.connected()

    @property
    def stats(self) -> DeliveryStats:
        """The session's counters."""
        return replace(self.ledger.stats, listener_errors=self.guard.failures)

    @property
    def closing(self) -> bool:
        """Whether `close` was called."""
        return self._close_task is not None

    def supersede(self) -> None:
        """The manager was initialized anew: publishers of this session are
        told to create their publisher again."""
        self.intake.close(
            EventManagerUninitializedError(
                "This publisher was created before its event manager was closed"
                " and initialized again; create it again with create_publisher"
            )
        )

    # Starting ---------------------------------------------------------------

    async def start(self) -> None:
        """Start the sender and connect once.

        Raises
        ------
        BrokerUnavailableError, IdempotenceUnsupportedError
            If the first connection fails (the caller decides whether to go
            on in the background: `connect_in_background`).
        EventManagerClosedError
            If `close` was called meanwhile.
        """
        self.sender.start()
        await self.connection.connect()

    def connect_in_background(self) -> None:
        """Keep trying to connect (after a failed `start`)."""
        self.connection.connect_in_background()

    async def register(self, event_type: EventType[Any], timeout: float | None) -> None:
        """Register an event type now, within ``timeout`` seconds if given.

        Raises
        ------
        TimeoutError
            If the time ran out (worth going on in the background).
        """
        if timeout is None:
            await self.registrations.register(event_type)
            return
        async with asyncio.timeout(timeout):
            await self.registrations.register(event_type)

    # Closing ----------------------------------------------------------------

    def close(self, timeout: float) -> asyncio.Task[int]:
        """Close within ``timeout`` seconds; a later call with a smaller
        timeout brings the deadline forward. Returns the closing task,
        whose result is the number of events not delivered."""
        if self._budget is None:
            self._budget = CloseBudget(timeout)
            self._close_task = asyncio.create_task(
                self._close(self._budget), name="otel-kafka-events-close"
            )
        else:
            self._budget.shorten(timeout)
        assert self._close_task is not None
        return self._close_task

    async def _close(self, budget: CloseBudget) -> int:
        self.intake.close(EventManagerClosedError("This event manager was closed"))
        failed_before = self.ledger.stats.failed
        # What is left after the wait for delivery goes to stopping the
        # sender and the clients: a tenth of the budget, 20 ms to 1 s.
        total = budget.remaining()
        reserve = min(max(total / 10, 0.02), 1.0)
        await budget.run(self.sender.drained(total), reserve)
        with contextlib.suppress(Exception):
            await budget.run(self.registrations.close(), reserve / 2)
        await self.sender.stop(
            NotAcknowledgedError(
                "sent, but not acknowledged before the event manager closed;"
                " the broker may have written it"
            ),
            TimeoutError("still pending when the event manager was closed"),
        )
        # Records riding on the transport (the log export's) go out first.
        for listener in self.listeners.closers:
            await budget.run(self._closing(listener, budget, reserve), reserve)
        # The transport gets what is left; a client that does not stop in
        # time is left behind rather than allowed to hold the close.
        await budget.run(
            self.connection.close(
                budget.remaining(reserve / 2), abandoned=self.sender.abandoned
            )
        )
        undelivered = self.ledger.stats.failed - failed_before
        if undelivered:
            with contextlib.suppress(Exception):
                self._logger.error(
                    "Events not delivered before the event manager closed",
                    count=undelivered,
                    topic=self.topic,
                )
        return undelivered

    async def _closing(
        self, listener: DeliveryListener, budget: CloseBudget, reserve: float
    ) -> None:
        """A listener's closing step, guarded. Its coroutine is made here,
        inside the step, so that a step the deadline cancels before it
        starts leaves no coroutine unawaited."""
        try:
            await listener.closing(budget.remaining(reserve))
        except BaseException as exc:
            if own_cancellation(exc):
                raise  # the close's own deadline, not the listener
            self.guard.failed(listener.name, exc)
