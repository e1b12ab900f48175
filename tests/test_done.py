"""brace._done.DONE, the finished awaitable of the fast paths: its value is None, it never
yields (so never checkpoints), it can be awaited any number of times and from any task,
and on each interpreter it is the cheaper of the two forms (see the module's docstring)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable

import anyio
import pytest

import brace
from brace._done import DONE, _Done


async def value_of(awaitable: Awaitable[object]) -> object:
    """What awaiting ``awaitable`` gives (typed ``object``: mypy knows it is None)."""
    return await awaitable


async def test_done_is_none_every_time() -> None:
    for _ in range(3):
        value = await value_of(DONE)
        assert value is None


async def test_done_never_yields() -> None:
    # In a cancelled scope a checkpoint raises at once: awaiting DONE is no checkpoint,
    # so the line after the awaits is reached (a yield would leave the block there).
    awaited = 0
    with anyio.CancelScope() as scope:
        scope.cancel()
        for _ in range(3):
            await DONE
            awaited += 1
        await anyio.lowlevel.checkpoint()  # the scope is really cancelled
        pytest.fail("the checkpoint was not cancelled")  # pragma: no cover
    assert awaited == 3
    assert scope.cancelled_caught


async def test_done_from_many_tasks() -> None:
    seen: list[object] = []

    async def await_it() -> None:
        value = await value_of(DONE)
        seen.append(value)

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(await_it)
    assert seen == [None] * 5


def test_done_form_per_interpreter() -> None:
    if sys.version_info >= (3, 12):
        assert isinstance(DONE, _Done)
        assert repr(DONE) == "brace._done.DONE"
    else:
        assert isinstance(DONE, asyncio.Future)
        assert DONE.done()


def test_the_iterator_stays_exhausted() -> None:
    iterator = _Done.__await__()
    assert iterator is _Done.__await__()  # the one shared iterator
    assert list(iterator) == []


async def test_breaker_fast_path_awaits_done() -> None:
    """The closed breaker's ``__aenter__`` hands out DONE (no frame of its own)."""
    breaker = brace.CircuitBreaker(failure_threshold=2, recovery_time=5.0)
    assert breaker.__aenter__() is DONE
    value = await value_of(breaker.__aexit__(None, None, None))
    assert value is None
    async with breaker:
        pass
    assert breaker.statistics().successes == 2
