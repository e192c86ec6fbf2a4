"""Publishing events to Kafka: `KafkaEventManager` and `KafkaEventPublisher`.

The manager is wiring: from its options it makes a transport and a schema
registrar once, and at each `KafkaEventManager.initialize` a fresh
`DeliverySession` (ledger, connection, sender, registrations, intake)
with the telemetry listeners its `TelemetryOptions` ask for. A publisher
builds an event and hands it to its session's intake; that is the whole
publish path::

    payload -> enrich (metadata, trace context, Avro) -> stamp (headers,
    producer span) -> accept -> send -> settle -> listeners
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TypeVar, cast

from opentelemetry._logs import SeverityNumber
from structlog.stdlib import BoundLogger

from ._delivery._aiokafka import AiokafkaTransport
from ._delivery._kafka_errors import describe_kafka_error
from ._delivery._ledger import DeliveryStats, PendingEvent
from ._delivery._ratelimit import RateLimitedLog
from ._delivery._registration import RETRIABLE_REGISTRATION_ERRORS
from ._delivery._reporting import FailureCallback
from ._delivery._session import DeliverySession
from ._delivery._transport import Transport
from ._encoding._event_type import EventType
from ._encoding._keys import KeyFunction
from ._encoding._models import EventMetadata, EventPayload
from ._encoding._registry import SchemaRegistrar, SchemaRegistry
from ._manager import EventManager, EventPublisher
from ._options import DeliveryOptions, TelemetryOptions, delivery_options
from ._telemetry._listeners import LogSource
from ._telemetry._metrics import register_delivery_metrics
from ._telemetry._setup import SessionTelemetry, Telemetry, flush_telemetry
from .errors import (
    BrokerUnavailableError,
    EventManagerUninitializedError,
    EventManagerUsageError,
    IdempotenceUnsupportedError,
    SchemaRegistryError,
)

__all__ = ["KafkaEventManager", "KafkaEventPublisher"]

P = TypeVar("P", bound=EventPayload)

FOREGROUND_LIMIT = 3.0
"""Seconds `KafkaEventManager.initialize` waits for Kafka, and
`KafkaEventManager.create_publisher` for a registration, before going on in
the background (without ``raise_on_error``): a broker or registry that
accepts connections and never answers cannot hold a service's startup
longer."""

# A NamedTuple's own constructor runs in Python; tuple.__new__ makes the same
# tuples in C (about half the cost per event).
_new_tuple = tuple.__new__
_ZERO = DeliveryStats(0, 0, 0, 0, 0, 0)


class KafkaEventPublisher(EventPublisher[P]):
    """Publishes one event type to Kafka; see `KafkaEventManager`.

    Parameters
    ----------
    event_type
        The registered event type.
    telemetry
        The manager's OpenTelemetry parts.
    session
        The delivery session the publisher was made in.
    severity
        Severity of this event type's OTel log records.
    """

    def __init__(
        self,
        event_type: EventType[P],
        telemetry: Telemetry,
        session: DeliverySession,
        *,
        severity: SeverityNumber = SeverityNumber.INFO,
    ) -> None:
        super().__init__(event_type, telemetry, severity=severity)
        self._session = session

    async def publish(
        self,
        payload: P,
        *,
        wait: bool | None = None,
        key: str | bytes | None = None,
    ) -> EventMetadata:
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
        key
            This event's record key (`str`, encoded as UTF-8, or `bytes`),
            instead of the publisher's (``key`` of `create_publisher`). It
            decides the partition: events with one key keep their order.

        Returns
        -------
        EventMetadata
            The enriched event.

        Raises
        ------
        EventPayloadError
            If the payload cannot be encoded.
        EventKeyError
            If the record key cannot be made: the key function raised or
            returned neither `str`, `bytes` nor None, or ``key`` is neither
            `str` nor `bytes`. Nothing was queued.
        EventTooLargeError
            If the encoded event cannot fit in one Kafka request.
        EventManagerClosedError
            If the manager was closed.
        EventBufferFullError
            If the buffer is full and the overflow policy says to raise.
        EventDeliveryError
            With ``wait``, if the event was not delivered; the subclass says
            why (dropped, timed out, rejected, or the manager closed).
        """
        session = self._session
        intake = session.intake
        if intake.should_yield():
            # Before anything is accepted: cancelled here, nothing happened.
            await asyncio.sleep(0)
        event_type = self._event_type
        event, value, span_context, event_id, timestamp_ns, fields = event_type.prepare(
            payload
        )
        if key is None and event_type.keys is None:
            record_key = None
        else:
            record_key = self._record_key(payload, fields, key)
        telemetry = self._telemetry
        span = None
        header_context = span_context
        if telemetry.event_spans is not None:
            # The traceparent names the producer span (if one is recorded),
            # while the metadata keeps the caller's span.
            span, producer_context = telemetry.start_event_span(
                session.guard, event_id, timestamp_ns, record_key
            )
            if producer_context is not None:
                header_context = producer_context
            attachment: Any = span
        elif telemetry.batch_spans is not None:
            attachment = span_context
        else:
            attachment = None
        headers = None
        headers_size = 0
        if telemetry.injector is not None:
            headers, headers_size = telemetry.headers(
                session.guard, header_context, span
            )
        waiter = asyncio.get_running_loop().create_future() if wait else None
        pending = _new_tuple(
            PendingEvent,
            (
                event_type.name,
                value,
                headers,
                timestamp_ns // 1_000_000,
                event_id,
                len(value) + headers_size,
                time.monotonic() + intake.delivery_timeout,
                waiter,
                attachment,
                record_key,
            ),
        )
        source = (
            _new_tuple(
                LogSource,
                (event_type, event, fields, span_context, timestamp_ns, self._severity),
            )
            if telemetry.wants_log_source
            else None
        )
        try:
            if not intake.accept(pending, source):
                await intake.accept_when_full(event_type, pending, source)
        except BaseException as exc:
            # Refused (or cancelled while waiting for room): never accepted,
            # so a producer span ends here.
            if span is not None:
                session.listeners.refused(pending, exc)
            raise
        if waiter is not None:
            await waiter
        published: EventMetadata = event
        return published


class _Totals:
    """Counters over every session of a manager, for the OTel metrics
    (which must never go backwards when a manager starts anew)."""

    def __init__(self) -> None:
        self._retired = _ZERO
        self.session: DeliverySession | None = None

    def retire(self, stats: DeliveryStats) -> None:
        old = self._retired
        self._retired = replace(
            old,
            published=old.published + stats.published,
            delivered=old.delivered + stats.delivered,
            failed=old.failed + stats.failed,
            dropped=old.dropped + stats.dropped,
            listener_errors=old.listener_errors + stats.listener_errors,
        )

    @property
    def stats(self) -> DeliveryStats:
        old = self._retired
        session = self.session
        now = session.stats if session is not None else _ZERO
        return DeliveryStats(
            published=old.published + now.published,
            delivered=old.delivered + now.delivered,
            failed=old.failed + now.failed,
            dropped=old.dropped + now.dropped,
            buffered=now.buffered,
            buffered_bytes=now.buffered_bytes,
            listener_errors=old.listener_errors + now.listener_errors,
        )


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
        Kafka bootstrap servers.
    registry_url
        URL of a Confluent-compatible schema registry.
    transport
        What carries the events instead of a producer made from
        ``bootstrap_servers``: an `AiokafkaTransport` with clients of your
        own, or `otel_kafka_events.testing.MemoryTransport` in tests.
    registry
        The registry instead of ``registry_url``: a `SchemaRegistry` (such
        as `otel_kafka_events.testing.MemorySchemaRegistry`) or an
        ``AsyncSchemaRegistryClient``.
    kafka_options
        Extra keyword arguments of the aiokafka clients made from
        ``bootstrap_servers`` (security protocol, SASL, SSL context,
        ``max_request_size`` ...).
    schema_suffix
        Appended to every registry subject.
    schema_compatibility
        Compatibility level set on each subject before registering; the
        registry's default (usually BACKWARD) when None.
    on_delivery_error
        Called with a `DeliveryFailure` for every event not delivered. What
        it raises is logged and counted (`DeliveryStats.listener_errors`).
    logger
        Logger for the manager's messages.
    telemetry
        OpenTelemetry options.
    delivery
        Delivery options; the keyword arguments below override its fields.
    flat_payloads
        Accept only scalar payload fields, as Safir does.
    kafka_broker
        Safir's way to give the Kafka connection: a FastStream
        ``KafkaBroker``, whose aiokafka producer then carries the events.
        Topic checks need ``kafka_admin_client`` or ``bootstrap_servers``.
    kafka_admin_client
        Safir's admin client, for topic checks.
    schema_manager
        Safir's way to give the registry: what
        `SchemaManagerSettings.make_manager` returns, instead of
        ``registry_url`` or ``registry``.
    manage_kafka_broker
        Start ``kafka_broker`` in `initialize` and stop it in `aclose`
        (default False: the caller does, as in Safir).
    **settings
        Any field of `DeliveryOptions`: ``delivery_timeout``,
        ``close_timeout``, ``retry_backoff``, ``backoff_interval`` (a
        `datetime.timedelta` too, as in Safir), ``raise_on_error``,
        ``enable_idempotence``, ``max_in_flight``, ``buffer``. An unknown
        name raises `EventManagerUsageError` naming it.

    Attributes
    ----------
    options
        The delivery options in force.
    """

    def __init__(
        self,
        *,
        application: str,
        topic_prefix: str,
        bootstrap_servers: str | list[str] | None = None,
        registry_url: str | None = None,
        transport: Transport | None = None,
        registry: Any = None,
        kafka_options: Mapping[str, Any] | None = None,
        schema_suffix: str = "",
        schema_compatibility: str | None = None,
        on_delivery_error: FailureCallback | None = None,
        logger: BoundLogger | None = None,
        telemetry: TelemetryOptions | None = None,
        delivery: DeliveryOptions | None = None,
        flat_payloads: bool = False,
        kafka_broker: Any = None,
        kafka_admin_client: Any = None,
        schema_manager: SchemaRegistrar | None = None,
        manage_kafka_broker: bool = False,
        **settings: Any,
    ) -> None:
        super().__init__(
            f"{topic_prefix}.{application}",
            logger,
            application=application,
            telemetry=telemetry,
            flat_payloads=flat_payloads,
        )
        self.options: DeliveryOptions = delivery_options(delivery, settings)
        self._broker = kafka_broker
        self._bootstrap_servers = bootstrap_servers
        self._kafka_options = dict(kafka_options or {})
        self._transport = transport or self._aiokafka_transport(
            bootstrap_servers, kafka_broker, kafka_admin_client, manage_kafka_broker
        )
        if (transport is not None) and (
            bootstrap_servers is not None or kafka_broker is not None
        ):
            raise EventManagerUsageError(
                "Give transport, or bootstrap_servers / kafka_broker: not both"
            )
        self._registrar = _registrar(
            registry, registry_url, schema_manager, schema_suffix, schema_compatibility
        )
        self._on_delivery_error = on_delivery_error
        self._session: DeliverySession | None = None
        self._session_telemetry: SessionTelemetry | None = None
        self._init_lock = asyncio.Lock()
        self._totals = _Totals()
        self._guard(
            "metrics",
            register_delivery_metrics,
            self._totals,
            self.topic,
            self.telemetry_options.meter_provider,
        )
        # Collected, or left open at exit, with events buffered: say so.
        weakref.finalize(self, _report_unclosed, self._totals, application, self.logger)

    def _aiokafka_transport(
        self,
        bootstrap_servers: str | list[str] | None,
        broker: Any,
        admin_client: Any,
        manage_broker: bool,
    ) -> AiokafkaTransport:
        if bootstrap_servers is None and broker is None:
            raise EventManagerUsageError(
                "KafkaEventManager needs bootstrap_servers, a kafka_broker or a"
                " transport"
            )
        if broker is not None and admin_client is None and not bootstrap_servers:
            raise EventManagerUsageError(
                "With kafka_broker, give kafka_admin_client or bootstrap_servers"
                " too (to check the topic)"
            )
        return AiokafkaTransport(
            bootstrap_servers=bootstrap_servers,
            client_options=self._kafka_options,
            admin_client=admin_client,
            broker=broker,
            enable_idempotence=self.options.enable_idempotence,
            manage_broker=manage_broker,
            logger=self.logger,
            delivery_timeout=self.options.delivery_timeout,
        )

    # Properties -----------------------------------------------------------

    @property
    def stats(self) -> DeliveryStats:
        """Counters since the manager was last initialized: published,
        delivered, failed, dropped, buffered, listener errors."""
        session = self._session
        return session.stats if session is not None else _ZERO

    @property
    def registry(self) -> SchemaRegistry:
        """The schema registry."""
        return self._registrar.registry

    @property
    def transport(self) -> Transport:
        """What carries the events."""
        return self._transport

    def subject_for(self, name: str) -> str:
        """The registry subject of event ``name``."""
        return self._registrar.subject(f"{self.topic}.{name}")

    @property
    def log_export_stats(self) -> dict[str, Any]:
        """Log records exported by `TelemetryOptions.log_export`, by
        destination (``"kafka"``, ``"otlp"``); empty without it."""
        parts = self._session_telemetry
        if parts is None or parts.log_export is None:
            return {}
        return parts.log_export.stats

    # Lifecycle ------------------------------------------------------------

    def _new_session(self) -> DeliverySession:
        options = self.options
        telemetry = self._telemetry.for_session(
            transport=self._transport,
            bootstrap_servers=self._bootstrap_servers,
            kafka_options=self._kafka_options,
            log=RateLimitedLog(self.logger, 10.0),
        )
        self._session_telemetry = telemetry
        return DeliverySession(
            topic=self.topic,
            transport=self._transport,
            registrar=self._registrar,
            buffer=options.buffer,
            delivery_timeout=options.delivery_timeout,
            backoff=(options.retry_backoff, options.backoff_interval),
            raise_on_error=options.raise_on_error,
            max_in_flight=options.max_in_flight,
            listeners=telemetry.listeners,
            on_delivery_error=self._on_delivery_error,
            logger=self.logger,
        )

    async def initialize(self) -> None:
        """Connect the producer and admin client and start the sender.

        Calling it again does nothing. If the broker cannot be reached, this
        raises `BrokerUnavailableError` with ``raise_on_error``; otherwise
        it logs, returns (within three seconds, even when the broker
        accepts connections and never answers), and keeps trying in the
        background while events are buffered. If
        ``enable_idempotence=True`` and the broker refuses idempotent
        producers, it raises `IdempotenceUnsupportedError` with
        ``raise_on_error`` and otherwise logs that error.

        After `aclose`, this starts the manager anew, as Safir allows: new
        clients (when the manager creates its own), an empty buffer, zeroed
        `stats` and no publishers.

        Raises
        ------
        EventManagerClosedError
            If `aclose` was called while this was connecting.
        """
        async with self._init_lock:
            previous = self._session
            if previous is not None and not previous.closing:
                return
            if previous is not None:
                await asyncio.shield(previous.close(self.options.close_timeout))
                self._totals.retire(previous.stats)
                previous.supersede()
            session = self._new_session()
            self._session = session
            self._totals.session = session
            try:
                if self.options.raise_on_error:
                    await session.start()
                else:
                    async with asyncio.timeout(FOREGROUND_LIMIT):
                        await session.start()
            except (
                BrokerUnavailableError,
                IdempotenceUnsupportedError,
                TimeoutError,
            ) as exc:
                if self.options.raise_on_error:
                    await session.close(1.0)
                    raise
                if isinstance(exc, IdempotenceUnsupportedError):
                    self._log_safely(str(exc))
                else:
                    self._log_safely(
                        "Cannot connect to Kafka yet; events are buffered while"
                        " the connection is retried in the background",
                        error=str(exc) or f"no answer within {FOREGROUND_LIMIT} s",
                    )
                    session.connect_in_background()
            await super().initialize()

    def _log_safely(self, message: str, **fields: Any) -> None:
        """Log an error; the application's logging failing is not ours to
        raise from a call that otherwise succeeded."""
        with contextlib.suppress(Exception):
            self.logger.error(message, **fields)

    async def aclose(self, timeout: float | None = None) -> int:
        """Deliver pending events, then close every client.

        Safe to call more than once, concurrently, and to cancel: the close
        goes on, and a later call waits for the same close, within its own
        timeout, which brings the close's deadline forward if it is sooner.

        Parameters
        ----------
        timeout
            Seconds the whole close may take: delivering pending events,
            stopping the clients and flushing telemetry. None means
            ``close_timeout``.

        Returns
        -------
        int
            How many events failed during the close: those still pending at
            its deadline and publishes still waiting for room (reason
            ``shutdown``), and those whose delivery timeout ran out meanwhile
            (reason ``failed``). Each was also reported to the failure
            callback.
        """
        budget = self.options.close_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        session = self._session
        undelivered = 0
        # Telemetry flushes after the session; it keeps a slice of the time.
        reserve = min(budget / 10, 0.5) if self._telemetry_to_flush() else 0.0
        if session is not None:
            undelivered = await asyncio.shield(session.close(budget - reserve))
        parts = self._session_telemetry
        await flush_telemetry(
            self._telemetry,
            max(deadline - time.monotonic(), 0.0),
            parts.log_export if parts is not None else None,
        )
        await self._mark_closed()
        return undelivered

    def _telemetry_to_flush(self) -> bool:
        options = self.telemetry_options
        return bool(options.logs or options.producer_spans)

    # Registration ---------------------------------------------------------

    async def create_publisher(
        self,
        name: str,
        payload_model: type[P],
        *,
        log_severity: SeverityNumber = SeverityNumber.INFO,
        key: str | KeyFunction | None = None,
        spread: bool = False,
    ) -> KafkaEventPublisher[P]:
        """Register an event type; see `EventManager.create_publisher`.

        Overridden only to type the result, whose ``publish`` takes ``wait``.
        """
        publisher = await super().create_publisher(
            name, payload_model, log_severity=log_severity, key=key, spread=spread
        )
        return cast("KafkaEventPublisher[P]", publisher)

    async def build_publisher_for_model(self, model: type[P]) -> EventPublisher[P]:
        """Check the topic, register the schema, and make the publisher.

        Usage errors (missing topic, incompatible schema) are always raised.
        If the broker or registry is unreachable, this raises with
        ``raise_on_error``; otherwise the publisher is returned (within
        three seconds, even from a registry that never answers) and
        registration goes on in the background while its events buffer.
        """
        event_type = self.event_type_for(model)
        session = self._session
        if session is None:
            raise EventManagerUninitializedError(
                "Initialize the event manager before creating event publishers"
            )
        raise_on_error = self.options.raise_on_error
        try:
            await session.register(
                event_type, None if raise_on_error else FOREGROUND_LIMIT
            )
        except RETRIABLE_REGISTRATION_ERRORS as exc:
            if raise_on_error:
                if isinstance(exc, SchemaRegistryError | BrokerUnavailableError):
                    raise
                raise BrokerUnavailableError(describe_kafka_error(exc)) from exc
            self._log_safely(
                "Event registration failed, retrying in the background",
                event_name=event_type.name,
                error=f"{type(exc).__name__}: {exc}"
                if str(exc)
                else f"{type(exc).__name__}: no answer within {FOREGROUND_LIMIT} s",
            )
            session.registrations.register_in_background(event_type)
        return KafkaEventPublisher(
            event_type, self._telemetry, session, severity=self.severity_for(model)
        )


def _report_unclosed(totals: _Totals, application: str, logger: BoundLogger) -> None:
    """Say how many events a manager that was never closed did not deliver.

    Runs when the manager is garbage-collected or, if it is still alive
    then, when the interpreter exits. No delivery is tried then: the
    producer belongs to an event loop that has usually stopped by then
    (``asyncio.run`` has returned), and a new connection could only re-send
    events the broker may have written already.
    """
    session = totals.session
    if session is None or session.closing:
        return
    undelivered = session.stats.buffered
    if not undelivered:
        return
    message = (
        f"KafkaEventManager of application {application!r} was not closed:"
        f" {undelivered} event{'' if undelivered == 1 else 's'} accepted by publish()"
        " were never delivered; await manager.aclose() before the event loop"
        " stops (it delivers pending events within close_timeout)"
    )
    logger.warning(message, application=application, undelivered=undelivered)
    # Shown under `python -X dev` (and `-W default`), as for unclosed files.
    warnings.warn(message, ResourceWarning, stacklevel=1)


def _registrar(
    registry: Any,
    registry_url: str | None,
    schema_manager: SchemaRegistrar | None,
    suffix: str,
    compatibility: str | None,
) -> SchemaRegistrar:
    given = [x for x in (registry, registry_url, schema_manager) if x is not None]
    if len(given) > 1:
        raise EventManagerUsageError(
            "Give schema_manager, registry or registry_url: only one"
        )
    if schema_manager is not None:
        return schema_manager
    if not given:
        raise EventManagerUsageError(
            "KafkaEventManager needs registry_url, a registry or a schema_manager"
        )
    try:
        return SchemaRegistrar(given[0], suffix=suffix, compatibility=compatibility)
    except TypeError as exc:
        raise EventManagerUsageError(str(exc)) from exc
