"""Fixtures for the peers we did not write: Apicurio Registry and the Collector.

The registry tests run against `LocalSchemaRegistry` and Apicurio Registry
(``registry_peer``), the OTLP tests against `OtlpReceiver` and the
OpenTelemetry Collector. A peer whose prerequisites are missing (Java 21+ and
Maven, or a collector built with Go) skips its tests with what to install;
under ``CI=true`` it fails them instead, because CI must be judged by both.

``OTEL_KAFKA_EVENTS_TEST_REGISTRIES`` (default ``"local apicurio"``) picks the
registries; ``scripts/test`` runs Apicurio in the first broker leg only,
since what a registry answers does not depend on the broker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import pytest

from otel_kafka_events_devstack import LocalSchemaRegistry
from otel_kafka_events_devstack._apicurio import ApicurioRegistry
from otel_kafka_events_devstack._otelcol import (
    BUILD_HINT,
    OtelCollector,
    find_collector,
)

REGISTRIES_ENV_VAR = "OTEL_KAFKA_EVENTS_TEST_REGISTRIES"
REGISTRY_KINDS = ("local", "apicurio")


def missing_peer(reason: str) -> NoReturn:
    """Skip the test for lack of ``reason``; fail it under ``CI=true``."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI requires this peer, but it is unavailable: {reason}")
    pytest.skip(reason)


def registry_kinds() -> list[str]:
    """The registries to run against, from `REGISTRIES_ENV_VAR`."""
    raw = os.environ.get(REGISTRIES_ENV_VAR, "").split()
    kinds = [kind for kind in raw if kind in REGISTRY_KINDS]
    unknown = sorted(set(raw) - set(REGISTRY_KINDS))
    if unknown:
        raise ValueError(f"{REGISTRIES_ENV_VAR}: unknown registries {unknown}")
    return kinds or list(REGISTRY_KINDS)


@dataclass(frozen=True)
class RegistryPeer:
    """A running schema registry as the library's user would point at it."""

    kind: str
    url: str

    def subject(self, label: str) -> str:
        """A subject no other test (nor an earlier run) uses."""
        return f"{label}-{uuid.uuid4().hex[:10]}-value"


@pytest.fixture(scope="session")
def local_registry() -> Iterator[LocalSchemaRegistry]:
    """One `LocalSchemaRegistry` for the session, apart from the stack's."""
    with LocalSchemaRegistry() as registry:
        yield registry


_apicurio_failure: list[str] = []


@pytest.fixture(scope="session")
def apicurio_registry() -> Iterator[ApicurioRegistry]:
    """One Apicurio Registry for the session (it takes seconds to start)."""
    if _apicurio_failure:
        missing_peer(_apicurio_failure[0])
    registry = ApicurioRegistry()
    try:
        registry.start()
    except RuntimeError as error:
        # Remembered: later tests must not wait for another failed start.
        _apicurio_failure.append(f"Apicurio Registry: {error}")
        missing_peer(_apicurio_failure[0])
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(params=registry_kinds())
def registry_peer(request: pytest.FixtureRequest) -> RegistryPeer:
    """Each registry in turn: ``local`` (ours) and ``apicurio`` (theirs)."""
    kind: str = request.param
    if kind == "apicurio":
        apicurio: ApicurioRegistry = request.getfixturevalue("apicurio_registry")
        return RegistryPeer(kind, apicurio.url)
    local: LocalSchemaRegistry = request.getfixturevalue("local_registry")
    return RegistryPeer(kind, local.url)


def require_collector() -> None:
    """Skip (fail under CI) unless a collector binary is found."""
    if find_collector() is None:
        missing_peer(f"no OpenTelemetry Collector: {BUILD_HINT}")


@pytest.fixture
def otel_collector() -> Iterator[OtelCollector]:
    """A collector of its own (configuration, ports, output) for one test."""
    require_collector()
    with OtelCollector() as collector:
        yield collector
