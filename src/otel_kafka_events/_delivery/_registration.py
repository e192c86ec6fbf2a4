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

from aiokafka.errors import KafkaError
from structlog.stdlib import BoundLogger

from .._encoding._codec import set_schema_id
from .._encoding._event_type import EventType
from .._encoding._registry import SchemaRegistrar
from ..errors import (
    BrokerUnavailableError,
    EventManagerUninitializedError,
    EventManagerUsageError,
    KafkaTopicError,
    SchemaRegistryError,
)
from ._aiokafka import is_connection_error
from ._backoff import Backoff
from ._connection import KafkaConnection
from ._ledger import Ledger, Settlement
from ._ratelimit import RateLimitedLog

__all__ = ["RETRIABLE_REGISTRATION_ERRORS", "Registrations", "fresh_copy"]

RETRIABLE_REGISTRATION_ERRORS = (
    SchemaRegistryError,
    BrokerUnavailableError,
    KafkaError,
    OSError,
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
    connection
        The Kafka clients (topic metadata, partitions).
    ledger
        Told when a type is registered, or can never be.
    settle
        Reports the settlements of a type that can never be registered.
    on_registered
        Called after each registration (to wake the sender).
    retry_backoff
        First delay between background attempts.
    logger
        For registration messages.
    max_backoff
        Longest delay between background attempts.
    """

    def __init__(
        self,
        *,
        topic: str,
        registrar: SchemaRegistrar,
        connection: KafkaConnection,
        ledger: Ledger,
        settle: Callable[[list[Settlement]], None],
        on_registered: Callable[[], None],
        retry_backoff: float,
        logger: BoundLogger,
        max_backoff: float = 5.0,
    ) -> None:
        self._topic = topic
        self._max_backoff = max_backoff
        self._registrar = registrar
        self._connection = connection
        self._ledger = ledger
        self._settle = settle
        self._on_registered = on_registered
        self._retry_backoff = retry_backoff
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
        registration error; a type this object never saw (a publisher made
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
        BrokerUnavailableError, SchemaRegistryError, KafkaError
            If Kafka or the registry cannot be reached (worth a retry).
        """
        self._status.setdefault(event_type.name, None)
        transport = self._connection.transport
        admin = self._connection.admin
        if transport is None or admin is None:
            raise BrokerUnavailableError(
                f"not connected to Kafka at {self._connection.target}"
            )
        await self._check_topic(admin)
        schema_id = await self._registrar.register(
            event_type.full_name, event_type.schema
        )
        event_type.set_schema_id(schema_id)
        partition = await transport.partition_for(
            self._topic, event_type.full_name.encode()
        )
        # Events encoded before the id was known carry a placeholder.
        for event in self._ledger.waiting(event_type.name):
            set_schema_id(event.value, schema_id)
        self._ledger.register(event_type.name, partition)
        self._on_registered()

    def register_in_background(self, event_type: EventType[Any]) -> None:
        """Retry `register` until it works, cannot work, or `close`."""
        self._wakeups.setdefault(event_type.name, asyncio.Event())
        task = asyncio.create_task(self._keep_registering(event_type))
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
        backoff = Backoff(self._retry_backoff, self._max_backoff)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff.next()):
                        await wakeup.wait()
                wakeup.clear()
                try:
                    await self.register(event_type)
                except EventManagerUsageError as exc:
                    self._give_up(event_type, exc)
                    return
                except RETRIABLE_REGISTRATION_ERRORS as exc:
                    self._log.error(
                        f"register-{event_type.name}",
                        "Event registration still failing",
                        event_name=event_type.name,
                        error=f"{type(exc).__name__}: {exc}",
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

    async def _check_topic(self, admin: Any) -> None:
        try:
            topics = await admin.describe_topics([self._topic])
        except KafkaError as exc:
            if is_connection_error(exc) or exc.retriable:
                raise
            raise KafkaTopicError(self._topic, f"{type(exc).__name__}: {exc}") from exc
        for topic in topics:
            if topic.get("topic") == self._topic:
                code = topic.get("error_code", 0)
                if code == 0 and topic.get("partitions"):
                    return
                raise KafkaTopicError.from_error_code(self._topic, code)
        raise KafkaTopicError.missing(self._topic)
