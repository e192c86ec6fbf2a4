"""`MemorySchemaRegistry`: a `SchemaRegistry` held in memory.

It keeps subjects, versions, ids and compatibility levels in a
`SchemaStore`, the same rules the development stack's HTTP registry
serves, so registration, schema evolution and decoding behave as against a
Confluent registry, with no server.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..errors import SchemaRegistryError
from ._schema_store import SchemaStore, SchemaStoreError

__all__ = ["MemorySchemaRegistry"]


class MemorySchemaRegistry:
    """A Confluent-compatible schema registry in memory.

    Parameters
    ----------
    compatibility
        The global compatibility level (``BACKWARD``, as Confluent's
        default).

    Attributes
    ----------
    store
        The subjects, versions and ids.
    available
        While False, every request fails as for an unreachable registry.
    """

    url = "memory://registry"

    def __init__(self, compatibility: str = "BACKWARD") -> None:
        self.store = SchemaStore(compatibility)
        self.available = True

    def _check(self, action: str) -> None:
        if not self.available:
            raise SchemaRegistryError(
                f"Schema registry at {self.url} is unreachable (asked to {action})",
                url=self.url,
            )

    def _error(self, action: str, error: SchemaStoreError) -> SchemaRegistryError:
        return SchemaRegistryError(
            f"Schema registry at {self.url} refused to {action}: HTTP"
            f" {error.status}: {error.message}",
            url=self.url,
            status=error.status,
            detail=error.message,
        )

    async def register(self, subject: str, avro_schema: dict[str, Any]) -> int:
        """Register a schema; its id."""
        await asyncio.sleep(0)
        self._check(f"register {subject!r}")
        try:
            schema_id, _ = self.store.register(subject, avro_schema)
        except SchemaStoreError as exc:
            raise self._error(f"register {subject!r}", exc) from exc
        return schema_id

    async def set_compatibility(self, subject: str, level: str) -> None:
        """Set a subject's compatibility level."""
        self._check(f"set the compatibility of {subject!r}")
        try:
            self.store.set_subject_compatibility(subject, level)
        except SchemaStoreError as exc:
            raise self._error(f"set the compatibility of {subject!r}", exc) from exc

    async def compatibility_problems(
        self, subject: str, avro_schema: dict[str, Any]
    ) -> list[str]:
        """Why a schema is incompatible with the subject's versions."""
        self._check(f"check a schema of {subject!r}")
        try:
            return self.store.test_compatibility(subject, avro_schema)
        except SchemaStoreError as exc:
            raise self._error(f"check a schema of {subject!r}", exc) from exc

    async def latest_schema(self, subject: str) -> dict[str, Any] | None:
        """The latest schema of a subject, or None."""
        self._check(f"give the latest schema of {subject!r}")
        try:
            found = self.store.get_version(subject)
        except SchemaStoreError:
            return None
        schema: dict[str, Any] = json.loads(found.schema)
        return schema

    async def schema_by_id(self, schema_id: int) -> dict[str, Any] | None:
        """The schema with an id, or None."""
        self._check(f"give schema id {schema_id}")
        try:
            text = self.store.schema_by_id(schema_id)
        except SchemaStoreError:
            return None
        schema: dict[str, Any] = json.loads(text)
        return schema
