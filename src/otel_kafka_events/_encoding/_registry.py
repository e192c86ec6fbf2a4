"""Schema registration through python-schema-registry-client."""

from __future__ import annotations

import re
import ssl
from typing import Any

import httpx
from schema_registry.client import AsyncSchemaRegistryClient, schema
from schema_registry.client.errors import ClientError

from .._secrets import split_credentials
from ..errors import IncompatibleSchemaError, SchemaRegistryError

__all__ = [
    "COMPATIBILITY_LEVELS",
    "SchemaRegistrar",
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


class SchemaRegistrar:
    """Registers event schemas under ``{namespace}.{name}{suffix}`` subjects.

    Parameters
    ----------
    client
        The registry client.
    suffix
        Appended to every subject (Safir's ``SCHEMA_MANAGER_SUFFIX``).
    compatibility
        If set, the compatibility level put on each subject before
        registering; otherwise the registry's (usually BACKWARD) applies.
    """

    def __init__(
        self,
        client: AsyncSchemaRegistryClient,
        *,
        suffix: str = "",
        compatibility: str | None = None,
    ) -> None:
        if compatibility is not None and compatibility not in COMPATIBILITY_LEVELS:
            raise ValueError(
                f"schema compatibility must be one of {sorted(COMPATIBILITY_LEVELS)},"
                f" got {compatibility!r}"
            )
        self.client = client
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
            If the registry is unreachable or answers with another error.
        """
        subject = self.subject(full_name)
        parsed = schema.AvroSchema(avro_schema)
        try:
            if self.compatibility is not None:
                await self.client.update_compatibility(self.compatibility, subject)
            schema_id: int = await self.client.register(subject, parsed)
        except ClientError as exc:
            if exc.http_code == 409:
                raise IncompatibleSchemaError(
                    subject, await self._explain(subject, parsed, exc)
                ) from exc
            raise SchemaRegistryError(
                f"Schema registry refused subject {subject!r}: {exc.message}"
                f" (HTTP {exc.http_code})"
            ) from exc
        except (httpx.HTTPError, OSError) as exc:
            raise SchemaRegistryError(
                f"Schema registry unreachable while registering {subject!r}:"
                f" {type(exc).__name__}: {exc}"
            ) from exc
        return schema_id

    async def _explain(
        self, subject: str, parsed: schema.AvroSchema, error: ClientError
    ) -> list[str]:
        """The registry's reasons for refusing ``parsed``, each given once.

        The refusal's own message repeats every reason inside one long
        sentence, so the ``messages`` of a verbose compatibility check are
        preferred. Apicurio Registry's Confluent API gives no ``messages``;
        its 409 lists each problem as ``<what> at <path>``, a path into the
        reading schema, which is turned here into the field's dotted name so
        that both registries' errors name the broken field.
        """
        detail = error.server_traceback
        registry_message = ""
        if isinstance(detail, dict) and detail.get("message"):
            registry_message = str(detail["message"])
        try:
            verdict = await self.client.test_compatibility(
                subject, parsed, verbose=True
            )
        except (ClientError, httpx.HTTPError, OSError):
            verdict = None
        if isinstance(verdict, dict) and verdict.get("messages"):
            return [str(message) for message in verdict["messages"]]
        if not registry_message:
            return []
        return [
            registry_message,
            *await self._name_fields(subject, parsed, registry_message),
        ]

    async def _name_fields(
        self, subject: str, parsed: schema.AvroSchema, message: str
    ) -> list[str]:
        """One ``field '<name>': <problem>`` line per ``<problem> at <path>``
        entry of an Apicurio-style message; empty if it has none."""
        problems = _located_problems(message)
        if not problems:
            return []
        # The path runs through the reader: the new schema when checking
        # backward, the registered one when checking forward.
        readers: list[Any] = [parsed.raw_schema]
        try:
            latest = await self.client.get_schema(subject)
        except (ClientError, httpx.HTTPError, OSError):
            latest = None
        if latest is not None:
            readers.append(latest.schema.raw_schema)
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
