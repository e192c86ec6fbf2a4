"""Helpers for tests of the environment configuration: a clean environment
(no ``METRICS_``, ``KAFKA_`` or ``SCHEMA_MANAGER_`` variable) and setters."""

from __future__ import annotations

import os

import pytest

__all__ = ["clean_environment", "kafka_env", "set_env"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every variable the configuration could read."""
    for name in list(os.environ):
        if name.upper().startswith(("METRICS_", "KAFKA_", "SCHEMA_MANAGER_")) or (
            name.upper() in ("RAISE_ON_ERROR", "BACKOFF_INTERVAL")
        ):
            monkeypatch.delenv(name)


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """Set environment variables."""
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def kafka_env(monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    """The minimal environment of a Kafka configuration."""
    values = {
        "METRICS_APPLICATION": "myapp",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "SCHEMA_MANAGER_REGISTRY_URL": "http://127.0.0.1:8081",
    }
    set_env(monkeypatch, **(values | extra))
