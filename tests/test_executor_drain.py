"""PriorityExecutor.drain and wait_idle, in virtual time on asyncio and trio."""

from __future__ import annotations

import anyio
import pytest

import brace
from brace import PriorityExecutor


def make(concurrency: int = 2, max_queue: int = 10) -> PriorityExecutor:
    return PriorityExecutor(concurrency, max_queue, clock=anyio.current_time)


async def test_drain_finishes_in_flight_rejects_new_cancels_leftovers_and_reports() -> None:
    """Work finishes until the timeout, then the rest is cancelled; the report is exact."""
    executor = make(2)
    outcomes: dict[str, object] = {}
    start = anyio.current_time()

    async def job(name: str, seconds: float) -> None:
        try:
            await executor.run(anyio.sleep, seconds)
            outcomes[name] = ("done", anyio.current_time() - start)
        except brace.Rejected as exc:
            outcomes[name] = (type(exc).__name__, anyio.current_time() - start)

    async def latecomer(name: str, at: float) -> None:
        await anyio.sleep(at)
        await job(name, 1.0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(job, "A", 2.0)  # runs 0..2
        tg.start_soon(job, "B", 50.0)  # runs 0..50: cancelled at the timeout
        await anyio.sleep(0.1)
        tg.start_soon(job, "C", 1.0)  # queued, runs 2..3
        await anyio.sleep(0.1)
        tg.start_soon(job, "D", 50.0)  # queued, runs 3..: cancelled at the timeout
        await anyio.sleep(0.1)
        tg.start_soon(job, "E", 1.0)  # still queued at the timeout
        await anyio.sleep(0.2)
        tg.start_soon(latecomer, "F", 0.5)
        tg.start_soon(latecomer, "G", 5.0)
        report = await executor.drain(timeout=10.0)
    assert outcomes == {
        "A": ("done", pytest.approx(2.0)),
        "B": ("ShuttingDown", pytest.approx(10.5)),
        "C": ("done", pytest.approx(3.0)),
        "D": ("ShuttingDown", pytest.approx(10.5)),
        "E": ("ShuttingDown", pytest.approx(10.5)),
        "F": ("ShuttingDown", pytest.approx(1.0)),
        "G": ("ShuttingDown", pytest.approx(5.5)),
    }
    assert report == brace.DrainReport(
        finished=2,
        cancelled_running=2,
        cancelled_queued=1,
        rejected_while_draining=2,
        still_running=0,
        timed_out=True,
        duration=pytest.approx(10.0),  # type: ignore[arg-type]
    )
    assert report.cancelled == 3
    stats = executor.statistics()
    assert stats.running == stats.pending == 0
    assert stats.draining
    assert stats.rejected_draining == 2
    assert stats.cancelled_queued == 1


async def test_drain_that_finishes_in_time_cancels_nothing() -> None:
    """When everything finishes before the timeout, drain returns as soon as it is idle."""
    executor = make(1)
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(executor.run, anyio.sleep, 1.0)
        await anyio.sleep(0.5)
        report = await executor.drain(timeout=30.0)
    assert report.finished == 3
    assert report.cancelled == 0
    assert not report.timed_out
    assert report.duration == pytest.approx(2.5)


async def test_drain_of_an_idle_executor_returns_at_once_and_stays_closed() -> None:
    """An idle executor drains immediately; afterwards every call gets ShuttingDown."""
    executor = make()
    report = await executor.drain()
    assert report.duration == 0
    assert report.finished == 0
    assert not report.timed_out
    with pytest.raises(brace.ShuttingDown) as caught:
        async with executor.slot():
            pass
    assert caught.value.retry_after is None
    assert executor.draining


async def test_slot_holders_are_not_cancelled_and_are_reported() -> None:
    """A slot() block cannot be cancelled by drain: it is reported as still running."""
    executor = make(1)
    finished: list[float] = []

    async def holder() -> None:
        async with executor.slot():
            await anyio.sleep(20)
            finished.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await anyio.sleep(0.5)
        report = await executor.drain(timeout=5.0)
        assert report.still_running == 1
        assert report.timed_out
        assert report.cancelled == 0
    assert finished == [pytest.approx(20.0)]


async def test_wait_idle_waits_for_running_and_queued_work() -> None:
    """wait_idle returns once nothing runs and nothing waits, without closing the executor."""
    executor = make(1)
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(executor.run, anyio.sleep, 2.0)
        await anyio.sleep(0.5)
        await executor.wait_idle()
        assert anyio.current_time() == pytest.approx(6.0)
        assert executor.statistics().completed == 3
    await executor.wait_idle()  # already idle: returns at once
    assert not executor.draining
    await executor.run(anyio.sleep, 0)
    assert executor.statistics().completed == 4
