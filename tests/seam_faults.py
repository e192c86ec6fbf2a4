"""The seam fault injector: make any call into code we do not own fail.

`SeamFaults` holds the faults in force, by call site. The wrappers here ask
it at each call they make on the library's behalf:

- the schema registry: `FaultyRegistry` (any `SchemaRegistry`), or below
  python-schema-registry-client, `FaultyHttpTransport` (httpx);
- the transport: `FaultyTransport` (any `Transport`), or aiokafka's own
  producer and admin client (`patch_aiokafka`);
- OpenTelemetry: `FaultySpanProcessor`, `FaultyLogProcessor` and
  `FaultyMeterProvider`;
- the application's ``on_delivery_error`` (`SeamRun` makes it).

A fault makes the call raise one kind of exception (`Exception`,
``CancelledError``, ``KeyboardInterrupt``, ``SystemExit``, a bare
``BaseException``), hang (an awaited call until the fault is cleared; a
synchronous one is only slow, since nothing could bound a call that holds
the event loop's thread), or return garbage.

`SeamRun` drives a `KafkaEventManager` through a sequence of `Step` objects
drawn by hypothesis (`plans`): faults on and off, publishes with and without
``wait``, sleeps, closes and starting anew. After every step it checks what
the manager promises:

- the counters add up (``published == delivered + failed + dropped +
  buffered``) and no event is settled twice;
- ``publish(wait=True)`` tells the truth: it returns only for an event the
  transport really wrote where the manager says, and raises
  `EventDeliveryError` for one that was not delivered; an event reported
  failed for time, refused or dropped is not on the topic;
- nothing hangs past its bound: ``wait=True`` within ``delivery_timeout`` +
  1 s (+ the block policy's wait), ``aclose(timeout=t)`` within ``t`` +
  0.1 s, ``initialize`` and ``create_publisher`` within the foreground limit
  + 0.1 s;
- only the library's own errors reach the caller.

At the end every fault is cleared, the manager must deliver again, and once
it is closed every accepted event was settled exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import strategies as st
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import SpanProcessor

from otel_kafka_events import DeliveryFailure, EventPayload, KafkaEventManager
from otel_kafka_events._delivery._ledger import Settled, Settlement
from otel_kafka_events._delivery._listeners import DeliveryListener
from otel_kafka_events._delivery._transport import (
    RecordBatch,
    SendDone,
    SendFailure,
    TopicInfo,
    Transport,
)
from otel_kafka_events._encoding._registry import SchemaRegistry
from otel_kafka_events.errors import EventDeliveryError, EventManagerError

__all__ = [
    "Fault",
    "FaultyHttpTransport",
    "FaultyLogProcessor",
    "FaultyMeterProvider",
    "FaultyRegistry",
    "FaultySpanProcessor",
    "FaultyTransport",
    "SeamFaults",
    "SeamRun",
    "patch_aiokafka",
    "plans",
]


class Fault(enum.Enum):
    """What an injected fault makes a call do."""

    ERROR = "Exception"
    CANCELLED = "CancelledError"
    INTERRUPT = "KeyboardInterrupt"
    EXIT = "SystemExit"
    BASE = "BaseException"
    HANG = "hang"
    GARBAGE = "garbage"


RAISES: dict[Fault, type[BaseException]] = {
    Fault.ERROR: RuntimeError,
    Fault.CANCELLED: asyncio.CancelledError,
    Fault.INTERRUPT: KeyboardInterrupt,
    Fault.EXIT: SystemExit,
    Fault.BASE: BaseException,
}
"""The exception each raising fault raises."""

EVERY_FAULT = frozenset(Fault)
RAISING = frozenset(RAISES)


class SeamFaults:
    """The faults in force, by call site, and what each site met.

    Attributes
    ----------
    met
        How often each (site, fault) was met.
    """

    def __init__(self) -> None:
        self._faults: dict[str, Fault] = {}
        self._released: dict[str, asyncio.Event] = {}
        self._garbage = itertools.count()
        self.met: Counter[tuple[str, Fault]] = Counter()

    def inject(self, site: str, fault: Fault) -> None:
        """Make every later call at ``site`` meet ``fault``."""
        self.clear(site)
        self._faults[site] = fault

    def clear(self, site: str | None = None) -> None:
        """End the fault at ``site`` (every site when None); calls hanging
        there go on."""
        for name in list(self._faults) if site is None else [site]:
            self._faults.pop(name, None)
            released = self._released.pop(name, None)
            if released is not None:
                released.set()

    def fault(self, site: str) -> Fault | None:
        """The fault at ``site`` now (counted as met), without acting on it."""
        fault = self._faults.get(site)
        if fault is not None:
            self.met[(site, fault)] += 1
        return fault

    def error(self, site: str, fault: Fault) -> BaseException:
        """The exception a raising ``fault`` raises at ``site``."""
        return RAISES[fault](f"{site}: injected {fault.value}")

    def sync(self, site: str) -> bool:
        """A synchronous call at ``site``: raise, or be slow, as injected.

        Returns whether garbage is wanted instead of the result.
        """
        fault = self.fault(site)
        if fault in RAISES:
            assert fault is not None
            raise self.error(site, fault)
        if fault is Fault.HANG:
            time.sleep(0.001)
        return fault is Fault.GARBAGE

    async def call(self, site: str) -> bool:
        """An awaited call at ``site``: raise, or hang until the fault is
        cleared, as injected.

        Returns whether garbage is wanted instead of the result.
        """
        fault = self.fault(site)
        if fault in RAISES:
            assert fault is not None
            raise self.error(site, fault)
        if fault is Fault.HANG:
            released = self._released.setdefault(site, asyncio.Event())
            await released.wait()
        return fault is Fault.GARBAGE

    def garbage(self, choices: Sequence[Any]) -> Any:
        """One of ``choices``, in turn."""
        return choices[next(self._garbage) % len(choices)]


# --- The schema registry ------------------------------------------------------


class FaultyRegistry:
    """A `SchemaRegistry` whose every call meets the faults of ``"registry"``.

    Parameters
    ----------
    inner
        The registry that answers when no fault is in force.
    faults
        The faults.
    """

    site = "registry"

    def __init__(self, inner: SchemaRegistry, faults: SeamFaults) -> None:
        self._inner = inner
        self._faults = faults

    @property
    def url(self) -> str:
        return self._inner.url

    async def register(self, subject: str, avro_schema: dict[str, Any]) -> int:
        garbage = await self._faults.call(self.site)
        schema_id = await self._inner.register(subject, avro_schema)
        if garbage:
            found: int = self._faults.garbage(["7", None, -1, True, 2**40, 7.5])
            return found
        return schema_id

    async def set_compatibility(self, subject: str, level: str) -> None:
        await self._faults.call(self.site)
        await self._inner.set_compatibility(subject, level)

    async def compatibility_problems(
        self, subject: str, avro_schema: dict[str, Any]
    ) -> list[str]:
        garbage = await self._faults.call(self.site)
        problems = await self._inner.compatibility_problems(subject, avro_schema)
        return self._faults.garbage([42, None, [object()]]) if garbage else problems

    async def latest_schema(self, subject: str) -> dict[str, Any] | None:
        garbage = await self._faults.call(self.site)
        found = await self._inner.latest_schema(subject)
        return self._faults.garbage(["{", 3, []]) if garbage else found

    async def schema_by_id(self, schema_id: int) -> dict[str, Any] | None:
        garbage = await self._faults.call(self.site)
        found = await self._inner.schema_by_id(schema_id)
        return self._faults.garbage(["{", 3, []]) if garbage else found


_GARBAGE_RESPONSES = (
    (502, "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    (503, "text/html", b"<html><body>Service Temporarily Unavailable</body></html>"),
    (200, "application/json", b'{"id": '),
    (200, "application/json", b"[1, 2, 3]"),
    (200, "application/json", b'{"id": "seven"}'),
    (200, "text/plain", b""),
    (404, "application/json", b'{"error_code": "x"}'),
)


class FaultyHttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport before the registry client's requests: each
    request meets the faults of ``"registry.http"`` (garbage: an ingress's
    HTML error page, truncated or odd JSON, an empty body).

    Parameters
    ----------
    faults
        The faults.
    inner
        Sends the requests that meet no fault.
    """

    site = "registry.http"

    def __init__(
        self, faults: SeamFaults, inner: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._faults = faults
        self._inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if await self._faults.call(self.site):
            status, kind, body = self._faults.garbage(_GARBAGE_RESPONSES)
            return httpx.Response(
                status, headers={"content-type": kind}, content=body, request=request
            )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


# --- The transport --------------------------------------------------------------


class FaultyBatch:
    """A record batch whose ``append`` meets the faults of
    ``"transport.append"`` (garbage: an answer that is not a bool, with
    nothing appended)."""

    def __init__(self, inner: RecordBatch, faults: SeamFaults) -> None:
        self.inner = inner
        self._faults = faults

    def append(
        self,
        key: bytes | None,
        value: bytearray,
        timestamp_ms: int,
        headers: list[tuple[str, bytes]],
    ) -> bool:
        if self._faults.sync("transport.append"):
            answer: bool = self._faults.garbage(["yes", None, 1])
            return answer
        return self.inner.append(key, value, timestamp_ms, headers)


class FaultyTransport:
    """A `Transport` whose calls meet the faults of ``"transport.<call>"``.

    ``"transport.answer"`` is how a send ends: a raising fault answers with
    that exception and writes nothing; a hang writes the batch and never
    answers; garbage writes the batch and answers nonsense (an offset that
    is no offset, an error that is no exception, or twice).

    Parameters
    ----------
    inner
        The transport that does the work.
    faults
        The faults.
    """

    def __init__(self, inner: Transport, faults: SeamFaults) -> None:
        self.inner = inner
        self._faults = faults

    @property
    def target(self) -> str:
        return self.inner.target

    @property
    def max_request_size(self) -> int:
        return self.inner.max_request_size

    @property
    def idempotent(self) -> bool:
        return self.inner.idempotent

    @property
    def max_in_flight(self) -> int:
        return getattr(self.inner, "max_in_flight", 1)

    async def start(self) -> None:
        await self._faults.call("transport.start")
        await self.inner.start()

    async def stop(self, timeout: float, *, abandoned: bool) -> None:
        await self._faults.call("transport.stop")
        await self.inner.stop(timeout, abandoned=abandoned)

    def new_batch(self) -> RecordBatch:
        if self._faults.sync("transport.new_batch"):
            nothing: RecordBatch = self._faults.garbage([None, object()])
            return nothing
        return FaultyBatch(self.inner.new_batch(), self._faults)

    async def send(
        self, batch: RecordBatch, topic: str, partition: int, done: SendDone
    ) -> None:
        await self._faults.call("transport.send")
        assert isinstance(batch, FaultyBatch)
        answer = self._faults.fault("transport.answer")
        if answer in RAISES:
            assert answer is not None
            error = self._faults.error("transport.answer", answer)
            asyncio.get_running_loop().call_soon(done, None, error)
            return
        if answer is Fault.HANG:
            await self.inner.send(batch.inner, topic, partition, _ignore)
            return
        if answer is Fault.GARBAGE:
            done = self._garbled(done)
        await self.inner.send(batch.inner, topic, partition, done)

    def _garbled(self, done: SendDone) -> SendDone:
        variant = self._faults.garbage(["none", "text", "negative", "error", "twice"])

        def answer(offset: int | None, error: BaseException | None) -> None:
            given: Any
            if variant == "none":
                done(None, None)
            elif variant == "text":
                given = "seven"
                done(given, None)
            elif variant == "negative":
                done(-5, None)
            elif variant == "error":
                given = "no exception"
                done(None, given)
            else:
                done(offset, error)
                done(None, RuntimeError("answered twice"))

        return answer

    async def describe_topic(self, topic: str) -> TopicInfo:
        garbage = await self._faults.call("transport.describe_topic")
        info = await self.inner.describe_topic(topic)
        if garbage:
            found: TopicInfo = self._faults.garbage(
                ["topic", TopicInfo(("a",)), TopicInfo((-1,)), TopicInfo((True,))]  # type: ignore[arg-type]
            )
            return found
        return info

    async def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        await self._faults.call("transport.produce")
        await self.inner.produce(topic, key, value)

    def classify(self, error: BaseException) -> SendFailure:
        if self._faults.sync("transport.classify"):
            found: SendFailure = self._faults.garbage(["retry", None])
            return found
        return self.inner.classify(error)


def _ignore(offset: int | None, error: BaseException | None) -> None:
    """An answer nobody hears (a send that hangs)."""


TRANSPORT_SITES: dict[str, frozenset[Fault]] = {
    "transport.start": RAISING | {Fault.HANG},
    "transport.stop": RAISING | {Fault.HANG},
    "transport.new_batch": EVERY_FAULT,
    "transport.append": EVERY_FAULT,
    "transport.send": RAISING | {Fault.HANG},
    "transport.answer": EVERY_FAULT,
    "transport.describe_topic": EVERY_FAULT,
    "transport.produce": RAISING | {Fault.HANG},
    "transport.classify": EVERY_FAULT,
}


def patch_aiokafka(monkeypatch: pytest.MonkeyPatch, faults: SeamFaults) -> None:
    """Make aiokafka's producer and admin client meet the faults of
    ``"aiokafka.<call>"`` (``start``, ``stop``, ``create_batch``,
    ``send_batch``, ``answer``, ``describe_topics``)."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    start = AIOKafkaProducer.start
    stop = AIOKafkaProducer.stop
    create_batch = AIOKafkaProducer.create_batch
    send_batch = AIOKafkaProducer.send_batch
    admin_start = AIOKafkaAdminClient.start
    describe = AIOKafkaAdminClient.describe_topics

    async def faulty_start(self: Any) -> None:
        await faults.call("aiokafka.start")
        await start(self)

    async def faulty_admin_start(self: Any) -> None:
        await faults.call("aiokafka.start")
        await admin_start(self)

    async def faulty_stop(self: Any) -> None:
        # aiokafka's stop marks the producer closed first thing; a stop that
        # fails or hangs does so after that: the real one runs regardless.
        stopping = asyncio.ensure_future(stop(self))
        stopping.add_done_callback(_read)
        await faults.call("aiokafka.stop")
        await stopping

    def faulty_create_batch(self: Any, *args: Any, **kwargs: Any) -> Any:
        if faults.sync("aiokafka.create_batch"):
            return None
        return create_batch(self, *args, **kwargs)

    async def faulty_send_batch(self: Any, *args: Any, **kwargs: Any) -> Any:
        await faults.call("aiokafka.send_batch")
        loop = asyncio.get_running_loop()
        answer = faults.fault("aiokafka.answer")
        if answer in RAISES:
            assert answer is not None
            failed: asyncio.Future[Any] = loop.create_future()
            failed.set_exception(faults.error("aiokafka.answer", answer))
            return failed
        future = await send_batch(self, *args, **kwargs)
        if answer is Fault.HANG:
            future.add_done_callback(_read)
            never: asyncio.Future[Any] = loop.create_future()
            return never
        if answer is Fault.GARBAGE:
            garbled: asyncio.Future[Any] = loop.create_future()
            result = faults.garbage([object(), None, _Metadata("seven")])

            def garble(done: asyncio.Future[Any]) -> None:
                _read(done)
                if not garbled.done():
                    garbled.set_result(result)

            future.add_done_callback(garble)
            return garbled
        return future

    async def faulty_describe(self: Any, *args: Any, **kwargs: Any) -> Any:
        garbage = await faults.call("aiokafka.describe_topics")
        found = await describe(self, *args, **kwargs)
        if garbage:
            return faults.garbage(
                ["topics", [{"topic": args[0][0], "error_code": "x"}], [None]]
            )
        return found

    _patch_pipeline(monkeypatch, faults)
    monkeypatch.setattr(AIOKafkaProducer, "start", faulty_start)
    monkeypatch.setattr(AIOKafkaProducer, "stop", faulty_stop)
    monkeypatch.setattr(AIOKafkaProducer, "create_batch", faulty_create_batch)
    monkeypatch.setattr(AIOKafkaProducer, "send_batch", faulty_send_batch)
    monkeypatch.setattr(AIOKafkaAdminClient, "start", faulty_admin_start)
    monkeypatch.setattr(AIOKafkaAdminClient, "describe_topics", faulty_describe)


def _patch_pipeline(monkeypatch: pytest.MonkeyPatch, faults: SeamFaults) -> None:
    """The same faults for the client of our own produce pipeline: its
    bootstrap and close (``start``, ``stop``), its produce requests
    (``send_batch`` before one leaves, ``answer`` once it is answered) and
    its record batches (``create_batch``)."""
    from aiokafka.client import AIOKafkaClient

    from otel_kafka_events._delivery import _aiokafka, _pipeline

    records = _pipeline.Records  # type: ignore[attr-defined]

    class FaultyClient(AIOKafkaClient):  # type: ignore[misc]
        async def bootstrap(self) -> None:
            await faults.call("aiokafka.start")
            await super().bootstrap()

        async def close(self) -> None:
            closing = asyncio.ensure_future(super().close())
            closing.add_done_callback(_read)
            await faults.call("aiokafka.stop")
            await closing

        async def send(self, node_id: Any, request: Any, **kwargs: Any) -> Any:
            if "ProduceRequest" not in type(request).__name__:
                return await super().send(node_id, request, **kwargs)
            await faults.call("aiokafka.send_batch")
            answer = faults.fault("aiokafka.answer")
            response = await super().send(node_id, request, **kwargs)
            if answer in RAISES:
                assert answer is not None
                raise faults.error("aiokafka.answer", answer)
            if answer is Fault.HANG:
                await asyncio.get_running_loop().create_future()
            if answer is Fault.GARBAGE:
                return faults.garbage([object(), None, _Metadata("seven")])
            return response

    def faulty_records(*args: Any, **kwargs: Any) -> Any:
        if faults.sync("aiokafka.create_batch"):
            return None
        return records(*args, **kwargs)

    monkeypatch.setattr(_aiokafka, "AIOKafkaClient", FaultyClient)
    monkeypatch.setattr(_pipeline, "Records", faulty_records)


@dataclass(frozen=True)
class _Metadata:
    offset: Any


def _read(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


AIOKAFKA_SITES: dict[str, frozenset[Fault]] = {
    "aiokafka.start": RAISING | {Fault.HANG},
    "aiokafka.stop": RAISING | {Fault.HANG},
    "aiokafka.create_batch": EVERY_FAULT,
    "aiokafka.send_batch": RAISING | {Fault.HANG},
    "aiokafka.answer": EVERY_FAULT,
    "aiokafka.describe_topics": EVERY_FAULT,
}


# --- OpenTelemetry --------------------------------------------------------------


class FaultySpanProcessor(SpanProcessor):
    """A span processor meeting the faults of ``"spans"`` at each call."""

    def __init__(self, faults: SeamFaults) -> None:
        self._faults = faults

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self._faults.sync("spans")

    def on_end(self, span: Any) -> None:
        self._faults.sync("spans")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class FaultyLogProcessor(LogRecordProcessor):
    """A log record processor meeting the faults of ``"logs"`` at each
    record."""

    def __init__(self, faults: SeamFaults) -> None:
        self._faults = faults

    def on_emit(self, log_record: Any) -> None:
        self._faults.sync("logs")

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class FaultyMeterProvider(MeterProvider):
    """A MeterProvider whose ``get_meter`` meets the faults of
    ``"metrics"`` (garbage: a meter that is no meter)."""

    def __init__(self, faults: SeamFaults) -> None:
        super().__init__()
        self._faults = faults

    def get_meter(self, *args: Any, **kwargs: Any) -> Any:
        if self._faults.sync("metrics"):
            return object()
        return super().get_meter(*args, **kwargs)


OTEL_SITES: dict[str, frozenset[Fault]] = {
    "spans": RAISING | {Fault.HANG},
    "logs": RAISING | {Fault.HANG},
    "callback": EVERY_FAULT,
}


# --- The steps ------------------------------------------------------------------


class Ping(EventPayload):
    """The events of a run."""

    n: int


KINDS = ("alpha", "beta")


@dataclass(frozen=True)
class Inject:
    site: str
    fault: Fault


@dataclass(frozen=True)
class Clear:
    site: str | None


@dataclass(frozen=True)
class Publish:
    kind: str
    count: int
    wait: bool


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Close:
    timeout: float


@dataclass(frozen=True)
class Restart:
    """Initialize again if closed (and make the publishers anew)."""


Step = Inject | Clear | Publish | Sleep | Close | Restart


def plans(
    sites: Mapping[str, frozenset[Fault]],
    *,
    max_sleep: float,
    max_close: float,
    max_episodes: int = 4,
) -> st.SearchStrategy[list[Step]]:
    """Sequences of steps over the fault ``sites`` (each with the faults it
    can meet): episodes of one or two faults injected, publishing and time
    passing under them, then the faults cleared, the manager closed (and
    maybe started anew), or the next episode piling on."""
    names = sorted(sites)
    inject = st.sampled_from(names).flatmap(
        lambda site: st.builds(
            Inject,
            st.just(site),
            st.sampled_from(sorted(sites[site], key=lambda f: f.value)),
        )
    )
    activity: st.SearchStrategy[Step] = st.one_of(
        st.builds(
            Publish,
            st.sampled_from(KINDS),
            st.integers(min_value=1, max_value=8),
            st.booleans(),
        ),
        st.builds(Sleep, st.floats(min_value=0.0, max_value=max_sleep)),
    )
    ending: st.SearchStrategy[list[Step]] = st.one_of(
        st.just([]),
        st.builds(
            lambda site: [Clear(site)], st.one_of(st.none(), st.sampled_from(names))
        ),
        st.builds(
            lambda timeout, again: [Close(timeout), *([Restart()] if again else [])],
            st.floats(min_value=0.02, max_value=max_close),
            st.booleans(),
        ),
    )
    episode = st.tuples(
        st.lists(inject, min_size=1, max_size=2),
        st.lists(activity, min_size=1, max_size=5),
        ending,
    ).map(lambda parts: [*parts[0], *parts[1], *parts[2]])
    return st.lists(episode, min_size=1, max_size=max_episodes).map(
        lambda episodes: [step for steps in episodes for step in steps]
    )


# --- The run ----------------------------------------------------------------------


@dataclass(frozen=True)
class Bounds:
    """The bounds a run holds the manager to.

    Attributes
    ----------
    delivery_timeout
        The manager's delivery timeout.
    block_timeout
        The block policy's longest wait for room.
    startup
        The foreground limit of ``initialize`` and ``create_publisher``.
    """

    delivery_timeout: float
    block_timeout: float
    startup: float

    @property
    def wait(self) -> float:
        """``wait=True``: delivery timeout + 1 s, after any wait for room."""
        return self.block_timeout + self.delivery_timeout + 1.0


@dataclass
class _Outcome:
    outcome: Settled
    value: bytes
    partition: int | None
    offset: int | None
    error: BaseException | None


class Recorder(DeliveryListener):
    """Hears every settlement of every session; notes events settled twice."""

    name = "seam recorder"

    def __init__(self) -> None:
        self.outcomes: dict[str, _Outcome] = {}
        self.twice: list[str] = []

    def settled(self, settlement: Settlement) -> None:
        for index, event in enumerate(settlement.events):
            if event.event_id in self.outcomes:
                self.twice.append(event.event_id)
            offset = (
                None
                if settlement.base_offset is None
                else settlement.base_offset + index
            )
            self.outcomes[event.event_id] = _Outcome(
                settlement.outcome,
                bytes(event.value),
                settlement.partition,
                offset,
                settlement.error,
            )


def listen(manager: KafkaEventManager, listener: DeliveryListener) -> None:
    """Add ``listener`` to every delivery session ``manager`` makes."""
    telemetry = manager._telemetry
    original = telemetry.for_session

    def with_listener(**kwargs: Any) -> Any:
        parts = original(**kwargs)
        parts.listeners.append(listener)
        return parts

    telemetry.for_session = with_listener  # type: ignore[method-assign]


# Outcomes whose events were never handed to the transport, or were refused:
# they must not be on the topic.
_NEVER_WRITTEN = frozenset(
    {Settled.DROPPED, Settled.TIMED_OUT_REGISTRY, Settled.TIMED_OUT_KAFKA}
)


@dataclass
class _Wait:
    task: asyncio.Task[Any]
    started: float
    checked: bool = False


class SeamRun:
    """Runs the steps of one plan against a manager and checks its promises.

    Parameters
    ----------
    faults
        The faults the steps turn on and off.
    make_manager
        Makes the (uninitialized) manager, given its failure callback.
    written
        The values of the records on the events topic, with their count
        (read at the end, or after each step when ``eager``).
    bounds
        The bounds to hold the manager to.
    eager
        Check the topic after every step (cheap in memory).
    exactly_once
        Whether a delivered event must be on the topic exactly once (else
        at least once: a producer without idempotence).
    """

    def __init__(
        self,
        faults: SeamFaults,
        make_manager: Callable[[Callable[[DeliveryFailure], None]], KafkaEventManager],
        written: Callable[[], Awaitable[Counter[bytes]]],
        bounds: Bounds,
        *,
        eager: bool,
        exactly_once: bool = True,
    ) -> None:
        self.faults = faults
        self._written = written
        self.bounds = bounds
        self._eager = eager
        self._exactly_once = exactly_once
        self.recorder = Recorder()
        self.accepted: set[str] = set()
        self.called_back: list[str] = []
        self.manager = make_manager(self._callback)
        listen(self.manager, self.recorder)
        self.publishers: dict[str, Any] = {}
        self._waits: list[_Wait] = []
        self._closed = False
        self.log: list[str] = []

    def _callback(self, failure: DeliveryFailure) -> None:
        self.called_back.append(failure.event_id)
        if self.faults.sync("callback"):
            return
        return

    # The steps -------------------------------------------------------------------

    async def start(self) -> None:
        """Initialize and make the publishers, each within its bound."""
        await self._bounded(
            "initialize", self.manager.initialize(), self.bounds.startup
        )
        await self._make_publishers()

    async def _make_publishers(self) -> None:
        for kind in KINDS:
            self.publishers[kind] = await self._bounded(
                f"create_publisher({kind})",
                self.manager.create_publisher(kind, Ping),
                self.bounds.startup,
            )

    async def _bounded(self, what: str, call: Awaitable[Any], bound: float) -> Any:
        started = time.monotonic()
        try:
            # A call that hangs fails the run rather than the test session.
            async with asyncio.timeout(bound + 2.0):
                result = await call
        except EventManagerError:
            raise
        except TimeoutError as exc:
            raise AssertionError(f"{what} still running after {bound + 2.0} s") from exc
        except BaseException as exc:
            raise AssertionError(f"{what} raised {exc!r}, not a library error") from exc
        elapsed = time.monotonic() - started
        assert elapsed <= bound + 0.1, f"{what} took {elapsed:.3f} s (bound {bound} s)"
        return result

    async def step(self, step: Step) -> None:
        """Run one step, then check the promises."""
        self.log.append(repr(step))
        if isinstance(step, Inject):
            self.faults.inject(step.site, step.fault)
        elif isinstance(step, Clear):
            self.faults.clear(step.site)
        elif isinstance(step, Publish):
            await self._publish(step)
        elif isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
        elif isinstance(step, Close):
            await self._close(step.timeout)
        elif isinstance(step, Restart) and self._closed:
            await self._restart()
        await self.check()

    async def _publish(self, step: Publish) -> None:
        publisher = self.publishers.get(step.kind)
        if publisher is None:
            return
        for n in range(step.count):
            if step.wait:
                task = asyncio.ensure_future(self._publish_one(publisher, n, wait=True))
                self._waits.append(_Wait(task, time.monotonic()))
            else:
                await self._bounded(
                    "publish",
                    self._publish_one(publisher, n, wait=False),
                    self.bounds.block_timeout,
                )

    async def _publish_one(self, publisher: Any, n: int, *, wait: bool) -> str | None:
        """Publish; the event id if it was accepted (None if refused)."""
        try:
            event = await publisher.publish(Ping(n=n), wait=wait)
        except EventDeliveryError as exc:
            self.accepted.add(exc.event_id)
            raise
        except EventManagerError:
            return None  # refused before it was accepted: closed, full
        except BaseException as exc:
            raise AssertionError(
                f"publish raised {exc!r}, not a library error"
            ) from exc
        self.accepted.add(str(event.id))
        return str(event.id)

    async def _close(self, timeout: float) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout + 2.0):
                await self.manager.aclose(timeout=timeout)
        except BaseException as exc:
            raise AssertionError(f"aclose raised {exc!r}") from exc
        elapsed = time.monotonic() - started
        assert elapsed <= timeout + 0.1, (
            f"aclose(timeout={timeout:.3f}) took {elapsed:.3f} s"
        )
        self._closed = True
        # Publishes still waiting must have been answered by the close.
        for wait in self._waits:
            if not wait.task.done():
                await asyncio.wait({wait.task}, timeout=0.05)
        assert self.manager.stats.buffered == 0

    async def _restart(self) -> None:
        await self._bounded(
            "initialize again",
            self.manager.initialize(),
            self.bounds.startup,
        )
        self._closed = False
        await self._make_publishers()

    # The checks ------------------------------------------------------------------

    async def check(self) -> None:
        """Check every promise that can be checked now."""
        stats = self.manager.stats
        assert stats.published == (
            stats.delivered + stats.failed + stats.dropped + stats.buffered
        ), stats
        assert not self.recorder.twice, f"settled twice: {self.recorder.twice}"
        now = time.monotonic()
        for wait in self._waits:
            if not wait.task.done():
                age = now - wait.started
                assert age <= self.bounds.wait, (
                    f"publish(wait=True) still waiting after {age:.3f} s"
                )
            elif not wait.checked:
                wait.checked = True
                self._check_wait(wait.task)
        if self._eager:
            self._check_truth(await self._written())

    def _check_wait(self, task: asyncio.Task[Any]) -> None:
        error = task.exception()
        outcomes = self.recorder.outcomes
        if error is None:
            event_id = task.result()
            if event_id is None:
                return  # refused before acceptance
            found = outcomes.get(event_id)
            assert found is not None, f"wait=True returned for {event_id}, unsettled"
            assert found.outcome is Settled.DELIVERED, (
                f"wait=True returned for {event_id}, {found.outcome}"
            )
            return
        if isinstance(error, AssertionError):
            raise error
        assert isinstance(error, EventDeliveryError), repr(error)
        found = outcomes.get(error.event_id)
        assert found is not None, f"wait=True raised for {error.event_id}, unsettled"
        assert found.outcome is not Settled.DELIVERED, (
            f"wait=True raised {error!r} for a delivered event"
        )

    def _check_truth(self, written: Counter[bytes]) -> None:
        for event_id, found in self.recorder.outcomes.items():
            count = written[found.value]
            if found.outcome is Settled.DELIVERED:
                if self._exactly_once:
                    assert count == 1, f"delivered {event_id} is on the topic {count}x"
                else:
                    assert count >= 1, f"delivered {event_id} is not on the topic"
            elif found.outcome in _NEVER_WRITTEN or (
                found.outcome is Settled.REJECTED
                and not isinstance(found.error, EventManagerError)
                and self._exactly_once
            ):
                assert count == 0, (
                    f"{event_id} reported {found.outcome.name} ({found.error!r})"
                    f" is on the topic"
                )

    # The end -----------------------------------------------------------------------

    async def finish(self, close_timeout: float) -> None:
        """Clear every fault; the manager must deliver again, and once closed
        have settled every accepted event exactly once."""
        self.faults.clear()
        if self._closed:
            await self._restart()
        await self._recovers()
        await self._close(close_timeout)
        await self.check()
        for wait in self._waits:
            assert wait.task.done(), "a publish(wait=True) outlived aclose"
        assert not (self.accepted - set(self.recorder.outcomes)), (
            f"accepted, never settled: {self.accepted - set(self.recorder.outcomes)}"
        )
        failed = {
            event_id
            for event_id, found in self.recorder.outcomes.items()
            if found.outcome is not Settled.DELIVERED
        }
        assert len(self.called_back) == len(set(self.called_back)), (
            "on_delivery_error called twice for one event"
        )
        assert set(self.called_back) == failed
        self._check_truth(await self._written())

    async def _recovers(self) -> None:
        """Every faults cleared, each kind's events are delivered again."""
        deadline = time.monotonic() + 5.0
        for kind in KINDS:
            while True:
                publisher = self.publishers[kind]
                started = time.monotonic()
                try:
                    await self._publish_one(publisher, -1, wait=True)
                except EventDeliveryError:
                    elapsed = time.monotonic() - started
                    assert elapsed <= self.bounds.wait
                    assert time.monotonic() < deadline, (
                        f"{kind}: not delivered again 5 s after the faults ended"
                    )
                    await asyncio.sleep(0.01)
                    continue
                break

    async def abandon(self) -> None:
        """After a failed run: close the manager, whatever it says."""
        with contextlib.suppress(BaseException):
            await self.manager.aclose(timeout=0.2)
        for wait in self._waits:
            wait.task.cancel()
        await asyncio.gather(*(w.task for w in self._waits), return_exceptions=True)

    def describe(self) -> Iterator[str]:
        """The steps run, and the faults met: for a failure message."""
        yield from self.log
        yield f"met: {dict(self.faults.met)}"
