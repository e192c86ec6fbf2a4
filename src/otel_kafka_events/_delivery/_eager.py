"""Running a coroutine's first step at once, in the caller's task.

Handing a batch to the transport usually completes without waiting for
anything, yet a task made to run it starts only at the event loop's next
turn: a few dozen microseconds on the way of every awaited publish.
`start_eagerly` runs the coroutine up to its first wait right away; only a
coroutine that does wait goes on in a task of its own. Python 3.12's eager
tasks do the same; this also runs on 3.11.

A coroutine started this way runs its first step in whatever task calls
`start_eagerly`, so it must not use what is bound to the current task
(``asyncio.timeout``, ``asyncio.current_task``) across a wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["start_eagerly"]


def start_eagerly(
    coroutine: Coroutine[Any, Any, None],
) -> Coroutine[Any, Any, None] | None:
    """Run ``coroutine`` until it first waits.

    Returns
    -------
    coroutine or None
        None if it finished without waiting; else a coroutine that runs the
        rest when awaited (in a task of the caller's choosing).

    Raises
    ------
    BaseException
        Whatever ``coroutine`` raised before its first wait.
    """
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return None
    return _rest(coroutine, awaited)


async def _rest(coroutine: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Go on with ``coroutine``, stopped on ``awaited`` (a future, or None for
    a bare yield), as a task would: its futures are waited for, and a
    cancellation of this coroutine reaches ``coroutine``."""
    while True:
        if awaited is not None and not asyncio.isfuture(awaited):
            coroutine.close()
            raise RuntimeError(f"a coroutine yielded {awaited!r}, not a future")
        try:
            if awaited is None:
                await asyncio.sleep(0)
            else:
                # Waited for, not awaited: its result or error stays for the
                # coroutine to read when it goes on.
                await asyncio.wait((awaited,))
        except asyncio.CancelledError as cancel:
            # As a task does: the future it waits for is cancelled, and the
            # coroutine reads that when it goes on; only if there is none
            # to cancel is the cancellation thrown in.
            if awaited is None or not awaited.cancel():
                try:
                    awaited = coroutine.throw(cancel)
                except StopIteration:
                    return
                continue
        try:
            awaited = coroutine.send(None)
        except StopIteration:
            return
