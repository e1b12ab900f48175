"""Issue 19, item 5: a priority must fit the queue's key type, checked where it comes in.

``executor.slot(10**400)`` used to work while a slot was free, raise ``OverflowError``
only when it had to queue (with aging, the key is a float), and leave ``queued=1``
counted for a waiter that never existed. Now every way in refuses it at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import brace
from brace._core.admission import AdmissionCore
from brace._priority import MAX_PRIORITY

HUGE = [10**400, MAX_PRIORITY + 1, -MAX_PRIORITY - 1, -(10**400)]


async def noop() -> None:
    """Nothing: the work run in a slot."""


def entries(executor: brace.PriorityExecutor, priority: Any) -> list[Callable[[], Awaitable[Any]]]:
    """Every way a priority enters an executor."""

    async def slot() -> None:
        async with executor.slot(priority):
            pass

    async def run() -> None:
        await executor.run(noop, priority=priority)

    async def decorated() -> None:
        await executor(priority=priority)(noop)()

    return [slot, run, decorated]


@pytest.mark.parametrize("aging", [None, 1.0])
@pytest.mark.parametrize("busy", [False, True], ids=["fast path", "must queue"])
@pytest.mark.parametrize("priority", HUGE, ids=["10**400", "2**53+1", "-2**53-1", "-10**400"])
async def test_item5_a_huge_priority_is_refused_at_once(
    aging: float | None, busy: bool, priority: int
) -> None:
    """Out-of-range priorities are a ValueError on every way in; no count moves."""
    executor = brace.PriorityExecutor(concurrency=1, max_queue=10, aging=aging)
    async with anyio.create_task_group() as tg:
        if busy:
            hold = anyio.Event()

            async def holder() -> None:
                async with executor.slot():
                    await hold.wait()

            tg.start_soon(holder)
            await anyio.wait_all_tasks_blocked()
        before = executor.statistics()
        for enter in entries(executor, priority):
            with pytest.raises(ValueError, match="priority must be an int between"):
                await enter()
        after = executor.statistics()
        assert after.queued == before.queued == 0
        assert after.pending == before.pending == 0
        assert after.admitted == before.admitted
        assert after.running == before.running
        if busy:
            hold.set()
    # The executor still works, at the edges of the range too, waiting or not.
    for priority in (MAX_PRIORITY, -MAX_PRIORITY):
        await executor.run(noop, priority=priority)
    assert executor.statistics().queued == 0


@pytest.mark.parametrize("priority", [[1], {}, "1", 1.0, True, None.__class__])
async def test_item5_a_priority_of_the_wrong_type_is_a_type_error(priority: object) -> None:
    """Unhashable, text, float or bool priorities are a TypeError naming the priority."""
    executor = brace.PriorityExecutor(concurrency=1)
    for enter in entries(executor, priority):
        with pytest.raises(TypeError, match="priority must be an int"):
            await enter()


async def test_item5_the_range_edges_queue_in_order() -> None:
    """With aging, waiters at -2**53, 0 and 2**53 are served in priority order."""
    executor = brace.PriorityExecutor(concurrency=1, aging=1.0)
    served: list[int] = []
    async with anyio.create_task_group() as tg:
        hold = anyio.Event()

        async def holder() -> None:
            async with executor.slot():
                await hold.wait()

        async def waiter(priority: int) -> None:
            async with executor.slot(priority):
                served.append(priority)

        tg.start_soon(holder)
        await anyio.wait_all_tasks_blocked()
        for priority in (MAX_PRIORITY, 0, -MAX_PRIORITY):
            tg.start_soon(waiter, priority)
            await anyio.wait_all_tasks_blocked()
        hold.set()
    assert served == [-MAX_PRIORITY, 0, MAX_PRIORITY]


def test_item5_configured_priorities_are_checked_at_construction() -> None:
    """default_priority and shed_priority out of range are a ValueError at construction."""
    with pytest.raises(ValueError, match="priority must be an int between"):
        brace.PriorityExecutor(default_priority=10**400)
    with pytest.raises(ValueError, match="shed_priority must be an int between"):
        brace.MemoryGuard(high=2**30, shed_priority=-(10**400))
    with pytest.raises(ValueError, match="default_priority must be an int between"):
        brace.MemoryGuard(high=2**30, default_priority=2**60)


def test_item5_a_failing_arrival_counts_nothing() -> None:
    """If the queue key cannot be made, the core has counted no ticket and queued nothing."""
    core = AdmissionCore(1, 10, aging=1.0)
    assert core.try_acquire(0.0)
    before = (core.tickets, core.pending, core.running)
    with pytest.raises(OverflowError):
        core.arrive(10**400, 1.0)  # the shells never pass this: they check first
    assert (core.tickets, core.pending, core.running) == before
    ticket, _ = core.arrive(5, 1.0)
    assert ticket is not None
    assert core.pending == 1
