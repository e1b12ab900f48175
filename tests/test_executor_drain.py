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


@pytest.mark.parametrize("adaptive", [False, True])
async def test_slot_holders_are_cancelled_at_the_drain_deadline(adaptive: bool) -> None:
    """A 50 s slot() block under drain(timeout=30) ends at 30 s with ShuttingDown; the books
    balance (one cancelled by the drain, none running) and a short holder completes."""
    limit = brace.AdaptiveLimit.aimd(initial=2, min_limit=2, max_limit=4) if adaptive else None
    executor = PriorityExecutor(2, 10, limit=limit, clock=anyio.current_time)
    outcomes: dict[str, tuple[str, object]] = {}
    cleaned_up: list[str] = []

    async def holder(name: str, seconds: float) -> None:
        try:
            async with executor.slot():
                try:
                    await anyio.sleep(seconds)
                finally:
                    cleaned_up.append(name)
            outcomes[name] = ("done", anyio.current_time())
        except brace.ShuttingDown:
            outcomes[name] = ("ShuttingDown", anyio.current_time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder, "long", 50.0)
        tg.start_soon(holder, "short", 10.0)
        await anyio.sleep(0.0)
        await anyio.sleep(0.0)
        start = anyio.current_time()
        report = await executor.drain(timeout=30.0)
    assert outcomes == {
        "long": ("ShuttingDown", pytest.approx(start + 30.0)),
        "short": ("done", pytest.approx(start + 10.0)),
    }
    assert sorted(cleaned_up) == ["long", "short"]
    assert (report.finished, report.cancelled_running, report.still_running) == (1, 1, 0)
    assert report.timed_out
    assert report.duration == pytest.approx(30.0)
    stats = executor.statistics()
    assert (stats.running, stats.pending, stats.cancelled_running) == (0, 0, 1)
    assert stats.completed == 1
    assert executor._holders == {}


async def test_nested_slot_holders_and_outside_cancellation_still_balance() -> None:
    """A task holding two slots is cancelled once at the deadline and both are released; a
    holder cancelled by its own caller before the drain counts as cancelled, not drained."""
    executor = make(3)
    outcome: list[str] = []

    async def nested() -> None:
        try:
            async with executor.slot(), executor.slot():
                await anyio.sleep(100.0)
        except brace.ShuttingDown:
            outcome.append("nested drained")

    async def abandoned() -> None:
        with anyio.move_on_after(1.0):
            async with executor.slot():
                await anyio.sleep(100.0)
        outcome.append("abandoned")

    async with anyio.create_task_group() as tg:
        tg.start_soon(nested)
        tg.start_soon(abandoned)
        await anyio.sleep(0.1)
        report = await executor.drain(timeout=5.0)
    assert sorted(outcome) == ["abandoned", "nested drained"]
    assert report.timed_out
    stats = executor.statistics()
    assert (stats.running, stats.cancelled_running) == (0, 3)  # two drained, one abandoned
    assert executor._holders == {}


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
