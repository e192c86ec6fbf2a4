"""The schema registry: the seam, its HTTP implementation, and registration.

`SchemaRegistry` is what the library needs from a Confluent-compatible
registry. `HttpSchemaRegistry` implements it over python-schema-registry-
client and is the one place that knows how that client and the registry
behind it fail: an unreachable host, a request that never gets an answer,
an ingress answering ``502`` with an HTML page, a truncated or odd JSON
body. Each becomes a `SchemaRegistryError` naming the registry's URL
(password hidden) and the HTTP status, which registration treats as an
outage and retries. `otel_kafka_events.testing.MemorySchemaRegistry` is the
in-memory implementation for tests. `SchemaRegistrar` names subjects, sets
compatibility levels and explains refusals, on any implementation.
"""

from __future__ import annotations

import json
import re
import ssl
from typing import Any, Protocol, runtime_checkable

import httpx
from schema_registry.client import AsyncSchemaRegistryClient, schema
from schema_registry.client.errors import ClientError

from .._foreign import describe, own_cancellation
from .._secrets import mask_url, split_credentials
from ..errors import EventManagerError, IncompatibleSchemaError, SchemaRegistryError

__all__ = [
    "COMPATIBILITY_LEVELS",
    "HttpSchemaRegistry",
    "SchemaRegistrar",
    "SchemaRegistry",
    "as_registry",
    "field_at",
    "make_registry_client",
]

COMPATIBILITY_LEVELS: tuple[str, ...] = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
"""The subject compatibility levels, as Confluent spells them."""


@runtime_checkable
class SchemaRegistry(Protocol):
    """What the library asks of a Confluent-compatible schema registry.

    Every method raises `SchemaRegistryError` when the registry cannot
    answer or refuses; its ``status`` is the HTTP status (409 for a schema
    incompatible with the subject's versions) or None when there was no
    answer at all.
    """

    @property
    def url(self) -> str:
        """Where it is, for messages (any password hidden)."""
        ...

    async def register(self, subject: str, avro_schema: dict[str, Any]) -> int:
        """Register ``avro_schema`` under ``subject`` and return its id (the
        id it already has, if it is registered)."""
        ...

    async def set_compatibility(self, subject: str, level: str) -> None:
        """Set the compatibility level of ``subject``."""
        ...

    async def compatibility_problems(
        self, subject: str, avro_schema: dict[str, Any]
    ) -> list[str]:
        """Why ``avro_schema`` is incompatible with the latest version of
        ``subject`` under its level, one entry per problem (empty when it is
        compatible, or the registry gives no reasons)."""
        ...

    async def latest_schema(self, subject: str) -> dict[str, Any] | None:
        """The latest schema of ``subject``, or None if it has none."""
        ...

    async def schema_by_id(self, schema_id: int) -> dict[str, Any] | None:
        """The schema with id ``schema_id``, or None if there is none."""
        ...


def make_registry_client(
    url: str,
    timeout: float = 10.0,
    *,
    auth: tuple[str, str] | None = None,
) -> AsyncSchemaRegistryClient:
    """Create a registry client that reuses one TLS context.

    The client library opens a new HTTP client per request and would build a
    TLS context from the CA bundle each time (about 0.1 s); one shared context
    (or none, for plain HTTP) avoids that.

    Parameters
    ----------
    url
        The registry's URL; credentials in it (``https://user:pass@host``)
        are taken out of it and sent as HTTP basic authentication, so the
        client never shows them in an error.
    timeout
        Seconds each request may take.
    auth
        Username and password for HTTP basic authentication.

    Raises
    ------
    ValueError
        If credentials are given both in the URL and in ``auth``.
    """
    clean_url, embedded = split_credentials(url)
    if embedded is not None and auth is not None:
        raise ValueError(
            "Schema registry credentials given twice: in the URL and as a"
            " username and password; give them once"
        )
    credentials = auth or embedded
    client = AsyncSchemaRegistryClient(
        url=clean_url,
        timeout=httpx.Timeout(timeout),
        auth=httpx.BasicAuth(*credentials) if credentials is not None else None,
    )
    if "verify" not in client.client_kwargs:
        client.client_kwargs["verify"] = (
            ssl.create_default_context() if url.startswith("https") else False
        )
    return client


class NotJsonError(Exception):
    """The registry (or something in front of it) answered with a body that
    is not JSON."""

    def __init__(self, status: int, snippet: str) -> None:
        super().__init__(status, snippet)
        self.status = status
        self.snippet = snippet


async def _require_json(response: httpx.Response) -> None:
    """An httpx response hook: refuse a body that is not JSON, before the
    client library's ``response.json()`` raises a bare ``JSONDecodeError``."""
    body = await response.aread()
    if not body.strip():
        if response.is_success:
            return
        raise NotJsonError(response.status_code, "(empty body)")
    try:
        json.loads(body)
    except ValueError:
        text = body[:120].decode("utf-8", "replace")
        raise NotJsonError(response.status_code, " ".join(text.split())) from None


class HttpSchemaRegistry:
    """`SchemaRegistry` over python-schema-registry-client.

    Parameters
    ----------
    client
        The client (see `make_registry_client`).
    """

    def __init__(self, client: AsyncSchemaRegistryClient) -> None:
        self.client = client
        self._url = mask_url(str(client.url_manager.url))
        self._timeout = _timeout_of(client)
        hooks = client.client_kwargs.setdefault("event_hooks", {})
        responses = hooks.setdefault("response", [])
        if _require_json not in responses:
            responses.append(_require_json)

    @property
    def url(self) -> str:
        """The registry's URL."""
        return self._url

    def _error(self, action: str, error: BaseException) -> SchemaRegistryError:
        """The `SchemaRegistryError` for a failed request."""
        where = f"Schema registry at {self._url}"
        if isinstance(error, ClientError):
            status = error.http_code
            answer = error.server_traceback
            detail = (
                str(answer["message"])
                if isinstance(answer, dict) and answer.get("message")
                else str(error.message)
            )
            return SchemaRegistryError(
                f"{where} refused to {action}: HTTP {status}: {detail}",
                url=self._url,
                status=status,
                detail=detail,
            )
        if isinstance(error, NotJsonError):
            return SchemaRegistryError(
                f"{where} answered HTTP {error.status} with a body that is not"
                f" JSON while asked to {action} (a proxy or ingress in front of"
                f" it?): {error.snippet}",
                url=self._url,
                status=error.status,
            )
        if isinstance(error, httpx.TimeoutException | TimeoutError):
            return SchemaRegistryError(
                f"{where} did not answer within {self._timeout} s while asked to"
                f" {action}",
                url=self._url,
            )
        if isinstance(error, httpx.HTTPError | OSError):
            return SchemaRegistryError(
                f"{where} is unreachable (asked to {action}):"
                f" {type(error).__name__}: {error}",
                url=self._url,
            )
        return SchemaRegistryError(
            f"{where} gave an answer that could not be read while asked to"
            f" {action}: {type(error).__name__}: {error}",
            url=self._url,
        )

    async def register(self, subject: str, avro_schema: dict[str, Any]) -> int:
        try:
            schema_id = await self.client.register(
                subject, schema.AvroSchema(avro_schema)
            )
        except Exception as exc:
            raise self._error(f"register {subject!r}", exc) from exc
        if not isinstance(schema_id, int):
            raise self._error(
                f"register {subject!r}", ValueError(f"schema id {schema_id!r}")
            )
        return schema_id

    async def set_compatibility(self, subject: str, level: str) -> None:
        try:
            await self.client.update_compatibility(level, subject)
        except Exception as exc:
            raise self._error(f"set the compatibility of {subject!r}", exc) from exc

    async def compatibility_problems(
        self, subject: str, avro_schema: dict[str, Any]
    ) -> list[str]:
        try:
            verdict = await self.client.test_compatibility(
                subject, schema.AvroSchema(avro_schema), verbose=True
            )
        except Exception as exc:
            raise self._error(f"check a schema of {subject!r}", exc) from exc
        if isinstance(verdict, dict) and verdict.get("messages"):
            return [str(message) for message in verdict["messages"]]
        return []

    async def latest_schema(self, subject: str) -> dict[str, Any] | None:
        try:
            found = await self.client.get_schema(subject)
        except Exception as exc:
            raise self._error(f"give the latest schema of {subject!r}", exc) from exc
        if found is None:
            return None
        raw: dict[str, Any] = found.schema.raw_schema
        return raw

    async def schema_by_id(self, schema_id: int) -> dict[str, Any] | None:
        try:
            found = await self.client.get_by_id(schema_id)
        except Exception as exc:
            raise self._error(f"give schema id {schema_id}", exc) from exc
        if found is None:
            return None
        raw: dict[str, Any] = found.raw_schema
        return raw


def _timeout_of(client: AsyncSchemaRegistryClient) -> float | None:
    timeout = client.client_kwargs.get("timeout")
    if isinstance(timeout, httpx.Timeout):
        return timeout.read
    return timeout if isinstance(timeout, int | float) else None


def as_registry(registry: Any) -> SchemaRegistry:
    """A `SchemaRegistry` from a URL, an ``AsyncSchemaRegistryClient``, or
    an implementation of the protocol (returned as it is)."""
    if isinstance(registry, str):
        return HttpSchemaRegistry(make_registry_client(registry))
    if isinstance(registry, AsyncSchemaRegistryClient):
        return HttpSchemaRegistry(registry)
    if isinstance(registry, SchemaRegistry):
        return registry
    raise TypeError(
        "registry must be a URL, an AsyncSchemaRegistryClient or a"
        f" SchemaRegistry, got {type(registry).__name__}"
    )


class SchemaRegistrar:
    """Registers event schemas under ``{namespace}.{name}{suffix}`` subjects.

    Parameters
    ----------
    registry
        The registry: a `SchemaRegistry`, an ``AsyncSchemaRegistryClient``
        or a URL.
    suffix
        Appended to every subject (Safir's ``SCHEMA_MANAGER_SUFFIX``).
    compatibility
        If set, the compatibility level put on each subject before
        registering; otherwise the registry's (usually BACKWARD) applies.
    """

    def __init__(
        self,
        registry: Any,
        *,
        suffix: str = "",
        compatibility: str | None = None,
    ) -> None:
        if compatibility is not None and compatibility not in COMPATIBILITY_LEVELS:
            raise ValueError(
                f"schema compatibility must be one of {sorted(COMPATIBILITY_LEVELS)},"
                f" got {compatibility!r}"
            )
        self.registry = as_registry(registry)
        self.suffix = suffix
        self.compatibility = compatibility

    def subject(self, full_name: str) -> str:
        """The subject of an event type's schema."""
        return f"{full_name}{self.suffix}"

    async def register(self, full_name: str, avro_schema: dict[str, Any]) -> int:
        """Register a schema and return its id.

        Raises
        ------
        IncompatibleSchemaError
            If the registry refuses it under the subject's compatibility rule.
        SchemaRegistryError
            If the registry is unreachable, answers with another error or
            with something that is not a schema id, or its implementation
            raises anything else (``BaseException`` subclasses included).
        """
        subject = self.subject(full_name)
        registry = self.registry
        try:
            if self.compatibility is not None:
                await registry.set_compatibility(subject, self.compatibility)
            schema_id = await registry.register(subject, avro_schema)
        except SchemaRegistryError as exc:
            if exc.status != 409:
                raise
            raise IncompatibleSchemaError(
                subject, await self._explain(subject, avro_schema, exc)
            ) from exc
        except EventManagerError:
            raise
        except BaseException as exc:
            # The registry is code we may not own (a client library, or an
            # application's SchemaRegistry): whatever it raises is a failed
            # request, retried like an outage.
            if own_cancellation(exc):
                raise
            raise self._failed(f"register {subject!r}", describe(exc)) from exc
        if type(schema_id) is not int or schema_id < 0:
            raise self._failed(
                f"register {subject!r}", f"answered {schema_id!r}, not a schema id"
            )
        return schema_id

    def _failed(self, action: str, what: str) -> SchemaRegistryError:
        url = self._url()
        return SchemaRegistryError(
            f"Schema registry at {url} failed when asked to {action}: {what}",
            url=url,
        )

    def _url(self) -> str:
        try:
            return str(self.registry.url)
        except Exception:
            return type(self.registry).__name__

    async def _explain(
        self, subject: str, avro_schema: dict[str, Any], error: SchemaRegistryError
    ) -> list[str]:
        """The registry's reasons for refusing a schema, each given once.

        The refusal's own message repeats every reason inside one long
        sentence, so the ``messages`` of a verbose compatibility check are
        preferred. Apicurio Registry's Confluent API gives no ``messages``;
        its 409 lists each problem as ``<what> at <path>``, a path into the
        reading schema, which is turned here into the field's dotted name so
        that both registries' errors name the broken field.
        """
        try:
            problems = await self.registry.compatibility_problems(subject, avro_schema)
        except BaseException as exc:
            if own_cancellation(exc):
                raise
            problems = []
        if isinstance(problems, list) and problems:
            return [str(problem) for problem in problems]
        registry_message = error.detail
        if not registry_message:
            return []
        return [
            registry_message,
            *await self._name_fields(subject, avro_schema, registry_message),
        ]

    async def _name_fields(
        self, subject: str, avro_schema: dict[str, Any], message: str
    ) -> list[str]:
        """One ``field '<name>': <problem>`` line per ``<problem> at <path>``
        entry of an Apicurio-style message; empty if it has none."""
        problems = _located_problems(message)
        if not problems:
            return []
        # The path runs through the reader: the new schema when checking
        # backward, the registered one when checking forward.
        readers: list[Any] = [avro_schema]
        try:
            latest = await self.registry.latest_schema(subject)
        except BaseException as exc:
            if own_cancellation(exc):
                raise
            latest = None
        if isinstance(latest, dict):
            readers.append(latest)
        named: list[str] = []
        for problem, path in problems:
            names = {n for r in readers if (n := field_at(r, path)) is not None}
            if not names:
                continue
            fields = " or ".join(f"'{n}'" for n in sorted(names))
            # "b at /fields/1": the problem is the field itself (no default
            # where one is needed, or removed without one).
            if any(problem == n.rsplit(".", 1)[-1] for n in names):
                named.append(f"field {fields} (at {path})")
            else:
                named.append(f"field {fields}: {problem} (at {path})")
        return named


# Apicurio: "... list of diff types: [b at /fields/1, reader type: STRING not
# compatible with writer type: INT at /fields/0/type]".
_DIFF_LIST = re.compile(r"list of diff types: \[(.*)\]", re.DOTALL)
_LOCATED = re.compile(r"\s*([^,]+?) at (/[A-Za-z0-9_/]*)")


def _located_problems(message: str) -> list[tuple[str, str]]:
    """The ``(problem, path)`` pairs of an Apicurio incompatibility message."""
    found = _DIFF_LIST.search(message)
    if found is None:
        return []
    return [(m.group(1), m.group(2)) for m in _LOCATED.finditer(found.group(1))]


def field_at(avro_schema: Any, path: str) -> str | None:
    """The dotted field name that a JSON-pointer-like ``path`` points into.

    Registries locate a compatibility problem with a path through the schema's
    JSON, such as ``/fields/0/type/fields/2``; users think in field names,
    here ``"address.zip"``. Unions, arrays and maps are walked through.

    Returns
    -------
    str or None
        `None` if the path names no field or does not fit the schema.
    """
    names: list[str] = []
    node = avro_schema
    tokens = [token for token in path.split("/") if token]
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if isinstance(node, dict) and token == "fields" and index + 1 < len(tokens):
            fields = node.get("fields")
            position = tokens[index + 1]
            if not (isinstance(fields, list) and position.isdigit()):
                return None
            if int(position) >= len(fields):
                return None
            field = fields[int(position)]
            names.append(str(field.get("name")))
            node = field.get("type")
            index += 2
            continue
        if token == "type":
            # "fields/N/type": the field's type, already taken above.
            pass
        elif isinstance(node, dict) and token in ("items", "values"):
            node = node.get(token)
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
        index += 1
    return ".".join(names) or None
