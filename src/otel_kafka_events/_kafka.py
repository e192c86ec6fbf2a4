"""Publishing events to Kafka: `KafkaEventManager` and `KafkaEventPublisher`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from opentelemetry import context as otel_context
from opentelemetry._logs import SeverityNumber
from schema_registry.client import AsyncSchemaRegistryClient
from structlog.stdlib import BoundLogger

from ._delivery import (
    DeliveryQueue,
    DeliveryStats,
    FailureCallback,
    PendingEvent,
    record_size,
)
from ._event_type import EventType
from ._exceptions import (
    BrokerUnavailableError,
    EventManagerClosedError,
    EventManagerUsageError,
    EventTooLargeError,
    KafkaTopicError,
    SchemaRegistryError,
)
from ._manager import EventManager, EventPublisher
from ._models import EventMetadata, EventPayload
from ._options import BufferOptions, TelemetryOptions
from ._registry_client import SchemaRegistrar, make_registry_client
from ._telemetry import Telemetry
from .otel._metrics import register_delivery_metrics
from .otel._spans import end_producer_span

__all__ = ["KafkaEventManager", "KafkaEventPublisher"]

P = TypeVar("P", bound=EventPayload)

_DEFAULT_MAX_REQUEST_SIZE = 1_048_576
# Large batches let one round trip carry many events; aiokafka's 16 KiB
# default caps a batch at about 150 small events.
_DEFAULT_MAX_BATCH_SIZE = 512 * 1024


class KafkaEventPublisher(EventPublisher[P]):
    """Publishes one event type to Kafka; see `KafkaEventManager`."""

    def __init__(
        self,
        event_type: EventType[P],
        telemetry: Telemetry,
        manager: KafkaEventManager,
        *,
        severity: SeverityNumber = SeverityNumber.INFO,
        wait: bool = False,
    ) -> None:
        super().__init__(event_type, telemetry, severity=severity)
        self._manager = manager
        self._wait = wait

    async def publish(self, payload: P, *, wait: bool | None = None) -> EventMetadata:
        """Publish one event.

        By default this returns as soon as the event is encoded and queued;
        delivery happens in the background and failures are reported to the
        manager's failure callback, its log and its counters. With ``wait``
        it returns only once Kafka has acknowledged the event.

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
        EventDeliveryError
            With ``wait``, if the event was not delivered.
        EventBufferFullError
            If the buffer is full and the overflow policy says to raise.
        """
        manager = self._manager
        if manager._closed:
            raise EventManagerClosedError("This event manager was closed")
        event_type = self._event_type
        if manager._registration_errors:
            failure = manager._registration_errors.get(event_type)
            if failure is not None:
                raise failure
        enriched = event_type.enrich(payload)
        values = enriched.event.__dict__
        telemetry = self._telemetry
        span = None
        span_context = enriched.span_context
        if telemetry.producer_spans is not None:
            span = telemetry.producer_spans.start(
                otel_context.get_current(), str(values["id"]), values["timestamp_ns"]
            )
            # The traceparent then names the producer span, while the
            # metadata keeps the caller's span.
            span_context = span.get_span_context()
        headers = None
        if telemetry.injector is not None:
            headers = telemetry.injector.headers(span_context, span)
        value = enriched.value
        size = record_size(value, headers)
        if size > manager._max_request_size:
            too_large = EventTooLargeError(
                event_type.name,
                f"encoded event is {size} bytes, more than the producer's"
                f" max_request_size of {manager._max_request_size}",
            )
            if span is not None:
                end_producer_span(span, error=too_large)
            raise too_large
        waiter = None
        if wait if wait is not None else self._wait:
            waiter = asyncio.get_running_loop().create_future()
        pending = PendingEvent(
            event_type.name,
            value,
            headers,
            values["timestamp_ns"] // 1_000_000,
            enriched.event_id,
            size,
            time.monotonic(),
            waiter,
            span,
        )
        queue = manager._queue
        if queue.offer(event_type, pending):
            if queue.should_yield():
                await asyncio.sleep(0)
        else:
            try:
                queued = await queue.submit(event_type, pending)
            except BaseException as exc:
                # Refused by the buffer (or cancelled while waiting for room):
                # the queue never took the event, so its span ends here.
                if span is not None:
                    end_producer_span(span, error=exc)
                raise
            if not queued:
                # Dropped by the overflow policy: reported as dropped (its
                # span ended with the report), and not a log record.
                dropped: EventMetadata = enriched.event
                return dropped
        # Only an event the queue accepted becomes a log record.
        self._emit_log(enriched)
        if waiter is not None:
            await waiter
        event: EventMetadata = enriched.event
        return event


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
        Use Kafka's idempotent producer (no duplicates from retries).
    manage_clients
        Start and stop the producer and admin client; True by default for
        clients the manager creates, False for clients passed in.
    buffer
        Bounds of the pending-event buffer.
    delivery_timeout
        Seconds an event may take to be acknowledged, retries included.
    retry_backoff
        First delay between retries of a failed send or registration.
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
        enable_idempotence: bool = True,
        manage_clients: bool | None = None,
        buffer: BufferOptions | None = None,
        delivery_timeout: float = 120.0,
        retry_backoff: float = 0.1,
        raise_on_error: bool = False,
        on_delivery_error: FailureCallback | None = None,
        logger: BoundLogger | None = None,
        telemetry: TelemetryOptions | None = None,
        flat_payloads: bool = False,
    ) -> None:
        super().__init__(
            f"{topic_prefix}.{application}",
            logger,
            application=application,
            telemetry=telemetry,
            flat_payloads=flat_payloads,
        )
        if producer is None and bootstrap_servers is None:
            raise EventManagerUsageError(
                "KafkaEventManager needs bootstrap_servers or a producer"
            )
        if registry is None and registry_url is None:
            raise EventManagerUsageError(
                "KafkaEventManager needs registry_url or a registry client"
            )
        if delivery_timeout <= 0:
            raise EventManagerUsageError("delivery_timeout must be positive")
        options = dict(kafka_options or {})
        self._bootstrap_servers = bootstrap_servers
        self._kafka_options = options
        self._enable_idempotence = enable_idempotence
        self._owns_producer = producer is None
        self._owns_admin = admin_client is None
        self._manage_clients = manage_clients
        self._producer = producer
        self._admin = admin_client
        self._max_request_size = int(
            getattr(producer, "_max_request_size", None)
            or options.get("max_request_size", _DEFAULT_MAX_REQUEST_SIZE)
        )
        self._registrar = SchemaRegistrar(
            registry or make_registry_client(str(registry_url)),
            suffix=schema_suffix,
            compatibility=schema_compatibility,
        )
        self._raise_on_error = raise_on_error
        self._retry_backoff = retry_backoff
        self._connected = asyncio.Event()
        self._closed = False
        # Set once aclose stops waiting for pending events; until then the
        # background work (reconnecting, registering, replacing a producer)
        # goes on, so that aclose can still deliver within its timeout.
        self._stopping = False
        self._partitions: dict[EventType[Any], int] = {}
        self._registration_errors: dict[EventType[Any], EventManagerUsageError] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Wakes a background registration as soon as Kafka is reachable again.
        self._pending_registrations: dict[EventType[Any], asyncio.Event] = {}
        self._queue = DeliveryQueue(
            topic=self.topic,
            producer=self._wait_for_producer,
            partitions=self._partition_for,
            buffer=buffer or BufferOptions(),
            delivery_timeout=delivery_timeout,
            retry_backoff=retry_backoff,
            raise_on_error=raise_on_error,
            on_failure=on_delivery_error,
            logger=self.logger,
            replace_producer=self._replace_producer,
        )
        register_delivery_metrics(
            self._queue, self.topic, self.telemetry_options.meter_provider
        )

    # Properties -----------------------------------------------------------

    @property
    def stats(self) -> DeliveryStats:
        """Counters: published, delivered, failed, dropped, buffered."""
        return self._queue.stats

    @property
    def registry(self) -> AsyncSchemaRegistryClient:
        """The schema registry client."""
        return self._registrar.client

    def subject_for(self, name: str) -> str:
        """The registry subject of event ``name``."""
        return self._registrar.subject(f"{self.topic}.{name}")

    # Lifecycle ------------------------------------------------------------

    def _manages(self, owned: bool) -> bool:
        return owned if self._manage_clients is None else self._manage_clients

    def _new_producer(self) -> AIOKafkaProducer:
        options = {
            "max_batch_size": _DEFAULT_MAX_BATCH_SIZE,
            "linger_ms": 0,
            "acks": "all",
            "enable_idempotence": self._enable_idempotence,
            **self._kafka_options,
        }
        return AIOKafkaProducer(bootstrap_servers=self._bootstrap_servers, **options)

    def _new_admin(self) -> AIOKafkaAdminClient:
        keys = (
            "security_protocol",
            "ssl_context",
            "sasl_mechanism",
            "sasl_plain_username",
            "sasl_plain_password",
            "client_id",
            "request_timeout_ms",
        )
        options = {k: v for k, v in self._kafka_options.items() if k in keys}
        return AIOKafkaAdminClient(bootstrap_servers=self._bootstrap_servers, **options)

    async def initialize(self) -> None:
        """Connect the producer and admin client and start the sender.

        If the broker cannot be reached, this raises `BrokerUnavailableError`
        with ``raise_on_error``; otherwise it logs, returns, and keeps trying
        in the background while events are buffered.
        """
        await super().initialize()
        self._queue.start()
        try:
            await self._connect()
        except (KafkaError, OSError) as exc:
            if self._raise_on_error:
                raise BrokerUnavailableError(
                    f"Cannot connect to Kafka at {self._bootstrap_servers}: {exc}"
                ) from exc
            self.logger.error(
                "Kafka unreachable, events will be buffered until it is back",
                error=f"{type(exc).__name__}: {exc}",
            )
            self._spawn(self._reconnect_forever())

    async def _connect(self) -> None:
        if self._producer is None:
            self._producer = self._new_producer()
        if self._admin is None:
            self._admin = self._new_admin()
        try:
            if self._manages(self._owns_producer):
                await self._producer.start()
            if self._manages(self._owns_admin):
                await self._admin.start()
        except BaseException:
            if self._owns_producer:
                with contextlib.suppress(Exception):
                    await self._producer.stop()
                self._producer = None
            if self._owns_admin:
                with contextlib.suppress(Exception):
                    await self._admin.close()
                self._admin = None
            raise
        self._connected.set()

    async def _reconnect_forever(self) -> None:
        delay = self._retry_backoff
        while not self._stopping and not self._connected.is_set():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            try:
                await self._connect()
            except (KafkaError, OSError) as exc:
                self._queue._log.error(
                    "connect",
                    "Kafka still unreachable",
                    error=f"{type(exc).__name__}: {exc}",
                )
            else:
                self.logger.info("Connected to Kafka")
                self._queue.wake()
                for event_type in list(self._pending_registrations):
                    self._pending_registrations[event_type].set()

    def _replace_producer(self, producer: AIOKafkaProducer) -> None:
        """Swap a producer that aiokafka can no longer use for a new one.

        E.g. after OutOfOrderSequenceNumber from a broker that lost the
        idempotent producer's state in a crash, aiokafka's sender stops and
        the producer refuses every later batch. Only a producer the manager
        created and manages is replaced.
        """
        if (
            producer is not self._producer
            or self._stopping
            or not self._owns_producer
            or not self._manages(True)
        ):
            return
        self._connected.clear()
        self._producer = None
        self._queue._log.error(
            "producer", "Kafka producer unusable, starting a new one", topic=self.topic
        )
        self._spawn(self._restart_producer(producer))

    async def _restart_producer(self, old: AIOKafkaProducer) -> None:
        await _drop_abandoned_batches(old)
        with contextlib.suppress(Exception):
            await old.stop()
        await self._reconnect_forever()

    async def _wait_for_producer(self) -> AIOKafkaProducer:
        await self._connected.wait()
        assert self._producer is not None
        return self._producer

    async def aclose(self, timeout: float | None = None) -> int:
        """Deliver pending events, then close every client.

        Parameters
        ----------
        timeout
            Seconds to wait for pending events (None: up to the delivery
            timeout of the oldest one).

        Returns
        -------
        int
            How many events could not be delivered; each was also reported
            to the failure callback, with reason ``shutdown`` if still
            pending at the deadline (``failed`` if its delivery timeout ran
            out first).
        """
        if self._closed:
            return 0
        self._closed = True
        undelivered = await self._queue.close(timeout)
        self._stopping = True
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._producer is not None and self._manages(self._owns_producer):
            if self._queue.abandoned:
                await _drop_abandoned_batches(self._producer)
            with contextlib.suppress(Exception):
                await self._producer.stop()
        if self._admin is not None and self._manages(self._owns_admin):
            with contextlib.suppress(Exception):
                await self._admin.close()
        # The base class flushes the OTel providers (see flush_telemetry).
        await super().aclose()
        if undelivered:
            self.logger.error(
                "Events not delivered before the event manager closed",
                count=undelivered,
                topic=self.topic,
            )
        return undelivered

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
            await self._register(event_type)
        except (
            SchemaRegistryError,
            BrokerUnavailableError,  # _register: Kafka not connected yet
            KafkaError,
            OSError,
            TimeoutError,
        ) as exc:
            if self._raise_on_error:
                if isinstance(exc, SchemaRegistryError | BrokerUnavailableError):
                    raise
                raise BrokerUnavailableError(f"Cannot reach Kafka: {exc}") from exc
            self.logger.error(
                "Event registration failed, retrying in the background",
                event_name=event_type.name,
                error=f"{type(exc).__name__}: {exc}",
            )
            self._spawn(self._register_in_background(event_type))
        return KafkaEventPublisher(
            event_type, self._telemetry, self, severity=self.severity_for(model)
        )

    async def _register(self, event_type: EventType[Any]) -> None:
        if not self._connected.is_set():
            raise BrokerUnavailableError("not connected to Kafka")
        await self._check_topic()
        schema_id = await self._registrar.register(
            event_type.full_name, event_type.schema
        )
        event_type.set_schema_id(schema_id)
        self._queue.wake()

    async def _check_topic(self) -> None:
        assert self._admin is not None
        try:
            topics = await self._admin.describe_topics([self.topic])
        except KafkaError as exc:
            if exc.retriable or type(exc).__name__ in (
                "KafkaConnectionError",
                "KafkaTimeoutError",
            ):
                raise
            raise KafkaTopicError(self.topic, f"{type(exc).__name__}: {exc}") from exc
        for topic in topics:
            if topic.get("topic") == self.topic:
                code = topic.get("error_code", 0)
                if code == 0 and topic.get("partitions"):
                    return
                raise KafkaTopicError.from_error_code(self.topic, code)
        raise KafkaTopicError.missing(self.topic)

    async def _register_in_background(self, event_type: EventType[Any]) -> None:
        wakeup = self._pending_registrations.setdefault(event_type, asyncio.Event())
        delay = self._retry_backoff
        try:
            while not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), delay)
                wakeup.clear()
                delay = min(delay * 2, 5.0)
                try:
                    await self._register(event_type)
                except EventManagerUsageError as exc:
                    self._registration_errors[event_type] = exc
                    self.logger.error(
                        "Event type cannot be registered; its events fail",
                        event_name=event_type.name,
                        error=str(exc),
                    )
                    self._queue.fail_event_type(event_type, exc)
                    return
                except (
                    SchemaRegistryError,
                    BrokerUnavailableError,
                    KafkaError,
                    OSError,
                    TimeoutError,
                ) as exc:
                    self._queue._log.error(
                        f"register-{event_type.name}",
                        "Event registration still failing",
                        event_name=event_type.name,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    continue
                self.logger.info("Event type registered", event_name=event_type.name)
                return
        finally:
            self._pending_registrations.pop(event_type, None)

    async def _partition_for(self, event_type: EventType[Any]) -> int:
        partition = self._partitions.get(event_type)
        if partition is None:
            assert self._producer is not None
            partitions = sorted(await self._producer.partitions_for(self.topic))
            # Keyless events of one type share a partition, chosen like
            # Kafka's default partitioner would for the event's full name.
            index = (murmur2(event_type.full_name.encode()) & 0x7FFFFFFF) % len(
                partitions
            )
            partition = self._partitions[event_type] = partitions[index]
        return partition

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def _drop_abandoned_batches(producer: AIOKafkaProducer) -> None:
    """Fail the batches aiokafka still retries for events reported failed.

    ``AIOKafkaProducer.stop`` waits for every batch it holds: without a
    broker that takes ``request_timeout_ms``, and forever with the idempotent
    producer, which would break the deadline of `KafkaEventManager.aclose`.
    Their events were already reported, so they must not be written later.
    This reaches into aiokafka 0.14's internals; with other versions it does
    nothing.
    """
    sender = getattr(producer, "_sender", None)
    accumulator = getattr(producer, "_message_accumulator", None)
    queued = getattr(accumulator, "_batches", None)
    pending = getattr(accumulator, "_pending_batches", None)
    if sender is None or accumulator is None or queued is None or pending is None:
        return
    # The sender goes first, so that it cannot requeue a batch failed here.
    with contextlib.suppress(Exception):
        await sender.close()
    # A batch that was sent and requeued removes itself from the pending set
    # when it completes; put it back there so that its callback finds it.
    pending.update(batch for batches in queued.values() for batch in batches)
    accumulator.fail_all(KafkaError("the event manager was closed"))
