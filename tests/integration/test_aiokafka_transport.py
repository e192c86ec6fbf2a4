"""`AiokafkaTransport` against a real broker: what a producer that is given
up says about each batch it held.

When the producer is replaced (after it lost its idempotent identity) or
closed with batches out, every batch it still holds is failed: one it never
sent with an error the sender retries (nothing was written), one it sent
with an error that says the broker may have it (reported not acknowledged,
never resent). Batches of other partitions are never called rejected.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest

from otel_kafka_events._delivery._aiokafka import AiokafkaTransport
from otel_kafka_events._delivery._transport import SendFailure
from otel_kafka_events_devstack import LocalKafkaStack
from otel_kafka_events_devstack._broker_base import SubprocessBroker

from ..pausing import pause
from .test_reliability_delivery import new_broker, read_all

TOPIC = "abandoned"


@pytest.fixture
def own_stack() -> Iterator[LocalKafkaStack]:
    """A broker (of this run's kind) this test may pause."""
    with LocalKafkaStack(new_broker()) as stack:
        yield stack


# What a stop that gives everything up says of three batches sent while
# the broker is paused: "sent" was on the wire, "queued" was handed over
# after it for the same partition, "other" for another partition.
# aiokafka's producer sends one request per broker at a time, so only
# "sent" left; our pipeline sends each batch at once, up to its window per
# partition (one without idempotence).
GIVEN_UP = {
    ("producer", False): ("UNKNOWN", "RETRY", "RETRY"),
    ("producer", True): ("UNKNOWN", "RETRY", "RETRY"),
    ("pipeline", False): ("UNKNOWN", "RETRY", "UNKNOWN"),
    ("pipeline", True): ("UNKNOWN", "UNKNOWN", "UNKNOWN"),
}


@pytest.mark.integration
@pytest.mark.parametrize("shape", ["pipeline", "producer"])
@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
async def test_a_given_up_producer_says_which_batches_it_sent(
    own_stack: LocalKafkaStack, idempotent: bool, shape: str
) -> None:
    if idempotent and not own_stack.broker.capabilities.idempotent_producer:
        pytest.skip("the broker refuses idempotent producers")
    await own_stack.create_topic(TOPIC, partitions=2)
    # An option only aiokafka's producer takes puts the events on it.
    options = {"compression_type": None} if shape == "producer" else {}
    transport = AiokafkaTransport(
        bootstrap_servers=own_stack.bootstrap_servers,
        enable_idempotence=idempotent,
        client_options=options,
    )
    assert transport.uses_pipeline is (shape == "pipeline")
    await transport.start()
    answers: dict[str, tuple[int | None, BaseException | None]] = {}
    answered = asyncio.Event()

    async def send(name: str, partition: int) -> None:
        batch = transport.new_batch()
        assert batch.append(None, bytearray(name.encode()), 0, [])

        def done(offset: int | None, error: BaseException | None) -> None:
            answers[name] = (offset, error)
            answered.set()

        await transport.send(batch, TOPIC, partition, done)

    for partition in (0, 1):  # connected, both partitions' leaders known
        await send(f"warm-{partition}", partition)
    async with asyncio.timeout(30):
        while len(answers) < 2:
            answered.clear()
            await answered.wait()
    broker = own_stack.broker
    assert isinstance(broker, SubprocessBroker)
    assert broker.process is not None
    pid = broker.process.pid
    await pause(pid)
    try:
        await send("sent", 0)
        await asyncio.sleep(0.3)  # on the wire, unanswered
        await send("queued", 0)  # behind it
        await send("other", 1)  # another partition, same broker
        await asyncio.sleep(0.3)
        await transport.stop(0.5, abandoned=True)
        async with asyncio.timeout(5):
            while len(answers) < 5:
                answered.clear()
                await answered.wait()
    finally:
        os.kill(pid, signal.SIGCONT)
    kinds = {
        name: transport.classify(error)
        for name, (_, error) in answers.items()
        if error is not None
    }
    expected = GIVEN_UP[shape, idempotent]
    assert kinds == {
        name: SendFailure[kind]
        for name, kind in zip(("sent", "queued", "other"), expected, strict=True)
    }
    written = {
        bytes(r.value) for r in await read_all(own_stack.bootstrap_servers, TOPIC)
    }
    # A batch said to be safe to send again was not written.
    for name, kind in kinds.items():
        if kind is SendFailure.RETRY:
            assert name.encode() not in written
