"""The library against both registries, pointed at as a user would.

``registry_peer`` gives `LocalSchemaRegistry` and Apicurio Registry (at
``.../apis/ccompat/v7``, the URL a user puts in
``SCHEMA_MANAGER_REGISTRY_URL``). The same expectations hold for both:
events carry the id the registry gave, decode through it, and a refused
schema change names the broken field whichever registry refused it.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from schema_registry.client import AsyncSchemaRegistryClient

from otel_kafka_events import EventDecoder, EventPayload, KafkaEventManager, decode
from otel_kafka_events._encoding._codec import split_confluent_frame
from otel_kafka_events.errors import IncompatibleSchemaError
from otel_kafka_events_devstack import LocalKafkaStack

from ..conftest import ManagerFactory
from ..peer_support import RegistryPeer


class Version1(EventPayload):
    """The first version of an event."""

    quantity: int
    note: str


class NewRequiredField(EventPayload):
    """Adds a field without default: old events cannot be read."""

    quantity: int
    note: str
    colour_added: str


class ChangedType(EventPayload):
    """Changes a field's type."""

    quantity: str
    note: str


class NewOptionalField(EventPayload):
    """Adds a nullable field with a null default: compatible."""

    quantity: int
    note: str
    extra_info: str | None = None


class Dropped(EventPayload):
    """Drops ``note``: old readers (FORWARD) miss a field without default."""

    quantity: int


class ZipInt(BaseModel):
    zip: int


class ZipText(BaseModel):
    zip: str


class Shipped(EventPayload):
    address: ZipInt


class ShippedText(EventPayload):
    address: ZipText


def client_for(peer: RegistryPeer) -> AsyncSchemaRegistryClient:
    """A registry client independent of the manager's."""
    client = AsyncSchemaRegistryClient(url=peer.url)
    client.client_kwargs["verify"] = False  # plain HTTP
    return client


async def first_version(
    make_kafka_manager: ManagerFactory,
    peer: RegistryPeer,
    compatibility: str,
    model: type[EventPayload] = Version1,
    payload: EventPayload | None = None,
) -> tuple[KafkaEventManager, int]:
    """Register ``model`` as ``"item"`` and publish one event of it."""
    manager = await make_kafka_manager(
        registry_url=peer.url, schema_compatibility=compatibility
    )
    publisher = await manager.create_publisher("item", model)
    await publisher.publish(payload or Version1(quantity=1, note="v1"), wait=True)
    found = await client_for(peer).get_schema(manager.subject_for("item"))
    assert found is not None
    return manager, found.schema_id


async def redeployed(
    make_kafka_manager: ManagerFactory,
    first: KafkaEventManager,
    peer: RegistryPeer,
    compatibility: str,
) -> KafkaEventManager:
    """A new manager on the same topic and subjects, as after a deployment."""
    return await make_kafka_manager(
        application=first.application,
        create_topic=False,
        registry_url=peer.url,
        schema_compatibility=compatibility,
    )


async def test_events_carry_the_registry_id_and_decode(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    registry_peer: RegistryPeer,
) -> None:
    manager = await make_kafka_manager(registry_url=registry_peer.url)
    publisher = await manager.create_publisher("item", Version1)
    for n in range(3):
        await publisher.publish(Version1(quantity=n, note=f"n{n}"), wait=True)

    records = await local_kafka_stack.consume(manager.topic, 3, timeout=30)
    found = await client_for(registry_peer).get_schema(manager.subject_for("item"))
    decoder = EventDecoder(registry_peer.url)
    decoded = [await decoder.decode(r.value) for r in records]

    assert found is not None
    assert {split_confluent_frame(r.value)[0] for r in records} == {found.schema_id}
    assert [(d["quantity"], d["note"]) for d in decoded] == [
        (0, "n0"),
        (1, "n1"),
        (2, "n2"),
    ]
    assert (await decode(records[0].value, registry_peer.url))["note"] == "n0"


async def test_compatible_change_gets_a_new_id_and_both_decode(
    make_kafka_manager: ManagerFactory,
    local_kafka_stack: LocalKafkaStack,
    registry_peer: RegistryPeer,
) -> None:
    first, v1_id = await first_version(make_kafka_manager, registry_peer, "BACKWARD")
    manager = await redeployed(make_kafka_manager, first, registry_peer, "BACKWARD")
    publisher = await manager.create_publisher("item", NewOptionalField)
    await publisher.publish(
        NewOptionalField(quantity=2, note="v2", extra_info="more"), wait=True
    )

    found = await client_for(registry_peer).get_schema(manager.subject_for("item"))
    records = await local_kafka_stack.consume(manager.topic, 2, timeout=30)
    old, new = [await decode(r.value, registry_peer.url) for r in records]

    assert found is not None
    assert (found.version, found.schema_id != v1_id) == (2, True)
    assert [split_confluent_frame(r.value)[0] for r in records] == [
        v1_id,
        found.schema_id,
    ]
    assert (old["quantity"], old["note"], "extra_info" in old) == (1, "v1", False)
    assert (new["quantity"], new["extra_info"]) == (2, "more")


@pytest.mark.parametrize(
    ("model", "field"),
    [(NewRequiredField, "colour_added"), (ChangedType, "quantity")],
)
async def test_incompatible_change_names_the_field(
    make_kafka_manager: ManagerFactory,
    registry_peer: RegistryPeer,
    model: type[EventPayload],
    field: str,
) -> None:
    first, _ = await first_version(make_kafka_manager, registry_peer, "BACKWARD")
    manager = await redeployed(make_kafka_manager, first, registry_peer, "BACKWARD")

    with pytest.raises(IncompatibleSchemaError) as caught:
        await manager.create_publisher("item", model)

    assert caught.value.subject == manager.subject_for("item")
    assert f"'{field}'" in str(caught.value)


async def test_incompatible_nested_change_names_the_dotted_field(
    make_kafka_manager: ManagerFactory, registry_peer: RegistryPeer
) -> None:
    first, _ = await first_version(
        make_kafka_manager,
        registry_peer,
        "BACKWARD",
        Shipped,
        Shipped(address=ZipInt(zip=69001)),
    )
    manager = await redeployed(make_kafka_manager, first, registry_peer, "BACKWARD")

    with pytest.raises(IncompatibleSchemaError) as caught:
        await manager.create_publisher("item", ShippedText)

    assert "'address.zip'" in str(caught.value)


async def test_forward_removal_names_the_field_of_the_old_schema(
    make_kafka_manager: ManagerFactory, registry_peer: RegistryPeer
) -> None:
    # FORWARD: the old schema reads new data, so the path runs through it.
    first, _ = await first_version(make_kafka_manager, registry_peer, "FORWARD")
    manager = await redeployed(make_kafka_manager, first, registry_peer, "FORWARD")

    with pytest.raises(IncompatibleSchemaError) as caught:
        await manager.create_publisher("item", Dropped)

    assert "'note'" in str(caught.value)


@pytest.mark.parametrize("model", [NewRequiredField, ChangedType])
async def test_none_compatibility_accepts_anything(
    make_kafka_manager: ManagerFactory,
    registry_peer: RegistryPeer,
    model: type[EventPayload],
) -> None:
    first, v1_id = await first_version(make_kafka_manager, registry_peer, "NONE")
    manager = await redeployed(make_kafka_manager, first, registry_peer, "NONE")
    await manager.create_publisher("item", model)

    found = await client_for(registry_peer).get_schema(manager.subject_for("item"))

    assert found is not None
    assert found.schema_id != v1_id


@pytest.mark.parametrize("level", ["FULL", "FORWARD_TRANSITIVE"])
async def test_compatibility_level_is_set_on_the_subject(
    make_kafka_manager: ManagerFactory, registry_peer: RegistryPeer, level: str
) -> None:
    manager, _ = await first_version(make_kafka_manager, registry_peer, level)

    found: Any = await client_for(registry_peer).get_compatibility(
        manager.subject_for("item")
    )

    assert found == level
