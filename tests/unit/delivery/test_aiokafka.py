"""Where `AiokafkaTransport` reaches into aiokafka, and its plain paths.

Records go straight to aiokafka's C record builder, the producer's request
limit is read from a private attribute, and a stop that runs out of time
gives up the producer's batches through its sender and accumulator. Each is
checked before use; here the plain paths give what the direct ones give
(the same batch bytes, the same limit, a stop within its budget), and with
the installed aiokafka the direct paths are the ones taken. No broker: the
producers are made but never started.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError, NotLeaderForPartitionError

from otel_kafka_events._delivery import _aiokafka, _aiokafka_producer
from otel_kafka_events._delivery._aiokafka import (
    DEFAULT_MAX_REQUEST_SIZE,
    AiokafkaTransport,
)
from otel_kafka_events._delivery._aiokafka_producer import (
    AiokafkaBatch,
    direct_append_works,
    knows_insides,
    stop_producer,
)
from otel_kafka_events._delivery._kafka_errors import classify
from otel_kafka_events._delivery._sent import MaybeSentError
from otel_kafka_events._delivery._transport import SendFailure

RECORDS = [
    (None, bytearray(b"\x00\x00\x00\x00\x07event"), 1_796_212_800_123, []),
    (b"k", bytearray(b"x" * 1000), 1_796_212_800_124, [("traceparent", b"00-1")]),
    (b"", bytearray(), 1, [("a", b""), ("b", b"\xff")]),
    (b"\x00" * 40, bytearray(b"\x01"), 2**40, [("h", b"v")] * 5),
]


@pytest.fixture
async def producer() -> AsyncIterator[AIOKafkaProducer]:
    """A producer that is never started (so it opens no connection)."""
    made = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", max_request_size=2_000_000)
    # Before 0.13, aiokafka picks the record format when it starts (from the
    # broker's version); a started producer talking to Kafka 0.11 or later
    # has format 2, the one the direct path writes.
    accumulator = made._message_accumulator
    if hasattr(accumulator, "set_api_version"):
        accumulator.set_api_version((2, 0))
    yield made
    await made.stop()


def built(batch: AiokafkaBatch) -> bytes:
    data: bytes = batch.finish()._build()
    return data


def fill(batch: AiokafkaBatch) -> AiokafkaBatch:
    for key, value, timestamp_ms, headers in RECORDS:
        assert batch.append(key, value, timestamp_ms, headers)
    return batch


async def test_records_go_straight_to_the_record_builder(
    producer: AIOKafkaProducer,
) -> None:
    # An aiokafka release that moved the record builder would fall back
    # silently: this says so.
    assert direct_append_works(producer.create_batch)
    transport = AiokafkaTransport(
        producer=producer, admin_client=object(), manage_clients=False
    )
    await transport.start()
    batch = transport.new_batch()
    assert isinstance(batch, AiokafkaBatch)
    assert batch.direct


async def test_the_plain_path_builds_the_same_batch(
    producer: AIOKafkaProducer,
) -> None:
    direct = fill(AiokafkaBatch(producer.create_batch()))
    plain = fill(AiokafkaBatch(producer.create_batch(), direct=False))
    assert direct.direct
    assert not plain.direct

    assert built(plain) == built(direct)
    assert plain.builder.record_count() == direct.builder.record_count() == 4


class _StandInBuilder:
    """A ``BatchBuilder`` of some other layout: only its public methods."""

    def __init__(self) -> None:
        self.appended: list[dict[str, Any]] = []

    def append(self, **record: Any) -> object:
        self.appended.append(record)
        return object()

    def close(self) -> None:
        pass


def test_a_builder_laid_out_otherwise_gets_the_plain_path() -> None:
    builder = _StandInBuilder()
    batch = AiokafkaBatch(builder)

    assert not batch.direct
    assert batch.append(b"k", bytearray(b"v"), 5, [("h", b"1")])
    assert batch.finish() is builder
    assert builder.appended == [
        {
            "key": b"k",
            "value": bytearray(b"v"),
            "timestamp": 5,
            "headers": [("h", b"1")],
        }
    ]
    assert not direct_append_works(_StandInBuilder)


async def test_a_record_builder_that_takes_other_arguments_is_refused(
    producer: AIOKafkaProducer,
) -> None:
    def new_builder() -> Any:
        builder = producer.create_batch()
        records = builder._builder

        class Swapped:
            """The record builder, its key and value swapped."""

            def append(self, offset: int, timestamp: int, *args: Any) -> Any:
                key, value, headers = args
                return records.append(offset, timestamp, value, key, headers)

            def __getattr__(self, name: str) -> Any:
                return getattr(records, name)

        builder._builder = Swapped()
        return builder

    assert not direct_append_works(new_builder)


async def test_the_request_limit_is_the_producers(producer: AIOKafkaProducer) -> None:
    transport = AiokafkaTransport(producer=producer)
    assert transport.max_request_size == 2_000_000


class _StandInProducer:
    """A producer of some other layout, whose stop never finishes."""

    def __init__(self) -> None:
        self.client = self
        self.stopped = False
        self.closed = False

    async def stop(self) -> None:
        self.stopped = True
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("options", "expected"),
    [({}, DEFAULT_MAX_REQUEST_SIZE), ({"max_request_size": 3_000_000}, 3_000_000)],
)
def test_a_producer_without_the_limit_gets_the_option(
    options: dict[str, Any], expected: int
) -> None:
    transport = AiokafkaTransport(producer=_StandInProducer(), client_options=options)
    assert transport.max_request_size == expected


async def test_the_stop_reaches_into_the_installed_aiokafka(
    producer: AIOKafkaProducer,
) -> None:
    assert knows_insides(producer)


@pytest.mark.parametrize("abandoned", [True, False])
async def test_a_producer_laid_out_otherwise_is_stopped_within_the_budget(
    abandoned: bool,
) -> None:
    stand_in = _StandInProducer()
    assert not knows_insides(stand_in)
    started = time.monotonic()

    await stop_producer(stand_in, 0.3, abandoned=abandoned)

    assert time.monotonic() - started < 0.3 + 0.2
    assert stand_in.stopped
    assert stand_in.closed


async def test_the_stop_gives_up_only_on_a_known_layout(
    producer: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    given_up: list[object] = []

    async def give_up(stopped: object, until: float) -> None:
        given_up.append(stopped)

    monkeypatch.setattr(_aiokafka_producer, "_give_up_sends", give_up)
    await stop_producer(producer, 0.5, abandoned=True)
    assert given_up == [producer]

    given_up.clear()
    await stop_producer(_StandInProducer(), 0.2, abandoned=True)
    assert given_up == []


async def _queued(
    producer: AIOKafkaProducer,
    reports: list[BaseException | None],
    offsets: list[int | None] | None = None,
) -> Any:
    """Queue a batch as ``send_batch`` does once it has metadata, watch it as
    `AiokafkaTransport.send` does, and return aiokafka's batch."""
    builder = producer.create_batch()
    builder.append(key=None, value=b"event", timestamp=None)
    partition = TopicPartition("events", 0)
    future = await producer._message_accumulator.add_batch(builder, partition, 1.0)

    def done(offset: int | None, error: BaseException | None) -> None:
        reports.append(error)
        if offsets is not None:
            offsets.append(offset)

    _aiokafka_producer.watch_batch(producer, "events", 0, builder, future, done)
    return producer._message_accumulator._batches[partition][-1]


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_batch_given_up_before_it_was_sent_is_sent_again(
    producer: AIOKafkaProducer,
) -> None:
    reports: list[BaseException | None] = []
    batch = await _queued(producer, reports)
    batch.failure(NotLeaderForPartitionError())
    await _settle()
    assert isinstance(reports[0], NotLeaderForPartitionError)
    assert classify(reports[0], idempotent=True) is SendFailure.RETRY


async def test_a_batch_given_up_after_it_was_sent_may_be_written(
    producer: AIOKafkaProducer,
) -> None:
    # aiokafka sent it, lost the answer, and then found no leader until the
    # batch expired: the first attempt may be on the topic, so a new batch
    # of the same events could write them twice.
    reports: list[BaseException | None] = []
    batch = await _queued(producer, reports)
    batch.drain_ready()
    batch.failure(NotLeaderForPartitionError())
    await _settle()
    error = reports[0]
    assert isinstance(error, MaybeSentError)
    assert isinstance(error.__cause__, NotLeaderForPartitionError)
    assert "NotLeaderForPartitionError" in str(error)
    assert classify(error, idempotent=True) is SendFailure.UNKNOWN


async def test_a_refusal_after_sending_stays_a_refusal(
    producer: AIOKafkaProducer,
) -> None:
    reports: list[BaseException | None] = []
    batch = await _queued(producer, reports)
    batch.drain_ready()
    batch.failure(MessageSizeTooLargeError())
    await _settle()
    assert isinstance(reports[0], MessageSizeTooLargeError)
    assert classify(reports[0], idempotent=True) is SendFailure.REJECT


def test_a_failed_batch_counts_as_sent_where_aiokafka_is_laid_out_otherwise() -> None:
    class Elsewhere:
        pass

    assert _aiokafka_producer._queued_batch(Elsewhere(), "events", 0, object()) is None
    assert _aiokafka_producer._sent_probe(None)() is True


async def test_the_batch_itself_is_watched_with_the_installed_aiokafka(
    producer: AIOKafkaProducer,
) -> None:
    # If this fails, every acknowledgement takes a turn of the event loop
    # more (the shield's) without any other sign.
    reports: list[BaseException | None] = []
    offsets: list[int | None] = []
    batch = await _queued(producer, reports, offsets)
    assert (
        _aiokafka_producer._queued_batch(producer, "events", 0, batch._builder) is batch
    )
    batch.done(41)
    await asyncio.sleep(0)  # one turn: the batch's own callbacks
    assert (reports, offsets) == ([None], [41])


async def test_a_failed_batch_leaves_no_error_unread(
    producer: AIOKafkaProducer,
) -> None:
    # The shield send_batch returned is set aside (cancelled): left alone,
    # it would hold the batch's error, and asyncio would complain of it.
    loop = asyncio.get_running_loop()
    complaints: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: complaints.append(context["message"]))
    try:
        reports: list[BaseException | None] = []
        batch = await _queued(producer, reports)
        batch.failure(MessageSizeTooLargeError())
        await _settle()
        del batch
        gc.collect()
        await _settle()
    finally:
        loop.set_exception_handler(previous)
    assert isinstance(reports[0], MessageSizeTooLargeError)
    assert complaints == []


@pytest.mark.parametrize("fails", [False, True])
async def test_the_shield_tells_the_same_where_the_batch_is_not_found(
    producer: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    outcomes: list[tuple[list[type], list[int | None]]] = []
    for layout_known in (True, False):
        if not layout_known:
            monkeypatch.setattr(_aiokafka_producer, "_queued_batch", lambda *args: None)
        reports: list[BaseException | None] = []
        offsets: list[int | None] = []
        batch = await _queued(producer, reports, offsets)
        batch.drain_ready()
        if fails:
            batch.failure(NotLeaderForPartitionError())
        else:
            batch.done(7)
        await _settle()
        producer._message_accumulator._batches.clear()
        outcomes.append(([type(r) for r in reports], offsets))
    fast, plain = outcomes
    assert fast == plain
    # Known layout: sent once, so a maybe-written failure; unknown layout:
    # counted as sent, the same.
    expected: list[type] = [MaybeSentError] if fails else [type(None)]
    assert fast[0] == expected


@pytest.mark.parametrize(
    ("servers", "address"),
    [
        ("kafka-0:9093,kafka-1:9093", ("kafka-0", 9093)),
        (["broker:19092", "other:1"], ("broker", 19092)),
        (" [::1]:9094 ", ("::1", 9094)),
        ("broker", ("broker", 9092)),
        ("broker:port", None),
        ("", None),
        (None, None),
    ],
)
def test_the_first_bootstrap_server_is_probed_for_a_refusal(
    servers: Any, address: tuple[str, int] | None
) -> None:
    assert _aiokafka._first_address(servers) == address


def test_the_idempotent_producer_takes_five_batches_per_partition() -> None:
    assert AiokafkaTransport(bootstrap_servers="kafka:9092").max_in_flight == 5
    plain = AiokafkaTransport(bootstrap_servers="kafka:9092", enable_idempotence=False)
    assert plain.max_in_flight == 1
    # A producer given to us is taken as not idempotent: one at a time.
    assert AiokafkaTransport(producer=_StandInProducer()).max_in_flight == 1
    # aiokafka's producer (an option only it takes) gets one at a time too: a
    # batch whose hand-over to it timed out could be overtaken by the next.
    compressed = AiokafkaTransport(
        bootstrap_servers="kafka:9092", client_options={"compression_type": "gzip"}
    )
    assert not compressed.uses_pipeline
    assert compressed.max_in_flight == 1
