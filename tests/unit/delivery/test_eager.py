"""`start_eagerly`: a coroutine's first step in the caller's task, the rest
as a task would run it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from otel_kafka_events._delivery._eager import start_eagerly


async def test_a_coroutine_that_never_waits_is_done_at_once() -> None:
    steps: list[str] = []

    async def quick() -> None:
        steps.append("ran")

    assert start_eagerly(quick()) is None
    assert steps == ["ran"]


async def test_what_it_raises_before_waiting_is_raised_to_the_caller() -> None:
    async def broken() -> None:
        raise KeyError("early")

    with pytest.raises(KeyError, match="early"):
        start_eagerly(broken())


async def test_the_first_step_runs_in_the_callers_task() -> None:
    seen: list[Any] = []

    async def note() -> None:
        seen.append(asyncio.current_task())

    assert start_eagerly(note()) is None
    assert seen == [asyncio.current_task()]


@pytest.mark.parametrize("fails", [False, True])
async def test_the_rest_reads_what_the_future_it_waited_for_holds(
    fails: bool,
) -> None:
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def waiting() -> None:
        steps.append("before")
        try:
            steps.append(await future)
        except LookupError as exc:
            steps.append(f"caught {exc}")

    rest = start_eagerly(waiting())
    assert rest is not None
    assert steps == ["before"]
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    assert not task.done()
    if fails:
        future.set_exception(LookupError("gone"))
    else:
        future.set_result("after")
    await task
    assert steps == ["before", "caught gone" if fails else "after"]


async def test_bare_yields_and_several_waits_go_on_to_the_end() -> None:
    loop = asyncio.get_running_loop()
    steps: list[int] = []

    async def long() -> None:
        for n in range(3):
            await asyncio.sleep(0)
            steps.append(n)
            done: asyncio.Future[None] = loop.create_future()
            loop.call_soon(done.set_result, None)
            await done
        raise ValueError("at the end")

    rest = start_eagerly(long())
    assert rest is not None
    with pytest.raises(ValueError, match="at the end"):
        await rest
    assert steps == [0, 1, 2]


@pytest.mark.parametrize("at_a_future", [True, False])
async def test_cancelling_the_rest_reaches_the_coroutine(at_a_future: bool) -> None:
    # Stopped on a future, the future is cancelled (as a task does); at a
    # bare yield, the cancellation is thrown in.
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cleaned: list[bool] = []

    async def waiting() -> None:
        try:
            if at_a_future:
                await future
            for _ in range(1000):
                await asyncio.sleep(0)
        finally:
            cleaned.append(True)

    rest = start_eagerly(waiting())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert future.cancelled() is at_a_future
    assert cleaned == [True]


async def test_a_coroutine_that_may_go_on_after_a_cancellation_does() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def stubborn() -> str:
        try:
            await future
        except asyncio.CancelledError:
            await asyncio.sleep(0)
        return "finished"

    rest = start_eagerly(stubborn())  # type: ignore[arg-type]
    assert rest is not None
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    task.cancel()
    await task  # the coroutine swallowed the cancellation, as it may
    assert task.done()
    assert not task.cancelled()


async def test_a_coroutine_yielding_something_else_than_a_future_is_refused() -> None:
    class Odd:
        def __await__(self) -> Any:
            yield "not a future"

    async def odd() -> None:
        await Odd()

    rest = start_eagerly(odd())
    assert rest is not None
    with pytest.raises(RuntimeError, match="not a future"):
        await rest
