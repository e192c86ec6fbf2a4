"""Calling code we do not own.

A call into another library (aiokafka, the registry client, OpenTelemetry)
or into the application (its callback, a `Transport` or `SchemaRegistry` of
its own) may raise anything, ``BaseException`` subclasses such as
``CancelledError`` and ``KeyboardInterrupt`` included, or return anything.
Each such call sits behind one guard that turns what it raises into a
failure of that call. The one exception the guards let through is the
cancellation of the task making the call (its owner's, or a timeout's):
that is ours, and must go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["ForeignError", "contained", "describe", "own_cancellation"]

T = TypeVar("T")


class ForeignError(Exception):
    """Code we do not own raised something that is not an `Exception`
    (``KeyboardInterrupt``, ``SystemExit``, a bare ``BaseException``, or a
    ``CancelledError`` of its own), carried on as an ordinary error."""


def own_cancellation(error: BaseException) -> bool:
    """Whether ``error`` is the cancellation of the running task, rather
    than a failure of the code that task was awaiting.

    A ``CancelledError`` raised while nobody is cancelling the task came
    from the callee (a library that cancelled a future of its own, say): it
    is that call's failure, and must not end the caller.
    """
    if not isinstance(error, asyncio.CancelledError):
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop
        return False
    return task is not None and task.cancelling() > 0


def describe(error: BaseException) -> str:
    """``"TypeName: message"``, for log lines and error messages."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def contained(call: Awaitable[T]) -> T:
    """Await ``call``, code we do not own, as the body of a task.

    A task whose coroutine raises ``KeyboardInterrupt`` or ``SystemExit``
    stops the whole event loop with it, and one that raises
    ``CancelledError`` looks cancelled; so a foreign coroutine is never a
    task's body by itself. What it raises that is not an `Exception` comes
    out as `ForeignError` (its cause), except the task's own cancellation.
    """
    try:
        return await call
    except Exception:
        raise
    except BaseException as exc:
        if own_cancellation(exc):
            raise
        raise ForeignError(describe(exc)) from exc
