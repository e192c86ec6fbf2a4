"""Broker-free tests of `_registry_client`: naming fields in registry replies."""

from __future__ import annotations

from typing import Any

import pytest

from otel_kafka_events._encoding._registry import _located_problems, field_at


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
