"""What a Kubernetes cluster does to a publisher, against real brokers.

- A schema registry restarting behind an ingress: for a while every request
  is answered ``502``/``503`` with an HTML page, then it is healthy again.
- A registry (or the Service in front of it) that accepts connections and
  never answers.
- A broker that stops answering (a paused container, a network partition)
  for longer than aiokafka's request timeout.
- The pod's SIGTERM while the service publishes: the documented shutdown
  path delivers, or truthfully reports, every event within the 30 s grace
  period.

See ``docs/reliability.md``. The registry is reached through `Ingress`
(``tests/ingress.py``), which plays the ingress; brokers that are paused
are started per test.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from otel_kafka_events import DeliveryFailure, EventPayload
from otel_kafka_events._kafka import FOREGROUND_LIMIT
from otel_kafka_events.errors import SchemaRegistryError
from otel_kafka_events_devstack import LocalKafkaStack
from otel_kafka_events_devstack._broker_base import SubprocessBroker

from ..broker_support import capabilities
from ..conftest import ManagerFactory
from ..ingress import BAD_GATEWAY, SERVICE_UNAVAILABLE, Ingress
from ..pausing import pause
from .test_reliability_delivery import (
    Managers,
    connected_manager,
    decode_all,
    new_broker,
    read_all,
)

RELIABILITY = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


class Ping(EventPayload):
    """A numbered test event."""

    n: int


def registry_port(stack: LocalKafkaStack) -> int:
    return int(stack.registry_url.rstrip("/").rsplit(":", 1)[1])


def broker_pid(stack: LocalKafkaStack) -> int:
    """The broker's process, to pause (SIGSTOP) and resume (SIGCONT)."""
    broker = stack.broker
    assert isinstance(broker, SubprocessBroker)
    assert broker.process is not None
    return broker.process.pid


@pytest_asyncio.fixture
async def managers() -> AsyncIterator[Managers]:
    factory = Managers()
    yield factory
    for manager in factory.created:
        await manager.aclose(timeout=1)


@pytest.fixture
def own_stack() -> Iterator[LocalKafkaStack]:
    """A broker (of this run's kind) and registry this test may pause."""
    with LocalKafkaStack(new_broker()) as stack:
        yield stack


# --- The registry ---------------------------------------------------------------


async def test_registry_answering_html_then_healthy_delivers_what_buffered(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    failures: list[DeliveryFailure] = []
    async with Ingress(registry_port(local_kafka_stack)) as ingress:
        ingress.answer_with(BAD_GATEWAY)
        manager = await make_kafka_manager(
            registry_url=ingress.url,
            delivery_timeout=30,
            retry_backoff=0.05,
            backoff_interval=0.2,
            on_delivery_error=failures.append,
        )
        with capture_logs() as logs:
            started = time.monotonic()
            publisher = await manager.create_publisher("ping", Ping)
            assert time.monotonic() - started <= FOREGROUND_LIMIT + 0.1
            events = [await publisher.publish(Ping(n=n)) for n in range(20)]
            waiting = asyncio.ensure_future(publisher.publish(Ping(n=20), wait=True))
            await asyncio.sleep(1.0)
            ingress.answer_with(SERVICE_UNAVAILABLE)
            await asyncio.sleep(1.0)
            # Still buffering, and still trying: no event failed meanwhile.
            assert not waiting.done()
            answered = ingress.answered
            assert answered >= 3
            ingress.answer_with(None)
            async with asyncio.timeout(15):
                events.append(await waiting)
    assert failures == []
    stats = manager.stats
    assert (stats.published, stats.delivered, stats.buffered) == (21, 21, 0)
    records = await read_all(local_kafka_stack.bootstrap_servers, manager.topic)
    values = await decode_all(local_kafka_stack.registry_url, records)
    assert [value["n"] for value in values] == list(range(21))
    assert [value["id"] for value in values] == [event.id for event in events]
    # The log says what the registry answered, and where it is.
    [first] = [
        entry
        for entry in logs
        if entry["event"] == "Event registration failed, retrying in the background"
    ]
    assert "HTTP 502" in first["error"]
    assert ingress.url in first["error"]
    assert "not JSON" in first["error"]


async def test_registry_html_answer_is_a_registry_error_with_raise_on_error(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    async with Ingress(registry_port(local_kafka_stack)) as ingress:
        ingress.answer_with(SERVICE_UNAVAILABLE)
        manager = await make_kafka_manager(
            registry_url=ingress.url, raise_on_error=True
        )
        with pytest.raises(SchemaRegistryError) as raised:
            await manager.create_publisher("ping", Ping)
    assert raised.value.status == 503
    assert raised.value.url == f"{ingress.url}/"
    assert "Service Temporarily Unavailable" in str(raised.value)


async def test_registry_that_never_answers_holds_startup_at_most_three_seconds(
    make_kafka_manager: ManagerFactory, local_kafka_stack: LocalKafkaStack
) -> None:
    failures: list[DeliveryFailure] = []
    async with Ingress(registry_port(local_kafka_stack)) as ingress:
        ingress.pause()  # connections accepted, nothing answered
        manager = await make_kafka_manager(
            registry_url=ingress.url,
            delivery_timeout=30,
            retry_backoff=0.05,
            backoff_interval=0.2,
            on_delivery_error=failures.append,
        )
        started = time.monotonic()
        publisher = await manager.create_publisher("ping", Ping)
        elapsed = time.monotonic() - started
        assert FOREGROUND_LIMIT - 0.1 <= elapsed <= FOREGROUND_LIMIT + 0.1
        for n in range(5):
            await publisher.publish(Ping(n=n))
        waiting = asyncio.ensure_future(publisher.publish(Ping(n=5), wait=True))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        ingress.resume()
        async with asyncio.timeout(20):
            await waiting
    assert failures == []
    assert manager.stats.delivered == 6


# --- The broker -------------------------------------------------------------------


@pytest.mark.integration
async def test_broker_paused_longer_than_the_request_timeout_is_waited_for(
    managers: Managers, own_stack: LocalKafkaStack
) -> None:
    # Without idempotence, aiokafka fails a request that got no answer after
    # its request_timeout_ms (40 s by default), and the broker may have
    # written it: the event was reported failed long before its deadline,
    # and was on the topic. The producer now waits until the deadline.
    manager = await connected_manager(
        managers, own_stack, enable_idempotence=False, delivery_timeout=60
    )
    publisher = await manager.create_publisher("ping", Ping)
    await publisher.publish(Ping(n=0), wait=True)
    pid = broker_pid(own_stack)
    await pause(pid)
    try:
        waiting = asyncio.ensure_future(publisher.publish(Ping(n=1), wait=True))
        await asyncio.sleep(43)  # past aiokafka's default request timeout
        assert not waiting.done(), waiting
    finally:
        os.kill(pid, signal.SIGCONT)
    async with asyncio.timeout(15):
        await waiting
    assert managers.failures == []
    records = await read_all(own_stack.bootstrap_servers, manager.topic)
    values = await decode_all(own_stack.registry_url, records)
    assert [value["n"] for value in values] == [0, 1]


@pytest.mark.integration
@pytest.mark.parametrize("timeout", [0.5, 1.0])
async def test_aclose_keeps_its_deadline_with_the_broker_paused(
    managers: Managers, own_stack: LocalKafkaStack, timeout: float
) -> None:
    manager = await connected_manager(managers, own_stack, delivery_timeout=120)
    publisher = await manager.create_publisher("ping", Ping)
    await publisher.publish(Ping(n=0), wait=True)
    pid = broker_pid(own_stack)
    await pause(pid)
    try:
        waiting = [
            asyncio.ensure_future(publisher.publish(Ping(n=n), wait=True))
            for n in range(1, 4)
        ]
        await asyncio.sleep(0.2)  # in aiokafka's hands, unanswered
        started = time.monotonic()
        undelivered = await manager.aclose(timeout=timeout)
        elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert elapsed <= timeout + 0.1, elapsed
    assert undelivered == 3
    assert {f.reason for f in managers.failures} == {"shutdown"}
    for task in waiting:
        assert task.done()


# --- SIGTERM ------------------------------------------------------------------------


def shutdown_sample() -> str:
    """The shutdown sample of docs/reliability.md (the one defining
    ``run_until_terminated``)."""
    blocks = re.findall(r"^```python\n(.*?)^```", RELIABILITY.read_text(), re.M | re.S)
    [sample] = [block for block in blocks if "def run_until_terminated" in block]
    return str(sample)


SERVICE = """
import asyncio, json, sys
from otel_kafka_events import EventPayload, KafkaEventManager

{sample}

class Tick(EventPayload):
    n: int

async def main(bootstrap, registry, application, idempotent, out):
    failures = []
    published = []
    manager = KafkaEventManager(
        application=application, topic_prefix="k8s",
        bootstrap_servers=bootstrap, registry_url=registry,
        enable_idempotence=idempotent == "true",
        on_delivery_error=failures.append,
    )
    await manager.initialize()
    publisher = await manager.create_publisher("tick", Tick)

    async def work():
        n = 0
        while True:
            event = await publisher.publish(Tick(n=n))
            published.append(str(event.id))
            n += 1
            if n == 200:
                print("publishing", flush=True)
            await asyncio.sleep(0.002)

    undelivered = await run_until_terminated(manager, work)
    stats = manager.stats
    with open(out, "w") as file:
        json.dump({{
            "published": published,
            "failed": [
                [f.event_id, f.reason, type(f.error).__name__] for f in failures
            ],
            "undelivered": undelivered,
            "delivered": stats.delivered,
            "buffered": stats.buffered,
        }}, file)

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.integration
@pytest.mark.parametrize("broker", ["healthy", "paused"])
async def test_sigterm_delivers_or_truthfully_reports_within_the_grace_period(
    own_stack: LocalKafkaStack, tmp_path: Path, broker: str
) -> None:
    application = f"sigterm_{broker}"
    await own_stack.create_topic(f"k8s.{application}", partitions=1)
    script = tmp_path / "service.py"
    script.write_text(SERVICE.format(sample=shutdown_sample()))
    out = tmp_path / "outcome.json"
    idempotent = "true" if capabilities().idempotent_producer else "false"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        own_stack.bootstrap_servers,
        own_stack.registry_url,
        application,
        idempotent,
        str(out),
        stdout=asyncio.subprocess.PIPE,
    )
    pid = broker_pid(own_stack)
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            assert b"publishing" in await process.stdout.readline()
        if broker == "paused":
            await pause(pid)
            await asyncio.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        async with asyncio.timeout(30):  # Kubernetes' grace period
            code = await process.wait()
        grace_used = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.kill(pid, signal.SIGCONT)
    assert code == 0
    outcome: dict[str, Any] = json.loads(out.read_text())
    published = outcome["published"]
    failed = {
        event_id: (reason, error) for event_id, reason, error in outcome["failed"]
    }
    # Every event's fate is known: delivered, or reported once.
    assert outcome["buffered"] == 0
    assert len(outcome["failed"]) == len(failed)
    assert outcome["delivered"] + len(failed) == len(published)
    assert set(failed) <= set(published)
    records = await read_all(own_stack.bootstrap_servers, f"k8s.{application}")
    on_topic = [
        str(value["id"]) for value in await decode_all(own_stack.registry_url, records)
    ]
    delivered = set(published) - set(failed)
    assert delivered <= set(on_topic)
    for event_id, (reason, error) in failed.items():
        assert reason == "shutdown"
        if error != "NotAcknowledgedError":
            # Never handed to the producer: not on the topic.
            assert event_id not in on_topic, (reason, error)
    if broker == "healthy":
        assert failed == {}
        assert outcome["undelivered"] == 0
    else:
        assert failed, "a paused broker acknowledged everything?"
        assert outcome["undelivered"] == len(failed)
        # close_timeout (15 s) bounds the close, inside the grace period.
        assert grace_used < 15 + 2
