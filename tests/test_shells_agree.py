"""The cores' reference models drive the shells too: the local shell, the memory store (its
generated fast path) and the core decide every step alike, and as the model says.

Times are on a 1/64 s grid with power-of-two rates and windows (see test_core_gcra.py and
test_core_window.py), so the floats are exact and the models decide exactly.
"""

from __future__ import annotations

from collections.abc import Awaitable
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

import brace
from brace._core.admission import AdmissionCore
from brace._core.breaker import CircuitBreakerCore
from brace._core.gcra import GCRA, TokenBucketCore
from brace._core.memory import MemoryAdmission, MemoryLevel, memory_admission
from brace._core.window import SlidingWindowCounter, SlidingWindowCounterCore
from brace.testing import FakeClock
from test_core_gcra import RATES, BucketModel
from test_core_gcra import assert_agrees as bucket_agrees
from test_core_window import CounterModel
from test_core_window import assert_agrees as window_agrees


def completes(awaitable: Awaitable[None]) -> bool:
    """Run ``awaitable`` until its first suspension: True if it finished without one (a
    coroutine, or the finished awaitable of a fast path)."""
    iterator = awaitable.__await__()
    try:
        iterator.send(None)
    except StopIteration:
        return True
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
    return False


class BucketShellsMachine(RuleBasedStateMachine):
    """TokenBucket, MemoryStore and TokenBucketCore against the textbook bucket."""

    @initialize(
        rate=RATES,
        per=st.sampled_from([Fraction(1, 2), Fraction(1), Fraction(2)]),
        burst=st.integers(1, 8),
    )
    def setup(self, rate: Fraction, per: Fraction, burst: int) -> None:
        self.clock = FakeClock(1000.0)
        self.now = Fraction(1000)
        self.bucket = brace.TokenBucket(float(rate), float(per), burst=burst, clock=self.clock)
        self.policy = self.bucket.policy
        self.core = TokenBucketCore(GCRA(float(rate), float(per), burst))
        self.store = brace.MemoryStore(clock=self.clock)
        self.model = BucketModel(rate, per, burst)
        self.burst = burst

    @rule(ticks=st.integers(0, 200))
    def advance(self, ticks: int) -> None:
        self.now += Fraction(ticks, 64)
        self.clock.advance(ticks / 64)

    @rule(data=st.data())
    def try_acquire(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(0, self.burst), label="cost")
        expected = self.model.acquire(self.now, cost)
        now = float(self.now)
        for decision in (
            self.bucket.try_acquire(cost),
            self.core.try_acquire(now, cost),
            self.store.hit_now(self.policy, "key", cost, now),
        ):
            bucket_agrees(decision, expected, self.burst)

    @rule()
    def enter(self) -> None:
        """``async with bucket`` (the generated fast path) admits exactly when the model does;
        when it would wait, the others are asked with try_acquire instead."""
        expected = self.model.acquire(self.now, 1)
        now = float(self.now)
        if expected[0]:
            assert completes(self.bucket.__aenter__())
        else:
            assert not self.bucket.try_acquire(1).allowed
        assert self.core.admit(now, 1) is expected[0]
        assert self.store.hit_now(self.policy, "key", 1, now).allowed is expected[0]


TestBucketShells = BucketShellsMachine.TestCase
TestBucketShells.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


class WindowShellsMachine(RuleBasedStateMachine):
    """SlidingWindow, MemoryStore and the counter core against the spelt-out counter."""

    @initialize(limit=st.integers(1, 8), window=st.sampled_from([Fraction(1), Fraction(4)]))
    def setup(self, limit: int, window: Fraction) -> None:
        self.clock = FakeClock(1000.0)
        self.now = Fraction(1000)
        self.window = brace.SlidingWindow(limit=limit, window=float(window), clock=self.clock)
        self.policy = SlidingWindowCounter(limit, float(window))
        self.core = SlidingWindowCounterCore(self.policy)
        self.store = brace.MemoryStore(clock=self.clock)
        self.model = CounterModel(limit, window)
        self.limit = limit

    @rule(ticks=st.integers(0, 200))
    def advance(self, ticks: int) -> None:
        self.now += Fraction(ticks, 64)
        self.clock.advance(ticks / 64)

    @rule(data=st.data())
    def try_acquire(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(0, self.limit), label="cost")
        expected = self.model.acquire(self.now, cost)
        now = float(self.now)
        for decision in (
            self.window.try_acquire(cost),
            self.core.try_acquire(now, cost),
            self.store.hit_now(self.policy, "key", cost, now),
        ):
            window_agrees(decision, expected, self.limit)


TestWindowShells = WindowShellsMachine.TestCase
TestWindowShells.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


class SlotShellsMachine(RuleBasedStateMachine):
    """``executor.slot()`` (the generated fast path) and AdmissionCore take and free slots
    alike, and as a plain counter of busy slots says, while nobody waits."""

    @initialize(concurrency=st.integers(1, 4))
    def setup(self, concurrency: int) -> None:
        self.clock = FakeClock(0.0)
        self.executor = brace.PriorityExecutor(concurrency=concurrency, clock=self.clock)
        self.slot = self.executor.slot()
        self.core = AdmissionCore(concurrency)
        self.busy = 0
        self.concurrency = concurrency

    @rule(ticks=st.integers(0, 64))
    def advance(self, ticks: int) -> None:
        self.clock.advance(ticks / 64)

    @rule()
    def enter(self) -> None:
        free = self.busy < self.concurrency
        assert self.core.try_acquire(self.clock()) is free
        if free:  # a full executor would queue the caller: not a step of this machine
            assert completes(self.slot.__aenter__())
            self.busy += 1

    @rule()
    def leave(self) -> None:
        if self.busy:
            assert self.core.release(self.clock()) == ()
            assert completes(self.slot.__aexit__(None, None, None))
            self.busy -= 1

    @rule()
    def agree(self) -> None:
        stats = self.executor.statistics()
        assert stats.running == self.core.running == self.busy
        assert self.core.completions == stats.completed


TestSlotShells = SlotShellsMachine.TestCase
TestSlotShells.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


class Boom(Exception):
    """A failure of the guarded service."""


class BreakerShellsMachine(RuleBasedStateMachine):
    """``async with CircuitBreaker`` (the generated exits of its closed classes, without
    and with a failure-rate window, and the general path once open) and
    CircuitBreakerCore (whose own model is in test_core_breaker.py) decide every call
    alike at the same times: admitted or refused, the state, and every count."""

    @initialize(
        threshold=st.none() | st.integers(1, 4),
        window=st.sampled_from([None, "calls", "time"]),
        rate=st.sampled_from([0.25, 0.5, 1.0]),
    )
    def setup(self, threshold: int | None, window: str | None, rate: float) -> None:
        options: dict[str, object] = {"failure_threshold": threshold, "recovery_time": 2.0}
        if window is not None or threshold is None:
            options.update(failure_rate=rate, minimum_calls=2)
            if window == "calls":
                options.update(window_calls=4)
            else:
                options.update(window=8.0, window_buckets=4)
        self.clock = FakeClock(0.0)
        self.breaker = brace.CircuitBreaker(**options, clock=self.clock)  # type: ignore[arg-type]
        self.core = CircuitBreakerCore(**options)  # type: ignore[arg-type]

    @rule(ticks=st.integers(0, 64))
    def advance(self, ticks: int) -> None:
        self.clock.advance(ticks / 16)

    @rule(failed=st.booleans())
    def call(self, failed: bool) -> None:
        now = self.clock()
        ticket = self.core.admit(now)
        try:
            entered = completes(self.breaker.__aenter__())
        except brace.CircuitOpen:
            assert ticket is None
            return
        assert ticket is not None
        assert entered
        if failed:
            error = Boom()
            assert completes(self.breaker.__aexit__(Boom, error, None))
            self.core.failure(ticket, now, 0.0)
        else:
            assert completes(self.breaker.__aexit__(None, None, None))
            if ticket == 0:
                self.core.closed_success(now)
            else:
                self.core.success(ticket, now, 0.0)

    @rule()
    def agree(self) -> None:
        now = self.clock()
        shell = self.breaker.statistics()
        core = self.core.statistics(now)
        assert shell.state is core.state
        for field in ("successes", "failures", "consecutive_failures", "window_calls"):
            assert getattr(shell, field) == getattr(core, field), field
        assert shell.failure_rate == core.failure_rate
        assert shell.opened_count == core.opened_count


TestBreakerShells = BreakerShellsMachine.TestCase
TestBreakerShells.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


LEVELS = st.sampled_from(list(MemoryLevel))


def admission_model(level: MemoryLevel, priority: int, shed: int, shedding: bool) -> str:
    """The guard's documented table."""
    if level == MemoryLevel.NORMAL:
        return "admit"
    if level == MemoryLevel.CRITICAL:
        return "reject"
    if priority < shed:
        return "admit"
    return "reject" if shedding else "queue"


@settings(max_examples=300, deadline=None)
@given(
    level=LEVELS,
    priority=st.integers(-50, 50),
    shed=st.integers(-50, 50),
    shedding=st.booleans(),
)
def test_memory_admission_shell_core_and_model_agree(
    level: MemoryLevel, priority: int, shed: int, shedding: bool
) -> None:
    """MemoryGuard.admit (the step inlined) answers as the core and as the table."""
    expected = admission_model(level, priority, shed, shedding)
    assert memory_admission(level, priority, shed, shedding) is MemoryAdmission(expected)
    usage = {MemoryLevel.NORMAL: 0, MemoryLevel.HIGH: 150, MemoryLevel.CRITICAL: 500}[level]
    guard = brace.MemoryGuard(
        100,
        critical=400,
        probe=lambda: usage,
        on_high="shed" if shedding else "queue",
        shed_priority=shed,
    )
    assert guard.level is level
    assert guard.admit(priority) is MemoryAdmission(expected)
