"""The registry seam with no network: naming fields in registry replies, and
every way a registry (or what stands in front of it) can fail, each a
`SchemaRegistryError` naming the URL and the HTTP status."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from otel_kafka_events._encoding._registry import (
    HttpSchemaRegistry,
    SchemaRegistrar,
    make_registry_client,
)
from otel_kafka_events.errors import SchemaRegistryError
from otel_kafka_events.testing import MemorySchemaRegistry

SCHEMA = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}]}
URL = "http://alice:s3cret@registry.example:8081"
SHOWN = "http://registry.example:8081/"


def over(handler: Callable[[httpx.Request], httpx.Response]) -> HttpSchemaRegistry:
    """An `HttpSchemaRegistry` whose requests ``handler`` answers."""
    client = make_registry_client(URL, timeout=1.0)
    client.client_kwargs["transport"] = httpx.MockTransport(handler)
    return HttpSchemaRegistry(client)


def registry_emulation(request: httpx.Request) -> httpx.Response:
    """Enough of a Confluent registry to register one schema (id 1)."""
    if request.url.path.endswith("/versions"):
        return httpx.Response(200, json={"id": 1})
    return httpx.Response(404, json={"error_code": 40401, "message": "not found"})


INGRESS_PAGE = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@pytest.mark.parametrize(
    ("answer", "status", "says"),
    [
        (httpx.Response(502, content=INGRESS_PAGE), 502, "not JSON"),
        (httpx.Response(503, content=b"Service Unavailable"), 503, "not JSON"),
        (httpx.Response(200, content=b'{"id": '), 200, "not JSON"),
        (httpx.Response(504, content=b""), 504, "(empty body)"),
        (httpx.Response(200, json=[1, 2]), None, "could not be read"),
        (httpx.Response(200, json={"id": "seven"}), None, "'seven'"),
        (httpx.Response(500, json={"message": "boom"}), 500, "boom"),
    ],
    ids=["html-502", "text-503", "truncated", "empty-504", "list", "odd-id", "500"],
)
async def test_an_unusable_answer_is_a_registry_error_naming_url_and_status(
    answer: httpx.Response, status: int | None, says: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/versions"):
            return answer
        # The check for an existing version says "not registered".
        return httpx.Response(404, json={"error_code": 40401, "message": "nope"})

    with pytest.raises(SchemaRegistryError) as raised:
        await over(handler).register("s", SCHEMA)
    error = raised.value
    assert error.url == SHOWN
    assert error.status == status
    assert SHOWN in str(error)
    assert says in str(error)
    assert "s3cret" not in str(error)


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("peer closed connection"),
    ],
    ids=["refused", "timeout", "cut"],
)
async def test_a_request_that_fails_is_a_registry_error(failure: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    with pytest.raises(SchemaRegistryError) as raised:
        await over(handler).register("s", SCHEMA)
    assert raised.value.url == SHOWN
    assert raised.value.status is None


async def test_a_registry_recovering_from_html_registers() -> None:
    answers = iter([httpx.Response(502, content=INGRESS_PAGE)] * 2)

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or registry_emulation(request)

    registry = over(handler)
    for _ in range(2):
        with pytest.raises(SchemaRegistryError):
            await registry.register("s", SCHEMA)
    assert await registry.register("s", SCHEMA) == 1


class Failing:
    """A `SchemaRegistry` of an application's own that raises ``error``, or
    answers ``answer``."""

    url = "https://registry.example"

    def __init__(self, error: BaseException | None = None, answer: Any = 1) -> None:
        self._error = error
        self._answer = answer

    async def register(self, subject: str, avro_schema: dict[str, Any]) -> Any:
        if self._error is not None:
            raise self._error
        return self._answer

    async def set_compatibility(self, subject: str, level: str) -> None:
        pass

    async def compatibility_problems(
        self, subject: str, avro_schema: dict[str, Any]
    ) -> list[str]:
        return []

    async def latest_schema(self, subject: str) -> dict[str, Any] | None:
        return None

    async def schema_by_id(self, schema_id: int) -> dict[str, Any] | None:
        return None


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("bug"),
        asyncio.CancelledError("its own"),
        KeyboardInterrupt(),
        SystemExit(3),
        BaseException("bare"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_whatever_a_registry_raises_is_a_registry_error(
    error: BaseException,
) -> None:
    registrar = SchemaRegistrar(Failing(error))
    with pytest.raises(SchemaRegistryError) as raised:
        await registrar.register("app.ping", SCHEMA)
    assert raised.value.url == "https://registry.example"
    assert type(error).__name__ in str(raised.value)
    assert raised.value.__cause__ is error


@pytest.mark.parametrize("answer", ["7", None, -1, True, 7.0])
async def test_an_answer_that_is_no_schema_id_is_a_registry_error(answer: Any) -> None:
    with pytest.raises(SchemaRegistryError, match="not a schema id"):
        await SchemaRegistrar(Failing(answer=answer)).register("app.ping", SCHEMA)


async def test_the_callers_own_cancellation_goes_through() -> None:
    class Hanging(MemorySchemaRegistry):
        async def register(self, subject: str, avro_schema: dict[str, Any]) -> int:
            await asyncio.Event().wait()
            return 0

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await SchemaRegistrar(Hanging()).register("app.ping", SCHEMA)
