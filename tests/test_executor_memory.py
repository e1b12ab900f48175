"""PriorityExecutor with a MemoryGuard: LOW work waits at HIGH, all work is refused at CRITICAL."""

from __future__ import annotations

import random

import anyio
import pytest

import brace
from brace import MemoryGuard, MemoryPressure, Priority, PriorityExecutor

MB = 2**20


class Memory:
    """A probe the test sets by hand."""

    def __init__(self) -> None:
        self.usage = 10 * MB

    def __call__(self) -> int:
        return self.usage


def setup(**options: object) -> tuple[Memory, MemoryGuard, PriorityExecutor]:
    memory = Memory()
    guard = MemoryGuard(
        100 * MB,
        critical=200 * MB,
        low=80 * MB,
        probe=memory,
        interval=1.0,
        clock=anyio.current_time,
        **options,  # type: ignore[arg-type]
    )
    executor = PriorityExecutor(concurrency=2, max_queue=10, guard=guard, clock=anyio.current_time)
    return memory, guard, executor


async def test_normal_memory_admits_everything() -> None:
    """At NORMAL every priority runs at once."""
    _, _, executor = setup()
    for priority in (Priority.HIGH, Priority.MEDIUM, Priority.LOW):
        async with executor.slot(priority=priority):
            pass
    assert executor.statistics().completed == 3


async def test_high_memory_holds_low_work_until_recovery() -> None:
    """At HIGH, LOW work waits without a slot while HIGH work runs; LOW runs once memory is low."""
    memory, guard, executor = setup()
    memory.usage = 150 * MB
    await anyio.sleep(1.0)
    guard.sample()
    assert guard.level is brace.MemoryLevel.HIGH
    order: list[str] = []

    async def work(name: str, priority: int) -> None:
        async with executor.slot(priority=priority):
            order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(work, "low", Priority.LOW)
        await anyio.sleep(5)
        assert order == []  # held back while memory stays high
        assert executor.statistics().running == 0
        await work("high", Priority.HIGH)
        await work("medium", Priority.MEDIUM)
        assert order == ["high", "medium"]
        memory.usage = 50 * MB  # below low: back to NORMAL at the next sample
        await anyio.sleep(2)
    assert order == ["high", "medium", "low"]


async def test_critical_memory_rejects_new_work() -> None:
    """At CRITICAL new work of any priority gets MemoryPressure with a retry_after."""
    memory, guard, executor = setup()
    memory.usage = 250 * MB
    guard.sample()
    for priority in (Priority.HIGH, Priority.LOW):
        with pytest.raises(MemoryPressure) as refusal:
            await executor.run(anyio.sleep, 0, priority=priority)
        assert refusal.value.retry_after is not None
    assert executor.statistics().running == 0


async def test_held_work_counts_against_max_queue() -> None:
    """Work held at the door by memory pressure is bounded by max_queue: then QueueFull."""
    memory, guard, executor = setup()
    memory.usage = 150 * MB
    guard.sample()

    async def low() -> None:
        await executor.run(anyio.sleep, 0, priority=Priority.LOW)

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(low)
        await anyio.sleep(0.5)
        with pytest.raises(brace.QueueFull):
            await executor.run(anyio.sleep, 0, priority=Priority.LOW)
        tg.cancel_scope.cancel()
    assert executor.statistics().running == 0


async def test_cancelled_held_waiters_leak_nothing() -> None:
    """LOW waiters held by memory pressure and cancelled at random moments leave no slot taken."""
    memory, guard, executor = setup()
    memory.usage = 150 * MB
    guard.sample()
    rng = random.Random(7)
    ran = 0

    async def low() -> None:
        nonlocal ran
        with anyio.move_on_after(rng.uniform(0, 3)):
            async with executor.slot(priority=Priority.LOW):
                ran += 1
                await anyio.sleep(0.1)

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(low)
        await anyio.sleep(1.5)
        memory.usage = 50 * MB
    stats = executor.statistics()
    assert stats.running == 0
    assert guard.statistics().waiting == 0
    assert stats.completed == ran


async def test_draining_executor_refuses_before_asking_the_guard() -> None:
    """A draining executor with a guard still answers ShuttingDown."""
    _, _, executor = setup()
    await executor.drain(timeout=1.0)
    with pytest.raises(brace.ShuttingDown):
        async with executor.slot(priority=Priority.LOW):
            pass


def test_guard_must_be_a_memory_guard() -> None:
    """A guard of the wrong type is a TypeError naming the parameter."""
    with pytest.raises(TypeError, match="guard"):
        PriorityExecutor(guard=object())  # type: ignore[arg-type]


async def test_held_work_is_refused_at_the_executors_queue_timeout_and_counted() -> None:
    """Held work counts in ``statistics().held`` and is refused with MemoryPressure (a
    Rejected with retry_after) once held for the executor's queue_timeout."""
    memory = Memory()
    guard = MemoryGuard(100 * MB, probe=memory, interval=1.0, clock=anyio.current_time)
    executor = PriorityExecutor(
        concurrency=2, max_queue=10, queue_timeout=5.0, guard=guard, clock=anyio.current_time
    )
    memory.usage = 150 * MB
    guard.sample()
    refused: list[tuple[object, object]] = []
    start = anyio.current_time()

    async def low() -> None:
        try:
            async with executor.slot(priority=Priority.LOW):
                pass
        except brace.Rejected as error:  # MemoryPressure is one
            refused.append((anyio.current_time() - start, error.retry_after))
            assert type(error) is MemoryPressure  # noqa: PT017

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(low)
        await anyio.sleep(1.0)
        assert executor.statistics().held == 3
    assert refused == [(pytest.approx(5.0), 1.0)] * 3
    stats = executor.statistics()
    assert (stats.held, stats.running, stats.pending) == (0, 0, 0)


async def test_the_guards_own_waiting_forms_are_bounded_by_the_executor_given_it() -> None:
    """``guard.wait_admitted`` (what the HTTP middleware calls), once the guard is given to an
    executor, refuses with QueueFull when held work and the queue fill ``max_queue``, and
    with MemoryPressure at its ``queue_timeout``: held requests are never unbounded."""
    memory = Memory()
    guard = MemoryGuard(100 * MB, probe=memory, interval=1.0, clock=anyio.current_time)
    executor = PriorityExecutor(
        concurrency=1, max_queue=4, queue_timeout=30.0, guard=guard, clock=anyio.current_time
    )
    memory.usage = 150 * MB
    guard.sample()
    outcomes: list[str] = []

    async def request() -> None:
        try:
            await guard.wait_admitted(Priority.LOW)
            outcomes.append("admitted")
        except brace.QueueFull as error:
            outcomes.append("queue full" if error.retry_after == 1.0 else "no retry_after")
        except MemoryPressure:
            outcomes.append("held too long")

    async def queued() -> None:
        try:
            async with executor.slot(priority=Priority.HIGH):
                await anyio.sleep(100.0)
        except brace.QueueTimeout:
            outcomes.append("queue timed out")

    async with anyio.create_task_group() as tg:
        tg.start_soon(queued)  # runs
        tg.start_soon(queued)  # waits in the queue: pending 1
        await anyio.sleep(0.1)
        for _ in range(5):
            tg.start_soon(request)
        await anyio.sleep(1.0)
        assert outcomes == ["queue full"] * 2  # 3 held + 1 pending = max_queue 4
        assert executor.statistics().held == 3
        await anyio.sleep(30.0)
        assert sorted(outcomes) == sorted(
            ["queue full"] * 2 + ["held too long"] * 3 + ["queue timed out"]
        )
        tg.cancel_scope.cancel()
    assert guard.statistics().waiting == 0
