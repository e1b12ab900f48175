"""Issue 19, item 7: a clock that steps back never over-admits and reports nothing negative.

The model: real time ``r`` only moves forward; the clock reads ``r - lag``, and ``lag``
only grows (each growth is a step back of the clock, as NTP or a VM migration make
one). Over any run, in real time, the limiters admit no more than their guarantee, and
every value they report (``remaining``, ``retry_after``, ``reset_after``, the bucket's
``available``, the breaker's ``time_until_half_open``, the executor's waits) is >= 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import brace
from brace import Decision

LIMIT = 3
WINDOW = 10.0


@dataclass
class SteppingClock:
    """Reads ``real - lag``; ``lag`` only grows, so the reading may step back."""

    real: float = 1000.0
    lag: float = 0.0
    admitted: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def __call__(self) -> float:
        return self.real - self.lag


def check_decision(decision: Decision) -> None:
    """Every field of a decision is in range, whatever the clock did."""
    assert 0 <= decision.remaining <= decision.limit
    assert decision.retry_after >= 0.0
    assert decision.reset_after >= 0.0
    assert math.isfinite(decision.retry_after)
    assert math.isfinite(decision.reset_after)


def most_in_any_interval(admissions: list[tuple[float, int]], length: float) -> int:
    """The largest cost admitted within any closed real-time interval of ``length``."""
    best = 0
    for i, (start, _) in enumerate(admissions):
        total = sum(cost for t, cost in admissions[i:] if t <= start + length)
        best = max(best, total)
    return best


def make(kind: str, clock: SteppingClock) -> brace.TokenBucket | brace.SlidingWindow:
    """A limiter of LIMIT per WINDOW of the given kind, reading ``clock``."""
    if kind == "bucket":
        return brace.TokenBucket(LIMIT, per=WINDOW, clock=clock)
    return brace.SlidingWindow(LIMIT, WINDOW, exact=kind == "log", clock=clock)


def check_guarantee(kind: str, admissions: list[tuple[float, int]]) -> None:
    """The policy's bound on admissions in real time holds."""
    if kind == "log":  # exact: at most LIMIT in any window (an open one: just under WINDOW)
        assert most_in_any_interval(admissions, WINDOW - 1e-6) <= LIMIT
    elif kind == "window":  # the counter: fewer than 2 * LIMIT in any window
        assert most_in_any_interval(admissions, WINDOW - 1e-6) < 2 * LIMIT
    else:  # a bucket: at most burst + one token per interval elapsed
        interval = WINDOW / LIMIT
        for length in (0.0, interval, WINDOW, 3 * WINDOW):
            assert most_in_any_interval(admissions, length) <= LIMIT + length / interval + 1e-9


# (real seconds passing, how far the clock steps back, key, cost)
steps = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.25, 1.0, 2.5, 5.0, 10.0]),
        st.one_of(st.just(0.0), st.just(0.0), st.sampled_from([0.5, 3.0, 9.75, 25.0, 1e5])),
        st.sampled_from(["a", "b"]),
        st.integers(0, LIMIT),
    ),
    max_size=60,
)


@pytest.mark.parametrize("kind", ["bucket", "window", "log"])
@settings(max_examples=150, deadline=None)
@given(script=steps)
def test_item7_a_local_limiter_with_a_clock_stepping_back(
    kind: str, script: list[tuple[float, float, str, int]]
) -> None:
    """TokenBucket / SlidingWindow: never negative, never more than the policy in real time."""
    clock = SteppingClock()
    limiter = make(kind, clock)
    admissions: list[tuple[float, int]] = []
    for passing, back, _, cost in script:
        clock.real += passing
        clock.lag += back
        decision = limiter.try_acquire(cost)
        check_decision(decision)
        if decision.allowed and cost:
            admissions.append((clock.real, cost))
        if isinstance(limiter, brace.TokenBucket):
            assert 0.0 <= limiter.available() <= LIMIT
        else:
            assert 0 <= limiter.remaining() <= LIMIT
    check_guarantee(kind, admissions)


@pytest.mark.parametrize("kind", ["bucket", "window", "log"])
@settings(max_examples=150, deadline=None)
@given(script=steps, peek=st.booleans())
def test_item7_the_memory_store_with_a_clock_stepping_back(
    kind: str, script: list[tuple[float, float, str, int]], peek: bool
) -> None:
    """RateLimiter on MemoryStore: never negative, never more than the policy per key."""
    clock = SteppingClock()
    limiter = brace.RateLimiter(make(kind, clock), clock=clock)
    admissions: dict[str, list[tuple[float, int]]] = {"a": [], "b": []}
    for passing, back, key, cost in script:
        clock.real += passing
        clock.lag += back
        if peek:
            check_decision(anyio.run(limiter.peek, key, cost))
        decision = limiter.try_hit(key, cost)
        check_decision(decision)
        if decision.allowed and cost:
            admissions[key].append((clock.real, cost))
    for key_admissions in admissions.values():
        check_guarantee(kind, key_admissions)


@settings(max_examples=100, deadline=None)
@given(
    backs=st.lists(
        st.tuples(st.sampled_from([0.0, 1.0, 4.0]), st.sampled_from([0.0, 2.0, 50.0])),
        max_size=20,
    )
)
def test_item7_the_breaker_with_a_clock_stepping_back(backs: list[tuple[float, float]]) -> None:
    """The breaker's time_until_half_open and retry_after are never negative."""
    clock = SteppingClock()
    breaker = brace.CircuitBreaker(failure_threshold=1, recovery_time=5.0, clock=clock)

    async def fail() -> None:
        raise OSError("down")

    async def main() -> None:
        for passing, back in backs:
            clock.real += passing
            clock.lag += back
            retry_after: float | None = None
            try:
                await breaker.call(fail)
            except brace.CircuitOpen as error:
                retry_after = error.retry_after
            except OSError:
                pass
            assert retry_after is None or retry_after >= 0.0
            until = breaker.statistics().time_until_half_open
            assert until is None or until >= 0.0

    anyio.run(main)


async def test_item7_the_executor_reports_no_negative_wait() -> None:
    """A waiter granted after the clock stepped back waited 0 s, not a negative time."""
    clock = SteppingClock()
    executor = brace.PriorityExecutor(concurrency=1, clock=clock)
    release = anyio.Event()

    async def holder() -> None:
        async with executor.slot():
            await release.wait()

    async def waiter() -> None:
        async with executor.slot():
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        clock.lag += 100.0
        release.set()
    stats = executor.statistics()
    assert stats.completed == 2
    assert stats.average_wait_time >= 0.0
    assert min(stats.wait_time_p50, stats.wait_time_p90, stats.wait_time_p99) >= 0.0
    assert stats.average_processing_time >= 0.0


def test_item7_remaining_was_negative_after_a_step_back() -> None:
    """The issue's case: a bucket used, then the clock 100,000 s back, reports remaining 0."""
    clock = SteppingClock()
    bucket = brace.TokenBucket(LIMIT, per=WINDOW, clock=clock)
    for _ in range(LIMIT):
        assert bucket.try_acquire().allowed
    clock.lag += 1e5
    decision = bucket.try_acquire()
    assert not decision.allowed
    assert decision.remaining == 0  # was -29,999 here
    assert bucket.available() == 0.0
    check_decision(decision)


def test_item7_the_log_keeps_its_entries_in_order() -> None:
    """The issue's case for the log: reset_after after a step back is positive, not negative."""
    clock = SteppingClock()
    log = brace.SlidingWindow(2, 60.0, exact=True, clock=clock)
    clock.real = 100.0
    assert log.try_acquire().allowed
    clock.lag = 50.0  # reads 50
    assert log.try_acquire().allowed  # logged at 100, the newest entry's time
    clock.real = 201.0  # reads 151: both entries (at 100) are still in the window
    decision = log.try_acquire()
    assert not decision.allowed
    check_decision(decision)  # reset_after was 50 + 60 - 151 = -41
    assert decision.reset_after == pytest.approx(9.0)
    clock.real = 210.0  # reads 160: both gone
    assert log.try_acquire().allowed
