"""The public surface: what a caller imports, and that each name is documented.

The public modules are the package root and the modules of `PUBLIC_MODULES`
(tests/public_api.py); their ``__all__`` is the whole public surface.
Docstrings and types are read with griffe, the library the API reference
(mkdocstrings) reads them with, so "documented" here means what the
reference shows: a name griffe finds no docstring for is left out of the
page. `docs/api.md` is checked as source
here; `tests/integration/test_docs.py` checks the built site.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The fastapi and arq modules import their frameworks (optional extras, not
# installed in the version matrix's legs).
pytest.importorskip("fastapi")
pytest.importorskip("arq")

import otel_kafka_events
from otel_kafka_events import errors

from ..public_api import PUBLIC_MODULES, ROOT, module, public_names, public_paths
from .test_safir_compat import SAFIR_METRICS_ALL

API_PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"

# Safir's exceptions, which stay importable from the root (with the
# misspelling of its older releases), and the two every caller catches.
SAFIR_ERRORS = {
    "DuplicateEventError",
    "EventManagerUninitializedError",
    "EventManagerUnintializedError",
    "EventManagerUsageError",
    "KafkaTopicError",
    "UnsupportedAvroSchemaError",
}
ROOT_ERRORS = SAFIR_ERRORS | {"EventManagerError", "EventDeliveryError"}

# Where the Safir that benchmarks and safir_compat install lives.
SAFIR_METRICS_INIT = (
    Path.home() / ".cache" / "otel-kafka-events" / "safir-venv" / "lib"
).glob("python3*/site-packages/safir/metrics/__init__.py")

# Public methods whose return type a caller cannot name, and why that is fine.
OPAQUE_RETURNS = {
    # For subclasses implementing `build_publisher_for_model`, as in Safir:
    # an opaque handle they pass on to a publisher's constructor.
    f"{ROOT}._manager.EventManager.event_type_for",
}


def ruff_order(name: str) -> tuple[int, str]:
    """The order ruff keeps ``__all__`` in (RUF022, isort style): constants,
    then classes, then everything else, each alphabetically."""
    if len(name) > 1 and name.isupper():
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


# __all__ -------------------------------------------------------------------------


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_is_sorted_and_every_name_resolves(module_name: str) -> None:
    names = list(module(module_name).__all__)
    assert names == sorted(names, key=ruff_order)
    assert len(set(names)) == len(names)
    missing = [name for name in names if not hasattr(module(module_name), name)]
    assert missing == []


def test_no_public_module_exports_a_private_name() -> None:
    private = [
        f"{m}.{n}"
        for m, n in public_names()
        if n.startswith("_") and n != "__version__"
    ]
    assert private == []


def test_root_names_show_their_public_path() -> None:
    wrong = {
        name: value.__module__
        for name in otel_kafka_events.__all__
        if inspect.isclass(value := getattr(otel_kafka_events, name))
        or inspect.isfunction(value)
        if value.__module__ != ROOT
    }
    assert wrong == {}
    assert repr(otel_kafka_events.KafkaEventManager) == (
        "<class 'otel_kafka_events.KafkaEventManager'>"
    )


# Errors ----------------------------------------------------------------------------


def test_every_error_is_in_the_errors_module() -> None:
    exported = {
        name
        for module_name, name in public_names()
        if inspect.isclass(value := getattr(module(module_name), name))
        and issubclass(value, errors.EventManagerError)
    }
    assert exported <= set(errors.__all__)
    for name in exported:
        found = {
            getattr(module(m), name)
            for m in PUBLIC_MODULES
            if name in module(m).__all__
        }
        assert found == {getattr(errors, name)}, name


def test_the_root_keeps_safirs_errors_and_the_two_base_classes() -> None:
    at_root = {
        name
        for name in otel_kafka_events.__all__
        if inspect.isclass(value := getattr(otel_kafka_events, name))
        and issubclass(value, errors.EventManagerError)
    }
    assert at_root == ROOT_ERRORS
    assert (
        otel_kafka_events.EventManagerUnintializedError
        is errors.EventManagerUninitializedError
    )


def test_every_safir_metrics_name_is_at_the_root() -> None:
    missing = [n for n in SAFIR_METRICS_ALL if n not in otel_kafka_events.__all__]
    assert missing == []


def test_the_safir_list_is_the_installed_safirs() -> None:
    found = sorted(SAFIR_METRICS_INIT)
    if not found:
        pytest.skip("no Safir in ~/.cache/otel-kafka-events/safir-venv")
    tree = ast.parse(found[-1].read_text())
    [names] = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    ]
    assert sorted(names) == sorted(SAFIR_METRICS_ALL)
    missing = [n for n in names if n not in otel_kafka_events.__all__]
    assert missing == []


# Documentation ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def griffe_package() -> Any:
    griffe = pytest.importorskip("griffe")
    return griffe.load(ROOT, resolve_aliases=True, resolve_external=False)


def griffe_object(package: Any, module_name: str, name: str) -> Any:
    owner = package if module_name == ROOT else package[module_name[len(ROOT) + 1 :]]
    found = owner[name]
    return found.final_target if found.is_alias else found


def test_every_public_name_has_a_docstring(griffe_package: Any) -> None:
    undocumented = [
        f"{m}.{n}"
        for m, n in public_names()
        if not (doc := griffe_object(griffe_package, m, n).docstring)
        or not doc.value.strip()
    ]
    assert undocumented == []


def api_page_entries() -> dict[str, list[str] | None]:
    """The ``::: identifier`` entries of the API page, with the ``members``
    each one is limited to (None: every public member)."""
    entries: dict[str, list[str] | None] = {}
    current: str | None = None
    in_members = False
    for line in API_PAGE.read_text().splitlines():
        if line.startswith("::: "):
            current = line[4:].strip()
            entries[current] = None
            in_members = False
        elif current is not None and line.startswith(" "):
            stripped = line.strip()
            if stripped == "members:":
                entries[current] = []
                in_members = True
            elif in_members and stripped.startswith("- "):
                members = entries[current]
                assert members is not None
                members.append(stripped[2:].strip())
            else:
                in_members = False
        else:
            current = None
    return entries


def documented_paths() -> set[str]:
    """The dotted paths the API page renders."""
    paths: set[str] = set()
    for identifier, members in api_page_entries().items():
        if identifier in PUBLIC_MODULES:
            names = members if members is not None else module(identifier).__all__
            paths.update(f"{identifier}.{name}" for name in names)
        else:
            paths.add(identifier)
    return paths


def test_the_api_page_renders_only_what_exists() -> None:
    for identifier in api_page_entries():
        module_name, _, name = identifier.rpartition(".")
        if identifier in PUBLIC_MODULES:
            continue
        assert module_name in PUBLIC_MODULES, identifier
        assert name in module(module_name).__all__, identifier


def test_every_public_name_is_on_the_api_page() -> None:
    shown = documented_paths()
    missing = [f"{m}.{n}" for m, n in public_names() if not public_paths(m, n) & shown]
    assert missing == []


def test_every_public_module_has_a_section() -> None:
    # The root's names are rendered one by one, in groups; every other
    # module as a whole, with its own docstring saying what it is for.
    entries = api_page_entries()
    assert [m for m in PUBLIC_MODULES[1:] if m not in entries] == []


# What a caller obtains ---------------------------------------------------------------


def public_targets(package: Any) -> set[str]:
    return {griffe_object(package, m, n).path for m, n in public_names()}


def annotations_read_by_callers(target: Any) -> Iterator[tuple[str, Any]]:
    """The return annotations of a public function, and of the public
    methods, properties and attributes of a public class."""
    if target.is_function:
        yield target.path, target.returns
    elif target.is_class:
        for name, member in target.members.items():
            if name.startswith("_") or member.is_alias:
                continue
            if member.is_function:
                yield member.path, member.returns
            elif member.is_attribute:
                yield member.path, member.annotation


def type_names(annotation: Any) -> Iterator[Any]:
    """The names of the types an annotation means (``Annotated`` metadata
    is not a type)."""
    import griffe

    if isinstance(annotation, griffe.ExprName):
        yield annotation
    elif isinstance(annotation, griffe.ExprSubscript) and (
        getattr(annotation.left, "name", None) == "Annotated"
    ):
        arguments = annotation.slice
        if isinstance(arguments, griffe.ExprTuple):
            arguments = arguments.elements[0]
        yield from type_names(arguments)
    elif isinstance(annotation, griffe.Expr):
        for part in annotation.iterate(flat=False):
            yield from type_names(part)


def private_names(annotation: Any, public: set[str], package: Any) -> Iterator[str]:
    for name in type_names(annotation):
        try:
            path = name.canonical_path
        except Exception:  # a name griffe cannot follow is not ours
            continue
        if not path.startswith(f"{ROOT}.") or path in public:
            continue
        found = package[path[len(ROOT) + 1 :]]
        if found.is_attribute and "TypeVar(" in str(found.value):
            continue  # a type parameter
        if found.is_attribute and str(found.value).startswith("Annotated["):
            yield from private_names(found.value, public, package)  # an alias
            continue
        yield path


def test_what_a_caller_obtains_has_a_public_type(griffe_package: Any) -> None:
    public = public_targets(griffe_package)
    leaks = {
        f"{where} -> {path}"
        for m, n in public_names()
        for where, annotation in annotations_read_by_callers(
            griffe_object(griffe_package, m, n)
        )
        if where not in OPAQUE_RETURNS
        for path in private_names(annotation, public, griffe_package)
    }
    assert leaks == set()
