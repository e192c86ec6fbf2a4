"""Tests for `LocalSchemaRegistry`, driven by the real registry client.

Every test talks to the server over a real socket, through
``python-schema-registry-client`` where it exposes the call and through plain
httpx where the client hides the status code or validates locally first.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from schema_registry.client import (
    AsyncSchemaRegistryClient,
    SchemaRegistryClient,
    schema,
)
from schema_registry.client.errors import ClientError

from otel_kafka_events_devstack._registry import LocalSchemaRegistry


def record(*fields: dict[str, Any], name: str = "Order") -> dict[str, Any]:
    """Build an Avro record schema with the given fields."""
    return {
        "type": "record",
        "name": name,
        "namespace": "test.events",
        "fields": list(fields),
    }


A_INT = {"name": "a", "type": "int"}
A_LONG = {"name": "a", "type": "long"}
A_STRING = {"name": "a", "type": "string"}
B_INT = {"name": "b", "type": "int"}
B_INT_DEFAULT = {"name": "b", "type": "int", "default": 0}

V_A = record(A_INT)
V_A_LONG = record(A_LONG)
V_A_STRING = record(A_STRING)
V_AB = record(A_INT, B_INT)
V_AB_DEFAULT = record(A_INT, B_INT_DEFAULT)


# The client builds a new httpx client for every call, and with it a new SSL
# context from certifi's CA bundle (~0.1 s each). Handing it one shared
# context keeps this file fast and changes nothing for plain HTTP.
_SSL_CONTEXT = ssl.create_default_context()


def make_client(registry: LocalSchemaRegistry) -> AsyncSchemaRegistryClient:
    """A new async client, with empty caches so that reads hit the server."""
    client = AsyncSchemaRegistryClient(url=registry.url)
    client.client_kwargs["verify"] = _SSL_CONTEXT
    return client


def make_sync_client(registry: LocalSchemaRegistry) -> SchemaRegistryClient:
    """A new blocking client; see `make_client`."""
    client = SchemaRegistryClient(url=registry.url)
    client.client_kwargs["verify"] = _SSL_CONTEXT
    return client


def server_error(exc: ClientError) -> dict[str, Any]:
    """The registry's JSON error body carried by a `ClientError`.

    The client annotates ``server_traceback`` as a string, but stores the
    decoded JSON body there.
    """
    body = exc.server_traceback
    assert isinstance(body, dict)
    return body


@pytest.fixture(scope="module")
def shared_registry() -> Iterator[LocalSchemaRegistry]:
    with LocalSchemaRegistry() as registry:
        yield registry


@pytest.fixture
def registry(shared_registry: LocalSchemaRegistry) -> LocalSchemaRegistry:
    # One server for the module keeps the file fast; reset isolates tests.
    shared_registry.reset()
    return shared_registry


@pytest.fixture
def client(registry: LocalSchemaRegistry) -> AsyncSchemaRegistryClient:
    return make_client(registry)


@pytest.fixture
async def http(registry: LocalSchemaRegistry) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=registry.url, timeout=5, verify=_SSL_CONTEXT
    ) as http_client:
        yield http_client


async def test_register_then_get_by_id_round_trips(
    registry: LocalSchemaRegistry, client: AsyncSchemaRegistryClient
) -> None:
    schema_id = await client.register("orders-value", V_AB_DEFAULT)

    # register() caches the schema by id, so read back with a new client.
    fetched = await make_client(registry).get_by_id(schema_id)

    assert fetched is not None
    assert fetched.raw_schema == V_AB_DEFAULT


async def test_same_schema_under_two_subjects_shares_one_id(
    registry: LocalSchemaRegistry,
    client: AsyncSchemaRegistryClient,
    http: httpx.AsyncClient,
) -> None:
    first = await client.register("orders-value", V_A)
    second = await client.register("payments-value", V_A)
    other = await client.register("payments-value", V_AB_DEFAULT)
    # Same schema, different key order and whitespace: still the same id.
    reformatted = json.dumps(dict(reversed(list(V_A.items()))), indent=4)
    response = await http.post(
        "/subjects/audit-value/versions", json={"schema": reformatted}
    )

    assert first == second
    assert other != first
    assert response.json() == {"id": first}


async def test_defaults_make_schemas_distinct(
    client: AsyncSchemaRegistryClient,
) -> None:
    # Avro's Parsing Canonical Form ignores defaults; the registry must not.
    with_default = await client.register("orders-value", V_AB_DEFAULT)
    without_default = await client.register("other-value", V_AB)

    assert with_default != without_default


async def test_re_registering_returns_existing_id_without_new_version(
    registry: LocalSchemaRegistry, client: AsyncSchemaRegistryClient
) -> None:
    schema_id = await client.register("orders-value", V_A)
    again = make_client(registry)

    assert await again.register("orders-value", V_A) == schema_id
    assert await again.get_versions("orders-value") == [1]


def test_versions_listing_with_sync_client(registry: LocalSchemaRegistry) -> None:
    client = make_sync_client(registry)
    id_1 = client.register("orders-value", V_A)
    id_2 = client.register("orders-value", schema.AvroSchema(V_AB_DEFAULT))

    latest = client.get_schema("orders-value")
    first = client.get_schema("orders-value", version=1)

    assert client.get_subjects() == ["orders-value"]
    assert client.get_versions("orders-value") == [1, 2]
    assert latest is not None
    assert (latest.version, latest.schema_id) == (2, id_2)
    assert first is not None
    assert (first.version, first.schema_id) == (1, id_1)
    assert first.schema.raw_schema == V_A
    assert client.get_schema("orders-value", version=7) is None


async def test_raw_schema_endpoint_returns_the_schema_document(
    client: AsyncSchemaRegistryClient, http: httpx.AsyncClient
) -> None:
    await client.register("orders-value", V_A)

    response = await http.get("/subjects/orders-value/versions/latest/schema")

    assert response.status_code == 200
    assert response.json() == V_A


async def test_check_version_finds_only_registered_schemas(
    registry: LocalSchemaRegistry,
    client: AsyncSchemaRegistryClient,
    http: httpx.AsyncClient,
) -> None:
    await client.register("orders-value", V_A)
    id_2 = await client.register("orders-value", V_AB_DEFAULT)
    lookup = make_client(registry)

    found = await lookup.check_version("orders-value", V_AB_DEFAULT)
    unknown_schema = await http.post(
        "/subjects/orders-value", json={"schema": json.dumps(V_A_STRING)}
    )
    unknown_subject = await http.post(
        "/subjects/nobody-value", json={"schema": json.dumps(V_A)}
    )

    assert found is not None
    assert (found.subject, found.schema_id, found.version) == ("orders-value", id_2, 2)
    assert await lookup.check_version("orders-value", V_A_STRING) is None
    assert await lookup.check_version("nobody-value", V_A) is None
    assert unknown_schema.status_code == 404
    assert unknown_schema.json()["error_code"] == 40403
    assert unknown_subject.status_code == 404
    assert unknown_subject.json()["error_code"] == 40401


@pytest.mark.parametrize(
    ("level", "old", "new", "compatible"),
    [
        pytest.param("BACKWARD", V_A, V_AB_DEFAULT, True, id="backward-add-default"),
        pytest.param("BACKWARD", V_A, V_AB, False, id="backward-add-required"),
        pytest.param("BACKWARD", V_AB, V_A, True, id="backward-remove-field"),
        pytest.param("BACKWARD", V_A, V_A_LONG, True, id="backward-int-to-long"),
        pytest.param("FORWARD", V_A, V_AB, True, id="forward-add-required"),
        pytest.param("FORWARD", V_AB, V_A, False, id="forward-remove-required"),
        pytest.param("FORWARD", V_A, V_A_LONG, False, id="forward-int-to-long"),
        pytest.param("FULL", V_A, V_AB_DEFAULT, True, id="full-add-default"),
        pytest.param("FULL", V_A, V_AB, False, id="full-add-required"),
        pytest.param("FULL", V_AB, V_A, False, id="full-remove-required"),
        pytest.param("NONE", V_A, V_A_STRING, True, id="none-change-type"),
    ],
)
async def test_compatibility_verdicts(
    client: AsyncSchemaRegistryClient,
    level: str,
    old: dict[str, Any],
    new: dict[str, Any],
    compatible: bool,
) -> None:
    await client.update_compatibility(level, "orders-value")
    old_id = await client.register("orders-value", old)

    verdict = await client.test_compatibility("orders-value", new)
    if compatible:
        registered = await client.register("orders-value", new)
        assert registered != old_id
    else:
        with pytest.raises(ClientError) as excinfo:
            await client.register("orders-value", new)
        assert excinfo.value.http_code == 409

    assert verdict is compatible


@pytest.mark.parametrize(
    ("level", "history", "new", "transitively_compatible"),
    [
        # v3 drops b's default: fine against v2 (which writes b), not v1.
        pytest.param("BACKWARD", [V_A, V_AB_DEFAULT], V_AB, True, id="backward"),
        pytest.param(
            "BACKWARD_TRANSITIVE",
            [V_A, V_AB_DEFAULT],
            V_AB,
            False,
            id="backward-transitive",
        ),
        # v3 removes b: v2 readers default it, v1 readers cannot.
        pytest.param("FORWARD", [V_AB, V_AB_DEFAULT], V_A, True, id="forward"),
        pytest.param(
            "FORWARD_TRANSITIVE",
            [V_AB, V_AB_DEFAULT],
            V_A,
            False,
            id="forward-transitive",
        ),
    ],
)
async def test_transitive_levels_check_every_version(
    client: AsyncSchemaRegistryClient,
    http: httpx.AsyncClient,
    level: str,
    history: list[dict[str, Any]],
    new: dict[str, Any],
    transitively_compatible: bool,
) -> None:
    await client.update_compatibility(level, "orders-value")
    for version in history:
        await client.register("orders-value", version)

    # A named version (and "latest") is checked alone, whatever the level.
    against_latest = await client.test_compatibility("orders-value", new)
    against_v1 = await client.test_compatibility("orders-value", new, version=1)
    # No version at all: checked the way registration would check it.
    against_all = await http.post(
        "/compatibility/subjects/orders-value/versions",
        json={"schema": json.dumps(new)},
    )

    assert against_latest is True
    assert against_v1 is False
    assert against_all.json() == {"is_compatible": transitively_compatible}
    if transitively_compatible:
        assert await client.register("orders-value", new) > 0
    else:
        with pytest.raises(ClientError) as excinfo:
            await client.register("orders-value", new)
        assert excinfo.value.http_code == 409


async def test_incompatible_register_names_the_offending_field(
    client: AsyncSchemaRegistryClient,
) -> None:
    await client.register("orders-value", V_A)

    with pytest.raises(ClientError) as excinfo:
        await client.register("orders-value", V_AB)

    body = server_error(excinfo.value)
    assert excinfo.value.http_code == 409
    assert body["error_code"] == 409
    assert body["message"].startswith(
        "Schema being registered is incompatible with an earlier schema for "
        'subject "orders-value", details: ['
    )
    assert "fields: ['b']" in body["message"]
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in body["message"]


async def test_verbose_compatibility_names_nested_fields(
    client: AsyncSchemaRegistryClient,
) -> None:
    def with_zip(zip_type: str) -> dict[str, Any]:
        address = record({"name": "zip", "type": zip_type}, name="Address")
        return record({"name": "address", "type": address})

    await client.register("orders-value", with_zip("int"))

    bad = await client.test_compatibility(
        "orders-value", with_zip("string"), verbose=True
    )
    good = await client.test_compatibility(
        "orders-value", with_zip("long"), verbose=True
    )

    assert isinstance(bad, dict)
    assert bad["is_compatible"] is False
    assert len(bad["messages"]) == 1
    assert "fields: ['address.zip']" in bad["messages"][0]
    assert "TYPE_MISMATCH" in bad["messages"][0]
    assert good == {"is_compatible": True, "messages": []}


async def test_compatibility_with_no_versions_is_true(
    client: AsyncSchemaRegistryClient,
) -> None:
    assert await client.test_compatibility("empty-value", V_A) is True


async def test_global_and_subject_config(
    client: AsyncSchemaRegistryClient, http: httpx.AsyncClient
) -> None:
    assert await client.get_compatibility() == "BACKWARD"
    # The client does not pass defaultToGlobal, so an unset subject errors.
    with pytest.raises(ClientError) as excinfo:
        await client.get_compatibility("orders-value")
    assert server_error(excinfo.value)["error_code"] == 40408

    assert await client.update_compatibility("FULL") is True
    assert await client.update_compatibility("FORWARD_TRANSITIVE", "orders-value")

    defaulted = await http.get("/config/other-value?defaultToGlobal=true")
    assert await client.get_compatibility() == "FULL"
    assert await client.get_compatibility("orders-value") == "FORWARD_TRANSITIVE"
    assert defaulted.json() == {"compatibilityLevel": "FULL"}

    deleted = await http.delete("/config/orders-value")
    fallback = await http.get("/config/orders-value?defaultToGlobal=true")
    assert deleted.json() == {"compatibilityLevel": "FORWARD_TRANSITIVE"}
    assert fallback.json() == {"compatibilityLevel": "FULL"}


async def test_put_config_echoes_the_level(http: httpx.AsyncClient) -> None:
    response = await http.put("/config/orders-value", json={"compatibility": "NONE"})

    assert response.status_code == 200
    assert response.json() == {"compatibility": "NONE"}


@pytest.mark.parametrize("path", ["/config", "/config/orders-value"])
async def test_invalid_level_is_rejected_by_server(
    http: httpx.AsyncClient, path: str
) -> None:
    response = await http.put(path, json={"compatibility": "SIDEWAYS"})
    config = await http.get("/config")

    assert response.status_code == 422
    assert response.json()["error_code"] == 42203
    assert config.json() == {"compatibilityLevel": "BACKWARD"}


async def test_client_rejects_invalid_level_before_sending(
    client: AsyncSchemaRegistryClient,
) -> None:
    with pytest.raises(ClientError) as excinfo:
        await client.update_compatibility("SIDEWAYS")

    assert excinfo.value.http_code is None


def test_invalid_default_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="SIDEWAYS"):
        LocalSchemaRegistry(default_compatibility="SIDEWAYS")


async def test_delete_subject_and_version(
    registry: LocalSchemaRegistry, client: AsyncSchemaRegistryClient
) -> None:
    await client.register("orders-value", V_A)
    id_2 = await client.register("orders-value", V_AB_DEFAULT)
    c_default = {"name": "c", "type": "string", "default": ""}
    await client.register("orders-value", record(A_INT, B_INT_DEFAULT, c_default))
    await client.register("payments-value", V_A)

    assert await client.delete_version("orders-value", 3) == 3
    assert await client.delete_subject("orders-value") == [1, 2]
    assert await client.get_subjects() == ["payments-value"]
    assert await client.get_versions("orders-value") == []
    # The client maps the 40401 of a second delete to an empty list.
    assert await client.delete_subject("orders-value") == []
    # Ids stay readable: data written with them must remain decodable.
    assert await make_client(registry).get_by_id(id_2) is not None
    assert await make_client(registry).register("orders-value", V_A_STRING) > 0
    assert await client.get_versions("orders-value") == [1]


async def test_unknown_schema_id_returns_none(
    registry: LocalSchemaRegistry, http: httpx.AsyncClient
) -> None:
    response = await http.get("/schemas/ids/999")

    assert await make_client(registry).get_by_id(999) is None
    assert response.status_code == 404
    assert response.json()["error_code"] == 40403


async def test_schema_subject_versions_lists_every_use_of_an_id(
    client: AsyncSchemaRegistryClient,
) -> None:
    schema_id = await client.register("orders-value", V_A)
    await client.register("payments-value", V_A)

    pairs = await client.get_schema_subject_versions(schema_id)

    assert pairs is not None
    assert [(p.subject, p.version) for p in pairs] == [
        ("orders-value", 1),
        ("payments-value", 1),
    ]


async def test_error_replies(http: httpx.AsyncClient) -> None:
    unknown = await http.get("/no/such/path")
    bad_json = await http.post(
        "/subjects/orders-value/versions",
        content=b"{not json",
        headers={"Content-Type": "text/plain"},
    )
    bad_schema = await http.post(
        "/subjects/orders-value/versions",
        json={"schema": json.dumps(record({"name": "a", "type": "nope"}))},
    )
    json_schema = await http.post(
        "/subjects/orders-value/versions",
        json={"schema": "{}", "schemaType": "JSON"},
    )
    bad_version = await http.get("/subjects/orders-value/versions/zero")

    assert unknown.status_code == 404
    assert unknown.json()["error_code"] == 404
    assert unknown.headers["content-type"] == "application/vnd.schemaregistry.v1+json"
    assert bad_json.status_code == 400
    assert (bad_schema.status_code, bad_schema.json()["error_code"]) == (422, 42201)
    assert (json_schema.status_code, json_schema.json()["error_code"]) == (422, 42201)
    assert (bad_version.status_code, bad_version.json()["error_code"]) == (422, 42202)


async def test_missing_subject_and_version_errors(
    client: AsyncSchemaRegistryClient, http: httpx.AsyncClient
) -> None:
    await client.register("orders-value", V_A)

    no_subject = await http.get("/subjects/nobody-value/versions/latest")
    no_version = await http.get("/subjects/orders-value/versions/5")

    assert no_subject.json()["error_code"] == 40401
    assert no_version.json()["error_code"] == 40402


async def test_internal_error_is_a_quiet_500_and_server_survives(
    registry: LocalSchemaRegistry,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    def explode() -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(registry._store, "subjects", explode)
    failed = await http.get("/subjects")
    monkeypatch.undo()
    after = await http.get("/subjects")
    output = capfd.readouterr()

    assert failed.status_code == 500
    assert "RuntimeError: boom" in failed.json()["message"]
    assert after.json() == []
    assert (output.out, output.err) == ("", "")


async def test_stop_and_start_keep_port_and_state() -> None:
    registry = LocalSchemaRegistry()
    registry.start()
    try:
        client = make_client(registry)
        schema_id = await client.register("orders-value", V_A)
        await client.update_compatibility("NONE", "orders-value")
        port, url = registry.port, registry.url

        registry.stop()
        registry.stop()  # idempotent
        assert not registry.running
        with pytest.raises(httpx.ConnectError):
            await make_client(registry).get_subjects()

        registry.start()
        after = make_client(registry)

        assert registry.running
        assert (registry.port, registry.url) == (port, url)
        fetched = await after.get_by_id(schema_id)
        assert fetched is not None
        assert fetched.raw_schema == V_A
        assert await after.get_versions("orders-value") == [1]
        assert await after.get_compatibility("orders-value") == "NONE"
        # The id counter survived too: a new schema gets the next id.
        assert await after.register("orders-value", V_A_STRING) == schema_id + 1
    finally:
        registry.stop()


async def test_concurrent_registrations_agree_on_one_id(
    client: AsyncSchemaRegistryClient,
) -> None:
    ids = await asyncio.gather(
        *(client.register(f"subject-{n}-value", V_A) for n in range(16))
    )

    assert set(ids) == {ids[0]}
    assert len(await client.get_subjects()) == 16


async def test_reset_forgets_everything(
    registry: LocalSchemaRegistry, client: AsyncSchemaRegistryClient
) -> None:
    await client.register("orders-value", V_A)
    await client.update_compatibility("NONE")

    registry.reset()
    after = make_client(registry)

    assert await after.get_subjects() == []
    assert await after.get_compatibility() == "BACKWARD"
    assert await after.register("payments-value", V_A_STRING) == 1


def test_context_manager_starts_and_stops() -> None:
    with LocalSchemaRegistry() as registry:
        assert registry.running
        assert httpx.get(registry.url + "/subjects", verify=_SSL_CONTEXT).json() == []
    assert not registry.running


async def test_async_context_manager_starts_and_stops() -> None:
    async with LocalSchemaRegistry(default_compatibility="FULL") as registry:
        assert registry.running
        assert await make_client(registry).get_compatibility() == "FULL"
    assert not registry.running


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::1", "localhost"])
def test_only_ipv4_loopback_is_accepted(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        LocalSchemaRegistry(host=host)


def test_port_is_unknown_before_first_start() -> None:
    registry = LocalSchemaRegistry()

    with pytest.raises(RuntimeError, match="start"):
        _ = registry.url
    assert not registry.running
