"""The unit layer: no network. Every socket connection is refused, so a test
that would reach a broker or a registry fails instead of passing slowly."""

from __future__ import annotations

import socket
from typing import Any

import pytest


class NetworkUsedError(AssertionError):
    """A unit test tried to open a network connection."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every socket connection (the event loop's own socket pair,
    made without ``connect``, still works)."""

    def refuse(self: socket.socket, address: Any, *args: Any) -> Any:
        raise NetworkUsedError(f"unit tests use no network (connect to {address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
