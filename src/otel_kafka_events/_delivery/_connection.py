"""The Kafka clients of an event manager: connecting, reconnecting, replacing.

`KafkaConnection` owns the producer and the admin client. It connects once
in the foreground (`connect`), keeps trying in the background after a
failure, replaces a producer that can no longer send, and decides, the
first time, whether the broker accepts an idempotent producer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import BrokerResponseError, KafkaError
from structlog.stdlib import BoundLogger

from ..errors import BrokerUnavailableError, IdempotenceUnsupportedError
from ._aiokafka import AiokafkaTransport, is_connection_error, stop_producer
from ._backoff import Backoff
from ._ratelimit import RateLimitedLog

__all__ = ["KafkaConnection", "describe_kafka_error"]

# Large batches let one round trip carry many events; aiokafka's 16 KiB
# default caps a batch at about 150 small events.
_DEFAULT_MAX_BATCH_SIZE = 512 * 1024

_ADMIN_OPTIONS = (
    "security_protocol",
    "ssl_context",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
    "client_id",
    "request_timeout_ms",
)


def describe_kafka_error(error: BaseException) -> str:
    """Say what went wrong talking to Kafka, without calling a broker that
    answered "unreachable"."""
    kind = "unreachable" if is_connection_error(error) else "refused the request"
    return f"Kafka {kind}: {type(error).__name__}: {error}"


class KafkaConnection:
    """Starts, restarts and stops the producer and admin client.

    Parameters
    ----------
    bootstrap_servers
        Where to connect, for clients this object creates.
    producer
        A ready-made producer instead of one created here.
    admin_client
        A ready-made admin client instead of one created here.
    kafka_options
        Extra keyword arguments for the clients created here.
    enable_idempotence
        True: require the idempotent producer; False: never use it; None:
        use it unless the broker refuses it, then warn once and go on
        without it (``acks="all"`` still).
    manage_clients
        Start and stop the clients (None: only those created here).
    retry_backoff
        First delay between connection attempts.
    logger
        For connection messages.
    on_connected
        Called each time the clients are ready.
    max_backoff
        Longest delay between connection attempts.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str | list[str] | None,
        producer: AIOKafkaProducer | None,
        admin_client: AIOKafkaAdminClient | None,
        kafka_options: Mapping[str, Any],
        enable_idempotence: bool | None,
        manage_clients: bool | None,
        retry_backoff: float,
        logger: BoundLogger,
        on_connected: Callable[[], None],
        max_backoff: float = 5.0,
    ) -> None:
        self._max_backoff = max_backoff
        self._bootstrap_servers = bootstrap_servers
        self._options = dict(kafka_options)
        self._requested_idempotence = enable_idempotence
        self._idempotence = enable_idempotence is not False
        self._owns_producer = producer is None
        self._owns_admin = admin_client is None
        self._manage_clients = manage_clients
        self._producer = producer
        self._admin = admin_client
        self._retry_backoff = retry_backoff
        self._logger = logger
        self._log = RateLimitedLog(logger, 10.0)
        self._on_connected = on_connected
        self._transport: AiokafkaTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    # State --------------------------------------------------------------------

    @property
    def transport(self) -> AiokafkaTransport | None:
        """The transport over the started producer; None while not connected."""
        return self._transport

    @property
    def admin(self) -> AIOKafkaAdminClient | None:
        """The admin client, once connected."""
        return self._admin if self._transport is not None else None

    @property
    def idempotent(self) -> bool:
        """Whether the producer is (or will be) idempotent."""
        return self._idempotence

    @property
    def target(self) -> str:
        """The bootstrap servers, for messages."""
        return str(self._bootstrap_servers)

    # Connecting ---------------------------------------------------------------

    async def connect(self) -> None:
        """Start the clients once.

        Raises
        ------
        BrokerUnavailableError
            If Kafka cannot be reached or refuses the clients.
        IdempotenceUnsupportedError
            If ``enable_idempotence=True`` and the broker refuses it.
        """
        try:
            await self._start_clients()
        except IdempotenceUnsupportedError:
            raise
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailableError(
                f"Cannot connect to Kafka at {self.target}: {describe_kafka_error(exc)}"
            ) from exc
        self._transport = AiokafkaTransport(
            self._producer_or_fail(),
            # A producer passed in is taken as not idempotent: the safe guess.
            idempotent=self._idempotence and self._owns_producer,
        )
        self._on_connected()

    def connect_in_background(self) -> None:
        """Keep trying to connect until it works or `close` is called."""
        self._spawn(self._reconnect())

    def replace(self, transport: object) -> None:
        """Swap a producer aiokafka can no longer use for a new one.

        E.g. after OutOfOrderSequenceNumber from a broker that lost the
        idempotent producer's state in a crash, aiokafka's sender stops and
        the producer refuses every later batch. Only a producer created and
        managed here is replaced.
        """
        current = self._transport
        if (
            current is None
            or transport is not current
            or self._stopping
            or not self._owns_producer
            or not self._manages(True)
        ):
            return
        old = current.producer
        self._transport = None
        self._producer = None
        self._log.error("producer", "Kafka producer unusable, starting a new one")
        self._spawn(self._restart(old))

    async def _restart(self, old: AIOKafkaProducer) -> None:
        # Its batches were requeued for the new producer: give them up here.
        await stop_producer(old, 0.0, abandoned=True)
        await self._reconnect()

    async def _reconnect(self) -> None:
        backoff = Backoff(self._retry_backoff, self._max_backoff)
        while not self._stopping and self._transport is None:
            await asyncio.sleep(backoff.next())
            try:
                await self.connect()
            except IdempotenceUnsupportedError as exc:
                self._logger.error(
                    "Kafka connection given up: the broker refuses the idempotent"
                    " producer that enable_idempotence=True requires",
                    error=str(exc),
                )
                return
            except BrokerUnavailableError as exc:
                self._log.error(
                    "connect", "Still cannot connect to Kafka", error=str(exc)
                )
            else:
                self._logger.info("Connected to Kafka", bootstrap_servers=self.target)

    def _manages(self, owned: bool) -> bool:
        return owned if self._manage_clients is None else self._manage_clients

    def _producer_or_fail(self) -> AIOKafkaProducer:
        assert self._producer is not None
        return self._producer

    def _new_producer(self) -> AIOKafkaProducer:
        options = {
            "max_batch_size": _DEFAULT_MAX_BATCH_SIZE,
            "linger_ms": 0,
            "acks": "all",
            **self._options,
            "enable_idempotence": self._idempotence,
        }
        return AIOKafkaProducer(bootstrap_servers=self._bootstrap_servers, **options)

    def _new_admin(self) -> AIOKafkaAdminClient:
        options = {k: v for k, v in self._options.items() if k in _ADMIN_OPTIONS}
        return AIOKafkaAdminClient(bootstrap_servers=self._bootstrap_servers, **options)

    async def _start_clients(self) -> None:
        try:
            await self._start_producer()
            if self._admin is None:
                self._admin = self._new_admin()
            if self._manages(self._owns_admin):
                await self._admin.start()
        except BaseException:
            await self._discard_clients()
            raise

    async def _start_producer(self) -> None:
        if self._producer is None:
            self._producer = self._new_producer()
        if not self._manages(self._owns_producer):
            return
        try:
            await self._producer.start()
        except BrokerResponseError as exc:
            # The broker answered (bootstrap worked), but refused to give
            # the producer an id: it does not support idempotence.
            if not (self._owns_producer and self._idempotence):
                raise
            if self._requested_idempotence:
                raise IdempotenceUnsupportedError(type(exc).__name__) from exc
            await self._stop_producer()
            self._idempotence = False
            self._logger.warning(
                "The Kafka broker refuses idempotent producers; continuing with"
                " acks=all without idempotence (set enable_idempotence /"
                " METRICS_ENABLE_IDEMPOTENCE to choose explicitly)",
                broker_answer=f"InitProducerId: {type(exc).__name__}",
                bootstrap_servers=self.target,
            )
            self._producer = self._new_producer()
            await self._producer.start()

    async def _stop_producer(self) -> None:
        if self._producer is not None and self._owns_producer:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None

    async def _discard_clients(self) -> None:
        await self._stop_producer()
        if self._admin is not None and self._owns_admin:
            with contextlib.suppress(Exception):
                await self._admin.close()
            self._admin = None

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Closing ------------------------------------------------------------------

    async def close(self, timeout: float, *, abandoned: bool) -> None:
        """Stop reconnecting and stop the clients this object manages.

        Parameters
        ----------
        timeout
            Seconds the clients get to stop.
        abandoned
            Whether batches were given up that the producer may still hold:
            they are failed first, or stopping would wait for them.
        """
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._transport = None
        producer, admin = self._producer, self._admin
        self._producer = self._admin = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.1)
        if producer is not None and self._manages(self._owns_producer):
            await stop_producer(producer, timeout, abandoned=abandoned)
        if admin is not None and self._manages(self._owns_admin):
            with contextlib.suppress(TimeoutError, Exception):
                async with asyncio.timeout(max(deadline - loop.time(), 0.1)):
                    await admin.close()
