"""What a Confluent-compatible schema registry stores, without the server.

`SchemaStore` keeps subjects, their versions, schema ids and compatibility
levels in plain dictionaries and decides compatibility with Apache Avro's
own `avro.compatibility.ReaderWriterCompatibilityChecker`, so its verdicts
match what a real registry says for the usual schema evolutions. It does no
I/O and takes no locks: the local HTTP registry of
``otel-kafka-events-devstack`` serves one behind a lock, and an in-memory
registry can call one directly.

A refused request raises `SchemaStoreError`, which carries the HTTP status
and the error code a Confluent registry answers with, so a server built on
the store replies exactly as the real one would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from .._encoding._registry import COMPATIBILITY_LEVELS

__all__ = [
    "COMPATIBILITY_LEVELS",
    "Schema",
    "SchemaStore",
    "SchemaStoreError",
    "SchemaVersion",
    "compatibility_level",
]

# Confluent limits version ids to a positive signed 32-bit integer.
_MAX_VERSION = 2**31 - 1


class SchemaStoreError(Exception):
    """A request the registry refuses, as a Confluent registry reports it.

    Attributes
    ----------
    status
        The HTTP status a registry answers with (404, 409, 422...).
    error_code
        Confluent's finer error code (40401 subject not found, 40402
        version not found, 40403 schema not found, 40408 no subject-level
        compatibility, 409 incompatible schema, 42201 invalid schema, 42202
        invalid version, 42203 invalid compatibility level).
    message
        The sentence a registry puts in its error body.
    """

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


@dataclass(frozen=True)
class SchemaVersion:
    """One version of a subject."""

    subject: str
    version: int
    schema_id: int
    schema: str
    """The schema's JSON text exactly as first registered."""


@dataclass(frozen=True)
class _StoredSchema:
    """One distinct schema, shared by every subject that registered it."""

    schema_id: int
    text: str
    parsed: Any
    """The `avro.schema.Schema`, kept to avoid reparsing on each check."""


@dataclass(frozen=True)
class _Candidate:
    """A schema handed to the store, parsed and validated."""

    text: str
    parsed: Any
    key: str


Schema = str | Mapping[str, Any] | list[Any]
"""An Avro schema: its JSON text, or the parsed JSON (a record's dict, a
union's list)."""


def _parse_candidate(schema: object, schema_type: str | None) -> _Candidate:
    """Validate and parse a schema handed to the store.

    Raises
    ------
    SchemaStoreError
        422 / 42201 for a non-Avro schema type or a schema Avro cannot parse.
    """
    kind = schema_type or "AVRO"
    if kind != "AVRO":
        raise SchemaStoreError(
            422,
            42201,
            f"Invalid schema: schema type {kind!r} is not supported, only AVRO",
        )
    if isinstance(schema, str):
        text = schema
    elif isinstance(schema, Mapping | list):
        text = json.dumps(schema)
    else:
        raise SchemaStoreError(422, 42201, "Invalid schema: expected a schema string")
    try:
        parsed = avro.schema.parse(text)
    # Avro raises assorted exception types (not only SchemaParseException)
    # for malformed input; all of them mean "invalid schema" to the client.
    except Exception as exc:
        raise SchemaStoreError(422, 42201, f"Invalid schema {text}: {exc}") from exc
    return _Candidate(text=text, parsed=parsed, key=_identity_key(parsed))


def _identity_key(parsed: Any) -> str:
    """Return the string that decides whether two schemas are the same.

    The Avro Parsing Canonical Form is deliberately not used: it drops
    defaults, docs and aliases, so ``{"name": "b", "type": "int"}`` and the
    same field with ``"default": 0`` would collide, although they differ for
    compatibility. The full JSON form with sorted keys only normalizes
    whitespace and key order.
    """
    return json.dumps(parsed.to_json(), sort_keys=True, separators=(",", ":"))


def _parse_version(version: int | str) -> int | None:
    """A version as given; `None` stands for the latest version.

    Raises
    ------
    SchemaStoreError
        422 / 42202 if it is neither ``"latest"`` nor a valid version id.
    """
    raw = str(version)
    # Confluent accepts -1 as a synonym for "latest".
    if raw in ("latest", "-1"):
        return None
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if not 1 <= number <= _MAX_VERSION:
        raise SchemaStoreError(
            422,
            42202,
            f"The specified version '{raw}' is not a valid version id. Allowed "
            f'values are between [1, {_MAX_VERSION}] and the string "latest"',
        )
    return number


def compatibility_level(level: object) -> str:
    """Check a compatibility level and return its upper-case name.

    Raises
    ------
    SchemaStoreError
        422 / 42203 if the level is not a string naming a known level.
    """
    # Confluent is case-insensitive here and answers with the upper-case name.
    if isinstance(level, str) and level.upper() in COMPATIBILITY_LEVELS:
        return level.upper()
    raise SchemaStoreError(
        422,
        42203,
        f"Invalid compatibility level {level!r}. Valid values are "
        f"{', '.join(COMPATIBILITY_LEVELS)}",
    )


def _field_path(schema: Any, location: str) -> str | None:
    """Translate a checker location into dotted field names.

    The checker reports where a problem is as a JSON-pointer-like path through
    the *reader* schema, such as ``/fields/0/type/fields/2``. Users think in
    field names, so this returns e.g. ``"address.zip"``, or `None` when the
    path names no field (or cannot be followed).
    """
    names: list[str] = []
    node = schema
    tokens = [token for token in location.split("/") if token]
    try:
        index = 0
        while index < len(tokens):
            token = tokens[index]
            if token == "fields" and index + 1 < len(tokens):
                field = node.fields[int(tokens[index + 1])]
                names.append(field.name)
                node = field.type
                index += 2
                continue
            if token == "items":
                node = node.items
            elif token == "values":
                node = node.values
            elif token.isdigit():
                node = node.schemas[int(token)]
            elif token != "type":
                break
            index += 1
    except (AttributeError, IndexError, ValueError):
        pass
    return ".".join(names) or None


def _check_pair(
    reader: Any, writer: Any, level: str, version: int, new_is_reader: bool
) -> str | None:
    """Check one reader/writer pair; describe the problem, or return `None`."""
    # A fresh checker per pair: its memo is keyed on object ids, which Python
    # may reuse once earlier schemas are garbage collected. The cast is for
    # mypy: avro ships py.typed but leaves this constructor unannotated.
    checker = cast(Any, ReaderWriterCompatibilityChecker)()
    result = checker.get_compatibility(reader, writer)
    if result.compatibility is not SchemaCompatibilityType.incompatible:
        return None
    if new_is_reader:
        direction = f"the new schema cannot read data written with version {version}"
    else:
        direction = f"version {version} cannot read data written with the new schema"
    locations = sorted(result.locations)
    fields = sorted(
        {name for loc in locations if (name := _field_path(reader, loc)) is not None}
    )
    error_types = sorted({kind.value.upper() for kind in result.incompatibilities})
    return (
        f"{{compatibility: '{level}', oldSchemaVersion: {version}, "
        f"direction: '{direction}', errorTypes: {error_types}, "
        f"fields: {fields}, locations: {locations}, "
        f"messages: {sorted(result.messages)}}}"
    )


def _incompatibilities(
    level: str, new: Any, previous: list[tuple[int, _StoredSchema]]
) -> list[str]:
    """Check ``new`` against ``previous`` (oldest first) under ``level``.

    Non-transitive levels look only at the last entry of ``previous``, the
    transitive ones at all of them, as Confluent does.

    Returns
    -------
    list of str
        One description per failing (version, direction); empty if the new
        schema is compatible.
    """
    if level == "NONE" or not previous:
        return []
    targets = previous if level.endswith("_TRANSITIVE") else previous[-1:]
    base = level.removesuffix("_TRANSITIVE")
    problems: list[str] = []
    for version, old in targets:
        checks: list[str | None] = []
        # BACKWARD: consumers on the new schema read old data.
        if base in ("BACKWARD", "FULL"):
            checks.append(_check_pair(new, old.parsed, level, version, True))
        # FORWARD: consumers still on the old schema read new data.
        if base in ("FORWARD", "FULL"):
            checks.append(_check_pair(old.parsed, new, level, version, False))
        problems.extend(problem for problem in checks if problem is not None)
    return problems


def _no_subject_level(subject: str) -> SchemaStoreError:
    return SchemaStoreError(
        404,
        40408,
        f"Subject '{subject}' does not have subject-level compatibility configured",
    )


class SchemaStore:
    """The subjects, versions, schema ids and compatibility levels of a
    Confluent-compatible registry, in memory.

    Only Avro schemas are stored. Identical schemas (same JSON once key
    order and whitespace are ignored) share one id across subjects; ids are
    never reused, and stay resolvable after their subject is deleted, as in
    Confluent, so data already written stays readable. Not thread-safe: a
    server calls it under a lock of its own.

    Parameters
    ----------
    default_compatibility
        The global compatibility level at the start, and the one `reset`
        and `delete_global_compatibility` restore.

    Raises
    ------
    ValueError
        If ``default_compatibility`` is not one of `COMPATIBILITY_LEVELS`.

    Examples
    --------
    >>> store = SchemaStore()
    >>> store.register("orders-value", {"type": "record", "name": "Order",
    ...     "fields": [{"name": "a", "type": "int"}]})
    (1, 1)
    """

    def __init__(self, default_compatibility: str = "BACKWARD") -> None:
        if default_compatibility not in COMPATIBILITY_LEVELS:
            raise ValueError(
                f"Unknown compatibility level {default_compatibility!r}; expected "
                f"one of {', '.join(COMPATIBILITY_LEVELS)}"
            )
        self._default_compatibility = default_compatibility
        self.reset()

    def reset(self) -> None:
        """Forget every schema, subject and level; ids start again from 1."""
        self._next_id = 1
        self._schemas: dict[int, _StoredSchema] = {}
        self._ids_by_key: dict[str, int] = {}
        # subject -> {version -> schema id}, in ascending version order.
        self._subjects: dict[str, dict[int, int]] = {}
        self._subject_levels: dict[str, str] = {}
        self._global_level = self._default_compatibility

    # -- helpers ----------------------------------------------------------------

    def _versions(self, subject: str) -> dict[int, int]:
        versions = self._subjects.get(subject)
        if not versions:
            raise SchemaStoreError(404, 40401, f"Subject '{subject}' not found.")
        return versions

    def _resolve_version(self, subject: str, version: int | str) -> int:
        wanted = _parse_version(version)
        versions = self._versions(subject)
        resolved = max(versions) if wanted is None else wanted
        if resolved not in versions:
            raise SchemaStoreError(404, 40402, f"Version {version} not found.")
        return resolved

    def _level_for(self, subject: str) -> str:
        return self._subject_levels.get(subject, self._global_level)

    def _history(self, subject: str) -> list[tuple[int, _StoredSchema]]:
        versions = self._subjects.get(subject, {})
        return [(v, self._schemas[i]) for v, i in versions.items()]

    def _describe(self, subject: str, version: int) -> SchemaVersion:
        stored = self._schemas[self._subjects[subject][version]]
        return SchemaVersion(subject, version, stored.schema_id, stored.text)

    # -- subjects and schemas ---------------------------------------------------

    def register(
        self, subject: str, schema: Schema, *, schema_type: str | None = None
    ) -> tuple[int, int]:
        """Register ``schema`` under ``subject`` unless it is there already.

        Parameters
        ----------
        subject
            The subject, such as ``"orders-value"``.
        schema
            The Avro schema: its JSON text (kept as given and returned by
            every read) or its parsed JSON.
        schema_type
            ``"AVRO"`` or `None`; any other type is refused.

        Returns
        -------
        tuple of int
            The schema id and the subject's version holding it; the existing
            ones if the subject already has this schema.

        Raises
        ------
        SchemaStoreError
            422 / 42201 for an invalid schema; 409 / 409 if it is
            incompatible under the subject's level (the message lists each
            broken version and field).
        """
        candidate = _parse_candidate(schema, schema_type)
        versions = self._subjects.get(subject, {})
        existing_id = self._ids_by_key.get(candidate.key)
        if existing_id is not None:
            for version, version_id in versions.items():
                if version_id == existing_id:
                    return existing_id, version
        problems = _incompatibilities(
            self._level_for(subject), candidate.parsed, self._history(subject)
        )
        if problems:
            raise SchemaStoreError(
                409,
                409,
                "Schema being registered is incompatible with an earlier "
                f'schema for subject "{subject}", details: [{", ".join(problems)}]',
            )
        if existing_id is None:
            existing_id = self._next_id
            self._next_id += 1
            self._ids_by_key[candidate.key] = existing_id
            self._schemas[existing_id] = _StoredSchema(
                existing_id, candidate.text, candidate.parsed
            )
        # Numbering continues after the highest live version, so deleting a
        # middle version leaves a gap instead of being renumbered.
        next_version = max(versions, default=0) + 1
        self._subjects.setdefault(subject, {})[next_version] = existing_id
        return existing_id, next_version

    def lookup(
        self, subject: str, schema: Schema, *, schema_type: str | None = None
    ) -> SchemaVersion:
        """The version of ``subject`` that holds ``schema``.

        Raises
        ------
        SchemaStoreError
            404 / 40401 for an unknown subject (checked first), 422 / 42201
            for an invalid schema, 404 / 40403 if no version holds it.
        """
        versions = self._versions(subject)
        candidate = _parse_candidate(schema, schema_type)
        schema_id = self._ids_by_key.get(candidate.key)
        for version, version_id in versions.items():
            if version_id == schema_id:
                return self._describe(subject, version)
        raise SchemaStoreError(404, 40403, "Schema not found")

    def subjects(self) -> list[str]:
        """Every subject with at least one version, sorted."""
        return sorted(s for s, versions in self._subjects.items() if versions)

    def versions(self, subject: str) -> list[int]:
        """The subject's versions, oldest first.

        Raises
        ------
        SchemaStoreError
            404 / 40401 for an unknown subject.
        """
        return list(self._versions(subject))

    def get_version(self, subject: str, version: int | str = "latest") -> SchemaVersion:
        """One version of ``subject``: a number, or ``"latest"`` (or -1).

        Raises
        ------
        SchemaStoreError
            422 / 42202 for an invalid version, 404 / 40401 for an unknown
            subject, 404 / 40402 for a version it does not have.
        """
        return self._describe(subject, self._resolve_version(subject, version))

    def schema_by_id(self, schema_id: int) -> str:
        """The JSON text of the schema with this id.

        Raises
        ------
        SchemaStoreError
            404 / 40403 if no schema has this id.
        """
        stored = self._schemas.get(schema_id)
        if stored is None:
            raise SchemaStoreError(404, 40403, "Schema not found")
        return stored.text

    def subject_versions_for_id(self, schema_id: int) -> list[tuple[str, int]]:
        """Every ``(subject, version)`` holding the schema with this id.

        Raises
        ------
        SchemaStoreError
            404 / 40403 if no schema has this id.
        """
        self.schema_by_id(schema_id)
        return [
            (subject, version)
            for subject, versions in sorted(self._subjects.items())
            for version, version_id in versions.items()
            if version_id == schema_id
        ]

    def delete_subject(self, subject: str) -> list[int]:
        """Delete a subject (permanently) and its compatibility level.

        Returns
        -------
        list of int
            The versions deleted.

        Raises
        ------
        SchemaStoreError
            404 / 40401 for an unknown subject.
        """
        deleted = list(self._versions(subject))
        del self._subjects[subject]
        # Confluent drops the subject's compatibility level with it.
        self._subject_levels.pop(subject, None)
        return deleted

    def delete_version(self, subject: str, version: int | str) -> int:
        """Delete one version (permanently); return its number.

        Raises
        ------
        SchemaStoreError
            As `get_version`.
        """
        resolved = self._resolve_version(subject, version)
        versions = self._subjects[subject]
        del versions[resolved]
        if not versions:
            del self._subjects[subject]
        return resolved

    # -- compatibility ----------------------------------------------------------

    def test_compatibility(
        self,
        subject: str,
        schema: Schema,
        version: int | str | None = None,
        *,
        schema_type: str | None = None,
    ) -> list[str]:
        """Why ``schema`` could not be registered under ``subject``.

        Parameters
        ----------
        subject
            The subject to test against; one with no versions accepts any
            schema, as Confluent 7 does.
        schema
            The candidate schema.
        version
            Test against this version alone, whatever the level; `None`
            tests against every version the subject's level asks for.

        Returns
        -------
        list of str
            One message per broken (version, direction), naming the error
            types and fields; empty when the schema is compatible.

        Raises
        ------
        SchemaStoreError
            422 / 42201 for an invalid schema; as `get_version` for a named
            version.
        """
        candidate = _parse_candidate(schema, schema_type)
        history = self._history(subject)
        if not history:
            return []
        if version is not None:
            resolved = self._resolve_version(subject, version)
            history = [(resolved, self._schemas[self._subjects[subject][resolved]])]
        return _incompatibilities(self._level_for(subject), candidate.parsed, history)

    # -- configuration ----------------------------------------------------------

    def global_compatibility(self) -> str:
        """The global compatibility level."""
        return self._global_level

    def set_global_compatibility(self, level: str) -> str:
        """Set the global level (any case); return its upper-case name.

        Raises
        ------
        SchemaStoreError
            422 / 42203 for an unknown level.
        """
        self._global_level = compatibility_level(level)
        return self._global_level

    def delete_global_compatibility(self) -> str:
        """Restore the default global level; return the previous one."""
        previous = self._global_level
        self._global_level = self._default_compatibility
        return previous

    def subject_compatibility(
        self, subject: str, *, default_to_global: bool = False
    ) -> str:
        """The subject's own level, or the global one if asked to fall back.

        Raises
        ------
        SchemaStoreError
            404 / 40408 if the subject has no level of its own and
            ``default_to_global`` is false.
        """
        level = self._subject_levels.get(subject)
        if level is not None:
            return level
        if default_to_global:
            return self._global_level
        raise _no_subject_level(subject)

    def set_subject_compatibility(self, subject: str, level: str) -> str:
        """Set the subject's level (any case); return its upper-case name.

        Raises
        ------
        SchemaStoreError
            422 / 42203 for an unknown level.
        """
        self._subject_levels[subject] = compatibility_level(level)
        return self._subject_levels[subject]

    def delete_subject_compatibility(self, subject: str) -> str:
        """Drop the subject's own level; return it.

        Raises
        ------
        SchemaStoreError
            404 / 40408 if the subject has no level of its own.
        """
        previous = self._subject_levels.pop(subject, None)
        if previous is None:
            raise _no_subject_level(subject)
        return previous
