"""Property: whatever ``publish`` accepts decodes back to the same value.

Hypothesis draws payload models (scalars, datetimes, decimals, enums,
literals, nested models, lists, maps, optionals and unions) and values for
them, some of which are invalid. For every example either Pydantic refuses
the values (``ValidationError``), or the library refuses the model or the
event (`EventManagerUsageError`), or the event decodes through the schema
registry to the value Avro promises. The fast property encodes with
`EventType` (the publish path without a broker) against a real
`LocalSchemaRegistry`; a smaller one goes through a real broker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, note, settings
from schema_registry.client import schema

from otel_kafka_events import EventDecoder, EventManagerUsageError, KafkaEventManager
from otel_kafka_events._encoding._event_type import EventType
from otel_kafka_events._encoding._registry import make_registry_client
from otel_kafka_events.errors import EventPayloadError
from otel_kafka_events_devstack import LocalKafkaStack, LocalSchemaRegistry

from ..broker_support import capabilities
from ..payload_cases import (
    TOPIC,
    Case,
    _unique,
    avro_equal,
    build,
    cases,
    expected_fields,
)
from .test_reliability_delivery import read_all

T = TypeVar("T")


# --- fast property: EventType + LocalSchemaRegistry ---------------------------------


class Runner:
    """An event loop for the async registry client inside sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        self.loop.close()


@pytest.fixture(scope="module")
def runner() -> Iterator[Runner]:
    runner = Runner()
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalSchemaRegistry]:
    # NONE: every drawn model registers under its own name anyway.
    with LocalSchemaRegistry(default_compatibility="NONE") as registry:
        yield registry


def test_whatever_is_accepted_decodes_to_the_same_value(
    runner: Runner, registry: LocalSchemaRegistry
) -> None:
    # The library's client factory: one TLS setup instead of one per request.
    client = make_registry_client(registry.url)
    decoder = EventDecoder(client)
    outcomes = {"decoded": 0, "validation": 0, "refused_model": 0, "refused": 0}

    @settings(
        max_examples=500,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=cases())
    def check(case: Case) -> None:
        note(f"schema fields: {[s.annotation for s in case.specs]}")
        name = _unique("event")
        try:
            event_type = EventType(name, TOPIC, "roundtrip", case.model)
        except EventManagerUsageError:
            outcomes["refused_model"] += 1
            return
        payload = build(case)
        if payload is None:
            outcomes["validation"] += 1
            return
        refusal: EventManagerUsageError | None = None
        try:
            enriched = event_type.enrich(payload)
        except EventManagerUsageError as exc:
            refusal = exc
        if refusal is not None:
            # A refused event names itself (and the field, see test_bad_input).
            assert isinstance(refusal, EventPayloadError)
            assert refusal.event == name
            outcomes["refused"] += 1
            return
        schema_id = runner.run(
            client.register(f"{TOPIC}.{name}", schema.AvroSchema(event_type.schema))
        )
        event_type.set_schema_id(schema_id)
        # Values encoded before registration carry a placeholder id.
        enriched = event_type.enrich(payload)
        decoded = runner.run(decoder.decode(bytes(enriched.value)))
        expected = expected_fields(case, payload)
        note(f"expected {expected!r}\ndecoded {decoded!r}")
        assert avro_equal(expected, {k: decoded[k] for k in expected})
        assert decoded["id"] == enriched.event.id
        outcomes["decoded"] += 1

    check()
    # The property is only meaningful if both branches were exercised.
    assert sum(outcomes.values()) >= 500, outcomes
    assert outcomes["decoded"] >= 100, outcomes
    assert outcomes["validation"] + outcomes["refused"] > 0, outcomes


# --- slower property: through a real broker ------------------------------------------


@pytest.mark.integration
def test_whatever_is_accepted_arrives_through_the_broker(
    runner: Runner, local_kafka_stack: LocalKafkaStack
) -> None:
    manager = KafkaEventManager(
        application=f"app_{uuid.uuid4().hex[:12]}",
        topic_prefix="hypothesis",
        bootstrap_servers=local_kafka_stack.bootstrap_servers,
        registry_url=local_kafka_stack.registry_url,
        enable_idempotence=capabilities().idempotent_producer,
        delivery_timeout=10,
        retry_backoff=0.05,
    )
    runner.run(local_kafka_stack.create_topic(manager.topic))
    runner.run(manager.initialize())
    expected: dict[uuid.UUID, dict[str, Any]] = {}

    @settings(
        max_examples=50,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=cases())
    def check(case: Case) -> None:
        name = _unique("event")
        try:
            publisher = runner.run(manager.create_publisher(name, case.model))
        except EventManagerUsageError:
            return
        payload = build(case)
        if payload is None:
            return
        try:
            event = runner.run(publisher.publish(payload, wait=True))
        except EventManagerUsageError:
            return
        expected[event.id] = expected_fields(case, payload)

    try:
        check()
        assert runner.run(manager.aclose(timeout=30)) == 0
    finally:
        runner.run(manager.aclose(timeout=1))
    records = runner.run(read_all(local_kafka_stack.bootstrap_servers, manager.topic))
    decoder = EventDecoder(local_kafka_stack.registry_url)
    decoded = [runner.run(decoder.decode(record.value)) for record in records]
    assert len(decoded) == len(expected) > 0
    for value in decoded:
        fields = expected[value["id"]]
        assert avro_equal(fields, {k: value[k] for k in fields}), value
