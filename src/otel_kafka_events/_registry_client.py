"""Schema registration through python-schema-registry-client."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
from schema_registry.client import AsyncSchemaRegistryClient, schema
from schema_registry.client.errors import ClientError

from ._exceptions import IncompatibleSchemaError, SchemaRegistryError

__all__ = ["COMPATIBILITY_LEVELS", "SchemaRegistrar", "make_registry_client"]

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


def make_registry_client(url: str, timeout: float = 10.0) -> AsyncSchemaRegistryClient:
    """Create a registry client that reuses one TLS context.

    The client library opens a new HTTP client per request and would build a
    TLS context from the CA bundle each time (about 0.1 s); one shared context
    (or none, for plain HTTP) avoids that.
    """
    client = AsyncSchemaRegistryClient(url=url, timeout=httpx.Timeout(timeout))
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
        sentence, so the compatibility endpoint's list is preferred; the
        refusal's message is the fallback when that endpoint says nothing.
        """
        try:
            verdict = await self.client.test_compatibility(
                subject, parsed, verbose=True
            )
        except (ClientError, httpx.HTTPError, OSError):
            verdict = None
        if isinstance(verdict, dict) and verdict.get("messages"):
            return [str(message) for message in verdict["messages"]]
        detail = error.server_traceback
        if isinstance(detail, dict) and detail.get("message"):
            return [str(detail["message"])]
        return []
