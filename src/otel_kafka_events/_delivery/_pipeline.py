"""`ProducePipeline`: produce requests of our own, over aiokafka's client.

aiokafka's producer keeps one request in flight per broker and sends a
batch only from its own task, a turn or two of the event loop after it was
queued. The pipeline sends each batch handed to it at once, in a request of
its own, and keeps several of a partition's batches in flight, so that one
round trip no longer bounds a partition's throughput.

Rules
-----
1. A partition's batches are numbered (idempotent producer) and sent in the
   order they are handed over; a batch is sent again only as the same
   bytes, so the broker writes each at most once, and in order.
2. After a failure worth retrying, nothing more of the partition is sent
   until every request of the partition in flight has been answered; then
   its unacknowledged batches go again, oldest first, after a backoff.
3. Without idempotence the pipeline never sends a batch twice: its failure
   goes to its caller, who retries it (not written, or its connection was
   lost: delivery is then at least once) or reports it (the broker's answer
   says it may be written). At most one batch per partition is then in
   flight (`max_in_flight`), since a retried batch would land behind later
   ones.
4. Every batch handed over ends exactly once, through its ``done``, called
   from the event loop and never within `send`.
5. A batch ends as not written (`NotSentError`, or an error whose events
   the sender sends again or reports refused) only when no send of it may
   have been written, or the broker's answer shows it does not have it
   (`_PRODUCER_STATE`); otherwise it ends `MaybeSentError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
    UnknownTopicOrPartitionError,
    for_code,
)

from .._foreign import ForeignError, contained, describe, own_cancellation
from .._options import MAX_IN_FLIGHT
from ._partitioner import murmur2
from ._produce_protocol import (
    PartitionAnswer,
    Records,
    init_producer_id_request,
    partition_answers,
    produce_request,
    requests_supported,
)
from ._sent import MaybeSentError, NotSentError, SequenceBrokenError
from ._transport import SendDone

__all__ = ["PipelineUnsupportedError", "ProducePipeline"]


# Broker answers that mean "not now": retried.
_NOT_NOW = frozenset({13, 74, 76})  # network exception, leader epoch moved
# Broker answers after which the batch may be written.
_MAYBE_WRITTEN = frozenset({7, 13, 20})
# The producer id is no longer good: a new one is needed.
_UNKNOWN_PRODUCER = 59
_FENCED = frozenset({47, 90})  # invalid producer epoch, producer fenced
# _PRODUCER_STATE: a broker keeps each producer's last batches per
# partition, rebuilt from its log after a restart, and answers a batch it
# has as a repeat (with its offset). So an out-of-order answer, or an
# unknown producer id, to a batch sent again says it does not have the
# batch, whatever became of an earlier send: the batch is "not written".
# A refusal (not authorized, say) is decided before repeats are looked
# for, and fencing hides them: neither says anything of an earlier send.

_NO_ERROR = 0
_DUPLICATE_SEQUENCE = 46
_OUT_OF_ORDER = 45

_SEQUENCE_WRAP = 2**31


class PipelineUnsupportedError(Exception):
    """The broker is too old for the pipeline's requests (before 0.11)."""


class _Flight:
    """One batch handed over, until it ends."""

    __slots__ = ("data", "done", "ended", "in_air", "lane", "maybe_written")

    def __init__(self, lane: _Lane, data: bytearray, done: SendDone) -> None:
        self.lane = lane
        self.data = data
        self.done = done
        self.in_air = False
        """A request carrying it waits for its answer."""
        self.maybe_written = False
        """A request carrying it may have reached the broker."""
        self.ended = False


class _Lane:
    """One partition's batches not yet acknowledged, in sequence order."""

    __slots__ = (
        "flights",
        "idempotent",
        "in_air",
        "key",
        "next_sequence",
        "partition",
        "recovering",
        "refused",
        "topic",
        "topic_partition",
        "window",
    )

    def __init__(
        self, topic: str, partition: int, *, idempotent: bool, window: int
    ) -> None:
        self.idempotent = idempotent
        """Its batches are numbered, and resent by the pipeline."""
        self.window = window
        """How many of its oldest unacknowledged batches may be sent."""
        self.topic = topic
        self.partition = partition
        self.topic_partition = TopicPartition(topic, partition)
        self.key = (topic, partition)
        self.flights: deque[_Flight] = deque()
        self.in_air = 0
        self.next_sequence = 0
        self.recovering = False
        """A batch failed: nothing is sent until the lane is quiet, then
        the rest go again (rule 2)."""
        self.refused = False
        """A batch was refused: the broker waits for its sequence number
        for good, so nothing more of the lane can be written."""


class ProducePipeline:
    """Sends record batches to partition leaders through an aiokafka
    ``AIOKafkaClient`` (metadata, connections, requests), numbering them
    for Kafka's idempotent producer.

    Parameters
    ----------
    client
        The client, not yet bootstrapped; the pipeline owns it.
    idempotent
        Ask for a producer id and number the batches.
    acks
        ``-1`` (all in-sync replicas) or ``1`` (the leader).
    request_timeout_ms
        How long a request waits for its answer (also the broker's own
        wait for its replicas).
    retry_backoff
        Seconds between a failure and sending again.
    max_batch_size
        The most bytes of records in a batch.
    max_request_size
        The most bytes in a request.
    """

    def __init__(
        self,
        client: Any,
        *,
        idempotent: bool,
        acks: int,
        request_timeout_ms: int,
        retry_backoff: float,
        max_batch_size: int,
        max_request_size: int,
    ) -> None:
        self._client = client
        self._idempotent = idempotent
        self._acks = acks
        self._request_timeout_ms = request_timeout_ms
        self._retry_backoff = retry_backoff
        self._max_batch_size = max_batch_size
        self.max_request_size = max_request_size
        self.max_in_flight = MAX_IN_FLIGHT if idempotent else 1
        """A partition's batches in flight at once (rule 3)."""
        self._producer_id = -1
        self._epoch = -1
        self._lanes: dict[tuple[str, int], _Lane] = {}
        # `produce`'s records, apart: unnumbered, so that one the broker
        # refuses leaves the partition usable (nothing restarts this path).
        self._record_lanes: dict[tuple[str, int], _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # When each request in flight is overdue. The client bounds its
        # wait by the request timeout; one timer bounds it too, should the
        # client not (one for every request, cheaper than one each).
        self._overdue_at: dict[asyncio.Task[None], float] = {}
        self._overdue: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._resuming: set[_Lane] = set()
        # Flights waiting for their leader's next request, and the leaders
        # whose next request is about to be made.
        self._waiting: dict[int, deque[_Flight]] = {}
        self._requesting: set[int] = set()
        self._stopped = False
        self._quiet: asyncio.Event | None = None

    @property
    def idempotent(self) -> bool:
        """Whether batches are numbered for the idempotent producer."""
        return self._idempotent

    # Lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Bootstrap the client and, for the idempotent producer, get an id.

        Raises
        ------
        PipelineUnsupportedError
            If the broker is too old for these requests.
        aiokafka.errors.KafkaError
            If the broker cannot be reached, or refuses a producer id (a
            `BrokerResponseError`: idempotence is not supported).
        """
        await contained(self._client.bootstrap())
        if not requests_supported(self._client):
            raise PipelineUnsupportedError("the broker predates Kafka 0.11")
        if self._idempotent:
            await self._init_producer_id()

    async def _init_producer_id(self) -> None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._request_timeout_ms / 1000
        while True:
            node = self._client.get_random_node()
            if node is None:
                raise NodeNotReadyError("no broker to ask for a producer id")
            answer = await contained(
                self._client.send(node, init_producer_id_request())
            )
            error = for_code(int(answer.error_code))
            if int(answer.error_code) == _NO_ERROR:
                self._producer_id = int(answer.producer_id)
                self._epoch = int(answer.producer_epoch)
                return
            if not error.retriable or loop.time() >= give_up_at:
                raise error()
            await asyncio.sleep(self._retry_backoff)

    async def close(self) -> None:
        """Stop at once, giving up what is held (a start's own cleanup)."""
        await self.stop(0.0, abandoned=True)

    async def stop(self, timeout: float, *, abandoned: bool) -> None:
        """Stop within about ``timeout`` seconds.

        No batch is taken or resent from then on. Unless ``abandoned``, the
        requests already made get until then to be answered; then what is
        left is given up: a batch that may have reached the broker ends
        with `MaybeSentError`, one that never left with `NotSentError`.
        Then the client closes.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        self._stopped = True
        try:
            if not abandoned and self._in_air():
                self._quiet = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await self._quiet.wait()
        finally:
            # Cancelled or not, everything held ends and the client closes.
            await self._give_up(deadline)

    async def _give_up(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self._every_lane():
            while lane.flights:
                flight = lane.flights.popleft()
                self._end(
                    flight,
                    None,
                    MaybeSentError("given up after it was sent; the broker may have it")
                    if flight.maybe_written
                    else NotSentError("given up before it was sent"),
                )
        # Shielded: a stop cancelled again while the client closes still
        # leaves it closed.
        closing = asyncio.ensure_future(contained(self._client.close()))
        _read_later(closing)
        with contextlib.suppress(TimeoutError, Exception):
            async with asyncio.timeout(max(deadline - loop.time(), 0.05)):
                await asyncio.shield(closing)

    def _every_lane(self) -> list[_Lane]:
        return [*self._lanes.values(), *self._record_lanes.values()]

    def _in_air(self) -> bool:
        return any(lane.in_air for lane in self._every_lane())

    # Sending --------------------------------------------------------------------

    def new_batch(self) -> Records:
        """An empty batch."""
        return Records(self._max_batch_size)

    def send(
        self, records: Records, topic: str, partition: int, done: SendDone
    ) -> None:
        """Take a batch: it is sent now (or when its partition's window
        opens), and ``done`` hears how it ended."""
        lane = self._lanes.get((topic, partition))
        if lane is None:
            lane = self._lanes[topic, partition] = _Lane(
                topic,
                partition,
                idempotent=self._idempotent,
                window=self.max_in_flight,
            )
            self._watch_topic(topic)
        self._take(lane, records, done)

    def _take(self, lane: _Lane, records: Records, done: SendDone) -> None:
        if lane.idempotent:
            sequence = lane.next_sequence
            lane.next_sequence = (sequence + records.count) % _SEQUENCE_WRAP
        else:
            sequence = -1
        producer_id, epoch = (
            (self._producer_id, self._epoch) if lane.idempotent else (-1, -1)
        )
        flight = _Flight(lane, records.seal(producer_id, epoch, sequence), done)
        if self._stopped or lane.refused:
            error: KafkaError = (
                NotSentError("the producer is stopping")
                if self._stopped
                else SequenceBrokenError(
                    "an earlier batch of the partition was refused"
                )
            )
            asyncio.get_running_loop().call_soon(done, None, error)
            return
        lane.flights.append(flight)
        self._pump(lane)

    async def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Write one record and wait for its acknowledgement."""
        loop = asyncio.get_running_loop()
        partitions = await self._partitions_of(topic)
        partition = (
            partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            if key is not None
            else random.choice(partitions)
        )
        lane = self._record_lanes.get((topic, partition))
        if lane is None:
            lane = self._record_lanes[topic, partition] = _Lane(
                topic, partition, idempotent=False, window=1
            )
        give_up_at = loop.time() + self._request_timeout_ms / 1000
        while True:
            records = Records(max(self._max_batch_size, len(value) + 1024))
            records.append(key, bytearray(value), int(time.time() * 1000), [])
            if records.size > self.max_request_size:
                raise MessageSizeTooLargeError(
                    f"a record of {records.size} bytes, above max_request_size"
                    f" ({self.max_request_size})"
                )
            answer: asyncio.Future[int] = loop.create_future()
            self._take(lane, records, _settle_to(answer))
            try:
                await answer
                return
            except KafkaError as exc:
                # Not written (its connection may have broken after it was
                # sent: a record may then be written twice, at least once);
                # sent again unless the pipeline has stopped.
                if not exc.retriable or self._stopped or loop.time() >= give_up_at:
                    raise
            await asyncio.sleep(self._retry_backoff)

    async def _partitions_of(self, topic: str) -> list[int]:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._request_timeout_ms / 1000
        self._watch_topic(topic)
        while True:
            known = self._client.cluster.partitions_for_topic(topic)
            if known:
                return sorted(known)
            if self._stopped:
                raise NotSentError("the producer stopped")
            if loop.time() >= give_up_at:
                raise UnknownTopicOrPartitionError(topic)
            with contextlib.suppress(Exception):
                async with asyncio.timeout_at(give_up_at):
                    await contained(self._client.force_metadata_update())
            if not self._client.cluster.partitions_for_topic(topic):
                await asyncio.sleep(self._retry_backoff)

    # Metadata, behind guards -----------------------------------------------------

    def _watch_topic(self, topic: str) -> None:
        """Have the client keep ``topic``'s metadata (again, at each
        recovery: a failed call leaves it to the next)."""
        with contextlib.suppress(Exception):  # the next recovery asks again
            _read_later(self._client.add_topic(topic))

    def _refresh_metadata(self) -> None:
        """Ask the client for fresh metadata, without waiting for it."""
        with contextlib.suppress(Exception):  # the next recovery asks again
            _read_later(self._client.force_metadata_update())

    def _leader_of(self, lane: _Lane) -> int | None:
        """The partition's leader, or None while unknown (or unreadable)."""
        try:
            leader = self._client.cluster.leader_for_partition(lane.topic_partition)
        except Exception:
            return None
        return leader if isinstance(leader, int) and leader >= 0 else None

    def _pump(self, lane: _Lane) -> None:
        """Send the lane's waiting batches, oldest first, while its window
        has room."""
        if lane.recovering or self._stopped:
            return
        # Only the lane's oldest unacknowledged batches go out: the broker
        # remembers a producer's last five batches of a partition, so a
        # batch resent after more than that went out could not be told
        # from a new one.
        for index, flight in enumerate(lane.flights):
            if index >= lane.window:
                return
            if flight.in_air or flight.ended:
                continue
            leader = self._leader_of(lane)
            if leader is None:
                self._refresh_metadata()
                self._recover(lane)
                return
            self._launch(lane, flight, leader)

    def _launch(self, lane: _Lane, flight: _Flight, leader: int) -> None:
        """Put ``flight`` in the leader's next request.

        Batches handed over in one turn of the event loop share a request
        (one batch per partition in each), as aiokafka's producer does: a
        request costs the broker and this process far more than a batch in
        it.
        """
        flight.in_air = True
        lane.in_air += 1
        waiting = self._waiting.get(leader)
        if waiting is None:
            waiting = self._waiting[leader] = deque()
        waiting.append(flight)
        if leader not in self._requesting:
            self._request_soon(leader)

    def _request_soon(self, leader: int) -> None:
        self._requesting.add(leader)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._request(leader))
        self._tasks.add(task)
        overdue_at = loop.time() + self._request_timeout_ms / 1000 + 1.0
        self._overdue_at[task] = overdue_at
        task.add_done_callback(self._request_ended)
        if self._watchdog is None:
            self._watchdog = loop.call_at(overdue_at, self._watch)

    def _request_ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._overdue_at.pop(task, None)
        self._overdue.discard(task)

    def _watch(self) -> None:
        """Cancel the requests that are overdue (each then fails as timed
        out), and look again when the next one will be."""
        self._watchdog = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, overdue_at in self._overdue_at.items():
            if overdue_at <= now and task not in self._overdue:
                self._overdue.add(task)
                task.cancel()
        waiting = [at for at in self._overdue_at.values() if at > now]
        if waiting:
            self._watchdog = loop.call_at(min(waiting), self._watch)

    def _next_request(self, leader: int) -> list[_Flight]:
        """The flights of the leader's next request: the oldest waiting of
        each partition; the rest wait for a request after it.

        One per partition, not per lane: an event batch and a record of
        `produce` to one partition (the log export on the events' topic)
        go in requests of their own, since the broker writes only the last
        batch of a partition named twice in a request, and answers it once.
        """
        self._requesting.discard(leader)
        waiting = self._waiting.pop(leader, None) or deque()
        taken: list[_Flight] = []
        partitions: set[tuple[str, int]] = set()
        later: deque[_Flight] = deque()
        for flight in waiting:
            if flight.lane.key in partitions:
                later.append(flight)
            else:
                partitions.add(flight.lane.key)
                taken.append(flight)
        if later:
            self._waiting[leader] = later
            self._request_soon(leader)
        return taken

    async def _request(self, leader: int) -> None:
        """Send the leader's waiting batches in one request and act on the
        answer (in a task of its own: the client's wait for the answer is
        bound to it)."""
        flights = self._next_request(leader)
        if not flights:
            return
        topics: dict[str, list[tuple[int, bytearray]]] = {}
        for flight in flights:
            topics.setdefault(flight.lane.topic, []).append(
                (flight.lane.partition, flight.data)
            )
        written_before = [flight.maybe_written for flight in flights]
        for flight in flights:
            flight.maybe_written = True
        try:
            request = produce_request(
                self._client,
                acks=self._acks,
                timeout_ms=self._request_timeout_ms,
                topics=list(topics.items()),
            )
            try:
                response = await self._client.send(leader, request)
            except asyncio.CancelledError:
                if not self._cancelled_as_overdue():
                    raise
                raise TimeoutError(
                    f"no answer to a produce request in"
                    f" {self._request_timeout_ms} ms and a second"
                ) from None
        except NodeNotReadyError as exc:
            self._refresh_metadata()
            for flight, before in zip(flights, written_before, strict=True):
                flight.maybe_written = before
                self._landed(flight)
                self._failed(flight, exc, maybe_written=False)
        except Exception as exc:
            # Anything else may have left with the batches in it; without
            # idempotence a lost connection is still the caller's to retry
            # (delivery is then at least once, as with aiokafka's producer),
            # while anything else is reported as maybe written.
            lost = isinstance(exc, KafkaConnectionError)
            for flight in flights:
                self._landed(flight)
                self._failed(flight, exc, maybe_written=not lost)
        except BaseException as exc:
            # The client's own KeyboardInterrupt, SystemExit or cancellation
            # (as `contained` would, without a coroutine more per request).
            if own_cancellation(exc):
                raise
            foreign = ForeignError(describe(exc))
            foreign.__cause__ = exc
            for flight in flights:
                self._landed(flight)
                self._failed(flight, foreign, maybe_written=True)
        else:
            answers = _answers(response)
            for flight, before in zip(flights, written_before, strict=True):
                self._landed(flight)
                self._answered(flight, answers.get(flight.lane.key), before)
        for flight in flights:
            self._settle_lane(flight.lane)

    def _cancelled_as_overdue(self) -> bool:
        """Whether the current request task's cancellation is the
        watchdog's (`_watch`); if so, it is taken back."""
        task = asyncio.current_task()
        if task is None or task not in self._overdue:
            return False
        task.uncancel()
        return True

    def _landed(self, flight: _Flight) -> None:
        flight.in_air = False
        flight.lane.in_air -= 1

    def _answered(
        self, flight: _Flight, answer: PartitionAnswer | None, written_before: bool
    ) -> None:
        """Act on the broker's answer for ``flight``; ``written_before``:
        an earlier send of it may have been written."""
        lane = flight.lane
        if answer is None:
            self._end(
                flight,
                None,
                MaybeSentError("the broker's answer does not name the partition"),
            )
            return
        code = answer.error_code
        if code == _NO_ERROR:
            self._end(flight, answer.base_offset, None)
        elif code == _DUPLICATE_SEQUENCE:
            self._end(
                flight,
                None,
                MaybeSentError(
                    "the broker already has the batch, but no longer knows its offset"
                ),
            )
        elif (
            code == _OUT_OF_ORDER and lane.idempotent and lane.flights[0] is not flight
        ):
            # An earlier batch is still to be written: send this one after it.
            # This send was not written.
            flight.maybe_written = written_before
            self._failed(flight, OutOfOrderSequenceNumber(), maybe_written=False)
        elif code == _OUT_OF_ORDER and lane.refused:
            # Out of order speaks for the batch (see `_PRODUCER_STATE`).
            self._end(
                flight,
                None,
                SequenceBrokenError("an earlier batch of the partition was refused"),
            )
        elif code == _OUT_OF_ORDER:
            # Nothing earlier is pending: the broker lost the producer's
            # state, and writes nothing more of the partition under this id.
            # Nor has it this batch (see `_PRODUCER_STATE`).
            self._refused(flight, OutOfOrderSequenceNumber())
        elif code == _UNKNOWN_PRODUCER:
            # The broker has nothing of this producer, this batch included.
            self._end(flight, None, UnknownProducerId())
        elif code in _FENCED:
            # Fenced: a newer epoch hides a repeat from the broker, so it
            # says nothing of an earlier send.
            self._end(flight, None, _unless_written(ProducerFenced(), written_before))
        else:
            error_class = for_code(code)
            error = error_class()
            if error_class.retriable or code in _NOT_NOW:
                if getattr(error_class, "invalid_metadata", False) or code in _NOT_NOW:
                    self._refresh_metadata()
                maybe_written = code in _MAYBE_WRITTEN
                if not maybe_written:
                    # This send was not written (a leader moved, say).
                    flight.maybe_written = written_before
                self._failed(flight, error, maybe_written=maybe_written)
            else:
                self._refused(flight, _unless_written(error, written_before))

    def _failed(
        self, flight: _Flight, error: BaseException, *, maybe_written: bool
    ) -> None:
        """A send of ``flight`` failed in a way that sending again may mend."""
        if flight.lane.idempotent:
            flight.lane.recovering = True
            return
        if maybe_written:
            # Sent without a sequence number: sent again, it could be
            # written twice, so its caller hears that it may be written.
            written = MaybeSentError(
                f"{describe(error)}, after the batch was sent: the broker may have it"
            )
            written.__cause__ = error
            error = written
        self._end(flight, None, error)

    def _refused(self, flight: _Flight, error: BaseException) -> None:
        """The broker will not write ``flight``: with sequence numbers, none
        of the lane's later batches can be written either. Those in flight
        end when their (out of order) answers come."""
        lane = flight.lane
        flights = list(lane.flights)
        behind = flights[flights.index(flight) + 1 :] if flight in flights else []
        self._end(flight, None, error)
        if not lane.idempotent:
            return
        lane.refused = True
        # Batches before it stay: they may be written, and are resent (the
        # broker answers a repeat with its offset).
        for later in behind:
            if not later.in_air:
                self._end(
                    later,
                    None,
                    SequenceBrokenError(
                        "an earlier batch of the partition was refused"
                    ),
                )

    def _end(
        self, flight: _Flight, offset: int | None, error: BaseException | None
    ) -> None:
        if flight.ended:
            return
        flight.ended = True
        # A batch leaves its lane once every batch before it has ended: until
        # then it still counts in the lane's window (`_pump`).
        flights = flight.lane.flights
        while flights and flights[0].ended:
            flights.popleft()
        flight.done(offset, error)

    def _settle_lane(self, lane: _Lane) -> None:
        """After an answer: open the window, or start the lane's recovery."""
        if self._quiet is not None and not self._in_air():
            self._quiet.set()
        if lane.recovering:
            if lane.in_air == 0:
                self._recover(lane)
        else:
            self._pump(lane)

    def _recover(self, lane: _Lane) -> None:
        """Send the lane's batches again after a backoff and fresh metadata."""
        lane.recovering = True
        if lane.in_air or self._stopped or lane in self._resuming:
            return
        self._resuming.add(lane)
        task = asyncio.get_running_loop().create_task(self._resume(lane))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resume(self, lane: _Lane) -> None:
        try:
            await asyncio.sleep(self._retry_backoff)
            self._watch_topic(lane.topic)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._request_timeout_ms / 1000):
                    await contained(self._client.force_metadata_update())
        finally:
            self._resuming.discard(lane)
        lane.recovering = False
        self._pump(lane)


def _unless_written(error: BaseException, written_before: bool) -> BaseException:
    """``error``, the broker's "not written" for a batch; `MaybeSentError`
    when an earlier send of the batch may have been written (its answer
    lost): this answer speaks for this send only, and the batch sent again
    by the sender could be written twice."""
    if not written_before:
        return error
    maybe = MaybeSentError(
        f"{describe(error)} when sent again; an earlier send may have been written"
    )
    maybe.__cause__ = error
    return maybe


def _answers(response: Any) -> dict[tuple[str, int], PartitionAnswer]:
    """Each partition's answer in ``response``; none where it cannot be
    read (each of its batches is then reported maybe written)."""
    try:
        return {
            (answer.topic, answer.partition): answer
            for answer in partition_answers(response)
        }
    except Exception:
        return {}


def _settle_to(answer: asyncio.Future[int]) -> SendDone:
    """A ``done`` that settles ``answer`` (once)."""

    def done(offset: int | None, error: BaseException | None) -> None:
        if answer.done():
            return
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(offset or 0)

    return done


def _read_later(result: Any) -> None:
    """Read the outcome of a future the client returned and nobody awaits,
    so that a failed one is not reported as never retrieved."""
    if isinstance(result, asyncio.Future):
        result.add_done_callback(
            lambda future: future.cancelled() or future.exception()
        )
