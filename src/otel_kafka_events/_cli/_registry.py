"""``schema``, ``subjects`` and ``check``: payload schemas and the registry.

``schema MODULE:CLASS`` prints the Avro schema `create_publisher` would
register for a payload class; ``schema --subject S`` what the registry
holds. ``check MODULE:ATTR`` asks the registry whether each declared event's
schema could be registered now, under the subject's compatibility level, so
a service's CI fails before a deployment would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click
from rich.table import Table
from schema_registry.client import AsyncSchemaRegistryClient
from schema_registry.client.errors import ClientError
from schema_registry.client.schema import AvroSchema

from .._encoding._event_type import EventType
from .._encoding._models import EventPayload
from .._encoding._registry import SchemaRegistrar
from ._console import err, out
from ._errors import CliError
from ._loading import declared_events, import_target
from ._running import run
from ._settings import (
    EventSettings,
    application_option,
    registry_client,
    registry_option,
    remember,
    require,
)

__all__ = ["check", "schema", "subjects"]


@dataclass(frozen=True)
class DeclaredEvent:
    """One event a service declares, as its manager would register it."""

    name: str
    model: type[EventPayload]
    subject: str
    schema: dict[str, Any]


def declared_schemas(
    spec: str, name: str | None, application: str | None, registry_url: str | None
) -> list[DeclaredEvent]:
    """Import ``spec`` and derive each event's schema and subject.

    The topic, the namespace of every schema, is
    ``METRICS_EVENTS_TOPIC_PREFIX.application``; subjects get
    ``SCHEMA_MANAGER_SUFFIX``; the trace fields are included unless
    ``METRICS_TRACE_CONTEXT`` is false, as in the service.
    """
    settings = EventSettings()
    app = require(
        application,
        "METRICS_APPLICATION",
        "--application",
        "the topic, and so each schema's namespace and subject, depend on it",
    )
    topic = settings.topic(app)
    # Names subjects as the service's manager does; makes no request.
    registrar = SchemaRegistrar(
        registry_client(registry_url or "http://localhost"),
        suffix=settings.schema_suffix,
    )
    events = []
    for event, model in declared_events(import_target(spec), spec, name):
        event_type = EventType(
            event, topic, app, model, trace_context=settings.trace_context
        )
        events.append(
            DeclaredEvent(
                event,
                model,
                registrar.subject(event_type.full_name),
                event_type.schema,
            )
        )
    return events


def _print_json(value: Any) -> None:
    out.print(json.dumps(value, indent=2), markup=False, highlight=False)


# -- schema ----------------------------------------------------------------------


@click.command()
@click.argument("target", required=False, metavar="[MODULE:CLASS]")
@click.option("--name", help="Event name (default: the class name in snake_case).")
@click.option("--subject", help="Print a registered schema of this subject instead.")
@click.option(
    "--version",
    "version",
    default="latest",
    show_default=True,
    help="With --subject: which version.",
)
@application_option
@registry_option
def schema(
    target: str | None,
    name: str | None,
    subject: str | None,
    version: str,
    application: str | None,
    registry_url: str | None,
) -> None:
    """Print the Avro schema of MODULE:CLASS, or a registered one.

    MODULE:CLASS gives the schema create_publisher would register for that
    payload class (topic and subject from METRICS_APPLICATION and
    METRICS_EVENTS_TOPIC_PREFIX); --subject S [--version V] the schema the
    registry holds.
    """
    remember(registry_url=registry_url)
    if (target is None) == (subject is None):
        raise click.UsageError("give either MODULE:CLASS or --subject")
    if subject is None:
        assert target is not None
        events = declared_schemas(target, name, application, registry_url)
        if len(events) != 1:
            raise CliError(
                f"{target} declares {len(events)} events; `schema` prints one",
                "name a single class, or use `check` for all of them",
                exit_code=2,
            )
        err.print(f"Subject: {events[0].subject}", highlight=False)
        _print_json(events[0].schema)
        return
    registry = require(
        registry_url,
        "SCHEMA_MANAGER_REGISTRY_URL",
        "--registry-url",
        "where to read the schema",
    )
    found = run(_registered_schema(registry, subject, version))
    err.print(
        f"Subject {subject} version {found['version']}, schema id {found['id']}",
        highlight=False,
    )
    _print_json(found["schema"])


async def _registered_schema(url: str, subject: str, version: str) -> dict[str, Any]:
    client = registry_client(url)
    versions = await client.get_versions(subject)
    if not versions:
        subjects = await client.get_subjects()
        raise CliError(
            f"the registry at {url} has no subject {subject!r}",
            f"list them with `otel-kafka-events subjects` ({len(subjects)} known)",
        )
    wanted: int | str = version
    if version != "latest":
        if not version.isdigit() or int(version) not in versions:
            raise CliError(
                f"subject {subject!r} has no version {version!r}",
                f"its versions are {', '.join(map(str, versions))}",
                exit_code=2,
            )
        wanted = int(version)
    found = await client.get_schema(subject, wanted)
    if found is None:  # deleted between the two requests
        raise CliError(f"subject {subject!r} version {version} vanished; try again")
    return {
        "version": found.version,
        "id": found.schema_id,
        "schema": found.schema.raw_schema,
    }


# -- subjects --------------------------------------------------------------------


@click.command()
@registry_option
def subjects(registry_url: str | None) -> None:
    """List the registry's subjects: versions, latest schema id, compatibility."""
    remember(registry_url=registry_url)
    registry = require(
        registry_url,
        "SCHEMA_MANAGER_REGISTRY_URL",
        "--registry-url",
        "which registry to list",
    )
    rows = run(_subject_rows(registry))
    if not rows:
        err.print(f"The registry at {registry} has no subjects.", highlight=False)
        return
    table = Table()
    table.add_column("subject", overflow="fold", ratio=1)
    table.add_column("versions", overflow="fold")
    table.add_column("latest id", no_wrap=True)
    table.add_column("compatibility", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    out.print(table)


async def _subject_rows(url: str) -> list[tuple[str, str, str, str]]:
    client = registry_client(url)
    rows = []
    with err.status(f"Reading subjects from {url}..."):
        for subject in sorted(await client.get_subjects()):
            versions = await client.get_versions(subject)
            latest = await client.get_schema(subject)
            rows.append(
                (
                    subject,
                    ", ".join(map(str, versions)),
                    str(latest.schema_id) if latest else "",
                    await _level(client, subject) or "",
                )
            )
    return rows


# -- check -----------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The registry's answer for one declared event."""

    event: DeclaredEvent
    compatible: bool
    level: str | None
    new_subject: bool
    reasons: list[str]


async def _check_one(
    client: AsyncSchemaRegistryClient, event: DeclaredEvent
) -> Verdict:
    versions = await client.get_versions(event.subject)
    level = await _level(client, event.subject)
    if not versions:
        return Verdict(event, True, level, True, [])
    answer = await client.test_compatibility(
        event.subject, AvroSchema(event.schema), verbose=True
    )
    if not isinstance(answer, dict):
        # The client turns a 404 or 422 into False.
        raise CliError(
            f"the registry could not check subject {event.subject!r} (HTTP 404 or 422)",
            "check SCHEMA_MANAGER_REGISTRY_URL and the subject's schemas",
        )
    compatible = bool(answer.get("is_compatible"))
    reasons = [str(m) for m in answer.get("messages") or []]
    return Verdict(event, compatible, level, False, reasons)


async def _level(client: AsyncSchemaRegistryClient, subject: str) -> str | None:
    """The subject's compatibility level, else the registry's, else None."""
    for scope in (subject, None):
        try:
            return str(await client.get_compatibility(scope))
        except ClientError:
            continue
    return None


async def _check_all(url: str, events: list[DeclaredEvent]) -> list[Verdict]:
    client = registry_client(url)
    verdicts = []
    for index, event in enumerate(events, 1):
        with err.status(f"Checking {event.subject} ({index}/{len(events)})..."):
            verdicts.append(await _check_one(client, event))
    return verdicts


@click.command()
@click.argument("target", metavar="MODULE:ATTR")
@click.option("--name", help="Event name, when ATTR is a single class.")
@application_option
@registry_option
def check(
    target: str, name: str | None, application: str | None, registry_url: str | None
) -> None:
    """Fail if a declared event's schema would break registry compatibility.

    MODULE:ATTR names an EventPayload class, or the service's declaration of
    its events: a mapping of event names to payload classes, or a list of
    (name, class) pairs. Each schema is tested against its subject's latest
    version under the subject's compatibility level; a subject with no
    versions passes. Exit status 1 if any is incompatible.
    """
    remember(registry_url=registry_url)
    events = declared_schemas(target, name, application, registry_url)
    registry = require(
        registry_url,
        "SCHEMA_MANAGER_REGISTRY_URL",
        "--registry-url",
        "the registry to check against",
    )
    verdicts = run(_check_all(registry, events))
    for verdict in verdicts:
        _report(verdict)
    wanted = EventSettings().compatibility
    if wanted is not None:
        err.print(
            f"Note: SCHEMA_MANAGER_COMPATIBILITY={wanted} makes the service set"
            " this level on its subjects before registering; the check used the"
            " levels the registry holds now.",
            highlight=False,
        )
    broken = [v for v in verdicts if not v.compatible]
    if broken:
        raise CliError(
            f"{len(broken)} of {len(verdicts)} event schemas would break"
            f" compatibility ({', '.join(v.event.name for v in broken)})",
            "make the change compatible (e.g. give new fields a default) or"
            " register it under a new event name",
        )
    what = "The event schema" if len(verdicts) == 1 else f"All {len(verdicts)} schemas"
    err.print(f"{what} can be registered.", highlight=False)


def _report(verdict: Verdict) -> None:
    event = verdict.event
    level = f" under {verdict.level}" if verdict.level else ""
    if verdict.new_subject:
        out.print(
            f"[green]ok[/]   {event.name}: new subject {event.subject}", highlight=False
        )
    elif verdict.compatible:
        out.print(
            f"[green]ok[/]   {event.name}: compatible with {event.subject}{level}",
            highlight=False,
        )
    else:
        out.print(
            f"[red]FAIL[/] {event.name}: incompatible with {event.subject}{level}",
            highlight=False,
        )
        for reason in verdict.reasons or ["the registry gave no reason"]:
            out.print(f"       - {reason}", markup=False, highlight=False)
