"""run() without a timeout enters no cancel scope on asyncio (drain cancels the task
itself): the drain outcome, outer cancellations, nesting and permits, on asyncio and trio."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

import brace
from brace import PriorityExecutor


def make(concurrency: int = 2) -> PriorityExecutor:
    return PriorityExecutor(concurrency, 100, clock=anyio.current_time)


async def test_drain_cancels_work_without_timeout_and_frees_its_slot() -> None:
    executor = make()
    outcome: list[object] = []

    async def job() -> None:
        try:
            await executor.run(anyio.sleep, 100, timeout=None)
        except brace.ShuttingDown as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(job)
        await anyio.sleep(1)
        report = await executor.drain(5)
    assert len(outcome) == 1
    assert report.cancelled_running == 1
    assert report.timed_out
    stats = executor.statistics()
    assert stats.running == 0
    assert stats.cancelled_running == 1
    assert stats.refusals["shutting_down"] == 1


async def test_work_inside_its_own_cancel_scopes_is_drained() -> None:
    """anyio scopes inside the work (cancelled or not) do not swallow drain's cancellation."""
    executor = make()
    outcome: list[str] = []

    async def work() -> None:
        with anyio.move_on_after(1000):
            with anyio.CancelScope():
                await anyio.sleep(100)
        outcome.append("moved on")  # must not happen: drain's cancellation is not theirs

    async def job() -> None:
        try:
            await executor.run(work, timeout=None)
        except brace.ShuttingDown:
            outcome.append("shutting down")

    async with anyio.create_task_group() as tg:
        tg.start_soon(job)
        await anyio.sleep(1)
        await executor.drain(5)
    assert outcome == ["shutting down"]


async def test_outer_cancellation_of_running_work_passes_through() -> None:
    executor = make()
    reached: list[str] = []

    async def job() -> None:
        await executor.run(anyio.sleep, 100, timeout=None)
        reached.append("returned")

    with anyio.move_on_after(3) as scope:
        await job()
    assert scope.cancelled_caught
    assert reached == []
    stats = executor.statistics()
    assert stats.running == 0
    assert stats.cancelled_running == 1
    assert stats.refusals.get("shutting_down", 0) == 0


async def test_outer_deadline_together_with_drain_is_the_outer_cancellation() -> None:
    """An enclosing scope cancelling at the drain's deadline still gets its Cancelled."""
    executor = make()
    seen: list[str] = []

    async def job() -> None:
        with anyio.move_on_after(5) as scope:
            try:
                await executor.run(anyio.sleep, 100, timeout=None)
            except brace.ShuttingDown:
                seen.append("shutting down")
        seen.append("caught" if scope.cancelled_caught else "not caught")

    async with anyio.create_task_group() as tg:
        tg.start_soon(job)
        await anyio.sleep(0.5)  # started
        await executor.drain(4.5)
    assert seen in (["caught"], ["shutting down", "not caught"])
    assert executor.statistics().running == 0


async def test_nested_run_in_one_task_is_drained_once() -> None:
    executor = make(3)
    outcome: list[str] = []

    async def inner() -> None:
        await executor.run(anyio.sleep, 100, timeout=None)

    async def job() -> None:
        try:
            await executor.run(inner, timeout=None)
        except brace.ShuttingDown:
            outcome.append("shutting down")

    async with anyio.create_task_group() as tg:
        tg.start_soon(job)
        await anyio.sleep(1)
        report = await executor.drain(5)
    assert outcome == ["shutting down"]
    assert report.cancelled_running >= 1
    assert executor.statistics().running == 0


async def test_work_that_swallows_the_drain_cancellation_finishes() -> None:
    executor = make()
    results: list[object] = []

    async def stubborn() -> str:
        try:
            await anyio.sleep(100)
        except anyio.get_cancelled_exc_class():
            pass
        return "finished"

    async def job() -> None:
        results.append(await executor.run(stubborn, timeout=None))
        await anyio.sleep(1)  # the task itself is not left cancelled
        results.append("slept")

    async with anyio.create_task_group() as tg:
        tg.start_soon(job)
        await anyio.sleep(1)
        await executor.drain(5)
    assert results == ["finished", "slept"]
    assert executor.statistics().running == 0


@pytest.mark.parametrize("timeout", [None, 2.0])
async def test_many_cancelled_jobs_leak_no_permit(timeout: float | None) -> None:
    executor = make(2)

    async def job(i: int) -> None:
        with anyio.move_on_after(i % 5 * 0.7):
            try:
                await executor.run(anyio.sleep, i % 3 * 1.5, timeout=timeout)
            except brace.TimeoutExceeded:
                assert timeout is not None

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(job, i)
    stats = executor.statistics()
    assert stats.running == 0
    assert stats.pending == 0
    await executor.run(anyio.lowlevel.checkpoint)
    assert executor.statistics().running == 0


async def test_drain_waits_for_a_shield_in_the_work_then_cancels() -> None:
    executor = make()
    seen: list[object] = []
    start = anyio.current_time()

    async def work() -> None:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(10)  # a cleanup that must not be cut short
            seen.append(anyio.current_time() - start)
        await anyio.sleep(100)

    async def job() -> None:
        try:
            await executor.run(work, timeout=None)
        except brace.ShuttingDown:
            seen.append("shutting down")

    async with anyio.create_task_group() as tg:
        tg.start_soon(job)
        await anyio.sleep(0.5)  # started
        report = await executor.drain(2)
    assert seen[0] == pytest.approx(10, abs=0.05)
    assert seen[1:] == ["shutting down"]
    assert report.cancelled_running == 1


async def test_drain_and_timeout_of_one_job() -> None:
    """Work with a timeout is drained at the drain's deadline, timed out at its own."""
    executor = make(3)
    outcome: dict[str, str] = {}

    async def job(name: str, timeout: float) -> None:
        try:
            await executor.run(anyio.sleep, 100, timeout=timeout)
        except brace.ShuttingDown:
            outcome[name] = "shutting down"
        except brace.TimeoutExceeded:
            outcome[name] = "timed out"

    async with anyio.create_task_group() as tg:
        tg.start_soon(job, "short", 1.0)
        tg.start_soon(job, "long", 50.0)
        tg.start_soon(job, "same", 3.0)  # its timeout falls due with the drain's
        await anyio.sleep(0.5)  # all three started
        await executor.drain(2.5)
    assert outcome["short"] == "timed out"
    assert outcome["long"] == "shutting down"
    assert outcome["same"] in ("timed out", "shutting down")
    stats = executor.statistics()
    assert stats.running == 0
    assert stats.timed_out + stats.cancelled_running == 3


async def test_timed_out_run_leaves_the_task_uncancelled() -> None:
    executor = make()
    with pytest.raises(brace.TimeoutExceeded):
        await executor.run(anyio.sleep, 10, timeout=1)
    with anyio.move_on_after(1) as scope:
        await anyio.sleep(0.5)
    assert not scope.cancelled_caught
    assert executor.statistics().timed_out == 1
