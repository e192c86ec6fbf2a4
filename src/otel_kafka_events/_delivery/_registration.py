"""Registering event types: the topic check, the schema, the partition.

An event type is usable once its topic exists, its schema has an id in the
registry and its partition is known; `Registrations.register` does all
three and then tells the ledger, which starts sending the type's backlog.
When the broker or registry is away, registration goes on in the
background; when it can never succeed (incompatible schema, missing topic)
the type's events fail and its publisher refuses new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from structlog.stdlib import BoundLogger

from .._encoding._codec import set_schema_id
from .._encoding._event_type import EventType
from .._encoding._registry import SchemaRegistrar
from .._foreign import describe, own_cancellation
from ..errors import (
    BrokerUnavailableError,
    EventManagerError,
    EventManagerUninitializedError,
    EventManagerUsageError,
    KafkaTopicError,
    SchemaRegistryError,
)
from ._backoff import Backoff
from ._ledger import Ledger, Route, Settlement
from ._partitioner import partition_for_key
from ._ratelimit import RateLimitedLog
from ._transport import TopicInfo, Transport

__all__ = [
    "ATTEMPT_LIMIT",
    "RETRIABLE_REGISTRATION_ERRORS",
    "Registrations",
    "fresh_copy",
]

_UNKNOWN_TOPIC = 3

ATTEMPT_LIMIT = 30.0
"""Seconds one background registration attempt may take: a registry or
broker that accepts a request and never answers it cannot hold the
registration up for good, it is tried again."""

RETRIABLE_REGISTRATION_ERRORS = (
    SchemaRegistryError,
    BrokerUnavailableError,
    TimeoutError,
)
"""What makes a registration worth trying again later."""


def fresh_copy(error: BaseException) -> BaseException:
    """A new exception equal to ``error``, for raising it once more.

    Raising one stored exception again and again would grow its traceback
    with every raise, keeping each caller's frames (and payloads) alive.
    """
    copy = type(error).__new__(type(error), *error.args)
    copy.__dict__.update(error.__dict__)
    copy.__cause__ = error
    return copy


class Registrations:
    """Registers event types for one topic, now or in the background.

    Parameters
    ----------
    topic
        The events topic.
    registrar
        Registers schemas in the registry.
    transport
        Asked about the topic.
    is_connected
        Whether the transport may be asked now.
    ledger
        Told when a type is registered, or can never be.
    settle
        Reports the settlements of a type that can never be registered.
    on_registered
        Called after each registration (to wake the sender).
    backoff
        First and longest delay between background attempts.
    logger
        For registration messages.
    """

    def __init__(
        self,
        *,
        topic: str,
        registrar: SchemaRegistrar,
        transport: Transport,
        is_connected: Callable[[], bool],
        ledger: Ledger,
        settle: Callable[[list[Settlement]], None],
        on_registered: Callable[[], None],
        backoff: tuple[float, float],
        logger: BoundLogger,
    ) -> None:
        self._topic = topic
        self._registrar = registrar
        self._transport = transport
        self._is_connected = is_connected
        self._ledger = ledger
        self._settle = settle
        self._on_registered = on_registered
        self._backoff = backoff
        self._logger = logger
        self._log = RateLimitedLog(logger, 10.0)
        # Each event type of this session: None, or why it can never be
        # registered.
        self._status: dict[str, EventManagerUsageError | None] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def failure(self, event_name: str) -> BaseException | None:
        """Why events of a type cannot be accepted (None if they can).

        A type that cannot be registered answers with a new copy of its
        registration error; a type this session never saw (a publisher made
        before its manager was closed and initialized again) answers with
        `EventManagerUninitializedError`.
        """
        try:
            failure = self._status[event_name]
        except KeyError:
            return EventManagerUninitializedError(
                f"The publisher of event {event_name!r} was created before its"
                " event manager was closed; create it again with"
                " create_publisher"
            )
        return None if failure is None else fresh_copy(failure)

    async def register(self, event_type: EventType[Any]) -> None:
        """Check the topic, register the schema and route the type's events.

        Raises
        ------
        KafkaTopicError
            If the topic does not exist.
        IncompatibleSchemaError
            If the registry refuses the schema.
        BrokerUnavailableError, SchemaRegistryError
            If Kafka or the registry cannot be reached (worth a retry).
        """
        self._status.setdefault(event_type.name, None)
        if not self._is_connected():
            raise BrokerUnavailableError(
                f"not connected to Kafka at {self._transport.target}"
            )
        partitions = await self._check_topic()
        schema_id = await self._registrar.register(
            event_type.full_name, event_type.schema
        )
        event_type.set_schema_id(schema_id)
        # Unkeyed events go to the partition of the type's name (or, with
        # spread, start there); keyed ones to their key's.
        home = partition_for_key(event_type.full_name.encode(), partitions)
        # Events encoded before the id was known carry a placeholder.
        for event in self._ledger.waiting(event_type.name):
            set_schema_id(event.value, schema_id)
        self._ledger.register(
            event_type.name, Route(home, partitions, spread=event_type.spread)
        )
        self._on_registered()

    def register_in_background(self, event_type: EventType[Any]) -> None:
        """Retry `register` until it works, cannot work, or `close`."""
        self._status.setdefault(event_type.name, None)
        self._wakeups.setdefault(event_type.name, asyncio.Event())
        task = asyncio.create_task(
            self._keep_registering(event_type),
            name=f"otel-kafka-events-register-{event_type.name}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def connected(self) -> None:
        """Kafka is reachable again: try every pending registration now."""
        for wakeup in self._wakeups.values():
            wakeup.set()

    async def close(self) -> None:
        """Stop the background registrations."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _keep_registering(self, event_type: EventType[Any]) -> None:
        wakeup = self._wakeups[event_type.name]
        backoff = Backoff(*self._backoff)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff.next()):
                        await wakeup.wait()
                wakeup.clear()
                try:
                    async with asyncio.timeout(ATTEMPT_LIMIT):
                        await self.register(event_type)
                except EventManagerUsageError as exc:
                    self._give_up(event_type, exc)
                    return
                except BaseException as exc:
                    # Anything else is taken as an outage (a hung request
                    # included): retried, never allowed to end the retries.
                    if own_cancellation(exc):
                        raise
                    self._log.error(
                        f"register-{event_type.name}",
                        "Event registration still failing",
                        event_name=event_type.name,
                        error=describe(exc)
                        if not isinstance(exc, TimeoutError) or str(exc)
                        else f"no answer within {ATTEMPT_LIMIT} s",
                    )
                    continue
                self._logger.info("Event type registered", event_name=event_type.name)
                return
        finally:
            self._wakeups.pop(event_type.name, None)

    def _give_up(
        self, event_type: EventType[Any], error: EventManagerUsageError
    ) -> None:
        self._status[event_type.name] = error
        self._logger.error(
            "Event type cannot be registered; its events fail",
            event_name=event_type.name,
            error=str(error),
        )
        self._settle(self._ledger.fail_type(event_type.name, error))

    async def _check_topic(self) -> tuple[int, ...]:
        """The topic's partitions.

        Raises
        ------
        KafkaTopicError
            If the broker says the topic cannot be used.
        BrokerUnavailableError
            If its answer may change (no leader yet, say).
        """
        try:
            info = await self._transport.describe_topic(self._topic)
        except EventManagerError:
            raise
        except BaseException as exc:
            # The transport's client (aiokafka, or the application's own
            # transport) failed in a way it does not name: an outage too.
            if own_cancellation(exc):
                raise
            raise BrokerUnavailableError(
                f"Kafka topic {self._topic!r} could not be checked: {describe(exc)}"
            ) from exc
        if not _readable(info):
            raise BrokerUnavailableError(
                f"Kafka topic {self._topic!r} could not be checked: the transport"
                f" answered {info!r}"
            )
        if info.error_code == 0 and info.partitions:
            return info.partitions
        if info.error_code == _UNKNOWN_TOPIC:
            # Retriable in the protocol, but here it means the topic was not
            # created: the application's configuration must change.
            raise KafkaTopicError.missing(self._topic)
        if info.retriable or info.error_code == 0:
            raise BrokerUnavailableError(
                f"Kafka topic {self._topic!r} is not ready yet"
                f" ({info.error_name or 'no partitions'})"
            )
        raise KafkaTopicError.from_error_code(self._topic, info.error_code)


def _readable(info: object) -> bool:
    """Whether a transport's answer about a topic can be used."""
    return (
        isinstance(info, TopicInfo)
        and type(info.error_code) is int
        and isinstance(info.partitions, tuple)
        and all(type(p) is int and p >= 0 for p in info.partitions)
    )
