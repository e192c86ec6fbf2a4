"""Publishing events to Kafka: `KafkaEventManager` and `KafkaEventPublisher`.

The manager puts the parts together: `KafkaConnection` (the clients),
`Registrations` (topic, schema, partition of each event type), the
`Ledger` (what happened to each event), the `Sender` (moving events from
the ledger to Kafka) and the `Reporter` (telling waiters, spans, callbacks
and logs). A publisher only builds an event and hands it to the manager
through `KafkaEventManager.accept`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, TypeVar, cast

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from opentelemetry import context as otel_context
from opentelemetry._logs import SeverityNumber
from schema_registry.client import AsyncSchemaRegistryClient
from structlog.stdlib import BoundLogger

from ._delivery._aiokafka import DEFAULT_MAX_REQUEST_SIZE, producer_max_request_size
from ._delivery._connection import KafkaConnection, describe_kafka_error
from ._delivery._faststream import producer_of, start_broker, stop_broker
from ._delivery._ledger import DeliveryStats, Ledger, PendingEvent, Settled
from ._delivery._ratelimit import RateLimitedLog
from ._delivery._registration import RETRIABLE_REGISTRATION_ERRORS, Registrations
from ._delivery._sender import Sender
from ._delivery._settle import FailureCallback, Reporter
from ._encoding._codec import set_schema_id
from ._encoding._event_type import EnrichedEvent, EventType
from ._encoding._models import EventMetadata, EventPayload
from ._encoding._registry import SchemaRegistrar, make_registry_client
from ._manager import DEFAULT_CLOSE_TIMEOUT, EventManager, EventPublisher
from ._options import BufferOptions, OverflowPolicy, TelemetryOptions
from ._telemetry._metrics import register_delivery_metrics
from ._telemetry._setup import log_export_drained
from ._telemetry._spans import end_producer_span
from .errors import (
    BrokerUnavailableError,
    EventBufferFullError,
    EventManagerClosedError,
    EventManagerUsageError,
    EventTooLargeError,
    IdempotenceUnsupportedError,
    NotAcknowledgedError,
    SchemaRegistryError,
)

__all__ = ["KafkaEventManager", "KafkaEventPublisher"]

P = TypeVar("P", bound=EventPayload)

# Publishes between two voluntary yields to the event loop: without them a
# long burst would be queued whole before the sender starts, and each hop
# between an acknowledgement and the next request waits for a yield. 64,
# 128 and 256 measured alike (scenario 3, paired runs); 512 while a batch is
# out let a backlog build that drained only after the burst.
_YIELD_EVERY = 128
# A NamedTuple's own constructor runs in Python; tuple.__new__ makes the same
# PendingEvent in C (about half the cost per event).
_new_pending = tuple.__new__


class KafkaEventPublisher(EventPublisher[P]):
    """Publishes one event type to Kafka; see `KafkaEventManager`."""

    def __init__(
        self,
        event_type: EventType[P],
        telemetry: Any,
        manager: KafkaEventManager,
        *,
        severity: SeverityNumber = SeverityNumber.INFO,
    ) -> None:
        super().__init__(event_type, telemetry, severity=severity)
        self._manager = manager

    async def publish(self, payload: P, *, wait: bool | None = None) -> EventMetadata:
        """Publish one event.

        By default this returns as soon as the event is encoded and accepted
        into the manager's buffer; delivery happens in the background and a
        failure is reported to the manager's failure callback, its log and
        its counters. With ``wait`` it returns only once Kafka has
        acknowledged the event.

        Parameters
        ----------
        payload
            The event payload.
        wait
            Wait for the broker's acknowledgement (default False).

        Returns
        -------
        EventMetadata
            The enriched event.

        Raises
        ------
        EventPayloadError
            If the payload cannot be encoded.
        EventTooLargeError
            If the encoded event exceeds the producer's maximum request size.
        EventManagerClosedError
            If the manager was closed.
        EventBufferFullError
            If the buffer is full and the overflow policy says to raise.
        EventDeliveryError
            With ``wait``, if the event was not delivered; the subclass says
            why (dropped, timed out, rejected, or the manager closed).
        """
        manager = self._manager
        if manager.should_yield():
            # Before anything is accepted: cancelled here, nothing happened.
            await asyncio.sleep(0)
        event_type = self._event_type
        event, value, span_context, event_id, timestamp_ns, fields = event_type.prepare(
            payload
        )
        telemetry = self._telemetry
        span = None
        caller_context = span_context
        if telemetry.producer_spans is not None:
            span = telemetry.producer_spans.start(
                otel_context.get_current(), event_id, timestamp_ns
            )
            # The traceparent names the producer span (if one is recorded),
            # while the metadata keeps the caller's span.
            producer_context = span.get_span_context()
            if producer_context.is_valid:
                span_context = producer_context
        headers = None
        headers_size = 0
        if telemetry.injector is not None:
            headers, headers_size = telemetry.injector.headers(span_context, span)
        waiter = None
        if wait:
            waiter = asyncio.get_running_loop().create_future()
        pending = _new_pending(
            PendingEvent,
            (
                event_type.name,
                value,
                headers,
                timestamp_ns // 1_000_000,
                event_id,
                len(value) + headers_size,
                time.monotonic() + manager.delivery_timeout,
                waiter,
                span,
                caller_context if telemetry.batch_spans is not None else None,
            ),
        )
        try:
            accepted = manager.accept(
                event_type, pending
            ) or await manager.accept_when_full(event_type, pending)
        except BaseException as exc:
            # Refused (or cancelled while waiting for room): never accepted,
            # so its span ends here.
            if span is not None:
                end_producer_span(span, error=exc)
            raise
        if accepted and telemetry.log_emitter is not None:
            # Only an accepted event becomes a log record.
            self._emit_log(
                EnrichedEvent(
                    event, value, caller_context, event_id, timestamp_ns, fields
                )
            )
        if waiter is not None:
            await waiter
        published: EventMetadata = event
        return published


class KafkaEventManager(EventManager):
    """Publishes events to a Kafka topic as Avro, with a schema registry.

    The topic is ``{topic_prefix}.{application}``; it must exist. Each event
    type's schema is registered under ``{topic}.{name}{schema_suffix}``.

    Parameters
    ----------
    application
        Name of the application publishing events.
    topic_prefix
        Prefix of the events topic.
    bootstrap_servers
        Kafka bootstrap servers, when the manager creates its own clients.
    producer
        A ready-made ``AIOKafkaProducer`` instead.
    admin_client
        A ready-made ``AIOKafkaAdminClient``.
    registry_url
        URL of a Confluent-compatible schema registry.
    registry
        A ready-made ``AsyncSchemaRegistryClient`` instead.
    schema_suffix
        Appended to every registry subject.
    schema_compatibility
        Compatibility level set on each subject before registering; the
        registry's default (usually BACKWARD) when None.
    kafka_options
        Extra keyword arguments for the clients the manager creates
        (security protocol, SASL, SSL context...).
    enable_idempotence
        True: require Kafka's idempotent producer (no duplicates from
        retries), and fail if the broker refuses it. False: never use it.
        None (the default): use it unless the broker refuses it, in which
        case one warning is logged and the producer goes on with
        ``acks="all"`` without idempotence.
    manage_clients
        Start and stop the producer and admin client; True by default for
        clients the manager creates, False for clients passed in.
    buffer
        Bounds of the pending-event buffer.
    delivery_timeout
        Seconds an event may take to be acknowledged, retries included.
    close_timeout
        Seconds `aclose` takes at most when called without a timeout:
        delivering what is pending, stopping the clients and flushing
        telemetry. The default fits in Kubernetes' 30 s grace period.
    retry_backoff
        First delay between retries of a failed send, connection or
        registration (doubling, up to 5 s).
    raise_on_error
        Raise infrastructure errors (broker or registry unreachable) from
        `initialize`, `create_publisher` and a full buffer, instead of
        logging them and retrying in the background.
    on_delivery_error
        Called with a `DeliveryFailure` for every event not delivered.
    logger
        Logger for the manager's messages.
    telemetry
        OpenTelemetry options.
    flat_payloads
        Accept only scalar payload fields, as Safir does.
    kafka_broker
        Safir's way to give the Kafka connection: a FastStream
        ``KafkaBroker``, whose aiokafka producer then carries the events
        (instead of ``producer`` or ``bootstrap_servers``). Topic checks need
        ``kafka_admin_client`` or ``bootstrap_servers`` besides.
    kafka_admin_client
        Safir's name for ``admin_client``.
    schema_manager
        Safir's way to give the registry: what
        `SchemaManagerSettings.make_manager` returns (registry client,
        subject suffix and compatibility), instead of ``registry_url`` or
        ``registry``.
    backoff_interval
        Longest wait between two attempts to reconnect or to register a
        schema (5 s by default). Safir pauses publishing for this long after
        a failure; we keep buffering and retrying, at most this far apart.
    manage_kafka_broker
        Start ``kafka_broker`` in `initialize` and stop it in `aclose`
        (default False: the caller does, as in Safir).
    """

    def __init__(
        self,
        *,
        application: str,
        topic_prefix: str,
        bootstrap_servers: str | list[str] | None = None,
        producer: AIOKafkaProducer | None = None,
        admin_client: AIOKafkaAdminClient | None = None,
        registry_url: str | None = None,
        registry: AsyncSchemaRegistryClient | None = None,
        schema_suffix: str = "",
        schema_compatibility: str | None = None,
        kafka_options: Mapping[str, Any] | None = None,
        enable_idempotence: bool | None = None,
        manage_clients: bool | None = None,
        buffer: BufferOptions | None = None,
        delivery_timeout: float = 120.0,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        retry_backoff: float = 0.1,
        raise_on_error: bool = False,
        on_delivery_error: FailureCallback | None = None,
        logger: BoundLogger | None = None,
        telemetry: TelemetryOptions | None = None,
        flat_payloads: bool = False,
        kafka_broker: Any = None,
        kafka_admin_client: AIOKafkaAdminClient | None = None,
        schema_manager: SchemaRegistrar | None = None,
        backoff_interval: timedelta | float | None = None,
        manage_kafka_broker: bool = False,
    ) -> None:
        super().__init__(
            f"{topic_prefix}.{application}",
            logger,
            application=application,
            telemetry=telemetry,
            flat_payloads=flat_payloads,
        )
        if kafka_admin_client is not None:
            if admin_client is not None:
                raise EventManagerUsageError(
                    "Give admin_client or kafka_admin_client, not both"
                )
            admin_client = kafka_admin_client
        if kafka_broker is not None and producer is not None:
            raise EventManagerUsageError("Give producer or kafka_broker, not both")
        if producer is None and bootstrap_servers is None and kafka_broker is None:
            raise EventManagerUsageError(
                "KafkaEventManager needs bootstrap_servers, a producer or a"
                " kafka_broker"
            )
        if kafka_broker is not None and admin_client is None and not bootstrap_servers:
            raise EventManagerUsageError(
                "With kafka_broker, give kafka_admin_client or bootstrap_servers"
                " too (to check the topic)"
            )
        if schema_manager is not None and (
            registry is not None or registry_url is not None
        ):
            raise EventManagerUsageError(
                "Give schema_manager, registry or registry_url: only one"
            )
        if registry is None and registry_url is None and schema_manager is None:
            raise EventManagerUsageError(
                "KafkaEventManager needs registry_url, a registry client or a"
                " schema_manager"
            )
        if isinstance(backoff_interval, timedelta):
            backoff_interval = backoff_interval.total_seconds()
        if backoff_interval is not None and backoff_interval <= 0:
            raise EventManagerUsageError("backoff_interval must be positive")
        if delivery_timeout <= 0:
            raise EventManagerUsageError("delivery_timeout must be positive")
        if close_timeout <= 0:
            raise EventManagerUsageError("close_timeout must be positive")
        if retry_backoff <= 0:
            raise EventManagerUsageError("retry_backoff must be positive")
        options = dict(kafka_options or {})
        self.delivery_timeout = delivery_timeout
        """Seconds an event may take to be acknowledged."""
        self.close_timeout = close_timeout
        """Seconds `aclose` takes at most by default."""
        self._broker = kafka_broker
        self._manage_broker = manage_kafka_broker
        self._buffer = buffer or BufferOptions()
        self._raise_on_error = raise_on_error
        self._registrar = schema_manager or SchemaRegistrar(
            registry or make_registry_client(str(registry_url)),
            suffix=schema_suffix,
            compatibility=schema_compatibility,
        )
        # What each (re)build of the delivery parts needs; see _build.
        self._settings: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "producer": producer,
            "admin_client": admin_client,
            "kafka_options": options,
            "enable_idempotence": enable_idempotence,
            "manage_clients": manage_clients,
            "retry_backoff": retry_backoff,
            "max_backoff": 5.0 if backoff_interval is None else backoff_interval,
            "on_delivery_error": on_delivery_error,
        }
        self._init_lock = asyncio.Lock()
        self._build(producer)
        register_delivery_metrics(
            self, self.topic, self.telemetry_options.meter_provider
        )

    def _build(self, producer: AIOKafkaProducer | None) -> None:
        """Make the delivery parts: connection, ledger, sender, registrations.

        Called once by the constructor, and again when a closed manager is
        initialized anew, or when a FastStream broker's producer becomes
        known.
        """
        settings = self._settings
        options = settings["kafka_options"]
        retry_backoff = settings["retry_backoff"]
        self._max_request_size = (
            producer_max_request_size(producer)
            if producer is not None
            else int(options.get("max_request_size", DEFAULT_MAX_REQUEST_SIZE))
        )
        self._since_yield = 0
        self._closing = False
        self._close_task: asyncio.Task[int] | None = None
        log = RateLimitedLog(self.logger, 10.0)
        self._ledger = Ledger(self._buffer)
        self._connection = KafkaConnection(
            bootstrap_servers=settings["bootstrap_servers"],
            producer=producer,
            admin_client=settings["admin_client"],
            kafka_options=options,
            enable_idempotence=settings["enable_idempotence"],
            manage_clients=settings["manage_clients"],
            retry_backoff=retry_backoff,
            max_backoff=settings["max_backoff"],
            logger=self.logger,
            on_connected=self._connected,
        )
        log_export = self._telemetry.bind_log_export(
            bootstrap_servers=settings["bootstrap_servers"],
            kafka_options=options,
            transport=lambda: self._connection.transport,
            log=log,
        )
        self._sender = Sender(
            self._ledger,
            Reporter(
                self.topic,
                settings["on_delivery_error"],
                log,
                settled_events=log_export.direct if log_export else None,
            ),
            topic=self.topic,
            transport=lambda: self._connection.transport,
            replace_transport=self._connection.replace,
            retry_backoff=retry_backoff,
            delivery_timeout=self.delivery_timeout,
            batch_spans=self._telemetry.batch_spans,
        )
        self._registrations = Registrations(
            topic=self.topic,
            registrar=self._registrar,
            connection=self._connection,
            ledger=self._ledger,
            settle=self._sender.settle,
            on_registered=self._sender.wake,
            retry_backoff=retry_backoff,
            max_backoff=settings["max_backoff"],
            logger=self.logger,
        )

    # Properties -----------------------------------------------------------

    @property
    def stats(self) -> DeliveryStats:
        """Counters: published, delivered, failed, dropped, buffered."""
        return self._ledger.stats

    @property
    def registry(self) -> AsyncSchemaRegistryClient:
        """The schema registry client."""
        return self._registrar.client

    def subject_for(self, name: str) -> str:
        """The registry subject of event ``name``."""
        return self._registrar.subject(f"{self.topic}.{name}")

    # Lifecycle ------------------------------------------------------------

    def _connected(self) -> None:
        self._sender.wake()
        self._registrations.connected()

    async def initialize(self) -> None:
        """Connect the producer and admin client and start the sender.

        Calling it again does nothing. If the broker cannot be reached, this
        raises `BrokerUnavailableError` with ``raise_on_error``; otherwise
        it logs, returns, and keeps trying in the background while events
        are buffered. If ``enable_idempotence=True`` and the broker refuses
        idempotent producers, it raises `IdempotenceUnsupportedError` with
        ``raise_on_error`` and otherwise logs that error.

        After `aclose`, this starts the manager anew, as Safir allows: new
        clients (when the manager creates its own), an empty buffer, zeroed
        `stats` and no publishers.
        """
        async with self._init_lock:
            if self._closing:
                if self._close_task is not None:
                    await asyncio.shield(self._close_task)
                self._build(self._settings["producer"])
            if self._sender.running:
                return
            try:
                if self._broker is not None:
                    await self._use_broker()
                await self._connection.connect()
            except (BrokerUnavailableError, IdempotenceUnsupportedError) as exc:
                if self._raise_on_error:
                    raise
                if isinstance(exc, IdempotenceUnsupportedError):
                    self.logger.error(str(exc))
                else:
                    self.logger.error(
                        "Cannot connect to Kafka yet; events are buffered while"
                        " the connection is retried in the background",
                        error=str(exc),
                    )
                    self._connection.connect_in_background()
            self._sender.start()
            await super().initialize()

    async def _use_broker(self) -> None:
        """Publish through the FastStream broker's producer (started here if
        the manager manages the broker)."""
        if self._manage_broker:
            try:
                await start_broker(self._broker)
            except Exception as exc:
                raise BrokerUnavailableError(
                    f"Cannot start the FastStream Kafka broker:"
                    f" {describe_kafka_error(exc)}"
                ) from exc
        producer = producer_of(self._broker)
        if self._connection.transport is None:
            self._build(producer)

    async def aclose(self, timeout: float | None = None) -> int:
        """Deliver pending events, then close every client.

        Safe to call more than once, and to cancel: the close goes on, and
        a later call waits for the same close and returns its result.

        Parameters
        ----------
        timeout
            Seconds the whole close may take: delivering pending events,
            stopping the clients and flushing telemetry. None means the
            manager's ``close_timeout``.

        Returns
        -------
        int
            How many events failed during the close: those still pending at
            its deadline and publishes still waiting for room (reason
            ``shutdown``), and those whose delivery timeout ran out meanwhile
            (reason ``failed``). Each was also reported to the failure
            callback.
        """
        if self._close_task is None:
            self._close_task = asyncio.create_task(
                self._close(self.close_timeout if timeout is None else timeout),
                name="otel-kafka-events-close",
            )
        return await asyncio.shield(self._close_task)

    async def _close(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        self._closing = True
        # Wake publishers waiting for room: they give up now.
        self._sender.room.set()
        failed_before = self._ledger.stats.failed
        # What is left of the budget after the wait goes to stopping the
        # clients and flushing telemetry.
        reserve = min(1.0, timeout / 4)
        await self._sender.drained(deadline - reserve - time.monotonic())
        await self._registrations.close()
        await self._sender.stop(
            NotAcknowledgedError(
                "sent, but not acknowledged before the event manager closed;"
                " the broker may have written it"
            ),
            TimeoutError("still pending when the event manager was closed"),
        )
        # Log records of delivered events ride on the producer: out first.
        await log_export_drained(self._telemetry, deadline - reserve - time.monotonic())
        await self._connection.close(
            deadline - time.monotonic(), abandoned=self._sender.abandoned
        )
        if self._broker is not None and self._manage_broker:
            await stop_broker(self._broker)
        await super().aclose(max(deadline - time.monotonic(), 0.0))
        undelivered = self._ledger.stats.failed - failed_before
        if undelivered:
            self.logger.error(
                "Events not delivered before the event manager closed",
                count=undelivered,
                topic=self.topic,
            )
        return undelivered

    # The publisher's seam ---------------------------------------------------

    def should_yield(self) -> bool:
        """Whether a publisher should give the event loop a turn first."""
        if self._since_yield >= _YIELD_EVERY:
            self._since_yield = 0
            return True
        return False

    def accept(self, event_type: EventType[Any], event: PendingEvent) -> bool:
        """Take an encoded event for delivery, if the buffer has room.

        Returns
        -------
        bool
            True if accepted; False if the buffer is full (nothing was done:
            call `accept_when_full`).

        Raises
        ------
        EventManagerClosedError
            If the manager is closing or closed.
        EventManagerUsageError
            If the event type could not be registered (a new copy of the
            registration error each time).
        EventTooLargeError
            If the event exceeds the producer's maximum request size.
        """
        if self._closing:
            raise EventManagerClosedError("This event manager was closed")
        failure = self._registrations.failure(event_type.name)
        if failure is not None:
            raise failure
        if event.size > self._max_request_size:
            raise EventTooLargeError(
                event_type.name,
                f"encoded event is {event.size} bytes, more than the producer's"
                f" max_request_size of {self._max_request_size}",
            )
        if not self._ledger.accept(event):
            return False
        self._since_yield += 1
        self._sender.wake()
        return True

    async def accept_when_full(
        self, event_type: EventType[Any], event: PendingEvent
    ) -> bool:
        """Apply the overflow policy to an event the full buffer refused.

        Returns
        -------
        bool
            True if the event was accepted after waiting for room; False if
            it was dropped, or given up because the manager closed or its
            event type failed to register while it waited (reported,
            counted, and its waiter resolved either way).

        Raises
        ------
        EventBufferFullError
            With the ``raise`` policy, or ``block`` and ``raise_on_error``
            after the wait.
        """
        buffer = self._buffer
        full = EventBufferFullError(
            f"Pending-event buffer of topic {self.topic!r} is full"
            f" ({buffer.max_events} events or {buffer.max_bytes} bytes)"
        )
        if buffer.overflow is OverflowPolicy.RAISE:
            raise full
        if buffer.overflow is OverflowPolicy.BLOCK:
            await self._wait_for_room(event.size, buffer.block_timeout)
            if self._closing:
                self._sender.settle(
                    [
                        self._ledger.refuse(
                            event,
                            Settled.CLOSED,
                            EventManagerClosedError(
                                "the event manager closed while the event"
                                " waited for room in the buffer"
                            ),
                        )
                    ]
                )
                return False
            failure = self._registrations.failure(event_type.name)
            if failure is not None:
                # Registration failed for good during the wait.
                self._sender.settle(
                    [self._ledger.refuse(event, Settled.REJECTED, failure)]
                )
                return False
            if event_type.schema_id is not None:
                # Encoded before registration finished, during the wait.
                set_schema_id(event.value, event_type.schema_id)
            # The delivery timeout counts from when the buffer takes the
            # event; the wait for room had a bound of its own.
            event = event._replace(deadline=time.monotonic() + self.delivery_timeout)
            if self._ledger.accept(event):
                self._sender.wake()
                return True
            if self._raise_on_error:
                raise full
        self._sender.settle([self._ledger.drop(event, full)])
        return False

    async def _wait_for_room(self, size: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        room = self._sender.room
        while not self._closing and not self._ledger.has_room(size):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            room.clear()
            try:
                async with asyncio.timeout(remaining):
                    await room.wait()
            except TimeoutError:
                return

    # Registration ---------------------------------------------------------

    async def create_publisher(
        self,
        name: str,
        payload_model: type[P],
        *,
        log_severity: SeverityNumber = SeverityNumber.INFO,
    ) -> KafkaEventPublisher[P]:
        """Register an event type; see `EventManager.create_publisher`.

        Overridden only to type the result, whose ``publish`` takes ``wait``.
        """
        publisher = await super().create_publisher(
            name, payload_model, log_severity=log_severity
        )
        return cast("KafkaEventPublisher[P]", publisher)

    async def build_publisher_for_model(self, model: type[P]) -> EventPublisher[P]:
        """Check the topic, register the schema, and make the publisher.

        Usage errors (missing topic, incompatible schema) are always raised.
        If the broker or registry is unreachable, this raises with
        ``raise_on_error``; otherwise the publisher is returned at once and
        registration is retried in the background while its events buffer.
        """
        event_type = self.event_type_for(model)
        try:
            await self._registrations.register(event_type)
        except RETRIABLE_REGISTRATION_ERRORS as exc:
            if self._raise_on_error:
                if isinstance(exc, SchemaRegistryError | BrokerUnavailableError):
                    raise
                raise BrokerUnavailableError(describe_kafka_error(exc)) from exc
            self.logger.error(
                "Event registration failed, retrying in the background",
                event_name=event_type.name,
                error=f"{type(exc).__name__}: {exc}",
            )
            self._registrations.register_in_background(event_type)
        return KafkaEventPublisher(
            event_type, self._telemetry, self, severity=self.severity_for(model)
        )
