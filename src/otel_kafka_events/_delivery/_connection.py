"""Keeping a transport connected: once in the foreground, then in the
background after a failure, and again after the transport asks to be
restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from structlog.stdlib import BoundLogger

from .._foreign import describe, own_cancellation
from ..errors import (
    BrokerUnavailableError,
    EventManagerClosedError,
    EventManagerError,
    IdempotenceUnsupportedError,
)
from ._backoff import Backoff
from ._ratelimit import RateLimitedLog
from ._transport import Transport

__all__ = ["RESTART_GRACE", "Connection"]

RESTART_GRACE = 2.0
"""Seconds a transport being restarted gives its requests in flight to be
answered: an answer says what happened to a batch, where giving it up can
only say that it may have been written."""


class Connection:
    """Starts, restarts and stops one transport.

    Parameters
    ----------
    transport
        The transport.
    backoff
        First and longest delay between connection attempts, in seconds.
    logger
        For connection messages.
    on_ready
        Called each time the transport has started.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        backoff: tuple[float, float],
        logger: BoundLogger,
        on_ready: Callable[[], None],
    ) -> None:
        self.transport = transport
        self._backoff = backoff
        self._logger = logger
        self._log = RateLimitedLog(logger, 10.0)
        self._on_ready = on_ready
        self._ready = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._restarting = False

    @property
    def ready(self) -> bool:
        """Whether the transport is started and may send."""
        return self._ready

    async def connect(self) -> None:
        """Start the transport once.

        The start runs as a task of its own, so that `close` can stop it
        half-way; the transport then closes what it had opened.

        Raises
        ------
        BrokerUnavailableError
            If Kafka cannot be reached.
        IdempotenceUnsupportedError
            If idempotence is required and the broker refuses it.
        EventManagerClosedError
            If `close` was called before the start finished.
        """
        if self._closing:
            raise _closed_error()
        task = self._spawn(self._start())
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        if task.cancelled() or self._closing:
            raise _closed_error()
        task.result()
        self._ready = True
        self._on_ready()

    async def _start(self) -> None:
        """Start the transport; whatever else its client raises (anything
        but our own cancellation) means Kafka cannot be used now."""
        try:
            await self.transport.start()
        except EventManagerError:
            raise  # ours: unreachable, refused idempotence, a usage error
        except BaseException as exc:
            if own_cancellation(exc):
                raise
            raise BrokerUnavailableError(
                f"Cannot connect to Kafka at {self.transport.target}: the client"
                f" failed to start: {describe(exc)}"
            ) from exc

    async def _stop(self, timeout: float, *, abandoned: bool) -> None:
        """Stop the transport; a failure to stop is logged, never raised (the
        transport is given up either way)."""
        try:
            await self.transport.stop(timeout, abandoned=abandoned)
        except BaseException as exc:
            if own_cancellation(exc):
                raise
            self._log.error(
                "stop", "Kafka client failed to stop cleanly", error=describe(exc)
            )

    def connect_in_background(self) -> None:
        """Keep trying to connect until it works or `close` is called."""
        self._spawn(self._reconnect())

    def restart(self) -> None:
        """Stop the transport, failing what it holds, and connect again in
        the background (after `SendFailure.RESTART`)."""
        if self._closing or self._restarting or not self._ready:
            return
        self._ready = False
        self._restarting = True
        self._log.error("restart", "Kafka producer unusable, starting a new one")
        self._spawn(self._restart())

    async def _restart(self) -> None:
        try:
            # Requests in flight get a moment for their answers (behind a
            # batch the broker refused, they say "not written"); the rest
            # fails at once, each saying whether it was ever sent.
            await self._stop(RESTART_GRACE, abandoned=False)
        finally:
            self._restarting = False
        await self._reconnect()

    async def _reconnect(self) -> None:
        low, high = self._backoff
        backoff = Backoff(low, high)
        while not self._closing and not self._ready:
            await asyncio.sleep(backoff.next())
            try:
                await self.connect()
            except IdempotenceUnsupportedError as exc:
                with contextlib.suppress(Exception):
                    self._logger.error(
                        "Kafka connection given up: the broker refuses the"
                        " idempotent producer that enable_idempotence=True"
                        " requires",
                        error=str(exc),
                    )
                return
            except BrokerUnavailableError as exc:
                self._log.error(
                    "connect", "Still cannot connect to Kafka", error=str(exc)
                )
            else:
                with contextlib.suppress(Exception):
                    self._logger.info(
                        "Connected to Kafka", bootstrap_servers=self.transport.target
                    )

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name="otel-kafka-events-connect")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self, timeout: float, *, abandoned: bool) -> None:
        """Stop reconnecting, then stop the transport.

        Parameters
        ----------
        timeout
            Seconds the transport gets to stop.
        abandoned
            Whether batches were given up that the transport may still
            hold: they are failed first, or stopping would wait for them.
        """
        self._closing = True
        self._ready = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._stop(timeout, abandoned=abandoned)


def _closed_error() -> EventManagerClosedError:
    return EventManagerClosedError(
        "The event manager was closed while it was connecting to Kafka"
    )
