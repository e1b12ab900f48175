"""MemoryGuard: cached levels, admission by priority, waiting, hooks, and a real child."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import brace
from brace import MemoryAdmission, MemoryGuard, MemoryLevel, MemorySample, Priority
from brace.testing import FakeClock

PROGRAMS = Path(__file__).resolve().parent / "programs"


class FakeProbe:
    """A probe whose reading the test sets, counting how often it is read."""

    def __init__(self, usage: int = 0, limit: int | None = None) -> None:
        self.usage = usage
        self.limit = limit
        self.reads = 0

    def __call__(self) -> MemorySample:
        self.reads += 1
        return MemorySample(self.usage, self.limit)


def make_guard(probe: FakeProbe, clock: FakeClock, **kwargs: object) -> MemoryGuard:
    """A guard at 100 / 200 bytes (low 80) on a fake probe and clock."""
    options: dict[str, object] = {"critical": 200, "low": 80, "interval": 1.0}
    options.update(kwargs)
    return MemoryGuard(100, probe=probe, clock=clock, **options)  # type: ignore[arg-type]


def test_level_is_sampled_at_most_once_per_interval() -> None:
    """Checks between samples read the cached level; the probe is read once per interval."""
    probe, clock = FakeProbe(150), FakeClock()
    guard = make_guard(probe, clock)
    assert guard.level is MemoryLevel.HIGH
    probe.usage = 10
    assert all(guard.level is MemoryLevel.HIGH for _ in range(1000))
    assert probe.reads == 1
    clock.advance(1.0)
    level: MemoryLevel = guard.level
    assert level is MemoryLevel.NORMAL
    assert probe.reads == 2


def test_hysteresis_through_the_shell() -> None:
    """The guard leaves HIGH only below ``low`` and CRITICAL only below its band."""
    probe, clock = FakeProbe(), FakeClock()
    guard = make_guard(probe, clock)
    levels = []
    for usage in (50, 100, 90, 79, 200, 185, 150, 70):
        probe.usage = usage
        levels.append(guard.sample())
        clock.advance(1.0)
    n, h, c = MemoryLevel.NORMAL, MemoryLevel.HIGH, MemoryLevel.CRITICAL
    assert levels == [n, h, h, n, c, c, h, n]


def test_admission_by_level_and_priority() -> None:
    """NORMAL admits all; HIGH queues LOW work only; CRITICAL rejects everything."""
    probe, clock = FakeProbe(0), FakeClock()
    guard = make_guard(probe, clock, interval=1e-3)
    assert guard.admit(Priority.LOW) is MemoryAdmission.ADMIT
    probe.usage = 120
    clock.advance(1.0)
    assert guard.admit(Priority.HIGH) is MemoryAdmission.ADMIT
    assert guard.admit(Priority.MEDIUM) is MemoryAdmission.ADMIT
    assert guard.admit(Priority.LOW) is MemoryAdmission.QUEUE
    assert guard.admit(Priority.LOW + 5) is MemoryAdmission.QUEUE
    probe.usage = 250
    clock.advance(1.0)
    assert guard.admit(Priority.HIGH) is MemoryAdmission.REJECT
    with pytest.raises(brace.MemoryPressure) as caught:
        guard.check(Priority.HIGH)
    assert caught.value.retry_after == 1.0
    stats = guard.statistics()
    assert (stats.admitted, stats.queued, stats.rejected) == (3, 2, 2)


def test_shed_mode_rejects_low_work_at_high() -> None:
    """With ``on_high="shed"`` LOW work is refused at HIGH instead of queued."""
    probe, clock = FakeProbe(150), FakeClock()
    guard = make_guard(probe, clock, on_high="shed", retry_after=5.0)
    assert guard.admit(Priority.LOW) is MemoryAdmission.REJECT
    assert guard.admit(Priority.MEDIUM) is MemoryAdmission.ADMIT
    with pytest.raises(brace.MemoryPressure) as caught:
        guard.check(Priority.LOW)
    assert caught.value.retry_after == 5.0


def test_fraction_thresholds_use_the_probe_limit() -> None:
    """``high=0.5`` means half of the limit the probe reports."""
    probe, clock = FakeProbe(600, limit=1000), FakeClock()
    guard = MemoryGuard(0.5, critical=0.9, probe=probe, clock=clock)
    assert guard.level is MemoryLevel.HIGH
    stats = guard.statistics()
    assert (stats.high, stats.critical, stats.low) == (500.0, 900.0, 450.0)
    assert (stats.usage, stats.limit) == (600, 1000)


def test_plain_int_probe_is_accepted() -> None:
    """A probe may return plain bytes instead of a MemorySample."""
    guard = MemoryGuard(100, probe=lambda: 150, clock=FakeClock())
    assert guard.level is MemoryLevel.HIGH
    assert guard.statistics().limit is None


def test_hooks_receive_changes_and_their_errors_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every level change reaches each hook once; a raising hook does not stop the guard."""
    probe, clock = FakeProbe(0), FakeClock()
    changes: list[brace.MemoryLevelChange] = []

    def broken(change: brace.MemoryLevelChange) -> None:
        raise RuntimeError("hook failed")

    guard = make_guard(probe, clock, on_change=[changes.append, broken])
    for usage in (0, 120, 130, 250, 0):
        probe.usage = usage
        guard.sample()
        clock.advance(1.0)
    assert [(c.previous, c.level) for c in changes] == [
        (MemoryLevel.NORMAL, MemoryLevel.HIGH),
        (MemoryLevel.HIGH, MemoryLevel.CRITICAL),
        (MemoryLevel.CRITICAL, MemoryLevel.NORMAL),
    ]
    assert changes[1].usage == 250
    assert changes[1].at == 3.0
    assert "hook" in caplog.text
    assert guard.statistics().level_changes == 3


def test_probe_errors_keep_the_level(caplog: pytest.LogCaptureFixture) -> None:
    """A probe that raises is counted and logged; the level stays."""
    readings = iter([150])

    def probe() -> int:
        return next(readings)

    clock = FakeClock()
    guard = MemoryGuard(100, probe=probe, clock=clock)
    assert guard.level is MemoryLevel.HIGH
    clock.advance(2.0)
    assert guard.level is MemoryLevel.HIGH
    assert guard.statistics().probe_errors == 1
    assert "probe" in caplog.text


def test_gc_on_entering_high(monkeypatch: pytest.MonkeyPatch) -> None:
    """``collect_on_high`` collects on entering HIGH, no more than once per its seconds."""
    collected: list[int] = []
    monkeypatch.setattr("brace._memory.gc.collect", lambda: collected.append(1))
    probe, clock = FakeProbe(0), FakeClock()
    guard = make_guard(probe, clock, collect_on_high=60.0)
    for usage in (150, 10, 150, 10):
        probe.usage = usage
        guard.sample()
        clock.advance(1.0)
    assert len(collected) == 1
    clock.advance(100.0)
    probe.usage = 150
    guard.sample()
    assert guard.statistics().collections == len(collected) == 2


def test_gc_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the options the guard never collects."""
    collected: list[int] = []
    monkeypatch.setattr("brace._memory.gc.collect", lambda: collected.append(1))
    probe, clock = FakeProbe(150), FakeClock()
    guard = make_guard(probe, clock)
    for _ in range(5):
        guard.sample()
        clock.advance(600.0)
    assert collected == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"interval": 0}, ValueError),
        ({"on_high": "drop"}, ValueError),
        ({"probe": 5}, TypeError),
        ({"shed_priority": "low"}, TypeError),
        ({"queue_timeout": -1}, ValueError),
        ({"on_change": [5]}, TypeError),
        ({"clock": 1.0}, TypeError),
    ],
)
def test_bad_configuration_raises(kwargs: dict[str, object], error: type[Exception]) -> None:
    """Bad options fail at construction."""
    with pytest.raises(error):
        MemoryGuard(100, probe=lambda: 0, **kwargs)  # type: ignore[arg-type]


async def test_queued_work_waits_until_memory_recovers() -> None:
    """LOW work at HIGH waits, then runs once a sample finds NORMAL."""
    probe = FakeProbe(150)
    guard = MemoryGuard(100, probe=probe, interval=1.0, clock=anyio.current_time)
    ran_at: list[float] = []

    @guard(priority=Priority.LOW)
    async def job(tag: str) -> str:
        ran_at.append(anyio.current_time())
        return tag

    async def recover() -> None:
        await anyio.sleep(2.5)
        probe.usage = 10

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(recover)
        assert await job("done") == "done"
    assert ran_at[0] - start == pytest.approx(3.0)  # the first sample after recovery


async def test_queue_timeout_rejects_waiters() -> None:
    """A waiter still queued after ``queue_timeout`` gets MemoryPressure."""
    guard = MemoryGuard(
        100, probe=lambda: 150, interval=1.0, queue_timeout=2.5, clock=anyio.current_time
    )
    start = anyio.current_time()
    with pytest.raises(brace.MemoryPressure):
        async with guard.admitted(Priority.LOW):
            pytest.fail("must not run")
    assert anyio.current_time() - start == pytest.approx(2.5)


async def test_waiter_rejected_when_memory_turns_critical() -> None:
    """A queued waiter is refused once the level reaches CRITICAL."""
    probe = FakeProbe(150)
    guard = MemoryGuard(100, critical=200, probe=probe, clock=anyio.current_time)

    async def worsen() -> None:
        await anyio.sleep(1.5)
        probe.usage = 500

    async with anyio.create_task_group() as tg:
        tg.start_soon(worsen)
        with pytest.raises(brace.MemoryPressure):
            await guard.wait_admitted(Priority.LOW)


async def test_context_manager_and_call_use_the_default_priority() -> None:
    """``async with guard`` and ``guard.call`` admit MEDIUM work at HIGH, refuse at CRITICAL."""
    probe = FakeProbe(150)
    guard = MemoryGuard(100, critical=200, probe=probe, clock=anyio.current_time)
    async with guard:
        pass

    async def double(x: int) -> int:
        return 2 * x

    assert await guard.call(double, 21) == 42
    probe.usage = 300
    await anyio.sleep(1.0)
    with pytest.raises(brace.MemoryPressure):
        await guard.call(double, 1)
    with pytest.raises(brace.MemoryPressure):
        async with guard:
            pass


async def test_cancelled_waiter_propagates_cancellation() -> None:
    """A waiter cancelled while queued sees the cancellation, nothing else."""
    guard = MemoryGuard(100, probe=lambda: 150, clock=anyio.current_time)
    with anyio.move_on_after(3.3) as scope:
        await guard.wait_admitted(Priority.LOW)
    assert scope.cancelled_caught


async def test_background_sampler_keeps_level_current() -> None:
    """``run()`` samples every interval, so the level changes without any check."""
    probe = FakeProbe(10)
    changes: list[brace.MemoryLevelChange] = []
    guard = MemoryGuard(
        100, probe=probe, interval=0.5, clock=anyio.current_time, on_change=changes.append
    )
    async with anyio.create_task_group() as tg:
        await tg.start(guard.run)
        probe.usage = 150
        await anyio.sleep(0.6)
        assert changes
        assert changes[-1].level is MemoryLevel.HIGH
        reads = probe.reads
        for _ in range(100):
            assert guard.level is MemoryLevel.HIGH
        assert probe.reads == reads  # checks do not sample while run() does
        tg.cancel_scope.cancel()


def test_a_real_child_reaches_high_then_critical() -> None:
    """A child process allocating memory sees its guard go HIGH, then CRITICAL, then refuse."""
    result = subprocess.run(
        [sys.executable, str(PROGRAMS / "memory_hog.py")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["NORMAL -> HIGH", "HIGH -> CRITICAL"]
    assert lines[2].startswith("rejected")


async def test_cancelled_waiters_keep_the_books_balanced() -> None:
    """Waiters cancelled at random moments leave no trace: the counters match what the
    callers saw, and nothing is left waiting."""
    rng = random.Random(5)
    probe = FakeProbe(150)
    guard = MemoryGuard(
        100, critical=300, probe=probe, interval=0.5, queue_timeout=4.0, clock=anyio.current_time
    )
    outcomes = {"admitted": 0, "rejected": 0, "cancelled": 0}

    async def waiter(delay: float) -> None:
        await anyio.sleep(delay)
        with anyio.move_on_after(rng.uniform(0.0, 3.0)) as scope:
            try:
                await guard.wait_admitted(Priority.LOW)
            except brace.MemoryPressure:
                outcomes["rejected"] += 1
                return
            outcomes["admitted"] += 1
            return
        assert scope.cancelled_caught
        outcomes["cancelled"] += 1

    async def weather() -> None:
        for _ in range(40):
            await anyio.sleep(rng.uniform(0.1, 1.0))
            probe.usage = rng.choice([10, 150, 150, 400])

    async with anyio.create_task_group() as tg:
        tg.start_soon(weather)
        for _ in range(200):
            tg.start_soon(waiter, rng.uniform(0.0, 20.0))
    stats = guard.statistics()
    assert stats.waiting == 0
    assert sum(outcomes.values()) == 200
    assert stats.admitted == outcomes["admitted"]  # after waiting or at once
    assert stats.rejected == outcomes["rejected"]
    assert outcomes["cancelled"] <= stats.queued  # only waiters can be cancelled
    assert outcomes["cancelled"] > 0
    assert outcomes["admitted"] > 0
    assert outcomes["rejected"] > 0


async def test_periodic_collection_runs_with_the_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``collect_interval`` and ``run()``, the guard collects every interval even idle."""
    collected: list[float] = []
    monkeypatch.setattr("brace._memory.gc.collect", lambda: collected.append(anyio.current_time()))
    guard = MemoryGuard(
        100, probe=lambda: 0, interval=10.0, collect_interval=300.0, clock=anyio.current_time
    )
    start = anyio.current_time()
    with anyio.move_on_after(1000.0):
        await guard.run()
    assert [round(at - start) for at in collected] == [300, 600, 900]
    assert guard.statistics().collections == 3
