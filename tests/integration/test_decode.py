"""Decoding through a schema registry given by its URL (real HTTP)."""

from __future__ import annotations

import datetime as dt

from schema_registry.client import schema

from otel_kafka_events import EventPayload, decode
from otel_kafka_events._encoding._event_type import EventType
from otel_kafka_events._encoding._registry import make_registry_client
from otel_kafka_events_devstack import LocalSchemaRegistry


class Sample(EventPayload):
    """A payload with a timestamp."""

    label: str
    when: dt.datetime


async def test_decode_with_a_registry_url() -> None:
    with LocalSchemaRegistry() as registry:
        event_type = EventType("sample", "decode.test", "app", Sample)
        client = make_registry_client(registry.url)
        schema_id = await client.register(
            "decode.test.sample", schema.AvroSchema(event_type.schema)
        )
        event_type.set_schema_id(schema_id)
        when = dt.datetime(2020, 2, 2, 2, 2, 2, 2, tzinfo=dt.UTC)
        enriched = event_type.enrich(Sample(label="by url", when=when))
        decoded = await decode(bytes(enriched.value), registry.url)
    assert (decoded["label"], decoded["when"]) == ("by url", when)
    assert decoded["id"] == enriched.event.id
