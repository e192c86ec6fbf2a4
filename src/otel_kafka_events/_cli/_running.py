"""Running a command's coroutine from Click's synchronous callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` in a new event loop and return its result.

    Ctrl-C cancels the coroutine, so its ``finally`` blocks close clients
    and stop servers, then `KeyboardInterrupt` reaches the command group,
    which exits quietly.
    """
    return asyncio.run(coroutine)
