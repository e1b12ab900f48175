"""PriorityExecutor on asyncio and trio, in virtual time: order, bounds, timeouts, stats."""

from __future__ import annotations

import functools
import random

import anyio
import anyio.lowlevel
import pytest

import brace
from brace import Priority, PriorityExecutor
from brace._core.admission import AdmissionCore
from brace.testing import FakeClock


def make(concurrency: int = 1, max_queue: int = 100, **kwargs: object) -> PriorityExecutor:
    return PriorityExecutor(concurrency, max_queue, clock=anyio.current_time, **kwargs)  # type: ignore[arg-type]


async def hold(executor: PriorityExecutor, seconds: float) -> None:
    async with executor.slot():
        await anyio.sleep(seconds)


async def test_waiters_are_served_by_priority_then_arrival() -> None:
    """With the slot busy, queued work runs by priority and first-come-first-served within one."""
    executor = make(1, aging=None)
    order: list[str] = []

    async def job(name: str, priority: int) -> None:
        async with executor.slot(priority):
            order.append(name)
            await anyio.sleep(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold, executor, 1.0)
        await anyio.sleep(0.1)
        for name, priority in [
            ("low-1", Priority.LOW),
            ("high-1", Priority.HIGH),
            ("mid-1", Priority.MEDIUM),
            ("between", Priority.HIGH + 5),
            ("high-2", Priority.HIGH),
            ("low-2", Priority.LOW),
        ]:
            tg.start_soon(job, name, priority)
            await anyio.sleep(0.01)
    assert order == ["high-1", "high-2", "between", "mid-1", "low-1", "low-2"]


async def test_uncontended_slot_does_not_yield() -> None:
    """The fast path takes a free slot without a checkpoint: no other task gets to run."""
    executor = make(2)
    ran: list[int] = []

    async def other() -> None:
        ran.append(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        async with executor.slot(), executor.slot():
            assert ran == []  # neither enter nor exit reached the event loop
        assert ran == []
    assert ran == [1]


async def test_full_queue_rejects_with_retry_after_from_throughput() -> None:
    """A newcomer to a full queue gets QueueFull whose retry_after is the backlog's drain time."""
    executor = make(1, 2)
    await hold(executor, 2.0)  # one measured completion: 2 s per job
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(hold, executor, 2.0)
        await anyio.sleep(0.1)
        with pytest.raises(brace.QueueFull) as caught:
            async with executor.slot():
                pass
        assert type(caught.value) is brace.QueueFull
        assert caught.value.retry_after == pytest.approx(3 * 2.0, rel=0.05)
    assert executor.statistics().rejected == 1


async def test_without_a_measurement_retry_after_is_none() -> None:
    """Before anything completed there is no throughput, so retry_after is None."""
    executor = make(1, 0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(hold, executor, 1.0)
        await anyio.sleep(0.1)
        with pytest.raises(brace.QueueFull) as caught:
            await executor.run(anyio.sleep, 0)
        assert caught.value.retry_after is None


@pytest.mark.anyio
@pytest.mark.parametrize("on_full", ["drop_oldest", "drop_less_important"])
async def test_a_dropped_waiter_gets_an_exception_and_never_hangs(on_full: str) -> None:
    """When a HIGH newcomer evicts a LOW waiter, the LOW caller receives Dropped at once."""
    executor = make(1, 1, on_full=on_full)
    outcome: list[object] = []

    async def low() -> None:
        try:
            async with executor.slot(Priority.LOW):
                outcome.append("ran")
        except brace.Dropped as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold, executor, 5.0)
        await anyio.sleep(0.1)
        tg.start_soon(low)
        await anyio.sleep(0.1)
        tg.start_soon(functools.partial(executor.run, anyio.sleep, 1, priority=Priority.HIGH))
        await anyio.sleep(0.1)
        assert len(outcome) == 1
        assert isinstance(outcome[0], brace.QueueFull)
        assert anyio.current_time() < 1.0
    stats = executor.statistics()
    assert stats.dropped == 1
    assert stats.completed == 2


async def test_timeout_counts_from_when_the_work_starts() -> None:
    """Time spent queued does not count against the per-call timeout."""
    executor = make(1, timeout=2.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(hold, executor, 5.0)
        await anyio.sleep(0.1)

        async def work(seconds: float) -> str:
            await anyio.sleep(seconds)
            return "done"

        result = await executor.run(work, 1.5)  # queued 4.9 s, then runs 1.5 s of its 2 s
    assert result == "done"


async def test_timeout_cancels_the_work_and_raises_timeout_exceeded() -> None:
    """Work running longer than its timeout is cancelled; the caller gets TimeoutExceeded."""
    executor = make(2, timeout=30.0)
    finished: list[bool] = []

    async def slow() -> None:
        await anyio.sleep(100)
        finished.append(True)

    start = anyio.current_time()
    with pytest.raises(brace.TimeoutExceeded) as caught:
        await executor.run(slow, timeout=60.0)  # the per-call value overrides the default
    assert caught.value.timeout == 60.0
    assert isinstance(caught.value, TimeoutError)
    assert anyio.current_time() - start == pytest.approx(60.0)
    with pytest.raises(brace.TimeoutExceeded):
        await executor.run(slow)
    assert finished == []
    stats = executor.statistics()
    assert stats.timed_out == 2
    assert stats.running == 0


async def test_queue_timeout_raises_queue_timeout() -> None:
    """A waiter still queued after queue_timeout gets QueueTimeout and leaves the queue."""
    executor = make(1, queue_timeout=1.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(hold, executor, 5.0)
        await anyio.sleep(0.1)
        start = anyio.current_time()
        with pytest.raises(brace.QueueTimeout):
            await executor.run(anyio.sleep, 0)
        assert anyio.current_time() - start == pytest.approx(1.0)
    stats = executor.statistics()
    assert stats.queue_timed_out == 1
    assert stats.pending == 0


async def test_raising_concurrency_at_runtime_starts_waiters_at_once() -> None:
    """Assigning a larger concurrency grants queued waiters immediately; lowering it holds them."""
    executor = make(1)
    started: list[float] = []

    async def job() -> None:
        async with executor.slot():
            started.append(anyio.current_time())
            await anyio.sleep(10)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(job)
        await anyio.sleep(1)
        assert len(started) == 1
        executor.concurrency = 3
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        assert len(started) == 3
        executor.concurrency = 1
        await anyio.sleep(10.5)  # three finish; only one may replace them
        assert len(started) == 4
        assert executor.statistics().running == 1


@pytest.mark.anyio
@pytest.mark.parametrize("aging", [5.0, None])
async def test_under_steady_high_load_low_work_runs_within_its_aging_bound(
    aging: float | None,
) -> None:
    """Starvation: under a steady HIGH backlog a LOW item runs within ~2 x aging (never without)."""
    executor = make(2, 1000, aging=aging)
    low_waited: list[float] = []
    feeding = True

    async def high_job() -> None:
        await executor.run(anyio.sleep, 0.5, priority=Priority.HIGH)

    async def high_feeder() -> None:
        nonlocal feeding
        # a backlog of 10 HIGH jobs, then HIGH arrivals exactly as fast as they are served
        # (2 slots x 0.5 s = 4 per second): the queue never empties
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(high_job)
            for _ in range(240):
                await anyio.sleep(0.25)
                tg.start_soon(high_job)
            feeding = False

    async def low() -> None:
        arrived = anyio.current_time()
        async with executor.slot(Priority.LOW):
            low_waited.append(anyio.current_time() - arrived)
            assert feeding

    async with anyio.create_task_group() as tg:
        tg.start_soon(high_feeder)
        await anyio.sleep(5)
        assert executor.statistics().pending >= 6
        if aging is None:
            with anyio.move_on_after(50):
                await low()
            assert low_waited == []  # without aging LOW starves for as long as HIGH flows
            return
        await low()
    (waited,) = low_waited
    assert aging is not None
    # LOW overtakes every HIGH arriving more than 2 x aging after it; the ~10 HIGH jobs
    # queued before that drain at 4 per second
    assert 2 * aging <= waited <= 2 * aging + 3.5


async def test_statistics_add_up() -> None:
    """Counters, averages and percentiles describe what happened."""
    executor = make(2, 10)

    async def fail() -> None:
        await anyio.sleep(1)
        raise ValueError("boom")

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(executor.run, anyio.sleep, 1)
        await anyio.sleep(0.1)
        with pytest.raises(ValueError, match="boom"):
            await executor.run(fail, priority=Priority.HIGH)
    stats = executor.statistics()
    assert stats.completed == 4
    assert stats.failed == 1
    assert stats.total_processed == 5
    assert stats.admitted == 5
    assert stats.queued == 3
    assert stats.admitted_by_priority == {Priority.MEDIUM: 4, Priority.HIGH: 1}
    assert stats.running == stats.pending == 0
    assert stats.average_processing_time == pytest.approx(1.0, rel=0.01)
    # waits: 0, 0, then the HIGH job after 0.9 s, then two after ~1.9 s... 2 zero waits of 5
    assert stats.wait_time_p50 == pytest.approx(1.0, abs=0.1)
    assert stats.wait_time_p99 == pytest.approx(2.0, abs=0.1)
    assert stats.average_wait_time > 0


async def test_call_and_decorator_keep_results_and_priority() -> None:
    """call() runs with the defaults; the decorator runs each call through the executor."""
    executor = make(1)

    async def add(a: int, b: int = 0) -> int:
        await anyio.sleep(0.1)
        return a + b

    @executor(priority=Priority.HIGH, timeout=5)
    async def urgent(x: int) -> int:
        return x * 2

    @executor
    async def plain(x: int) -> int:
        return x + 1

    assert await executor.call(add, 1, b=2) == 3
    assert await urgent(21) == 42
    assert await plain(1) == 2
    assert urgent.__name__ == "urgent"
    stats = executor.statistics()
    assert stats.admitted_by_priority == {Priority.MEDIUM: 2, Priority.HIGH: 1}


async def test_outer_cancellation_reaches_the_caller_unchanged() -> None:
    """Cancelling a caller of run() delivers the backend's Cancelled, and the slot is freed."""
    executor = make(1)
    with anyio.move_on_after(1) as scope:
        await executor.run(anyio.sleep, 10)
    assert scope.cancelled_caught
    stats = executor.statistics()
    assert stats.cancelled_running == 1
    assert stats.running == 0


async def test_a_slot_granted_to_a_cancelled_waiter_passes_on() -> None:
    """A waiter cancelled after its slot was granted, before it resumed, hands the slot on."""
    executor = make(1)
    got: list[str] = []

    async def waiter(name: str, deadline: float) -> None:
        with anyio.move_on_after(deadline):
            async with executor.slot():
                got.append(name)
                await anyio.sleep(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold, executor, 1.0)
        await anyio.lowlevel.checkpoint()
        tg.start_soon(waiter, "first", 1.0)  # cancelled at the very moment it is granted
        tg.start_soon(waiter, "second", 10.0)
    assert "second" in got
    stats = executor.statistics()
    assert stats.running == 0
    assert stats.pending == 0
    assert stats.admitted == stats.completed + stats.cancelled_running


@pytest.mark.anyio
@pytest.mark.parametrize("discipline", ["fifo", "codel", "adaptive_lifo"])
async def test_cancellation_storm_leaves_the_books_balanced(discipline: str) -> None:
    """100,000 acquisitions cancelled at random points: all slots come back, counts add up."""
    rng = random.Random(4)
    concurrency = 8
    executor = make(
        concurrency,
        32,
        discipline=discipline,
        queue_timeout=0.05,
        on_full="drop_less_important",
    )
    inside = 0
    most_inside = 0
    total = 100_000 if discipline == "fifo" else 20_000
    workers = 64
    per_worker = total // workers
    choices = [rng.random() for _ in range(4096)]
    # few distinct instants, so that grants, timeouts and cancellations often coincide
    sleeps = [rng.choice((0.0, 0.0, 0.0, 0.01)) for _ in range(4096)]
    priorities = [rng.choice((0, 10, 20)) for _ in range(4096)]

    async def worker(offset: int) -> None:
        nonlocal inside, most_inside
        for i in range(per_worker):
            k = (offset * 7919 + i) % 4096
            try:
                with anyio.move_on_after(sleeps[k] if choices[k] < 0.5 else 1.0):
                    async with executor.slot(priorities[k]):
                        inside += 1
                        most_inside = max(most_inside, inside)
                        try:
                            if choices[k] < 0.02:
                                raise LookupError
                            await anyio.sleep(sleeps[(k + 1) % 4096])
                        finally:
                            inside -= 1
            except (brace.QueueFull, brace.QueueTimeout, LookupError):
                pass

    async with anyio.create_task_group() as tg:
        for w in range(workers):
            tg.start_soon(worker, w)
    stats = executor.statistics()
    assert stats.running == 0
    assert stats.pending == 0
    assert most_inside <= concurrency
    assert stats.admitted == (
        stats.completed + stats.failed + stats.timed_out + stats.cancelled_running
    )
    assert stats.queued == (
        stats.admitted
        - executor._core.acquired_immediately
        + stats.dropped
        + stats.queue_timed_out
        + stats.cancelled_queued
    )
    arrivals = stats.admitted + stats.rejected + stats.dropped + stats.queue_timed_out
    arrivals += stats.cancelled_queued
    assert arrivals == workers * per_worker
    assert stats.cancelled_running > 0
    assert stats.cancelled_queued > 0
    assert stats.failed > 0
    assert stats.rejected + stats.dropped > 0
    assert stats.queue_timed_out > 0
    assert executor._passed_on > 0  # some were cancelled between their grant and resuming
    # the executor is still fully usable: every slot can be taken at once
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(hold, executor, 1.0)
        await anyio.sleep(0.5)
        assert executor.statistics().running == concurrency
        assert executor.statistics().pending == 0


async def test_cancellation_storm_through_run_with_timeouts_and_a_drain() -> None:
    """run() cancelled at random points, timing out, and cut off by a drain: books balance."""
    rng = random.Random(7)
    concurrency = 6
    executor = make(concurrency, 24, timeout=0.015, queue_timeout=0.04)
    inside = 0
    most_inside = 0
    outcomes: dict[str, int] = {}

    async def work(seconds: float) -> None:
        nonlocal inside, most_inside
        inside += 1
        most_inside = max(most_inside, inside)
        try:
            await anyio.sleep(seconds)
        finally:
            inside -= 1

    async def worker(seed: float) -> None:
        local = random.Random(seed)
        while not executor.draining:
            name = "ran"
            try:
                with anyio.move_on_after(local.choice((0.0, 0.01, 0.02, 1.0))):
                    await executor.run(
                        work,
                        local.choice((0.0, 0.01, 0.02)),
                        priority=local.choice((0, 10, 20)),
                    )
            except brace.Rejected as exc:
                name = type(exc).__name__
                await anyio.sleep(0.005)  # a refusal is immediate: back off like a client
            except brace.TimeoutExceeded:
                name = "TimeoutExceeded"
            outcomes[name] = outcomes.get(name, 0) + 1

    async with anyio.create_task_group() as tg:
        for _ in range(40):
            tg.start_soon(worker, rng.random())
        await anyio.sleep(5)
        report = await executor.drain(timeout=0.005)
    stats = executor.statistics()
    assert stats.running == stats.pending == 0
    assert most_inside <= concurrency
    assert stats.admitted == (
        stats.completed + stats.failed + stats.timed_out + stats.cancelled_running
    )
    assert stats.queued == (
        stats.admitted
        - executor._core.acquired_immediately
        + stats.dropped
        + stats.queue_timed_out
        + stats.cancelled_queued
    )
    assert stats.timed_out == outcomes["TimeoutExceeded"] > 0
    assert stats.queue_timed_out == outcomes["QueueTimeout"] > 0
    assert stats.cancelled_running > 0
    assert stats.cancelled_queued > 0
    assert report.cancelled + report.finished > 0
    assert stats.admitted > 3_000


async def test_adaptive_lifo_and_codel_run_work() -> None:
    """The alternative disciplines admit and complete work like FIFO when not overloaded."""
    for discipline in ("codel", "adaptive_lifo"):
        executor = make(2, 10, discipline=discipline)
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(executor.run, anyio.sleep, 0.001)
        assert executor.statistics().completed == 6


def test_bad_arguments_are_refused() -> None:
    """Wrong types and ranges raise at construction or call, naming the parameter."""
    with pytest.raises(ValueError, match="concurrency"):
        PriorityExecutor(0)
    with pytest.raises(ValueError, match="timeout"):
        PriorityExecutor(timeout=-1)
    with pytest.raises(ValueError, match="on_full"):
        PriorityExecutor(on_full="nope")  # type: ignore[arg-type]
    executor = PriorityExecutor()
    with pytest.raises(TypeError, match="priority"):
        executor.slot("high")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock"):
        PriorityExecutor(clock=3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency"):
        executor.concurrency = 0


def test_statistics_is_frozen() -> None:
    """statistics() returns a frozen snapshot."""
    stats = PriorityExecutor().statistics()
    with pytest.raises(AttributeError):
        stats.running = 3  # type: ignore[misc]
    assert repr(PriorityExecutor()).startswith("PriorityExecutor(")


async def test_compose_with_retry_outside_frees_the_slot_between_attempts() -> None:
    """compose(retry, executor): each attempt takes a slot; none is held while retry sleeps."""
    executor = make(1)
    retry = brace.Retry(attempts=3, backoff=lambda attempt: 5.0, clock=anyio.current_time)
    attempts: list[float] = []

    async def flaky() -> str:
        attempts.append(anyio.current_time())
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    async def watch() -> None:
        await anyio.sleep(2.5)  # in the middle of the first backoff
        assert executor.statistics().running == 0

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        assert await brace.compose(retry, executor).run(flaky) == "ok"
    assert attempts == pytest.approx([0.0, 5.0, 10.0], abs=0.01)
    assert executor.statistics().failed == 2
    assert executor.statistics().completed == 1


async def test_the_inlined_fast_path_keeps_the_core_books() -> None:
    """slot()'s inlined fast path changes the core exactly as try_acquire/release would."""
    clock = FakeClock(100.0)
    executor = PriorityExecutor(2, 10, clock=clock)
    reference = AdmissionCore(2, 10)
    for _ in range(40):
        async with executor.slot(), executor.slot(Priority.HIGH):
            assert reference.try_acquire(clock())
            assert reference.try_acquire(clock())
            clock.advance(0.5)
            reference.release(clock())
        reference.release(clock())
        clock.advance(1.0)
    core = executor._core
    for name in ("busy_time", "completions", "acquired_immediately", "running", "_epoch_marks"):
        assert getattr(core, name) == getattr(reference, name), name
    assert core.service_time() == reference.service_time() == pytest.approx(0.5, rel=0.1)
    stats = executor.statistics()
    assert stats.completed == 80
    assert stats.average_processing_time == pytest.approx(0.5)
    assert stats.admitted_by_priority == {Priority.MEDIUM: 40, Priority.HIGH: 40}
