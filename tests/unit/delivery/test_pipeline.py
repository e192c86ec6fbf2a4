"""`ProducePipeline` against a model broker that keeps Kafka's rules for an
idempotent producer: a partition writes a batch only with the next
sequence number, answers a repeat of one of its last five batches with that
batch's offset, and refuses a gap as out of order.

No network: the model stands in for aiokafka's client (its metadata, its
``send``), so every ordering of answers, failures and retries is a unit
test.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
    OutOfOrderSequenceNumber,
)
from aiokafka.record.default_records import DefaultRecordBatch

from otel_kafka_events._delivery._kafka_errors import classify
from otel_kafka_events._delivery._pipeline import ProducePipeline
from otel_kafka_events._delivery._sent import (
    MaybeSentError,
    NotSentError,
    SequenceBrokenError,
)
from otel_kafka_events._delivery._transport import SendFailure

TOPIC = "events"

NOT_LEADER = 6
TOO_LARGE = 10
TIMED_OUT = 7
# Refused, not written: the producer's id is unknown, the topic not allowed.
_REFUSED = {"unknown_producer": 59, "unauthorized": 29}


@dataclass
class Written:
    sequence: int
    offset: int
    values: list[bytes]


@dataclass
class Partition:
    log: list[bytes] = field(default_factory=list)
    expected: int = 0
    recent: deque[Written] = field(default_factory=lambda: deque(maxlen=5))


class ModelBroker:
    """Stands in for ``AIOKafkaClient``: one broker leading every partition.

    ``script`` says what the next produce requests meet, one word each:
    ``"ok"``; ``"not_leader"`` (refused, not written); ``"timed_out"``
    (written, answered as timed out); ``"lost"`` (the
    connection breaks before the broker reads it); ``"written_lost"`` (the
    broker writes it, the answer is lost); ``"too_large"`` (refused for
    good); ``"not_ready"`` (no connection); ``"unknown_producer"`` and
    ``"unauthorized"`` (refused, not written: the broker lost the producer's
    id, or the producer's right to write); ``"crashed"`` (the broker lost
    its log, and the producer state it rebuilds from it, then answers as
    its rules say); ``"silent"``
    (written, and never answered: a client that does not bound its wait).
    ``gate`` holds every answer until set.

    A partition named twice in one request is written once, with the last
    of its batches, as Kafka's broker does (it keeps a request's batches in
    a map by partition).
    """

    api_version = (2, 1)

    def __init__(self, partitions: int = 2) -> None:
        self.partitions = {p: Partition() for p in range(partitions)}
        self.script: deque[str] = deque()
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_air = 0
        self.most_in_air = 0
        self.requests: list[list[tuple[int, int]]] = []
        """Each request's ``(partition, first sequence number)`` pairs."""
        self.leader: int | None = 0
        self.closed = False
        self.metadata_updates = 0
        self.cluster = SimpleNamespace(
            leader_for_partition=lambda tp: self.leader,
            partitions_for_topic=lambda topic: set(self.partitions),
        )

    async def bootstrap(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True

    def get_random_node(self) -> int:
        return 0

    def add_topic(self, topic: str) -> asyncio.Future[bool]:
        return self.force_metadata_update()

    def force_metadata_update(self) -> asyncio.Future[bool]:
        self.metadata_updates += 1
        future = asyncio.get_running_loop().create_future()
        future.set_result(True)
        return future

    async def send(self, node: int, request: Any) -> Any:
        if "InitProducerId" in type(request).__name__:
            return SimpleNamespace(error_code=0, producer_id=77, producer_epoch=0)
        named = [
            (topic, partition, DefaultRecordBatch(bytes(data)))
            for topic, partitions in _topics(request)
            for partition, data in partitions
        ]
        self.requests.append([(p, batch.base_sequence) for _, p, batch in named])
        entries = list({(t, p): (t, p, b) for t, p, b in named}.values())
        action = self.script.popleft() if self.script else "ok"
        if action == "not_ready":
            raise NodeNotReadyError("no connection")
        if action == "silent":
            for _, partition, batch in entries:
                self._write(self.partitions[partition], batch)
            await asyncio.get_running_loop().create_future()
        self.in_air += len(entries)
        self.most_in_air = max(self.most_in_air, self.in_air)
        try:
            await self.gate.wait()
            await asyncio.sleep(0)
        finally:
            self.in_air -= len(entries)
        if action == "lost":
            raise KafkaConnectionError("connection broken")
        answers: list[tuple[str, int, int, int]] = []
        for topic, partition, batch in entries:
            if action == "not_leader":
                answers.append((topic, partition, NOT_LEADER, -1))
            elif action == "too_large":
                answers.append((topic, partition, TOO_LARGE, -1))
            elif action in _REFUSED:
                answers.append((topic, partition, _REFUSED[action], -1))
            elif action == "crashed":
                # Restarted with its log and producer state lost.
                state = self.partitions[partition] = Partition()
                answers.append((topic, partition, *self._write(state, batch)))
            elif action == "timed_out":  # written, not yet replicated
                self._write(self.partitions[partition], batch)
                answers.append((topic, partition, TIMED_OUT, -1))
            else:
                code, offset = self._write(self.partitions[partition], batch)
                answers.append((topic, partition, code, offset))
        if action == "written_lost":
            raise KafkaConnectionError("connection broken after the write")
        return _answer(answers)

    def _write(self, partition: Partition, batch: Any) -> tuple[int, int]:
        values = [bytes(record.value) for record in batch]
        sequence = batch.base_sequence
        if sequence < 0:  # not idempotent: always written
            offset = len(partition.log)
            partition.log.extend(values)
            return 0, offset
        for written in partition.recent:
            if written.sequence == sequence:
                return 0, written.offset
        if sequence != partition.expected:
            return 45, -1
        offset = len(partition.log)
        partition.log.extend(values)
        partition.expected += len(values)
        partition.recent.append(Written(sequence, offset, values))
        return 0, offset


def _topics(request: Any) -> Any:
    topics = getattr(request, "_topics", None)
    return topics if topics is not None else request.topics


def _answer(answers: list[tuple[str, int, int, int]]) -> Any:
    topics: dict[str, list[tuple[int, int, int, int, int]]] = {}
    for topic, partition, code, offset in answers:
        topics.setdefault(topic, []).append((partition, code, offset, -1, -1))
    return SimpleNamespace(topics=list(topics.items()))


@dataclass
class Outcome:
    offset: int | None = None
    error: BaseException | None = None
    calls: int = 0


class Harness:
    def __init__(self, broker: ModelBroker, pipeline: ProducePipeline) -> None:
        self.broker = broker
        self.pipeline = pipeline
        self.outcomes: list[Outcome] = []
        self.in_send = False
        self.answered = asyncio.Event()

    def send(self, *values: bytes, partition: int = 0) -> Outcome:
        records = self.pipeline.new_batch()
        for value in values:
            assert records.append(None, bytearray(value), 1_700_000_000_000, [])
        outcome = Outcome()
        self.outcomes.append(outcome)

        def done(offset: int | None, error: BaseException | None) -> None:
            assert not self.in_send, "done was called within send"
            outcome.calls += 1
            outcome.offset, outcome.error = offset, error
            self.answered.set()

        self.in_send = True
        try:
            self.pipeline.send(records, TOPIC, partition, done)
        finally:
            self.in_send = False
        return outcome

    async def settled(self) -> None:
        async with asyncio.timeout(5):
            while any(outcome.calls == 0 for outcome in self.outcomes):
                self.answered.clear()
                await self.answered.wait()
        assert all(outcome.calls == 1 for outcome in self.outcomes)


def make(
    broker: ModelBroker,
    *,
    idempotent: bool = True,
    backoff: float = 0.005,
    request_timeout_ms: int = 2000,
) -> Callable[[], Any]:
    async def started() -> Harness:
        pipeline = ProducePipeline(
            broker,
            idempotent=idempotent,
            acks=-1,
            request_timeout_ms=request_timeout_ms,
            retry_backoff=backoff,
            max_batch_size=16_384,
            max_request_size=1_048_576,
        )
        await pipeline.start()
        return Harness(broker, pipeline)

    return started


async def test_five_batches_of_a_partition_are_in_flight_at_once() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    broker.gate.clear()
    for n in range(7):
        harness.send(b"event-%d" % n)
    await asyncio.sleep(0.01)
    assert broker.in_air == 5
    broker.gate.set()
    await harness.settled()
    assert broker.most_in_air == 5
    assert [o.offset for o in harness.outcomes] == list(range(7))
    assert broker.partitions[0].log == [b"event-%d" % n for n in range(7)]


async def test_without_idempotence_one_batch_is_in_flight() -> None:
    broker = ModelBroker()
    harness = await make(broker, idempotent=False)()
    assert harness.pipeline.max_in_flight == 1
    broker.gate.clear()
    for n in range(3):
        harness.send(b"event-%d" % n)
    await asyncio.sleep(0.01)
    assert broker.in_air == 1
    broker.gate.set()
    await harness.settled()
    assert broker.partitions[0].log == [b"event-0", b"event-1", b"event-2"]


async def test_partitions_have_windows_of_their_own() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    broker.gate.clear()
    for n in range(5):
        harness.send(b"a%d" % n, partition=0)
        harness.send(b"b%d" % n, partition=1)
    await asyncio.sleep(0.01)
    assert broker.in_air == 10
    broker.gate.set()
    await harness.settled()
    assert broker.partitions[1].log == [b"b%d" % n for n in range(5)]


async def test_batches_handed_over_in_one_turn_share_a_request() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    broker.gate.clear()
    for n in range(3):
        harness.send(b"a%d" % n, partition=0)
        harness.send(b"b%d" % n, partition=1)
    await asyncio.sleep(0.01)
    # One batch per partition in a request; a partition's next batch in the
    # next request, all in flight at once.
    assert broker.requests == [[(0, n), (1, n)] for n in range(3)]
    assert broker.in_air == 6
    broker.gate.set()
    await harness.settled()
    assert broker.partitions[0].log == [b"a0", b"a1", b"a2"]


async def test_a_failure_in_the_middle_of_a_pipeline_resends_in_order() -> None:
    broker = ModelBroker()
    harness = await make(broker, backoff=0.1)()
    broker.gate.clear()
    broker.script.extend(["ok", "not_leader", "ok", "ok", "ok"])
    for n in range(5):
        harness.send(b"event-%d" % n, b"more-%d" % n)
    broker.gate.set()
    await asyncio.sleep(0.05)
    # Nothing goes again before the backoff, however many answers came.
    assert len(broker.requests) == 5
    assert harness.outcomes[0].offset == 0
    assert [o.calls for o in harness.outcomes[1:]] == [0, 0, 0, 0]
    await harness.settled()
    log = broker.partitions[0].log
    assert log == [v for n in range(5) for v in (b"event-%d" % n, b"more-%d" % n)]
    assert [o.offset for o in harness.outcomes] == [0, 2, 4, 6, 8]
    assert all(o.error is None for o in harness.outcomes)
    # After the failure, batches 3 to 5 were refused as out of order, and
    # went again only once the partition was quiet, oldest first.
    resent = [sequence for request in broker.requests[5:] for _, sequence in request]
    assert resent == [2, 4, 6, 8]


async def test_an_answer_lost_after_the_write_is_sent_again_and_written_once() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    broker.script.extend(["written_lost"])
    first = harness.send(b"once")
    second = harness.send(b"then")
    await harness.settled()
    assert broker.partitions[0].log == [b"once", b"then"]
    assert (first.offset, second.offset) == (0, 1)


async def test_without_idempotence_a_failure_goes_to_the_caller_unsent() -> None:
    broker = ModelBroker()
    harness = await make(broker, idempotent=False)()
    broker.script.extend(["written_lost", "timed_out"])
    lost = harness.send(b"lost")
    timed_out = harness.send(b"timed out")
    await harness.settled()
    # The pipeline sent each once; the sender retries a lost connection (at
    # least once) and reports a broker's timeout as maybe written.
    assert broker.partitions[0].log == [b"lost", b"timed out"]
    assert len(broker.requests) == 2
    assert lost.error is not None
    assert timed_out.error is not None
    assert classify(lost.error, idempotent=False) is SendFailure.RETRY
    assert isinstance(timed_out.error, MaybeSentError)
    assert classify(timed_out.error, idempotent=False) is SendFailure.UNKNOWN


async def test_without_idempotence_a_batch_not_written_goes_back_to_its_caller() -> (
    None
):
    broker = ModelBroker()
    harness = await make(broker, idempotent=False)()
    broker.script.extend(["not_leader"])
    outcome = harness.send(b"event")
    await harness.settled()
    assert broker.partitions[0].log == []
    assert outcome.error is not None
    assert classify(outcome.error, idempotent=False) is SendFailure.RETRY


async def test_a_refused_batch_stops_its_partition_until_a_new_producer() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    broker.gate.clear()
    broker.script.extend(["ok", "too_large", "ok"])
    first, refused, after = (harness.send(b"%d" % n) for n in range(3))
    broker.gate.set()
    await harness.settled()
    later = harness.send(b"later")
    await harness.settled()
    assert first.error is None
    assert refused.error is not None
    assert classify(refused.error, idempotent=True) is SendFailure.REJECT
    for outcome in (after, later):
        assert isinstance(outcome.error, SequenceBrokenError)
        assert classify(outcome.error, idempotent=True) is SendFailure.RESTART
    assert broker.partitions[0].log == [b"0"]


async def test_a_gap_with_nothing_pending_needs_a_new_producer() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    broker.partitions[0].expected = 100  # the broker lost the producer's state
    broker.gate.clear()
    first, second, third = (harness.send(b"%d" % n) for n in range(3))
    await asyncio.sleep(0.01)
    broker.gate.set()
    await harness.settled()
    assert isinstance(first.error, OutOfOrderSequenceNumber)
    # The batches behind it were answered out of order too: not written.
    for outcome in (second, third):
        assert isinstance(outcome.error, SequenceBrokenError)
    later = harness.send(b"later")
    await harness.settled()
    assert isinstance(later.error, SequenceBrokenError)
    assert len(broker.requests) == 3
    for outcome in (first, second, third, later):
        assert outcome.error is not None
        assert classify(outcome.error, idempotent=True) is SendFailure.RESTART
    assert broker.partitions[0].log == []


async def test_a_graceful_stop_waits_for_answers_not_for_resends() -> None:
    broker = ModelBroker()
    harness = await make(broker, backoff=10.0)()
    broker.gate.clear()
    broker.script.extend(["not_leader", "ok"])
    failed, behind = harness.send(b"failed"), harness.send(b"behind")
    await asyncio.sleep(0.01)
    broker.gate.set()
    async with asyncio.timeout(1.0):  # not the stop's 5 s, nor the backoff
        await harness.pipeline.stop(5.0, abandoned=False)
    # The broker wrote neither (one not led, one out of order behind it),
    # and said so: both end "not sent", safe to send again.
    assert isinstance(failed.error, NotSentError)
    assert isinstance(behind.error, NotSentError)
    assert broker.partitions[0].log == []


async def test_a_resend_refused_after_a_definite_no_is_not_written() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    # Not written (its leader moved); the resend meets a broker that lost
    # the producer id: never written, so a new producer sends it again.
    broker.script.extend(["not_leader", "unknown_producer"])
    outcome = harness.send(b"once")
    await harness.settled()
    assert broker.partitions[0].log == []
    assert outcome.error is not None
    assert classify(outcome.error, idempotent=True) is SendFailure.RESTART


async def test_a_partition_without_a_leader_waits_for_one() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    broker.leader = None
    outcome = harness.send(b"event")
    await asyncio.sleep(0.02)
    assert outcome.calls == 0
    assert broker.metadata_updates > 1
    broker.leader = 0
    await harness.settled()
    assert outcome.offset == 0


async def test_a_broker_not_ready_means_not_written_and_is_retried() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    broker.script.extend(["not_ready"])
    outcome = harness.send(b"event")
    await harness.settled()
    assert outcome.offset == 0
    assert broker.partitions[0].log == [b"event"]


@pytest.mark.parametrize("abandoned", [True, False])
async def test_stopping_gives_up_what_is_held_truthfully(abandoned: bool) -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    broker.gate.clear()
    for n in range(7):
        harness.send(b"event-%d" % n)
    await asyncio.sleep(0.01)
    await harness.pipeline.stop(0.05, abandoned=abandoned)
    await harness.settled()
    errors = [type(o.error) for o in harness.outcomes]
    assert errors == [MaybeSentError] * 5 + [NotSentError] * 2
    assert broker.closed
    late = harness.send(b"late")
    await harness.settled()
    assert isinstance(late.error, NotSentError)


async def test_stopping_waits_for_answers_within_its_time() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    broker.gate.clear()
    outcome = harness.send(b"event")
    asyncio.get_running_loop().call_later(0.02, broker.gate.set)
    await harness.pipeline.stop(2.0, abandoned=False)
    assert outcome.offset == 0
    assert broker.partitions[0].log == [b"event"]


async def test_one_record_is_produced_and_awaited() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    await harness.pipeline.produce(TOPIC, b"key", b"value")
    written = [p.log for p in broker.partitions.values() if p.log]
    assert written == [[b"value"]]


class SlowAnswerBroker(ModelBroker):
    """Adds ``"slow_written_lost"``: the batch is written at once, its answer
    held until ``slow`` is set, then its connection breaks (a request to a
    leader now cut off, while later ones go to the new leader)."""

    def __init__(self, partitions: int = 2) -> None:
        super().__init__(partitions)
        self.slow = asyncio.Event()

    async def send(self, node: int, request: Any) -> Any:
        if self.script and self.script[0] == "slow_written_lost":
            self.script.popleft()
            entries = [
                (partition, DefaultRecordBatch(bytes(data)))
                for _, partitions in _topics(request)
                for partition, data in partitions
            ]
            self.requests.append([(p, b.base_sequence) for p, b in entries])
            for partition, batch in entries:
                self._write(self.partitions[partition], batch)
            await self.slow.wait()
            raise KafkaConnectionError("connection to the old leader broken")
        return await super().send(node, request)


async def test_a_refusal_leaves_the_batches_before_it_to_be_resent() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    broker.gate.clear()
    # The first is written but answered "timed out"; the next is refused.
    broker.script.extend(["timed_out", "too_large"])
    first, refused = harness.send(b"first"), harness.send(b"refused")
    await asyncio.sleep(0.01)
    broker.gate.set()
    await harness.settled()
    assert refused.error is not None
    assert classify(refused.error, idempotent=True) is SendFailure.REJECT
    # Resent, the first is a repeat the broker acknowledges: written once.
    assert first.error is None
    assert first.offset == 0
    assert broker.partitions[0].log == [b"first"]


async def test_only_the_oldest_unacknowledged_batches_go_out() -> None:
    broker = SlowAnswerBroker()
    harness = await make(broker)()
    broker.script.extend(["slow_written_lost"])
    outcomes = [harness.send(b"e%d" % n) for n in range(7)]
    await asyncio.sleep(0.05)
    # While the first waits for its answer, four more go out, not six.
    assert sorted(seq for request in broker.requests for _, seq in request) == [
        0,
        1,
        2,
        3,
        4,
    ]
    broker.slow.set()
    await harness.settled()
    assert all(outcome.error is None for outcome in outcomes)
    assert [outcome.offset for outcome in outcomes] == list(range(7))
    assert broker.partitions[0].log == [b"e%d" % n for n in range(7)]


async def test_a_stop_cancelled_in_its_grace_still_ends_everything() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    broker.gate.clear()
    outcome = harness.send(b"event")
    await asyncio.sleep(0.01)
    stopping = asyncio.create_task(harness.pipeline.stop(5.0, abandoned=False))
    await asyncio.sleep(0.01)
    stopping.cancel()
    await asyncio.gather(stopping, return_exceptions=True)
    assert broker.closed
    assert outcome.calls == 1
    assert isinstance(outcome.error, MaybeSentError)


async def test_a_stop_cancelled_twice_still_closes_the_client() -> None:
    class SlowToClose(ModelBroker):
        async def close(self) -> None:
            await asyncio.sleep(0.05)
            self.closed = True

    broker = SlowToClose()
    harness = await make(broker)()
    broker.gate.clear()
    harness.send(b"event")
    await asyncio.sleep(0.01)
    stopping = asyncio.create_task(harness.pipeline.stop(5.0, abandoned=False))
    await asyncio.sleep(0.01)
    stopping.cancel()  # in its grace: it gives everything up, then closes
    await asyncio.sleep(0.01)
    stopping.cancel()  # while the client closes
    await asyncio.gather(stopping, return_exceptions=True)
    await asyncio.sleep(0.1)
    assert broker.closed


async def test_a_metadata_update_that_fails_does_not_stall_the_partition() -> None:
    class FailingMetadata(ModelBroker):
        failing = False

        def force_metadata_update(self) -> asyncio.Future[bool]:
            if not self.failing:
                return super().force_metadata_update()
            raise RuntimeError("metadata broke")

    broker = FailingMetadata()
    harness = await make(broker)()
    broker.script.extend(["not_leader"])
    broker.failing = True
    first = harness.send(b"first")
    await asyncio.sleep(0.05)
    broker.failing = False
    second = harness.send(b"second")
    await harness.settled()
    assert (first.offset, second.offset) == (0, 1)


async def test_a_leader_that_cannot_be_read_is_waited_for() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    real = broker.cluster.leader_for_partition

    def unreadable(tp: Any) -> int:
        raise RuntimeError("metadata broke")

    broker.cluster.leader_for_partition = unreadable
    outcome = harness.send(b"event")  # does not raise: the batch is taken
    await asyncio.sleep(0.02)
    assert outcome.calls == 0
    broker.cluster.leader_for_partition = real
    await harness.settled()
    assert outcome.offset == 0
    assert broker.partitions[0].log == [b"event"]


async def test_a_refused_record_of_produce_leaves_the_partition_usable() -> None:
    broker = ModelBroker(partitions=1)
    harness = await make(broker)()
    broker.script.extend(["too_large"])
    with pytest.raises(MessageSizeTooLargeError):
        await harness.pipeline.produce(TOPIC, None, b"refused")
    await harness.pipeline.produce(TOPIC, None, b"fine")
    assert broker.partitions[0].log == [b"fine"]
    # A record over max_request_size is refused before it is sent.
    with pytest.raises(MessageSizeTooLargeError, match="max_request_size"):
        await harness.pipeline.produce(TOPIC, None, b"x" * 2_000_000)
    assert len(broker.requests) == 2


async def test_a_record_of_produce_not_written_is_sent_again() -> None:
    broker = ModelBroker(partitions=1)
    harness = await make(broker)()
    broker.script.extend(["not_leader", "not_ready"])
    await harness.pipeline.produce(TOPIC, b"k", b"record")
    assert broker.partitions[0].log == [b"record"]
    assert len(broker.requests) == 3


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
async def test_a_request_never_answered_ends_after_the_request_timeout(
    idempotent: bool,
) -> None:
    broker = ModelBroker()
    harness = await make(broker, idempotent=idempotent, request_timeout_ms=50)()
    broker.script.extend(["silent"])
    started = asyncio.get_running_loop().time()
    outcome = harness.send(b"once")
    await harness.settled()
    waited = asyncio.get_running_loop().time() - started
    # The client's wait is bounded by the request timeout and a second.
    assert 1.05 <= waited < 2.0
    assert broker.partitions[0].log == [b"once"]
    if idempotent:
        # Sent again as the same bytes: the broker answers with the offset
        # of the copy it has.
        assert (outcome.offset, outcome.error) == (0, None)
        assert len(broker.requests) == 2
    else:
        assert isinstance(outcome.error, MaybeSentError)
        assert isinstance(outcome.error.__cause__, TimeoutError)
        assert len(broker.requests) == 1
    await harness.pipeline.stop(1.0, abandoned=False)


async def test_a_record_and_a_batch_of_one_partition_never_share_a_request() -> None:
    broker = ModelBroker(partitions=1)
    harness = await make(broker)()
    # The log export writes to the events' topic: its record and an event
    # batch of the same partition are handed over in one turn.
    record = asyncio.create_task(harness.pipeline.produce(TOPIC, None, b"log"))
    await asyncio.sleep(0)
    outcome = harness.send(b"event")
    await record
    await harness.settled()
    # Both were reported written: both are on the topic.
    assert outcome.error is None
    assert sorted(broker.partitions[0].log) == [b"event", b"log"]
    assert all(len({p for p, _ in sent}) == len(sent) for sent in broker.requests)


async def test_a_resend_refused_after_a_write_is_reported_maybe_written() -> None:
    broker = ModelBroker()
    harness = await make(broker)()
    # Written, its answer lost; the resend is refused (the producer lost
    # the right to write), which says nothing of the first send.
    broker.script.extend(["written_lost", "unauthorized"])
    outcome = harness.send(b"once")
    await harness.settled()
    assert broker.partitions[0].log == [b"once"]
    assert outcome.error is not None
    # Not REJECT (it is on the topic) nor RESTART (sent again: twice).
    assert classify(outcome.error, idempotent=True) is SendFailure.UNKNOWN


async def test_a_resend_out_of_order_after_a_crash_is_not_written() -> None:
    broker = ModelBroker(partitions=1)
    harness = await make(broker)()
    acknowledged = harness.send(b"acknowledged")
    await harness.settled()
    # Written, its answer lost; then the broker crashes and loses both
    # writes, and with them the producer's state (rebuilt from its log).
    broker.script.extend(["written_lost", "crashed"])
    lost = harness.send(b"lost")
    await harness.settled()
    assert acknowledged.offset == 0
    assert broker.partitions[0].log == []
    # The resend is out of order with nothing pending: a broker that had
    # the batch would have answered it as a repeat. A new producer sends it.
    assert lost.error is not None
    assert classify(lost.error, idempotent=True) is SendFailure.RESTART


async def test_a_record_of_produce_waiting_to_be_sent_again_ends_when_stopped() -> None:
    broker = ModelBroker(partitions=1)
    harness = await make(broker, backoff=0.05)()
    broker.script.extend(["not_leader"])
    record = asyncio.create_task(harness.pipeline.produce(TOPIC, None, b"log"))
    await asyncio.sleep(0.02)  # not written; waiting for its backoff
    await harness.pipeline.stop(0.0, abandoned=True)
    async with asyncio.timeout(0.5):  # not the request timeout (2 s)
        with pytest.raises(NotSentError):
            await record
    assert broker.partitions[0].log == []


async def test_behind_a_refusal_an_out_of_order_batch_is_not_written() -> None:
    broker = ModelBroker(partitions=1)
    harness = await make(broker)()
    broker.gate.clear()
    # Both requests break (the broker may have read them; here it did not).
    # Sent again, the first is refused, the second is out of order behind it.
    broker.script.extend(["lost", "lost", "unauthorized", "ok"])
    first, second = harness.send(b"first"), harness.send(b"second")
    await asyncio.sleep(0.01)
    broker.gate.set()
    await harness.settled()
    assert broker.partitions[0].log == []
    assert first.error is not None
    assert second.error is not None
    # The first may have been written by its first send; the second's
    # out-of-order answer says the broker does not have it.
    assert classify(first.error, idempotent=True) is SendFailure.UNKNOWN
    assert classify(second.error, idempotent=True) is SendFailure.RESTART


async def test_a_record_of_produce_waiting_for_its_topic_ends_when_stopped() -> None:
    broker = ModelBroker(partitions=0)  # the topic is not there (yet)
    harness = await make(broker, backoff=0.01)()
    record = asyncio.create_task(harness.pipeline.produce(TOPIC, None, b"log"))
    await asyncio.sleep(0.03)
    await harness.pipeline.stop(0.0, abandoned=True)
    async with asyncio.timeout(0.5):  # not the request timeout (2 s)
        with pytest.raises(NotSentError):
            await record
