"""Broker-free tests of the registry client: naming fields in registry
replies, and errors that name the registry's URL and its HTTP status.

The registry's answers come from an ``httpx.MockTransport`` given to the
real client, so every failure a registry (or a proxy in front of it) can
produce is reproduced without a socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from otel_kafka_events import EventPayload, KafkaEventManager
from otel_kafka_events._encoding._registry import (
    HttpSchemaRegistry,
    _located_problems,
    field_at,
    make_registry_client,
)
from otel_kafka_events.errors import SchemaRegistryError
from otel_kafka_events.testing import MemoryTransport


def record(*fields: dict[str, Any], name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields)}


NESTED = record(
    {"name": "address", "type": record({"name": "zip", "type": "int"}, name="A")},
    {
        "name": "parcels",
        "type": {"type": "array", "items": record({"name": "kg", "type": "int"})},
    },
    {
        "name": "extra",
        "type": [
            "null",
            {"type": "map", "values": record({"name": "v", "type": "int"})},
        ],
    },
)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/fields/0", "address"),
        ("/fields/0/type", "address"),
        ("/fields/0/type/fields/0/type", "address.zip"),
        ("/fields/1/type/items/fields/0", "parcels.kg"),
        ("/fields/2/type/1/values/fields/0/type", "extra.v"),
        ("/fields/3", None),
        ("/fields/x", None),
        ("/", None),
        ("/name", None),
    ],
)
def test_field_at_follows_paths_into_names(path: str, name: str | None) -> None:
    assert field_at(NESTED, path) == name


def test_located_problems_reads_apicurio_messages() -> None:
    message = (
        "io.apicurio.registry.rules.violation.RuleViolationException: "
        "Incompatible artifact: s [AVRO], num of incompatible diffs: {2}, list of "
        "diff types: [reader type: STRING not compatible with writer type: INT at "
        "/fields/0/type, colour_added at /fields/2]"
    )

    assert _located_problems(message) == [
        (
            "reader type: STRING not compatible with writer type: INT",
            "/fields/0/type",
        ),
        ("colour_added", "/fields/2"),
    ]


def test_located_problems_ignores_other_messages() -> None:
    confluent_style = "incompatible for subject \"s\", details: [fields: ['b']]"

    assert _located_problems(confluent_style) == []


# -- Errors name the registry's URL and its answer ---------------------------------

URL = "http://registry.test:8081"
SHOWN = f"{URL}/"  # as the client normalises it
SCHEMA = record({"name": "n", "type": "int"}, name="ping")


def registry_answering(
    handler: Callable[[httpx.Request], httpx.Response], url: str = URL
) -> HttpSchemaRegistry:
    """The real client, its HTTP answered by ``handler``."""
    client = make_registry_client(url, timeout=2.5)
    client.client_kwargs["transport"] = httpx.MockTransport(handler)
    return HttpSchemaRegistry(client)


def answer(status: int, body: Any) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    return handler


def fail(error: type[httpx.RequestError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("as a test asked", request=request)

    return handler


@pytest.mark.parametrize(
    ("handler", "status", "message"),
    [
        (
            answer(401, {"error_code": 40101, "message": "Unauthorized"}),
            401,
            f"Schema registry at {SHOWN} refused to register 'events.ping': HTTP"
            " 401: Unauthorized",
        ),
        (
            answer(500, {"error_code": 50001, "message": "Error in the backend"}),
            500,
            f"Schema registry at {SHOWN} refused to register 'events.ping': HTTP"
            " 500: Error in the backend",
        ),
        (
            answer(502, "<html><body>Bad Gateway</body></html>"),
            502,
            f"Schema registry at {SHOWN} answered HTTP 502 with a body that is not"
            " JSON while asked to register 'events.ping' (a proxy or ingress in"
            " front of it?): <html><body>Bad Gateway</body></html>",
        ),
        (
            fail(httpx.ConnectError),
            None,
            f"Schema registry at {SHOWN} is unreachable (asked to register"
            " 'events.ping'): ConnectError: as a test asked",
        ),
        (
            fail(httpx.ReadTimeout),
            None,
            f"Schema registry at {SHOWN} did not answer within 2.5 s while asked to"
            " register 'events.ping'",
        ),
    ],
    ids=["401", "500", "502-html", "unreachable", "timeout"],
)
async def test_registry_errors_name_the_url_and_the_status(
    handler: Callable[[httpx.Request], httpx.Response],
    status: int | None,
    message: str,
) -> None:
    registry = registry_answering(handler)
    with pytest.raises(SchemaRegistryError) as caught:
        await registry.register("events.ping", SCHEMA)
    assert str(caught.value) == message
    assert (caught.value.url, caught.value.status) == (SHOWN, status)


class Ping(EventPayload):
    """A minimal payload."""

    n: int


async def test_create_publisher_raises_the_registrys_error_naming_it() -> None:
    # What a service sees with raise_on_error: the registry's URL (its
    # password hidden) and what it answered.
    registry = registry_answering(
        answer(403, {"error_code": 40301, "message": "Forbidden"}),
        url="http://svc:s3cret@registry.test:8081",
    )
    transport = MemoryTransport()
    transport.create_topic("events.shop")
    manager = KafkaEventManager(
        application="shop",
        topic_prefix="events",
        transport=transport,
        registry=registry,
        raise_on_error=True,
    )
    await manager.initialize()
    try:
        with pytest.raises(SchemaRegistryError) as caught:
            await manager.create_publisher("ping", Ping)
    finally:
        await manager.aclose()
    assert str(caught.value) == (
        f"Schema registry at {SHOWN} refused to register 'events.shop.ping': HTTP"
        " 403: Forbidden"
    )
    assert caught.value.status == 403
    assert "s3cret" not in repr(caught.value.__cause__)
