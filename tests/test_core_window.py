"""The sliding-window cores agree with plain reference models, and the counter's bounds hold.

Exactness: every time is on a 1/64 s grid and every window a power of two, so offsets and
weights (``previous * (1 - offset / window)``) are exact dyadic floats and the models,
computed with ``Fraction``, decide exactly as the cores do: decisions and ``remaining``
must agree exactly; durations are compared to 1e-9 s.
"""

from __future__ import annotations

import math
from collections import defaultdict
from fractions import Fraction

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from brace import Decision
from brace._core.window import SlidingLog, SlidingWindowCounter, SlidingWindowCounterCore

TOLERANCE = 1e-9

WINDOWS = st.sampled_from([Fraction(1, 4), Fraction(1, 2), Fraction(1), Fraction(2), Fraction(8)])


class CounterModel:
    """The two-window counter spelt out: an explicit count per aligned window."""

    def __init__(self, limit: int, window: Fraction) -> None:
        self.limit = limit
        self.window = window
        self.counts: defaultdict[int, int] = defaultdict(int)
        self.admitted: list[tuple[Fraction, int]] = []  # the history, for the bounds

    def index(self, now: Fraction) -> int:
        return math.floor(now / self.window)

    def offset(self, now: Fraction) -> Fraction:
        return now - self.index(now) * self.window

    def estimate(self, now: Fraction) -> Fraction:
        index = self.index(now)
        weight = 1 - self.offset(now) / self.window
        return self.counts[index - 1] * weight + self.counts[index]

    def acquire(self, now: Fraction, cost: int) -> tuple[bool, int, Fraction, Fraction]:
        """(allowed, remaining, retry_after, reset_after), counting ``cost`` when allowed."""
        estimate = self.estimate(now)
        if estimate + cost <= self.limit:
            self.counts[self.index(now)] += cost
            if cost:
                self.admitted.append((now, cost))
            left = self.limit - estimate - cost
            return True, max(0, math.floor(left)), Fraction(0), self.reset_after(now)
        left = self.limit - estimate
        return False, max(0, math.floor(left)), self.retry_after(now, cost), self.reset_after(now)

    def retry_after(self, now: Fraction, cost: int) -> Fraction:
        """The least wait after which ``cost`` fits, if nothing else is admitted.

        The estimate is linear within each aligned window: ``a * (1 - e / window) + b``
        with (a, b) = (previous, current) in this window, (current, 0) in the next and
        (0, 0) after. Solve each piece for the least ``e`` in turn.
        """
        index = self.index(now)
        pieces = [
            (self.counts[index - 1], self.counts[index], self.offset(now)),
            (self.counts[index], 0, Fraction(0)),
            (0, 0, Fraction(0)),
        ]
        for step, (a, b, start) in enumerate(pieces):
            # a * (1 - e / window) + b + cost <= limit, for start <= e < window
            room = self.limit - b - cost
            if a * (1 - start / self.window) <= room:
                e = start
            elif a > 0 and room >= 0:
                e = (1 - Fraction(room) / a) * self.window
                if e >= self.window:
                    continue
            else:
                continue
            return (index + step) * self.window + e - now
        raise AssertionError("unreachable: the estimate is 0 two windows on")

    def reset_after(self, now: Fraction) -> Fraction:
        index = self.index(now)
        if self.counts[index]:
            return (index + 2) * self.window - now
        if self.counts[index - 1]:
            return (index + 1) * self.window - now
        return Fraction(0)

    def logged(self, now: Fraction) -> int:
        """What the exact sliding log, fed this same admitted history, holds at ``now``."""
        return sum(cost for stamp, cost in self.admitted if stamp > now - self.window)


def assert_agrees(
    decision: Decision, expected: tuple[bool, int, Fraction, Fraction], limit: int
) -> None:
    allowed, remaining, retry, reset = expected
    assert decision.allowed is allowed
    assert decision.limit == limit
    assert decision.remaining == remaining
    assert decision.retry_after == pytest.approx(float(retry), abs=TOLERANCE)
    assert decision.reset_after == pytest.approx(float(reset), abs=TOLERANCE)


class CounterMachine(RuleBasedStateMachine):
    """Drive the counter core and its model with the same operations and times."""

    @initialize(limit=st.integers(1, 12), window=WINDOWS, start=st.integers(0, 64 * 1000))
    def setup(self, limit: int, window: Fraction, start: int) -> None:
        self.policy = SlidingWindowCounter(limit, float(window))
        self.core = SlidingWindowCounterCore(self.policy)
        self.model = CounterModel(limit, window)
        self.limit = limit
        self.window = window
        self.now = Fraction(start, 64)

    @rule(ticks=st.integers(0, 200))
    def advance(self, ticks: int) -> None:
        self.now += Fraction(ticks, 64)

    @rule(data=st.data())
    def try_acquire(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(0, self.limit), label="cost")
        # What must hold, checked before the model counts the request:
        log_would_admit = self.model.logged(self.now) + cost <= self.limit
        previous_empty = self.model.counts[self.model.index(self.now) - 1] == 0
        decision = self.core.try_acquire(float(self.now), cost)
        assert_agrees(decision, self.model.acquire(self.now, cost), self.limit)
        if previous_empty:
            # No hits in the previous aligned window: the estimate is the exact count.
            assert decision.allowed is log_would_admit
        if decision.allowed and cost:
            self.check_bounds(self.now)

    def check_bounds(self, now: Fraction) -> None:
        """The counter's approximation bounds, right after an admission at ``now``."""
        model = self.model
        index = model.index(now)
        window = self.window
        aligned = sum(c for stamp, c in model.admitted if model.index(stamp) == index)
        assert aligned <= self.limit
        # The sliding window ending now: at most limit + previous * offset / window, which
        # is < 2 * limit. The most any window-long interval admits is reached by one ending
        # at an admission, so checking here covers every interval.
        previous = model.counts[index - 1]
        exact = model.logged(now)
        assert exact <= self.limit + previous * model.offset(now) / window
        assert exact <= 2 * self.limit - 1

    @rule(data=st.data())
    def grant_or_admit(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(0, self.limit), label="cost")
        build = data.draw(st.booleans(), label="build a decision")
        expected = self.model.acquire(self.now, cost)
        if build:
            decision = self.core.grant(float(self.now), cost)
            if expected[0]:
                assert decision is not None
                assert_agrees(decision, expected, self.limit)
            else:
                assert decision is None
        else:
            assert self.core.admit(float(self.now), cost) is expected[0]
        if expected[0] and cost:
            self.check_bounds(self.now)

    @rule(data=st.data())
    def retry_after(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(0, self.limit), label="cost")
        expected = self.model.retry_after(self.now, cost)
        actual = self.core.retry_after(float(self.now), cost)
        assert actual == pytest.approx(float(expected), abs=TOLERANCE)

    @rule(data=st.data(), queued=st.integers(0, 30))
    def behind(self, data: st.DataObject, queued: int) -> None:
        cost = data.draw(st.integers(0, self.limit), label="cost")
        decision = self.core.behind(float(self.now), cost, queued)
        assert decision.allowed is (cost == 0)
        left = self.limit - self.model.estimate(self.now)
        assert decision.remaining == max(0, math.floor(left) - queued)
        if cost:
            # Never less than this request's own wait with nobody ahead: an honest "not yet".
            alone = self.model.retry_after(self.now, cost)
            assert decision.retry_after >= float(alone) - TOLERANCE

    @invariant()
    def remaining_and_at_rest_agree(self) -> None:
        if not hasattr(self, "core"):
            return
        now = float(self.now)
        left = self.limit - self.model.estimate(self.now)
        assert self.core.remaining(now) == max(0, math.floor(left))
        assert self.core.at_rest(now) is (self.model.reset_after(self.now) == 0)
        assert self.policy.at_rest(self.core.state, now) is self.core.at_rest(now)


TestCounterAgainstModel = CounterMachine.TestCase
TestCounterAgainstModel.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


class LogModel:
    """The exact sliding log as a plain list of (time, cost) of admitted requests."""

    def __init__(self, limit: int, window: Fraction) -> None:
        self.limit = limit
        self.window = window
        self.entries: list[tuple[Fraction, int]] = []

    def live(self, now: Fraction) -> list[tuple[Fraction, int]]:
        return [(stamp, cost) for stamp, cost in self.entries if stamp > now - self.window]

    def used(self, now: Fraction) -> int:
        return sum(cost for _, cost in self.live(now))

    def acquire(self, now: Fraction, cost: int) -> tuple[bool, int, Fraction, Fraction]:
        used = self.used(now)
        if used + cost <= self.limit:
            if cost:
                self.entries.append((now, cost))
            return True, self.limit - used - cost, Fraction(0), self.reset_after(now)
        return False, self.limit - used, self.retry_after(now, cost), self.reset_after(now)

    def retry_after(self, now: Fraction, cost: int) -> Fraction:
        """The first moment an entry's expiry leaves room for ``cost``."""
        if self.used(now) + cost <= self.limit:
            return Fraction(0)
        for stamp, _ in self.live(now):
            later = stamp + self.window
            if self.used(later) + cost <= self.limit:
                return later - now
        raise AssertionError("unreachable: every entry expires")

    def reset_after(self, now: Fraction) -> Fraction:
        live = self.live(now)
        return max(stamp for stamp, _ in live) + self.window - now if live else Fraction(0)


class LogMachine(RuleBasedStateMachine):
    """Drive the sliding log core and its model with the same operations and times."""

    @initialize(limit=st.integers(1, 12), window=WINDOWS, start=st.integers(0, 64 * 1000))
    def setup(self, limit: int, window: Fraction, start: int) -> None:
        self.core = SlidingLog(limit, float(window)).core()
        self.model = LogModel(limit, window)
        self.limit = limit
        self.now = Fraction(start, 64)

    @rule(ticks=st.integers(0, 200))
    def advance(self, ticks: int) -> None:
        self.now += Fraction(ticks, 64)

    @rule(data=st.data())
    def try_acquire(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(0, self.limit), label="cost")
        decision = self.core.try_acquire(float(self.now), cost)
        assert_agrees(decision, self.model.acquire(self.now, cost), self.limit)

    @rule(data=st.data())
    def grant_or_admit(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(0, self.limit), label="cost")
        build = data.draw(st.booleans(), label="build a decision")
        expected = self.model.acquire(self.now, cost)
        if build:
            decision = self.core.grant(float(self.now), cost)
            if expected[0]:
                assert decision is not None
                assert_agrees(decision, expected, self.limit)
            else:
                assert decision is None
        else:
            assert self.core.admit(float(self.now), cost) is expected[0]

    @rule(data=st.data())
    def retry_after(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(0, self.limit), label="cost")
        expected = self.model.retry_after(self.now, cost)
        actual = self.core.retry_after(float(self.now), cost)
        assert actual == pytest.approx(float(expected), abs=TOLERANCE)

    @rule(data=st.data(), queued=st.integers(0, 30))
    def behind(self, data: st.DataObject, queued: int) -> None:
        cost = data.draw(st.integers(0, self.limit), label="cost")
        decision = self.core.behind(float(self.now), cost, queued)
        assert decision.allowed is (cost == 0)
        assert decision.remaining == max(0, self.limit - self.model.used(self.now) - queued)
        if cost:
            alone = self.model.retry_after(self.now, cost)
            assert decision.retry_after >= float(alone) - TOLERANCE

    @invariant()
    def remaining_and_at_rest_agree(self) -> None:
        if not hasattr(self, "core"):
            return
        now = float(self.now)
        assert self.core.remaining(now) == self.limit - self.model.used(self.now)
        assert self.core.at_rest(now) is (not self.model.live(self.now))
        assert len(self.core.entries) <= self.limit


TestLogAgainstModel = LogMachine.TestCase
TestLogAgainstModel.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


def test_counter_can_admit_almost_twice_the_limit_in_one_sliding_window() -> None:
    """The ``2 * limit`` bound is nearly reached: hits packed at a window's end count fully."""
    limit, window = 10, 1.0
    core = SlidingWindowCounterCore(SlidingWindowCounter(limit, window))
    assert all(core.admit(0.99) for _ in range(limit))  # all at the end of window 0
    # In window 1 at offset e the estimate is 10 * (1 - e) + current: by e = 0.9 it admits 9.
    admitted = sum(core.admit(1.0 + k / 10) for k in range(1, 10) for _ in range(limit))
    assert admitted == 9
    # The sliding window (0.9, 1.9] then holds 10 + 9 = 19 = 2 * limit - 1 admissions.


def test_counter_is_stricter_than_the_log_after_early_hits() -> None:
    """Hits early in the previous window are counted as spread evenly: the counter refuses."""
    core = SlidingWindowCounterCore(SlidingWindowCounter(4, 1.0))
    assert all(core.admit(0.0) for _ in range(4))
    # At 1.5 the exact log holds nothing (every hit is older than 1 s), the estimate 2.
    assert core.retry_after(1.5, 4) == pytest.approx(0.5)
    assert not core.admit(1.5, 4)
    assert core.admit(1.5, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"limit": 0, "window": 1.0}, ValueError, "limit"),
        ({"limit": 1.5, "window": 1.0}, TypeError, "limit"),
        ({"limit": True, "window": 1.0}, TypeError, "limit"),
        ({"limit": 1, "window": 0}, ValueError, "window"),
        ({"limit": 1, "window": -2.0}, ValueError, "window"),
        ({"limit": 1, "window": math.inf}, ValueError, "window"),
        ({"limit": 1, "window": "1"}, TypeError, "window"),
    ],
)
@pytest.mark.parametrize("kind", [SlidingWindowCounter, SlidingLog])
def test_bad_parameters_name_themselves(
    kind: type[SlidingWindowCounter | SlidingLog],
    kwargs: dict[str, object],
    error: type[Exception],
    name: str,
) -> None:
    """A bad parameter raises the right error type with a message naming it."""
    with pytest.raises(error, match=name):
        kind(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", [SlidingWindowCounter, SlidingLog])
def test_cost_above_the_limit_is_refused_at_once(
    kind: type[SlidingWindowCounter | SlidingLog],
) -> None:
    """A cost above the limit could never be admitted: ``check_cost`` says so, naming it."""
    policy = kind(3, 1.0)
    with pytest.raises(ValueError, match="cost"):
        policy.check_cost(4)
    with pytest.raises(TypeError, match="cost"):
        policy.check_cost(1.0)
    assert policy.check_cost(0) == 0
