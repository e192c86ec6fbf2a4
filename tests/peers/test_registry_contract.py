"""The registry contract: what `LocalSchemaRegistry` and Apicurio share.

Each test runs against both registries (``registry_peer``). Where Apicurio
Registry answers differently, the test asserts both answers explicitly: a
divergence is a documented fact (see docs/contributing/testing.md), not a
loose check that accepts either. Subjects are unique per test, because the Apicurio
instance is shared by the session and never reset.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from schema_registry.client import AsyncSchemaRegistryClient
from schema_registry.client.errors import ClientError

from ..peer_support import RegistryPeer


def record(*fields: dict[str, Any], name: str = "Order") -> dict[str, Any]:
    """An Avro record schema with the given fields."""
    return {
        "type": "record",
        "name": name,
        "namespace": "test.contract",
        "fields": list(fields),
    }


A_INT = {"name": "a", "type": "int"}
B_INT = {"name": "b", "type": "int"}
B_INT_DEFAULT = {"name": "b", "type": "int", "default": 0}
V_A = record(A_INT)
V_A_LONG = record({"name": "a", "type": "long"})
V_A_STRING = record({"name": "a", "type": "string"})
V_AB = record(A_INT, B_INT)
V_AB_DEFAULT = record(A_INT, B_INT_DEFAULT)


def client_for(peer: RegistryPeer) -> AsyncSchemaRegistryClient:
    """A fresh client (empty caches), as the library builds one."""
    client = AsyncSchemaRegistryClient(url=peer.url)
    client.client_kwargs["verify"] = False  # plain HTTP
    return client


@pytest.fixture
def client(registry_peer: RegistryPeer) -> AsyncSchemaRegistryClient:
    return client_for(registry_peer)


@pytest.fixture
async def http(registry_peer: RegistryPeer) -> AsyncIterator[httpx.AsyncClient]:
    # The peer's URL has a path (Apicurio's /apis/ccompat/v7): requests use
    # relative paths without a leading slash.
    async with httpx.AsyncClient(base_url=registry_peer.url + "/", timeout=10) as h:
        yield h


def body(schema: dict[str, Any] | str) -> dict[str, str]:
    return {"schema": schema if isinstance(schema, str) else json.dumps(schema)}


# -- registration and ids -------------------------------------------------------


async def test_register_returns_an_id_that_reads_back(
    registry_peer: RegistryPeer, client: AsyncSchemaRegistryClient
) -> None:
    subject = registry_peer.subject("orders")
    schema_id = await client.register(subject, V_AB_DEFAULT)

    fetched = await client_for(registry_peer).get_by_id(schema_id)

    assert schema_id > 0
    assert fetched is not None
    assert fetched.raw_schema == V_AB_DEFAULT


async def test_same_schema_same_subject_is_one_version(
    registry_peer: RegistryPeer, client: AsyncSchemaRegistryClient
) -> None:
    subject = registry_peer.subject("orders")
    first = await client.register(subject, V_A)
    again = await client_for(registry_peer).register(subject, V_A)

    assert again == first
    assert await client.get_versions(subject) == [1]


async def test_same_schema_under_two_subjects_shares_one_id(
    registry_peer: RegistryPeer, client: AsyncSchemaRegistryClient
) -> None:
    # Confluent and Apicurio (content ids) agree; so must LocalSchemaRegistry.
    first = await client.register(registry_peer.subject("orders"), V_A)
    second = await client.register(registry_peer.subject("payments"), V_A)

    assert first == second


async def test_versions_listing_and_reads(
    registry_peer: RegistryPeer, client: AsyncSchemaRegistryClient
) -> None:
    subject = registry_peer.subject("orders")
    id_1 = await client.register(subject, V_A)
    id_2 = await client.register(subject, V_AB_DEFAULT)
    reader = client_for(registry_peer)

    latest = await reader.get_schema(subject)
    first = await reader.get_schema(subject, version=1)

    assert id_1 != id_2
    assert await reader.get_versions(subject) == [1, 2]
    assert latest is not None
    assert (latest.version, latest.schema_id) == (2, id_2)
    assert first is not None
    assert (first.version, first.schema_id, first.schema.raw_schema) == (1, id_1, V_A)
    assert await reader.get_schema(subject, version=7) is None


async def test_lookup_finds_only_registered_schemas(
    registry_peer: RegistryPeer,
    client: AsyncSchemaRegistryClient,
    http: httpx.AsyncClient,
) -> None:
    subject = registry_peer.subject("orders")
    await client.register(subject, V_A)
    id_2 = await client.register(subject, V_AB_DEFAULT)

    found = await client_for(registry_peer).check_version(subject, V_AB_DEFAULT)
    unknown_schema = await http.post(f"subjects/{subject}", json=body(V_A_STRING))
    unknown_subject = await http.post(
        f"subjects/{registry_peer.subject('nobody')}", json=body(V_A)
    )

    assert found is not None
    assert (found.subject, found.schema_id, found.version) == (subject, id_2, 2)
    assert (unknown_schema.status_code, unknown_schema.json()["error_code"]) == (
        404,
        40403,
    )
    assert (unknown_subject.status_code, unknown_subject.json()["error_code"]) == (
        404,
        40401,
    )


async def test_schema_id_lists_every_subject_using_it(
    registry_peer: RegistryPeer, client: AsyncSchemaRegistryClient
) -> None:
    orders, payments = registry_peer.subject("orders"), registry_peer.subject("pay")
    schema_id = await client.register(orders, record(A_INT, name="Shared"))
    await client.register(payments, record(A_INT, name="Shared"))

    pairs = await client.get_schema_subject_versions(schema_id)

    assert pairs is not None
    assert sorted((p.subject, p.version) for p in pairs) == sorted(
        [(orders, 1), (payments, 1)]
    )


async def test_not_found_codes(
    registry_peer: RegistryPeer,
    client: AsyncSchemaRegistryClient,
    http: httpx.AsyncClient,
) -> None:
    subject = registry_peer.subject("orders")
    await client.register(subject, V_A)

    no_subject = await http.get(f"subjects/{registry_peer.subject('no')}/versions")
    no_version = await http.get(f"subjects/{subject}/versions/5")
    no_id = await http.get("schemas/ids/987654")

    assert (no_subject.status_code, no_subject.json()["error_code"]) == (404, 40401)
    assert (no_version.status_code, no_version.json()["error_code"]) == (404, 40402)
    assert (no_id.status_code, no_id.json()["error_code"]) == (404, 40403)
    assert await client_for(registry_peer).get_by_id(987654) is None


async def test_invalid_schema_and_level_are_422(
    registry_peer: RegistryPeer, http: httpx.AsyncClient
) -> None:
    subject = registry_peer.subject("orders")
    bad_schema = await http.post(
        f"subjects/{subject}/versions",
        json=body(record({"name": "a", "type": "nope"})),
    )
    bad_level = await http.put(f"config/{subject}", json={"compatibility": "SIDEWAYS"})

    assert (bad_schema.status_code, bad_schema.json()["error_code"]) == (422, 42201)
    assert (bad_level.status_code, bad_level.json()["error_code"]) == (422, 42203)


# -- compatibility levels ----------------------------------------------------------


async def test_global_level_reads_and_sets(
    registry_peer: RegistryPeer, client: AsyncSchemaRegistryClient
) -> None:
    # Both start as a Confluent registry does: BACKWARD.
    assert await client.get_compatibility() == "BACKWARD"
    try:
        assert await client.update_compatibility("FULL") is True
        assert await client_for(registry_peer).get_compatibility() == "FULL"
    finally:
        await client.update_compatibility("BACKWARD")
    assert await client.get_compatibility() == "BACKWARD"


async def test_subject_level_set_read_and_delete(
    registry_peer: RegistryPeer,
    client: AsyncSchemaRegistryClient,
    http: httpx.AsyncClient,
) -> None:
    subject = registry_peer.subject("orders")
    # Set before the subject has any version, as the library does.
    put = await http.put(f"config/{subject}", json={"compatibility": "FULL"})
    await client.register(subject, V_A)

    level = await client_for(registry_peer).get_compatibility(subject)
    deleted = await http.delete(f"config/{subject}")
    fallback = await http.get(f"config/{subject}?defaultToGlobal=true")
    deleted_again = await http.delete(f"config/{subject}")

    assert put.status_code == 200
    assert put.json()["compatibility"] == "FULL"
    assert level == "FULL"
    assert deleted.json() == {"compatibilityLevel": "FULL"}
    assert fallback.json() == {"compatibilityLevel": "BACKWARD"}
    assert (deleted_again.status_code, deleted_again.json()["error_code"]) == (
        404,
        40408,
    )


@pytest.mark.parametrize(
    ("level", "old", "new", "compatible"),
    [
        pytest.param("BACKWARD", V_A, V_AB_DEFAULT, True, id="backward-add-default"),
        pytest.param("BACKWARD", V_A, V_AB, False, id="backward-add-required"),
        pytest.param("BACKWARD", V_AB, V_A, True, id="backward-remove-field"),
        pytest.param("BACKWARD", V_A, V_A_LONG, True, id="backward-int-to-long"),
        pytest.param("BACKWARD", V_A, V_A_STRING, False, id="backward-int-to-string"),
        pytest.param("FORWARD", V_A, V_AB, True, id="forward-add-required"),
        pytest.param("FORWARD", V_AB, V_A, False, id="forward-remove-required"),
        pytest.param("FORWARD", V_A, V_A_LONG, False, id="forward-int-to-long"),
        pytest.param("FULL", V_A, V_AB_DEFAULT, True, id="full-add-default"),
        pytest.param("FULL", V_A, V_AB, False, id="full-add-required"),
        pytest.param("FULL", V_AB, V_A, False, id="full-remove-required"),
        pytest.param("NONE", V_A, V_A_STRING, True, id="none-change-type"),
    ],
)
async def test_compatibility_verdicts_match_registration(
    registry_peer: RegistryPeer,
    client: AsyncSchemaRegistryClient,
    level: str,
    old: dict[str, Any],
    new: dict[str, Any],
    compatible: bool,
) -> None:
    subject = registry_peer.subject("orders")
    await client.update_compatibility(level, subject)
    old_id = await client.register(subject, old)

    verdict = await client.test_compatibility(subject, new)
    if compatible:
        assert await client.register(subject, new) != old_id
    else:
        with pytest.raises(ClientError) as caught:
            await client.register(subject, new)
        assert caught.value.http_code == 409

    assert verdict is compatible


@pytest.mark.parametrize(
    ("level", "history", "new", "transitively_compatible"),
    [
        # v3 drops b's default: fine against v2 (which writes b), not v1.
        pytest.param("BACKWARD", [V_A, V_AB_DEFAULT], V_AB, True, id="backward"),
        pytest.param(
            "BACKWARD_TRANSITIVE", [V_A, V_AB_DEFAULT], V_AB, False, id="backward-tr"
        ),
        # v3 removes b: v2 readers default it, v1 readers cannot.
        pytest.param("FORWARD", [V_AB, V_AB_DEFAULT], V_A, True, id="forward"),
        pytest.param(
            "FORWARD_TRANSITIVE", [V_AB, V_AB_DEFAULT], V_A, False, id="forward-tr"
        ),
    ],
)
async def test_transitive_levels_check_every_version(
    registry_peer: RegistryPeer,
    client: AsyncSchemaRegistryClient,
    http: httpx.AsyncClient,
    level: str,
    history: list[dict[str, Any]],
    new: dict[str, Any],
    transitively_compatible: bool,
) -> None:
    subject = registry_peer.subject("orders")
    await client.update_compatibility(level, subject)
    for version in history:
        await client.register(subject, version)

    against_latest = await client.test_compatibility(subject, new)
    against_v1 = await client.test_compatibility(subject, new, version=1)
    against_all = await http.post(
        f"compatibility/subjects/{subject}/versions", json=body(new)
    )

    assert against_latest is True
    assert against_v1 is False
    if registry_peer.kind == "local":
        # Confluent: the versions the level names (the latest, or all).
        assert against_all.json()["is_compatible"] is transitively_compatible
    else:
        # Divergence: Apicurio checks every version, whatever the level.
        assert against_all.json()["is_compatible"] is False
    if transitively_compatible:
        assert await client.register(subject, new) > 0
    else:
        with pytest.raises(ClientError) as caught:
            await client.register(subject, new)
        assert caught.value.http_code == 409


async def test_subject_without_versions_is_compatible_with_latest(
    registry_peer: RegistryPeer, client: AsyncSchemaRegistryClient
) -> None:
    subject = registry_peer.subject("empty")

    assert await client.test_compatibility(subject, V_A) is True


async def test_incompatible_registration_is_409_naming_the_field(
    registry_peer: RegistryPeer, client: AsyncSchemaRegistryClient
) -> None:
    subject = registry_peer.subject("orders")
    await client.register(subject, V_A)

    with pytest.raises(ClientError) as caught:
        await client.register(subject, V_AB)

    reply = caught.value.server_traceback
    assert caught.value.http_code == 409
    assert isinstance(reply, dict)
    assert reply["error_code"] == 409
    # Each names field b and where it is, in its own words.
    if registry_peer.kind == "local":
        assert "fields: ['b']" in reply["message"]
        assert "/fields/1" in reply["message"]
    else:
        assert "RuleViolationException" in reply["message"]
        assert "[b at /fields/1]" in reply["message"]


# -- where Apicurio answers differently: asserted, and listed in the docs ---


async def test_divergence_verbose_check_messages(
    registry_peer: RegistryPeer, client: AsyncSchemaRegistryClient
) -> None:
    subject = registry_peer.subject("orders")
    await client.register(subject, V_A)

    verdict = await client.test_compatibility(subject, V_A_STRING, verbose=True)

    assert isinstance(verdict, dict)
    assert verdict["is_compatible"] is False
    if registry_peer.kind == "local":
        [message] = verdict["messages"]
        assert "fields: ['a']" in message
    else:
        # Apicurio's ?verbose=true adds no messages.
        assert "messages" not in verdict


async def test_divergence_subject_level_when_unset(
    registry_peer: RegistryPeer,
    client: AsyncSchemaRegistryClient,
    http: httpx.AsyncClient,
) -> None:
    subject = registry_peer.subject("orders")
    await client.register(subject, V_A)

    unset = await http.get(f"config/{subject}")
    unknown = await http.get(f"config/{registry_peer.subject('nobody')}")

    if registry_peer.kind == "local":
        # Confluent: a subject without its own level has no config.
        assert (unset.status_code, unset.json()["error_code"]) == (404, 40408)
        assert (unknown.status_code, unknown.json()["error_code"]) == (404, 40408)
    else:
        # Apicurio falls back to the global level, and knows unknown subjects.
        assert unset.json() == {"compatibilityLevel": "BACKWARD"}
        assert (unknown.status_code, unknown.json()["error_code"]) == (404, 40401)


async def test_divergence_check_against_all_versions_of_empty_subject(
    registry_peer: RegistryPeer, http: httpx.AsyncClient
) -> None:
    subject = registry_peer.subject("empty")

    path = f"compatibility/subjects/{subject}/versions"
    reply = await http.post(path, json=body(V_A))

    if registry_peer.kind == "local":
        assert reply.json() == {"is_compatible": True}
    else:
        assert (reply.status_code, reply.json()["error_code"]) == (404, 40401)


async def test_divergence_reformatted_schema_ids(
    registry_peer: RegistryPeer, client: AsyncSchemaRegistryClient
) -> None:
    # Same schema, other key order and whitespace.
    schema_id = await client.register(registry_peer.subject("orders"), V_AB_DEFAULT)
    reformatted = json.dumps(dict(reversed(list(V_AB_DEFAULT.items()))), indent=4)
    async with httpx.AsyncClient(base_url=registry_peer.url + "/") as http:
        reply = await http.post(
            f"subjects/{registry_peer.subject('audit')}/versions",
            json={"schema": reformatted},
        )

    if registry_peer.kind == "local":
        # Confluent compares a normalized form: one id.
        assert reply.json() == {"id": schema_id}
    else:
        # Apicurio compares the text as sent: a new content id.
        assert reply.json()["id"] != schema_id


async def test_divergence_level_spelling_and_bad_version(
    registry_peer: RegistryPeer,
    client: AsyncSchemaRegistryClient,
    http: httpx.AsyncClient,
) -> None:
    subject = registry_peer.subject("orders")
    await client.register(subject, V_A)

    lower = await http.put(f"config/{subject}", json={"compatibility": "full"})
    zero = await http.get(f"subjects/{subject}/versions/zero")

    if registry_peer.kind == "local":
        assert lower.json() == {"compatibility": "FULL"}
        assert (zero.status_code, zero.json()["error_code"]) == (422, 42202)
    else:
        assert (lower.status_code, lower.json()["error_code"]) == (422, 42203)
        assert (zero.status_code, zero.json()["error_code"]) == (404, 40402)


async def test_divergence_deleting_a_subject_twice(
    registry_peer: RegistryPeer,
    client: AsyncSchemaRegistryClient,
    http: httpx.AsyncClient,
) -> None:
    subject = registry_peer.subject("orders")
    schema_id = await client.register(subject, V_A)

    first = await http.delete(f"subjects/{subject}")
    second = await http.delete(f"subjects/{subject}")

    assert first.json() == [1]
    # Both: ids stay readable after the delete (written data stays decodable).
    assert await client_for(registry_peer).get_by_id(schema_id) is not None
    if registry_peer.kind == "local":
        # Deletes are permanent: the subject is simply gone.
        assert second.json()["error_code"] == 40401
    else:
        # Soft delete, as in Confluent: "permanent=true" would remove it.
        assert second.json()["error_code"] == 40404
