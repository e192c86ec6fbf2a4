"""The event manager and publisher interfaces, and the Kafka-free managers.

`EventManager` registers event types (validating them up front) and hands out
`EventPublisher` objects; subclasses decide where published events go by
implementing `EventManager.build_publisher_for_model`.
"""

from __future__ import annotations

import abc
import enum
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Generic, TypeVar, cast

import structlog
from opentelemetry._logs import SeverityNumber
from structlog.stdlib import BoundLogger

from ._delivery._listeners import Guard
from ._encoding._event_type import EventType
from ._encoding._keys import KeyFunction, given_key
from ._encoding._models import EventMetadata, EventPayload, json_dump, remember_schema
from ._mock import PublishedList
from ._options import TelemetryOptions
from ._telemetry._listeners import LogSource
from ._telemetry._setup import Telemetry, flush_telemetry
from .errors import (
    DuplicateEventError,
    EventManagerClosedError,
    EventManagerUninitializedError,
    EventManagerUsageError,
)

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "EventManager",
    "EventPublisher",
    "FailedEventPublisher",
    "MockEventManager",
    "MockEventPublisher",
    "NoopEventManager",
    "NoopEventPublisher",
]

P = TypeVar("P", bound=EventPayload)

DEFAULT_CLOSE_TIMEOUT = 15.0
"""Seconds `EventManager.aclose` takes at most by default: half of
Kubernetes' default 30 s grace period, leaving the rest of the service time
to shut down (`DeliveryOptions.close_timeout` for Kafka managers)."""


class _State(enum.Enum):
    UNINITIALIZED = "uninitialized"
    READY = "ready"
    CLOSED = "closed"


class EventPublisher(abc.ABC, Generic[P]):
    """Publishes events of one type; made by `EventManager.create_publisher`.

    Parameters
    ----------
    event_type
        The compiled event type.
    telemetry
        The manager's OTel parts.
    severity
        Severity of the OTel log records of this event type.
    """

    def __init__(
        self,
        event_type: EventType[P],
        telemetry: Telemetry,
        *,
        severity: SeverityNumber = SeverityNumber.INFO,
    ) -> None:
        self._event_type = event_type
        self._telemetry = telemetry
        self._severity = severity

    @property
    def name(self) -> str:
        """The event name."""
        return self._event_type.name

    @property
    def event_class(self) -> type[P]:
        """The enriched event model (metadata and payload fields)."""
        return self._event_type.event_model

    @property
    def topic(self) -> str:
        """The Kafka topic events of this type go to."""
        return self._event_type.topic

    @property
    def _event_class(self) -> type[P]:
        # Safir's name for `event_class`, which code written for it reads.
        return self.event_class

    @property
    def _publisher(self) -> EventPublisher[P]:
        # Code written for Safir reads the topic from its FastStream
        # publisher, kept here; ours answers for itself.
        return self

    @property
    def avro_schema(self) -> dict[str, Any]:
        """The Avro schema events of this type are written with."""
        return self._event_type.schema

    def construct_event(self, payload: P) -> P:
        """Build the event `publish` would publish, without publishing it.

        The metadata (id, timestamps, trace context) is filled in as for a
        real publish.

        Parameters
        ----------
        payload
            An instance of the payload model.

        Returns
        -------
        EventPayload
            An instance of `event_class`.

        Raises
        ------
        EventPayloadError
            If the payload cannot be encoded (naming the field).
        """
        event: P = self._event_type.enrich(payload).event
        return event

    def _record_key(
        self, payload: P, fields: Mapping[str, Any], key: str | bytes | None
    ) -> bytes | None:
        """The record key of one event: ``key`` when given, else the
        publisher's key (its field or function), else None.

        Raises
        ------
        EventKeyError
            If the key cannot be made (see `EventKeyError`).
        """
        if key is not None:
            return given_key(self._event_type.name, key)
        keys = self._event_type.keys
        return None if keys is None else keys.of(payload, fields)

    @abc.abstractmethod
    async def publish(
        self,
        payload: P,
        *,
        wait: bool | None = None,
        key: str | bytes | None = None,
    ) -> EventMetadata:
        """Publish one event.

        Parameters
        ----------
        payload
            An instance of the payload model this publisher was created for.
        wait
            Wait until the event is delivered (Kafka publishers); accepted by
            every publisher so the same service code runs with events
            disabled or mocked.
        key
            The record key of this event (text is encoded as UTF-8),
            instead of the one the publisher makes from the payload (see
            ``key`` of `EventManager.create_publisher`). Every publisher
            checks it, so a wrong key fails in tests with mocked events too.

        Returns
        -------
        EventMetadata
            The enriched event: an instance of `event_class`, which derives
            from both the payload model and `EventMetadata`.

        Raises
        ------
        EventPayloadError
            If the payload cannot be encoded (naming the field).
        EventKeyError
            If the record key cannot be made (an `EventPayloadError`).
        """


class NoopEventPublisher(EventPublisher[P]):
    """Validates and encodes events, then discards them.

    OTel log records are still emitted when log export is on, so a service
    can send its events to an OTel pipeline without Kafka.
    """

    def __init__(
        self,
        event_type: EventType[P],
        telemetry: Telemetry,
        logger: BoundLogger,
        *,
        severity: SeverityNumber = SeverityNumber.INFO,
        guard: Guard | None = None,
    ) -> None:
        super().__init__(event_type, telemetry, severity=severity)
        self._logger = logger
        self._guard = guard or Guard(logger)

    async def publish(
        self,
        payload: P,
        *,
        wait: bool | None = None,
        key: str | bytes | None = None,
    ) -> EventMetadata:
        """Build the event and its key, log it at debug level and return it.

        ``wait`` is accepted and ignored: there is nothing to deliver.
        """
        enriched = self._event_type.enrich(payload)
        record_key = self._record_key(payload, enriched.fields, key)
        telemetry = self._telemetry
        if telemetry.emitter is not None:
            telemetry.emit_now(
                self._guard,
                enriched.event_id,
                LogSource(
                    self._event_type,
                    enriched.event,
                    enriched.fields,
                    enriched.span_context,
                    enriched.timestamp_ns,
                    self._severity,
                ),
                record_key,
            )
        self._logger.debug(
            "Would have published event",
            event_name=self.name,
            metrics_event=json_dump(enriched.event),
        )
        event: EventMetadata = enriched.event
        return event


class FailedEventPublisher(EventPublisher[P]):
    """Builds events and discards them, logging an error now and then.

    Safir hands one out when an event type cannot be registered. Our
    managers never do: they keep retrying the registration in the
    background and buffer the events meanwhile. The class exists for code
    that names it, and for a service that wants to disable one event type
    loudly.

    Parameters
    ----------
    event_type
        The compiled event type.
    telemetry
        The manager's OTel parts (no log record is emitted).
    logger
        Where the error goes.
    backoff_interval
        The error is logged at most once per interval.
    """

    def __init__(
        self,
        event_type: EventType[P],
        telemetry: Telemetry,
        logger: BoundLogger,
        backoff_interval: timedelta = timedelta(minutes=5),
    ) -> None:
        super().__init__(event_type, telemetry)
        self._logger = logger
        self._interval = backoff_interval.total_seconds()
        self._logged_at: float | None = None

    async def publish(
        self,
        payload: P,
        *,
        wait: bool | None = None,
        key: str | bytes | None = None,
    ) -> EventMetadata:
        """Build the event, discard it, and log an error if none was logged
        within the backoff interval."""
        enriched = self._event_type.enrich(payload)
        self._record_key(payload, enriched.fields, key)
        event: EventMetadata = enriched.event
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= self._interval:
            self._logged_at = now
            self._logger.error(
                "Event not published: this event type is disabled",
                event_name=self.name,
                attempted_operation="publish",
            )
        return event


class MockEventPublisher(NoopEventPublisher[P]):
    """A no-op publisher that records every payload, for tests.

    Memory grows with every event: never use it in a deployed service.
    """

    def __init__(
        self,
        event_type: EventType[P],
        telemetry: Telemetry,
        logger: BoundLogger,
        *,
        severity: SeverityNumber = SeverityNumber.INFO,
        guard: Guard | None = None,
    ) -> None:
        super().__init__(event_type, telemetry, logger, severity=severity, guard=guard)
        self._published: PublishedList[P] = PublishedList()

    async def publish(
        self,
        payload: P,
        *,
        wait: bool | None = None,
        key: str | bytes | None = None,
    ) -> EventMetadata:
        """Build the event, record the payload and return the event."""
        event = await super().publish(payload, wait=wait, key=key)
        self._published.append(payload)
        return event

    @property
    def published(self) -> PublishedList[P]:
        """The payloads published so far, with assertion helpers."""
        return self._published


class EventManager(abc.ABC):
    """Registers event types and creates their publishers.

    Call `initialize` once at startup, `create_publisher` for each event type,
    and `aclose` at shutdown.

    Parameters
    ----------
    topic
        The Kafka topic events go to; also the Avro namespace of their
        schemas.
    logger
        Logger for the manager's own messages; ``otel_kafka_events`` when
        None.
    application
        Name put in every event's metadata; the last part of ``topic`` when
        None.
    telemetry
        OpenTelemetry options.
    flat_payloads
        Accept only scalar payload fields, as Safir does.

    Attributes
    ----------
    topic
        The Kafka topic.
    logger
        The manager's logger.
    """

    def __init__(
        self,
        topic: str,
        logger: BoundLogger | None = None,
        *,
        application: str | None = None,
        telemetry: TelemetryOptions | None = None,
        flat_payloads: bool = False,
    ) -> None:
        self.topic = topic
        self.logger: BoundLogger = logger or structlog.get_logger("otel_kafka_events")
        self.application = application or topic.rsplit(".", 1)[-1]
        self.telemetry_options = telemetry or TelemetryOptions()
        self.flat_payloads = flat_payloads
        self._telemetry = Telemetry(self.telemetry_options, topic)
        self._guard = Guard(self.logger)
        self._publishers: dict[str, EventPublisher[Any]] = {}
        self._event_types: dict[type[Any], EventType[Any]] = {}
        self._pending_severity: dict[type[Any], SeverityNumber] = {}
        self._state = _State.UNINITIALIZED

    @property
    def log_export_stats(self) -> dict[str, Any]:
        """Log records exported by `TelemetryOptions.log_export`, by
        destination (``"kafka"``, ``"otlp"``): `LogExportStats` objects;
        empty without it (always, for managers without Kafka)."""
        return {}

    async def initialize(self) -> None:
        """Prepare the manager; call before `create_publisher`.

        A closed manager can be initialized again, as in Safir; it starts
        with no publishers.
        """
        self._state = _State.READY

    async def aclose(self, timeout: float | None = None) -> int:
        """Shut down, delivering what is pending.

        Parameters
        ----------
        timeout
            Seconds the close may take (flushing telemetry here); None means
            `DEFAULT_CLOSE_TIMEOUT`.

        Returns
        -------
        int
            How many events could not be delivered (always 0 here).

        Notes
        -----
        Afterwards `create_publisher` raises `EventManagerClosedError` (an
        `EventManagerUninitializedError`) until `initialize` is called again.
        """
        # Log records (and producer spans) may sit in SDK batch processors;
        # every manager flushes them, including the Kafka-free ones.
        await flush_telemetry(
            self._telemetry,
            DEFAULT_CLOSE_TIMEOUT if timeout is None else timeout,
        )
        await self._mark_closed()
        return 0

    async def _mark_closed(self) -> None:
        """Forget the publishers; `create_publisher` refuses until the next
        `initialize`."""
        self._publishers = {}
        self._event_types = {}
        self._state = _State.CLOSED

    async def create_publisher(
        self,
        name: str,
        payload_model: type[P],
        *,
        log_severity: SeverityNumber = SeverityNumber.INFO,
        key: str | KeyFunction | None = None,
        spread: bool = False,
    ) -> EventPublisher[P]:
        """Register an event type and return its publisher.

        The payload model is checked here, not at publish time: the event
        name must be a valid Avro name, no payload field may shadow a
        metadata field, and every field must have an Avro representation.

        Parameters
        ----------
        name
            The event name: the Avro record name of its schema.
        payload_model
            The `EventPayload` subclass that ``publish`` will take.
        log_severity
            Severity of this event type's OTel log records.
        key
            What each event's Kafka record key is: the name of a payload
            field (its value as text: `str` as it is, `bytes` as they are,
            an enum's value, anything else ``str(value)``; None means no
            key), or a function of the payload returning `str`, `bytes` or
            None. Events with one key go to one partition (Kafka's default
            partitioner, murmur2 of the key) and keep their order.
            ``publish(payload, key=...)`` overrides it per event. None (the
            default): events have no key.
        spread
            Spread this type's unkeyed events over every partition of the
            topic, moving on to the next partition after each batch (as
            Kafka's sticky partitioner does), instead of sending them all
            to the one partition of the event name. Their order is then not
            kept; keyed events are not affected.

        Raises
        ------
        EventManagerUninitializedError
            If `initialize` has not been called.
        EventManagerClosedError
            If the manager was closed.
        DuplicateEventError
            If a publisher with this name exists.
        InvalidEventNameError
            If the name or a part of the topic is not a valid Avro name.
        UnsupportedAvroSchemaError
            Listing every payload field that cannot be represented.
        UnknownKeyFieldError
            If ``key`` names no payload field, or a field holding records,
            lists or maps.
        KafkaTopicError
            (Kafka) If the topic does not exist or is not accessible.
        IncompatibleSchemaError
            (Kafka) If the registry refuses the schema.
        """
        if self._state is _State.UNINITIALIZED:
            raise EventManagerUninitializedError(
                "Initialize the event manager before creating event publishers"
            )
        if self._state is _State.CLOSED:
            raise EventManagerClosedError("This event manager was closed")
        if name in self._publishers:
            raise DuplicateEventError(name)
        if not (
            isinstance(payload_model, type) and issubclass(payload_model, EventPayload)
        ):
            raise EventManagerUsageError(
                f"payload_model of event {name!r} must be a subclass of EventPayload"
            )
        event_type = EventType(
            name,
            self.topic,
            self.application,
            payload_model,
            trace_context=self.telemetry_options.trace_context,
            flat_payloads=self.flat_payloads,
            key=key,
            spread=spread,
        )
        remember_schema(event_type.event_model, event_type.schema)
        self._event_types[event_type.event_model] = event_type
        self._pending_severity[event_type.event_model] = log_severity
        try:
            publisher = await self.build_publisher_for_model(event_type.event_model)
        except BaseException:
            del self._event_types[event_type.event_model]
            raise
        finally:
            self._pending_severity.pop(event_type.event_model, None)
        self._publishers[name] = publisher
        return publisher

    @abc.abstractmethod
    async def build_publisher_for_model(self, model: type[P]) -> EventPublisher[P]:
        """Make the publisher of one enriched event model.

        Called by `create_publisher` after the model has been validated;
        subclasses implement it to decide where events go. Use
        `event_type_for` to get the compiled event type of ``model``.
        """

    def event_type_for(self, model: type[P]) -> EventType[P]:
        """The compiled event type of an enriched model from `create_publisher`."""
        try:
            return self._event_types[model]
        except KeyError:
            raise EventManagerUsageError(
                f"{model.__name__} was not built by create_publisher"
            ) from None

    def severity_for(self, model: type[Any]) -> SeverityNumber:
        """The log severity requested for ``model`` in `create_publisher`."""
        return self._pending_severity.get(model, SeverityNumber.INFO)


class NoopEventManager(EventManager):
    """An event manager whose publishers validate events and discard them.

    Used when events are disabled (``METRICS_ENABLED=false``). Payload models
    and payloads are still checked, so mistakes surface in tests, and OTel
    log records are still emitted when log export is on.

    Parameters
    ----------
    application
        Name of the application publishing events.
    topic_prefix
        Prefix of the events topic; the topic is ``{topic_prefix}.{application}``.
    logger
        Logger for the manager's messages.
    **options
        `EventManager` keyword options (``telemetry``, ``flat_payloads``).
    """

    def __init__(
        self,
        application: str,
        topic_prefix: str,
        logger: BoundLogger | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            f"{topic_prefix}.{application}", logger, application=application, **options
        )
        if self.telemetry_options.log_export is not None:
            raise EventManagerUsageError(
                "TelemetryOptions.log_export needs a KafkaEventManager; here,"
                " give logger_provider= a LoggerProvider with the exporters"
                " instead (e.g. KafkaLogRecordExporter)"
            )

    # Mock publishers are no-op publishers that also record payloads.
    _publisher_class: type[NoopEventPublisher[Any]] = NoopEventPublisher

    async def build_publisher_for_model(self, model: type[P]) -> EventPublisher[P]:
        """Make the publisher (a `NoopEventPublisher`, or a mock one)."""
        publisher: EventPublisher[P] = self._publisher_class(
            self.event_type_for(model),
            self._telemetry,
            self.logger,
            severity=self.severity_for(model),
            guard=self._guard,
        )
        return publisher


class MockEventManager(NoopEventManager):
    """An event manager whose publishers record payloads for assertions.

    Used in a service's own tests (``METRICS_MOCK=true``); see
    `MockEventPublisher.published`.

    Parameters
    ----------
    application
        Name of the application publishing events.
    topic_prefix
        Prefix of the events topic.
    logger
        Logger for the manager's messages.
    **options
        `EventManager` keyword options (``telemetry``, ``flat_payloads``).
    """

    _publisher_class = MockEventPublisher

    async def create_publisher(
        self,
        name: str,
        payload_model: type[P],
        *,
        log_severity: SeverityNumber = SeverityNumber.INFO,
        key: str | KeyFunction | None = None,
        spread: bool = False,
    ) -> MockEventPublisher[P]:
        """Register an event type; see `EventManager.create_publisher`.

        Overridden only to type the result, which has ``published``.
        """
        publisher = await super().create_publisher(
            name, payload_model, log_severity=log_severity, key=key, spread=spread
        )
        return cast("MockEventPublisher[P]", publisher)
