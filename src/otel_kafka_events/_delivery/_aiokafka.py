"""`AiokafkaTransport`: the `Transport` over aiokafka, which picks the
producer that carries the events (our `ProducePipeline` over an aiokafka
client, else aiokafka's own producer or FastStream's) and checks topics
with aiokafka's admin client.

Everything that knows aiokafka lives here and in the modules beside it
(``_pipeline`` and ``_produce_protocol`` for our own produce path,
``_aiokafka_producer`` for aiokafka's producer, ``_kafka_errors`` for its
errors, ``_faststream`` for FastStream's broker); the rest of delivery sees
only the seam.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.conn import create_conn
from aiokafka.errors import BrokerResponseError, KafkaError, for_code
from structlog.stdlib import BoundLogger

from .._foreign import contained
from .._options import MAX_IN_FLIGHT
from ..errors import BrokerUnavailableError, IdempotenceUnsupportedError
from ._aiokafka_producer import AiokafkaBatch, direct_for, stop_producer, watch_batch
from ._faststream import producer_of, start_broker, stop_broker
from ._kafka_errors import (
    REFUSALS,
    classify,
    describe_kafka_error,
    describe_refusal,
    is_connection_error,
)
from ._pipeline import PipelineUnsupportedError, ProducePipeline
from ._produce_protocol import Records
from ._transport import RecordBatch, SendDone, SendFailure, TopicInfo

__all__ = [
    "DEFAULT_MAX_REQUEST_SIZE",
    "AiokafkaTransport",
    "pipeline_takes",
]

DEFAULT_MAX_REQUEST_SIZE = 1_048_576
"""aiokafka's default ``max_request_size``."""

# Large batches let one round trip carry many events; aiokafka's 16 KiB
# default caps a batch at about 150 small events.
_DEFAULT_MAX_BATCH_SIZE = 512 * 1024

# aiokafka's own default.
_DEFAULT_REQUEST_TIMEOUT_MS = 40_000

_ADMIN_OPTIONS = (
    "security_protocol",
    "ssl_context",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
    "client_id",
    "request_timeout_ms",
)


# The client options that shape one connection (aiokafka's create_conn).
_CONNECTION_OPTIONS = frozenset(
    {
        "client_id",
        "ssl_context",
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_kerberos_service_name",
        "sasl_kerberos_domain_name",
        "sasl_oauth_token_provider",
    }
)

# What the pipeline's client takes of the client options: a connection's,
# and how it keeps metadata and connections (the rest of `pipeline_takes`
# is the producer's own).
_PIPELINE_CLIENT_OPTIONS = _CONNECTION_OPTIONS | {
    "metadata_max_age_ms",
    "retry_backoff_ms",
    "connections_max_idle_ms",
}

# The options `ProducePipeline` honours besides the client's.
_PIPELINE_PRODUCER_OPTIONS = frozenset(
    {
        "acks",
        "request_timeout_ms",
        "max_batch_size",
        "max_request_size",
        "linger_ms",  # the sender batches on its own
        "enable_idempotence",
    }
)

_ACKS: dict[Any, int] = {"all": -1, -1: -1, 1: 1, "1": 1, "-1": -1}


def pipeline_takes(options: Mapping[str, Any]) -> bool:
    """Whether `ProducePipeline` honours every one of the client
    ``options`` (else aiokafka's producer carries the events): no
    compression, no transactions, ``acks`` of all or the leader."""
    known = _PIPELINE_CLIENT_OPTIONS | _PIPELINE_PRODUCER_OPTIONS
    return (
        all(name in known for name in options) and options.get("acks", "all") in _ACKS
    )


def _first_address(servers: str | list[str] | None) -> tuple[str, int] | None:
    """The host and port of the first bootstrap server (None without one)."""
    first = (servers.split(",") if isinstance(servers, str) else servers or [""])[0]
    if not first.strip():
        return None
    host, _, port = first.strip().rpartition(":")
    if not host:
        host, port = port, "9092"
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None


class AiokafkaTransport:
    """Sends events with an aiokafka producer and checks topics with an
    admin client.

    The clients are made here from ``bootstrap_servers`` and
    ``client_options``, or given: a ready ``producer`` and ``admin_client``,
    or Safir's FastStream ``broker`` (whose aiokafka producer then carries
    the events).

    Parameters
    ----------
    bootstrap_servers
        Where to connect, for clients made here.
    client_options
        Extra keyword arguments of the clients made here (security
        protocol, SASL, SSL context, ``max_request_size`` ...).
    producer
        A producer to use instead of making one.
    admin_client
        An admin client to use instead of making one.
    broker
        A FastStream ``KafkaBroker`` whose producer to use.
    enable_idempotence
        True: require the idempotent producer; False: never use it; None:
        use it unless the broker refuses it, then warn once and go on
        without it (``acks="all"`` still).
    manage_clients
        Start and stop the clients (None: only those made here).
    manage_broker
        Start and stop ``broker`` (Safir's ``manage_kafka_broker``).
    logger
        For the fallback warning.
    delivery_timeout
        The event manager's delivery timeout. A producer made here waits
        for each acknowledgement at least that long (its
        ``request_timeout_ms`` is at least ``delivery_timeout`` + 1 s,
        unless ``client_options`` sets it): aiokafka fails a request that
        got no answer after ``request_timeout_ms`` (40 s by default), and
        without idempotence such a batch, which the broker may have
        written, could then only be reported not acknowledged before its
        events' deadline. A broker that comes back within the delivery
        timeout still acknowledges it.
    """

    sends_eagerly = True
    """`send` uses nothing bound to the current task (see `Transport`)."""

    def __init__(
        self,
        *,
        bootstrap_servers: str | list[str] | None = None,
        client_options: Mapping[str, Any] | None = None,
        producer: AIOKafkaProducer | None = None,
        admin_client: AIOKafkaAdminClient | None = None,
        broker: Any = None,
        enable_idempotence: bool | None = None,
        manage_clients: bool | None = None,
        manage_broker: bool = False,
        logger: BoundLogger | None = None,
        delivery_timeout: float | None = None,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._options = dict(client_options or {})
        self._given_producer = producer
        self._admin = admin_client
        self._owns_admin = admin_client is None
        self._broker = broker
        self._manage_broker = manage_broker
        self._requested_idempotence = enable_idempotence
        self._idempotence = enable_idempotence is not False
        self._manage_clients = manage_clients
        self._logger = logger
        self._delivery_timeout = delivery_timeout
        self._producer: AIOKafkaProducer | None = None
        self._pipeline: ProducePipeline | None = None
        # Set once a broker turned out too old for the pipeline's requests.
        self._pipeline_unsupported = False
        self._owns_producer = producer is None and broker is None
        # Clients whose start was left running when a start was cancelled,
        # and the tasks that close them once it ends (`_start_client`).
        self._left_starting: set[Any] = set()
        self._closing_after_start: set[asyncio.Task[None]] = set()

    # What the seam reads ------------------------------------------------------

    @property
    def target(self) -> str:
        """The bootstrap servers, for messages."""
        if self._bootstrap_servers is not None:
            return str(self._bootstrap_servers)
        return "the given Kafka client"

    @property
    def max_request_size(self) -> int:
        """The producer's ``max_request_size``."""
        if self._pipeline is not None:
            return self._pipeline.max_request_size
        producer = self._producer or self._given_producer
        if producer is not None:
            # aiokafka keeps the setting only in a private attribute; where it
            # does not, the option given here (or aiokafka's default) holds.
            size = getattr(producer, "_max_request_size", None)
            if isinstance(size, int) and size > 0:
                return size
        return int(self._options.get("max_request_size", DEFAULT_MAX_REQUEST_SIZE))

    @property
    def idempotent(self) -> bool:
        """Whether the producer is idempotent (a producer given to us is
        taken as not idempotent: the safe guess)."""
        return self._idempotence and self._owns_producer

    @property
    def uses_pipeline(self) -> bool:
        """Whether events go through our own `ProducePipeline` (a producer
        made here, with options it takes) rather than aiokafka's producer.

        It turns False at `start` where the broker is too old for the
        pipeline's requests (before Kafka 0.11, under an aiokafka before
        0.13)."""
        return (
            self._given_producer is None
            and self._broker is None
            and self._manages(True)
            and pipeline_takes(self._options)
            and not self._pipeline_unsupported
        )

    @property
    def max_in_flight(self) -> int:
        """Batches of one partition taken at once: `MAX_IN_FLIGHT` through
        the pipeline with the idempotent producer, else 1.

        Without idempotence a batch retried after a failure would land
        behind the ones sent after it. aiokafka's producer takes one batch
        at a time too: a hand-over to it that waits (its queue for the
        partition is full) may time out, and the next batch could then be
        written ahead of the one given up.
        """
        return MAX_IN_FLIGHT if self.idempotent and self.uses_pipeline else 1

    @property
    def producer(self) -> AIOKafkaProducer | None:
        """The started producer, or None while stopped."""
        return self._producer

    # Lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the clients (a new producer each time, when made here).

        Cancelled half-way, it stops what it started, so nothing is left
        open.
        """
        try:
            await self._start_clients()
        except IdempotenceUnsupportedError:
            raise
        except (KafkaError, OSError) as exc:
            refusal = exc if isinstance(exc, REFUSALS) else await self._refusal()
            reason = (
                describe_kafka_error(exc)
                if refusal is None
                else describe_refusal(refusal)
            )
            raise BrokerUnavailableError(
                f"Cannot connect to Kafka at {self.target}: {reason}"
            ) from (refusal or exc)

    async def _refusal(self) -> BaseException | None:
        """Why the broker would not let the client in, if that is why.

        aiokafka reports a bootstrap that failed as "Unable to bootstrap"
        and only logs the cause, so a broker that refused the credentials or
        the TLS handshake would read as one that cannot be reached. With
        TLS or SASL configured, one connection to the first bootstrap
        server, with the client's own security options, tells (within 1 s).
        """
        options = {k: v for k, v in self._options.items() if k in _CONNECTION_OPTIONS}
        address = _first_address(self._bootstrap_servers)
        if options.get("security_protocol", "PLAINTEXT") == "PLAINTEXT" or not address:
            return None
        try:
            async with asyncio.timeout(1.0):
                connection = await contained(
                    create_conn(*address, request_timeout_ms=1000, **options)
                )
        except REFUSALS as exc:
            return exc
        except Exception:
            return None  # unreachable, or no answer: the first error says it
        connection.close()
        return None

    async def _start_clients(self) -> None:
        try:
            if self._broker is not None:
                if self._manage_broker:
                    await start_broker(self._broker)
                self._producer = producer_of(self._broker)
            else:
                await self._start_producer()
            if self._admin is None:
                self._admin = self._new_admin()
            if self._manages(self._owns_admin):
                await self._start_client(self._admin, owned=self._owns_admin)
        except BaseException:
            # Shielded: a cancelled start still closes what it opened.
            await asyncio.shield(self._discard_clients())
            raise

    async def _start_client(self, client: Any, *, owned: bool) -> None:
        """Start an aiokafka client without cancelling it half-way.

        aiokafka loses the connection it bootstraps through when its start
        is cancelled in the middle (an unclosed connection, and a
        ResourceWarning, later). So the start runs as a task a cancellation
        does not reach: the cancelled caller goes on at once, and a client
        of ours is closed as soon as its start ends; `stop` waits for that.
        """
        starting = asyncio.ensure_future(contained(client.start()))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            if starting.done():
                raise
            self._left_starting.add(client)
            closing = asyncio.ensure_future(
                self._close_after_start(client, starting, owned=owned)
            )
            self._closing_after_start.add(closing)
            closing.add_done_callback(self._closing_after_start.discard)
            raise

    async def _close_after_start(
        self, client: Any, starting: asyncio.Future[Any], *, owned: bool
    ) -> None:
        try:
            with contextlib.suppress(Exception):
                await starting
            if owned:
                close = (
                    client.stop
                    if isinstance(client, AIOKafkaProducer)
                    else client.close
                )
                with contextlib.suppress(Exception):
                    await contained(close())
        finally:
            self._left_starting.discard(client)

    def _manages(self, owned: bool) -> bool:
        return owned if self._manage_clients is None else self._manage_clients

    def _new_producer(self) -> AIOKafkaProducer:
        options = {
            "max_batch_size": _DEFAULT_MAX_BATCH_SIZE,
            "linger_ms": 0,
            "acks": "all",
            "request_timeout_ms": self._request_timeout_ms(),
            **self._options,
            "enable_idempotence": self._idempotence,
        }
        return AIOKafkaProducer(bootstrap_servers=self._bootstrap_servers, **options)

    def _request_timeout_ms(self) -> int:
        """aiokafka's default, or longer: the delivery timeout and a second,
        so that the event's deadline, not the request's, ends the wait."""
        if self._delivery_timeout is None:
            return _DEFAULT_REQUEST_TIMEOUT_MS
        wanted = int((self._delivery_timeout + 1.0) * 1000)
        return max(_DEFAULT_REQUEST_TIMEOUT_MS, wanted)

    def _new_admin(self) -> AIOKafkaAdminClient:
        options = {k: v for k, v in self._options.items() if k in _ADMIN_OPTIONS}
        return AIOKafkaAdminClient(bootstrap_servers=self._bootstrap_servers, **options)

    async def _start_producer(self) -> None:
        if self._given_producer is not None:
            self._producer = self._given_producer
            if self._manages(False):
                await self._start_client(self._producer, owned=False)
            return
        if not self._manages(True):
            self._producer = self._new_producer()
            return
        try:
            await self._start_own_producer()
        except BrokerResponseError as exc:
            # The broker answered (bootstrap worked), but refused to give
            # the producer an id: it does not support idempotence.
            if not self._idempotence:
                raise
            if self._requested_idempotence:
                raise IdempotenceUnsupportedError(type(exc).__name__) from exc
            await self._stop_owned_producer()
            self._idempotence = False
            if self._logger is not None:
                self._logger.warning(
                    "The Kafka broker refuses idempotent producers; continuing"
                    " with acks=all without idempotence (set"
                    " enable_idempotence / METRICS_ENABLE_IDEMPOTENCE to choose"
                    " explicitly)",
                    broker_answer=f"InitProducerId: {type(exc).__name__}",
                    bootstrap_servers=self.target,
                )
            await self._start_own_producer()

    async def _start_own_producer(self) -> None:
        """Start a producer made here: the pipeline, or aiokafka's producer
        where the broker is too old for the pipeline's requests (from then
        on, for this transport)."""
        try:
            await self._start_client(self._new_own_producer(), owned=True)
        except PipelineUnsupportedError as exc:
            await self._stop_owned_producer()
            self._pipeline_unsupported = True
            if self._logger is not None:
                self._logger.warning(
                    "The Kafka broker is too old for this aiokafka to send"
                    " through the manager's produce pipeline; events go"
                    " through aiokafka's producer, one batch per partition at"
                    " a time",
                    reason=str(exc),
                    bootstrap_servers=self.target,
                )
            await self._start_client(self._new_own_producer(), owned=True)

    def _new_own_producer(self) -> AIOKafkaProducer | ProducePipeline:
        """A producer of ours: the pipeline where it takes every option
        given (`pipeline_takes`), else aiokafka's producer."""
        if self.uses_pipeline:
            self._pipeline = self._new_pipeline()
            return self._pipeline
        self._producer = self._new_producer()
        return self._producer

    def _new_pipeline(self) -> ProducePipeline:
        options = self._options
        request_timeout_ms = int(
            options.get("request_timeout_ms", self._request_timeout_ms())
        )
        client = AIOKafkaClient(
            bootstrap_servers=self._bootstrap_servers,
            request_timeout_ms=request_timeout_ms,
            **{k: v for k, v in options.items() if k in _PIPELINE_CLIENT_OPTIONS},
        )
        return ProducePipeline(
            client,
            idempotent=self._idempotence,
            acks=_ACKS[options.get("acks", "all")],
            request_timeout_ms=request_timeout_ms,
            retry_backoff=int(options.get("retry_backoff_ms", 100)) / 1000,
            max_batch_size=int(options.get("max_batch_size", _DEFAULT_MAX_BATCH_SIZE)),
            max_request_size=int(
                options.get("max_request_size", DEFAULT_MAX_REQUEST_SIZE)
            ),
        )

    async def _stop_owned_producer(self) -> None:
        producer, self._producer = self._producer, None
        pipeline, self._pipeline = self._pipeline, None
        # One whose start is still running is closed when it ends.
        if (
            producer is not None
            and self._owns_producer
            and producer not in self._left_starting
        ):
            with contextlib.suppress(Exception):
                await contained(producer.stop())
        if pipeline is not None and pipeline not in self._left_starting:
            with contextlib.suppress(Exception):
                await pipeline.close()

    async def _discard_clients(self) -> None:
        await self._stop_owned_producer()
        if self._admin is not None and self._owns_admin:
            if self._admin not in self._left_starting:
                with contextlib.suppress(Exception):
                    await contained(self._admin.close())
            self._admin = None
        if self._broker is not None and self._manage_broker:
            with contextlib.suppress(Exception):
                await contained(stop_broker(self._broker))

    async def stop(self, timeout: float, *, abandoned: bool) -> None:
        """Stop the clients this transport manages within about ``timeout``
        seconds (see `stop_producer`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        producer, self._producer = self._producer, None
        pipeline, self._pipeline = self._pipeline, None
        admin = self._admin
        if self._owns_admin:
            self._admin = None
        try:
            if producer is not None and self._manages(self._owns_producer):
                await stop_producer(producer, timeout, abandoned=abandoned)
            if pipeline is not None:
                await pipeline.stop(timeout, abandoned=abandoned)
        finally:
            # Also when the stop is cancelled: nothing this transport made
            # stays open.
            await self._close_the_rest(admin, deadline)

    async def _close_the_rest(self, admin: Any, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if admin is not None and self._manages(self._owns_admin):
            with contextlib.suppress(TimeoutError, Exception):
                async with asyncio.timeout(max(deadline - loop.time(), 0.05)):
                    await contained(admin.close())
        if self._broker is not None and self._manage_broker:
            with contextlib.suppress(TimeoutError, Exception):
                async with asyncio.timeout(max(deadline - loop.time(), 0.05)):
                    await contained(stop_broker(self._broker))
        closing = set(self._closing_after_start)
        if closing:
            # Clients whose start a cancellation left running: closed once
            # it ends, unless the time runs out first.
            _, late = await asyncio.wait(
                closing, timeout=max(deadline - loop.time(), 0.0)
            )
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # Sending --------------------------------------------------------------------

    def new_batch(self) -> RecordBatch:
        """Start an empty batch (``max_batch_size`` of the producer)."""
        if self._pipeline is not None:
            return self._pipeline.new_batch()
        producer = self._started()
        builder = producer.create_batch()
        return AiokafkaBatch(builder, direct=direct_for(producer, builder))

    async def send(
        self, batch: Any, topic: str, partition: int, done: SendDone
    ) -> None:
        """Hand a batch to the producer; ``done`` hears its offset or error."""
        pipeline = self._pipeline
        if pipeline is not None and isinstance(batch, Records):
            pipeline.send(batch, topic, partition, done)
            return
        producer = self._started()
        builder = batch.finish()
        shielded = await producer.send_batch(builder, topic, partition=partition)
        watch_batch(producer, topic, partition, builder, shielded, done)

    async def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Send one record and wait for its acknowledgement."""
        if self._pipeline is not None:
            await self._pipeline.produce(topic, key, value)
            return
        await self._started().send_and_wait(topic, value=value, key=key)

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BrokerUnavailableError(f"not connected to Kafka at {self.target}")
        return self._producer

    async def describe_topic(self, topic: str) -> TopicInfo:
        """The topic's partitions, or the broker's error code for it."""
        admin = self._admin
        if admin is None or (self._producer is None and self._pipeline is None):
            raise BrokerUnavailableError(f"not connected to Kafka at {self.target}")
        try:
            described = await admin.describe_topics([topic])
        except KafkaError as exc:
            if is_connection_error(exc) or exc.retriable:
                raise BrokerUnavailableError(describe_kafka_error(exc)) from exc
            return TopicInfo(
                (), getattr(exc, "errno", -1), type(exc).__name__, retriable=False
            )
        except OSError as exc:
            raise BrokerUnavailableError(describe_kafka_error(exc)) from exc
        for entry in described:
            if entry.get("topic") != topic:
                continue
            code = int(entry.get("error_code", 0))
            partitions = tuple(
                sorted(int(p["partition"]) for p in entry.get("partitions") or ())
            )
            if code == 0:
                return TopicInfo(partitions)
            error_class = for_code(code)
            return TopicInfo(
                (),
                code,
                str(getattr(error_class, "message", error_class.__name__)),
                retriable=bool(getattr(error_class, "retriable", False)),
            )
        return TopicInfo((), 3, "UNKNOWN_TOPIC_OR_PARTITION")

    def classify(self, error: BaseException) -> SendFailure:
        """See `classify`."""
        return classify(error, idempotent=self.idempotent)
