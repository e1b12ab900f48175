"""Timeout at the loop's own cost (a native deadline on asyncio, a bare trio scope on
trio) keeps anyio's semantics: shields, enclosing scopes, task groups, on both backends."""

from __future__ import annotations

import asyncio
import math

import anyio
import pytest

import brace
from brace import Timeout
from brace._cancel import NATIVE, Deadline


async def test_a_shield_inside_holds_the_timeout_off_until_it_closes() -> None:
    timeout = Timeout(1)
    start = anyio.current_time()
    done: list[float] = []

    async def body() -> None:
        async with timeout:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(3)  # not interrupted
                done.append(anyio.current_time() - start)
            await anyio.sleep(10)  # cancelled here, at once

    with pytest.raises(brace.TimeoutExceeded):
        await body()
    assert done == [pytest.approx(3, abs=0.01)]
    assert anyio.current_time() - start == pytest.approx(3, abs=0.01)


async def test_a_shielded_call_holds_the_timeout_off() -> None:
    async def shielded_work() -> str:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(2)
        return "done"

    start = anyio.current_time()
    # the shield holds the cancellation off, and nothing checks after it: no timeout
    assert await Timeout(1).call(shielded_work) == "done"
    assert anyio.current_time() - start == pytest.approx(2, abs=0.01)
    await anyio.sleep(1)  # the task is not left cancelled


async def test_a_timeout_inside_a_shield_still_fires() -> None:
    start = anyio.current_time()
    with anyio.CancelScope(shield=True):
        with pytest.raises(brace.TimeoutExceeded):
            await Timeout(1).call(anyio.sleep, 10)
    assert anyio.current_time() - start == pytest.approx(1, abs=0.01)


async def test_an_enclosing_scope_cancels_through_an_unexpired_timeout() -> None:
    with anyio.move_on_after(1) as outer:
        async with Timeout(5):
            await anyio.sleep(10)
    assert outer.cancelled_caught


async def test_an_inner_anyio_deadline_is_not_a_timeout() -> None:
    async with Timeout(5):
        with anyio.move_on_after(1) as inner:
            await anyio.sleep(10)
        assert inner.cancelled_caught
        await anyio.sleep(1)  # still inside, still not timed out


async def test_timeout_in_task_group_children_and_around_a_task_group() -> None:
    timeout = Timeout(2)
    results: list[str] = []

    async def child(seconds: float) -> None:
        try:
            await timeout.call(anyio.sleep, seconds)
            results.append(f"done {seconds}")
        except brace.TimeoutExceeded:
            results.append(f"timeout {seconds}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(child, 1)
        tg.start_soon(child, 3)
    assert sorted(results) == ["done 1", "timeout 3"]

    async def group() -> None:
        async with timeout, anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 10)
            tg.start_soon(anyio.sleep, 20)

    start = anyio.current_time()
    with pytest.raises(brace.TimeoutExceeded):
        await group()
    assert anyio.current_time() - start == pytest.approx(2, abs=0.01)
    assert timeout.statistics().timed_out == 2


async def test_a_swallowed_timeout_leaves_the_task_uncancelled() -> None:
    async def swallow() -> str:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            return "swallowed"
        return "slept"

    assert await Timeout(1).call(swallow) == "swallowed"
    with anyio.move_on_after(1) as scope:
        await anyio.sleep(0.5)  # would raise if a cancellation were left pending
    assert not scope.cancelled_caught


async def test_native_deadline_moves_and_is_inert_once_closed(anyio_backend_name: str) -> None:
    """The asyncio Deadline the ASGI pipeline moves: later, to none, and never after close."""
    if anyio_backend_name != "asyncio" or not NATIVE:
        pytest.skip("the native deadline is asyncio 3.11+ only")
    loop = asyncio.get_running_loop()
    deadline = Deadline(loop, 1)
    deadline.deadline = anyio.current_time() + 3  # moved later: 1 s passes unharmed
    await anyio.sleep(2)
    deadline.deadline = math.inf  # no deadline at all
    await anyio.sleep(5)
    assert not deadline.close(cancelled=False)
    deadline.deadline = anyio.current_time() + 1  # closed: arms nothing
    await anyio.sleep(2)

    deadline = Deadline(loop, 1)
    with pytest.raises(asyncio.CancelledError):
        await anyio.sleep(5)
    assert deadline.close(cancelled=True)
    await anyio.sleep(1)  # counted back out: the task is not left cancelled
