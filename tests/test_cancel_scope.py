"""The HTTP pipeline's per-request cancel scope at the loop's own cost
(``brace._cancel.request_scope``): a native `Scope` on asyncio 3.11+, a bare trio scope
on trio. Each behaves as anyio's `CancelScope` does for what the pipeline and the
executor's drain use: a deadline moved while open, ``cancel()`` (also before the
``with``), ``cancel_called`` / ``cancelled_caught``, an outer cancellation that is not its
own, and a shield opened inside that holds it off. On asyncio and trio, virtual time."""

from __future__ import annotations

import math
import sys
from typing import Any

import anyio
import pytest

from brace._cancel import Scope, move_after, request_scope


def native() -> bool:
    """The scope is brace's own: asyncio on 3.11+."""
    return isinstance(request_scope(), Scope)


async def test_the_kind_of_scope_fits_the_loop(anyio_backend_name: str) -> None:
    scope = request_scope()
    if anyio_backend_name == "trio":
        import trio

        assert type(scope) is trio.CancelScope
    elif sys.version_info >= (3, 11):
        assert type(scope) is Scope
    else:
        assert isinstance(scope, anyio.CancelScope)  # (its asyncio subclass)


async def test_its_deadline_cancels_the_body_and_the_with_catches_it() -> None:
    start = anyio.current_time()
    reached = False
    scope = request_scope()
    with scope:
        move_after(scope, 5.0)
        await anyio.sleep(100)
        reached = True
    assert not reached
    assert scope.cancel_called
    assert scope.cancelled_caught
    assert anyio.current_time() - start == pytest.approx(5.0)


async def test_a_deadline_moved_to_infinity_never_fires() -> None:
    scope = request_scope()
    with scope:
        move_after(scope, 5.0)
        scope.deadline = math.inf  # the response started: no time-to-start limit now
        await anyio.sleep(50)
    assert not scope.cancel_called
    assert not scope.cancelled_caught


async def test_a_deadline_moved_later_fires_then_and_not_before() -> None:
    start = anyio.current_time()
    scope = request_scope()
    with scope:
        move_after(scope, 5.0)
        await anyio.sleep(3)
        move_after(scope, 10.0)  # from now: due at 13
        await anyio.sleep(100)
    assert scope.cancelled_caught
    assert anyio.current_time() - start == pytest.approx(13.0)


async def test_cancel_before_the_with_is_caught_by_it() -> None:
    """The drain may be past its timeout when a request registers its scope."""
    scope = request_scope()
    scope.cancel()
    reached = False
    with scope:
        await anyio.sleep(1)
        reached = True
    assert not reached
    assert scope.cancel_called
    assert scope.cancelled_caught


async def test_cancel_from_another_task_ends_the_body() -> None:
    scope = request_scope()
    ended_at: list[float] = []

    async def drain_after(seconds: float) -> None:
        await anyio.sleep(seconds)
        scope.cancel()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(drain_after, 7.0)
        start = anyio.current_time()
        with scope:
            await anyio.sleep(100)
        ended_at.append(anyio.current_time() - start)
    assert scope.cancelled_caught
    assert ended_at == [pytest.approx(7.0)]


async def test_a_body_that_ends_before_a_checkpoint_is_not_caught() -> None:
    scope = request_scope()
    with scope:
        scope.cancel()  # no await after it: the body finishes
    assert scope.cancel_called
    assert not scope.cancelled_caught
    await anyio.sleep(1)  # and the task is not left cancelled


async def test_an_outer_cancellation_is_not_swallowed() -> None:
    """Its own deadline passed too, but the outer scope asked first: the outer one wins."""
    inner = request_scope()
    with anyio.CancelScope() as outer:
        outer.cancel()
        with inner:
            move_after(inner, 0.0)
            await anyio.sleep(1)
        pytest.fail("the outer cancellation was swallowed")  # pragma: no cover
    assert outer.cancelled_caught
    assert not inner.cancelled_caught


async def test_a_shield_opened_inside_holds_it_off() -> None:
    start = anyio.current_time()
    done_in_shield: list[float] = []
    scope = request_scope()
    with scope:
        move_after(scope, 1.0)
        with anyio.CancelScope(shield=True):
            await anyio.sleep(5)  # the deadline falls due in here
            done_in_shield.append(anyio.current_time() - start)
        await anyio.sleep(100)
    assert done_in_shield == [pytest.approx(5.0)]
    assert scope.cancelled_caught
    elapsed = anyio.current_time() - start
    assert 5.0 <= elapsed < 5.1  # cancelled once the shield is gone


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the native scope is 3.11+")
async def test_the_native_scope_leaves_the_task_uncancelled(anyio_backend_name: str) -> None:
    if anyio_backend_name != "asyncio":
        pytest.skip("asyncio's task counting")
    import asyncio

    task: Any = asyncio.current_task()  # (Task.cancelling: 3.11+, mypy checks for 3.10)
    assert task is not None
    before = task.cancelling()
    for _ in range(3):
        scope = request_scope()
        with scope:
            scope.cancel()
            await anyio.sleep(1)
        assert scope.cancelled_caught
    assert task.cancelling() == before
    await anyio.sleep(1)  # nothing pending against the task
