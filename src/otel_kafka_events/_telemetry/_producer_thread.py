"""An aiokafka producer on an event loop of its own, in a thread of its own.

The OTLP-on-Kafka exporter is called on the SDK's export thread, and the
direct log path hands it work from the application's event loop; neither
may depend on the other's loop. `ProducerThread` owns a private loop in a
daemon thread, started on first use, and is driven from any thread through
`concurrent.futures.Future` objects, so a caller can wait with a timeout
and give up without leaving anything blocked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

__all__ = ["Message", "ProducerThread"]

T = TypeVar("T")

Message = tuple[bytes | None, bytes]
"""A Kafka record to produce: key (or None) and value."""

_PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 0,
    "max_batch_size": 512 * 1024,
    # Duplicates from a retry are harmless for log records, and brokers
    # without idempotent producers (Tansu) are served the same way.
    "enable_idempotence": False,
}


class ProducerThread:
    """Produces records to one topic from any thread.

    Parameters
    ----------
    bootstrap_servers
        Kafka bootstrap servers.
    topic
        The topic every record goes to.
    kafka_options
        Extra keyword arguments for ``AIOKafkaProducer`` (security protocol,
        SASL, SSL context...), as the event manager takes them.
    timeout
        Seconds one `send` may take, connecting included; also aiokafka's
        ``request_timeout_ms`` unless ``kafka_options`` says otherwise.
    encode
        Applied to each value in the producer's thread before it is sent
        (e.g. OTLP/JSON from protobuf), keeping that work off the caller.
    name
        The thread's name.
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        topic: str,
        kafka_options: Mapping[str, Any] | None = None,
        *,
        timeout: float = 10.0,
        encode: Callable[[bytes], bytes] | None = None,
        name: str = "otel-kafka-events-otlp",
    ) -> None:
        self.topic = topic
        self.timeout = timeout
        self._encode = encode
        self._options = {
            **_PRODUCER_DEFAULTS,
            "request_timeout_ms": max(int(timeout * 1000), 1),
            **dict(kafka_options or {}),
        }
        self._bootstrap_servers = bootstrap_servers
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._producer: AIOKafkaProducer | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def send(self, messages: Sequence[Message]) -> concurrent.futures.Future[None]:
        """Produce ``messages``; the future completes once Kafka acknowledged
        all of them, or with the first error, or with TimeoutError after
        ``timeout`` seconds.

        Cancelling the future stops waiting; records already handed to
        aiokafka may still be delivered.

        Raises
        ------
        RuntimeError
            If `close` was called.
        """
        return self._submit(self._send(list(messages)))

    def close(self, timeout: float) -> None:
        """Stop the producer and the thread, within ``timeout`` seconds.

        Records still unacknowledged at the deadline are abandoned. Safe to
        call more than once and from any thread but the producer's own.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        stopped = asyncio.run_coroutine_threadsafe(self._stop(timeout), loop)
        with contextlib.suppress(Exception):
            stopped.result(timeout + 0.5)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(max(timeout, 0.5))

    # Internals --------------------------------------------------------------

    def _submit(
        self, coroutine: Coroutine[Any, Any, T]
    ) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._closed:
                coroutine.close()
                raise RuntimeError("the OTLP Kafka producer was closed")
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._run, args=(loop,), name=self._name, daemon=True
                )
                self._thread.start()
        return asyncio.run_coroutine_threadsafe(coroutine, loop)

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # Whatever is left (a send abandoned at close) is cancelled, so
            # that closing the loop does not warn about pending tasks.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(
                    asyncio.gather(*pending, return_exceptions=True)
                )
            loop.close()

    async def _started(self) -> AIOKafkaProducer:
        producer = self._producer
        if producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap_servers, **self._options
            )
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        return producer

    async def _send(self, messages: list[Message]) -> None:
        async with asyncio.timeout(self.timeout):
            await self._produce(messages)

    async def _produce(self, messages: list[Message]) -> None:
        producer = await self._started()
        if self._encode is not None:
            encode = self._encode
            messages = [(key, encode(value)) for key, value in messages]
        acks = [
            await producer.send(self.topic, value=value, key=key)
            for key, value in messages
        ]
        if acks:
            await asyncio.gather(*acks)

    async def _stop(self, timeout: float) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            async with asyncio.timeout(max(timeout, 0.1)):
                await producer.stop()
        except (TimeoutError, Exception):
            # Abandon what aiokafka still holds rather than wait for it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.client.close(), 0.5)
