"""The public surface of the package: its public modules and their names.

Shared by the unit tests of the surface (tests/unit/test_public_api.py) and
the check of the built API reference (tests/integration/test_docs.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType

ROOT = "otel_kafka_events"
PUBLIC_MODULES = (
    ROOT,
    f"{ROOT}.arq",
    f"{ROOT}.config",
    f"{ROOT}.errors",
    f"{ROOT}.fastapi",
    f"{ROOT}.otel",
    f"{ROOT}.testing",
    f"{ROOT}.transport",
)
"""The root and the modules a caller imports by name; every other module
of the package starts with an underscore."""


def module(name: str) -> ModuleType:
    """The public module ``name``."""
    return importlib.import_module(name)


def public_names() -> Iterator[tuple[str, str]]:
    """Every (module, name) pair of the public surface."""
    for module_name in PUBLIC_MODULES:
        for name in module(module_name).__all__:
            yield module_name, name


def public_paths(module_name: str, name: str) -> set[str]:
    """The dotted paths under which a public object can be imported by its
    name: its own, and the same name in the other public modules."""
    value = getattr(module(module_name), name)
    return {
        f"{other}.{name}"
        for other in PUBLIC_MODULES
        if name in module(other).__all__ and getattr(module(other), name) is value
    }
