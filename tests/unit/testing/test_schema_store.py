"""`SchemaStore`: what a registry stores and how it judges, without a server.

The HTTP registry of the devstack serves this store (tests/devstack/
test_registry.py drives it through the real registry client); here each
rule is checked directly, with the Confluent status and error code a refusal
carries.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from otel_kafka_events.testing._schema_store import (
    SchemaStore,
    SchemaStoreError,
    SchemaVersion,
)


def record(*fields: dict[str, Any], name: str = "Order") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields)}


A_INT = {"name": "a", "type": "int"}
A_STRING = {"name": "a", "type": "string"}
B_INT = {"name": "b", "type": "int"}
B_INT_DEFAULT = {"name": "b", "type": "int", "default": 0}
V_A = record(A_INT)
V_AB = record(A_INT, B_INT)
V_AB_DEFAULT = record(A_INT, B_INT_DEFAULT)
BAD_TYPE = record({"name": "a", "type": "nope"})


def refusal(error: pytest.ExceptionInfo[SchemaStoreError]) -> tuple[int, int]:
    return error.value.status, error.value.error_code


def test_register_numbers_ids_and_versions() -> None:
    store = SchemaStore()

    assert store.register("orders-value", V_A) == (1, 1)
    assert store.register("orders-value", V_AB_DEFAULT) == (2, 2)
    # Already there: the existing id and version, no new version.
    assert store.register("orders-value", V_A) == (1, 1)
    # The same schema under another subject shares its id.
    assert store.register("payments-value", V_A) == (1, 1)

    assert store.subjects() == ["orders-value", "payments-value"]
    assert store.versions("orders-value") == [1, 2]
    assert store.subject_versions_for_id(1) == [
        ("orders-value", 1),
        ("payments-value", 1),
    ]


def test_text_is_kept_as_given_and_identity_ignores_layout() -> None:
    store = SchemaStore()
    text = json.dumps(V_A, indent=4)
    schema_id, _ = store.register("orders-value", text)
    reordered = json.dumps(dict(reversed(list(V_A.items()))))

    assert store.schema_by_id(schema_id) == text
    assert store.lookup("orders-value", reordered) == SchemaVersion(
        "orders-value", 1, schema_id, text
    )
    # A default makes a different schema.
    assert store.register("orders-value", V_AB_DEFAULT)[0] != schema_id


def test_get_version_latest_and_by_number() -> None:
    store = SchemaStore()
    store.register("orders-value", V_A)
    store.register("orders-value", V_AB_DEFAULT)

    assert store.get_version("orders-value").version == 2
    assert store.get_version("orders-value", -1).version == 2
    assert store.get_version("orders-value", "1").schema == json.dumps(V_A)
    assert store.get_version("orders-value", 2).schema_id == 2


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda s: s.versions("nobody-value"), (404, 40401)),
        (lambda s: s.get_version("orders-value", 5), (404, 40402)),
        (lambda s: s.get_version("orders-value", "zero"), (422, 42202)),
        (lambda s: s.get_version("orders-value", 2**31), (422, 42202)),
        (lambda s: s.schema_by_id(99), (404, 40403)),
        (lambda s: s.subject_versions_for_id(99), (404, 40403)),
        (lambda s: s.lookup("orders-value", V_AB), (404, 40403)),
        (lambda s: s.lookup("nobody-value", "not json"), (404, 40401)),
        (lambda s: s.register("x-value", "not json"), (422, 42201)),
        (lambda s: s.register("x-value", BAD_TYPE), (422, 42201)),
        (lambda s: s.register("x-value", "{}", schema_type="JSON"), (422, 42201)),
        (lambda s: s.subject_compatibility("orders-value"), (404, 40408)),
        (lambda s: s.delete_subject_compatibility("orders-value"), (404, 40408)),
        (lambda s: s.set_global_compatibility("SIDEWAYS"), (422, 42203)),
        (lambda s: s.set_subject_compatibility("orders-value", ""), (422, 42203)),
    ],
)
def test_refusals_carry_confluent_codes(call: Any, expected: tuple[int, int]) -> None:
    store = SchemaStore()
    store.register("orders-value", V_A)

    with pytest.raises(SchemaStoreError) as error:
        call(store)

    assert refusal(error) == expected
    assert str(error.value) == error.value.message


def test_incompatible_register_is_refused_naming_the_field() -> None:
    store = SchemaStore()
    store.register("orders-value", V_A)

    with pytest.raises(SchemaStoreError) as error:
        store.register("orders-value", V_AB)

    assert refusal(error) == (409, 409)
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in error.value.message
    assert "fields: ['b']" in error.value.message
    assert store.versions("orders-value") == [1]


@pytest.mark.parametrize(
    ("level", "new", "compatible"),
    [
        ("BACKWARD", V_AB_DEFAULT, True),
        ("BACKWARD", V_AB, False),
        ("FORWARD", V_AB, True),
        ("FORWARD", record(A_STRING), False),
        ("FULL", V_AB_DEFAULT, True),
        ("FULL", V_AB, False),
        ("NONE", record(A_STRING), True),
    ],
)
def test_levels_judge_both_directions(
    level: str, new: dict[str, Any], compatible: bool
) -> None:
    store = SchemaStore(default_compatibility=level)
    store.register("orders-value", V_A)

    problems = store.test_compatibility("orders-value", new)

    assert (not problems) is compatible


def test_transitive_levels_check_every_version() -> None:
    store = SchemaStore(default_compatibility="NONE")
    store.register("orders-value", V_A)
    store.register("orders-value", record(A_STRING))
    back_to_int = record(A_INT)

    store.set_subject_compatibility("orders-value", "backward")
    assert store.test_compatibility("orders-value", back_to_int) != []
    # Against version 1 alone, whatever the level.
    assert store.test_compatibility("orders-value", back_to_int, 1) == []
    store.set_subject_compatibility("orders-value", "FORWARD_TRANSITIVE")
    problems = store.test_compatibility("orders-value", back_to_int)
    assert [m for m in problems if "oldSchemaVersion: 2" in m]
    assert not [m for m in problems if "oldSchemaVersion: 1" in m]


def test_verbose_messages_name_nested_fields() -> None:
    store = SchemaStore()
    address = record({"name": "zip", "type": "int"}, name="Address")
    store.register("people-value", record({"name": "home", "type": address}))
    changed = record({"name": "zip", "type": "string"}, name="Address")

    [message] = store.test_compatibility(
        "people-value", record({"name": "home", "type": changed})
    )

    assert "fields: ['home.zip']" in message
    assert "TYPE_MISMATCH" in message
    assert "oldSchemaVersion: 1" in message


def test_no_versions_is_compatible_with_anything() -> None:
    assert SchemaStore().test_compatibility("new-value", V_AB, 3) == []


def test_deletes_keep_ids_and_leave_gaps() -> None:
    store = SchemaStore(default_compatibility="NONE")
    store.register("orders-value", V_A)
    store.register("orders-value", V_AB)
    store.register("orders-value", record(A_STRING))

    assert store.delete_version("orders-value", 2) == 2
    assert store.register("orders-value", record(B_INT)) == (4, 4)
    store.set_subject_compatibility("orders-value", "FULL")
    assert store.versions("orders-value") == [1, 3, 4]
    assert store.delete_version("orders-value", "latest") == 4

    assert store.delete_subject("orders-value") == [1, 3]
    assert store.subjects() == []
    # Data written with the ids stays readable; the level went with it.
    assert store.schema_by_id(2) == json.dumps(V_AB)
    assert store.subject_compatibility("orders-value", default_to_global=True) == (
        "NONE"
    )


def test_configuration_per_subject_and_global() -> None:
    store = SchemaStore()

    assert store.global_compatibility() == "BACKWARD"
    assert store.set_global_compatibility("full") == "FULL"
    assert store.subject_compatibility("x-value", default_to_global=True) == "FULL"
    assert store.set_subject_compatibility("x-value", "none") == "NONE"
    assert store.subject_compatibility("x-value") == "NONE"
    assert store.delete_subject_compatibility("x-value") == "NONE"
    assert store.delete_global_compatibility() == "FULL"
    assert store.global_compatibility() == "BACKWARD"


def test_reset_forgets_everything() -> None:
    store = SchemaStore(default_compatibility="FULL")
    store.register("orders-value", V_A)
    store.set_global_compatibility("NONE")
    store.set_subject_compatibility("orders-value", "BACKWARD")

    store.reset()

    assert store.subjects() == []
    assert store.global_compatibility() == "FULL"
    assert store.register("payments-value", V_AB) == (1, 1)
    with pytest.raises(SchemaStoreError):
        store.subject_compatibility("orders-value")


def test_unknown_default_level_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown compatibility level 'SOMETIMES'"):
        SchemaStore(default_compatibility="SOMETIMES")
