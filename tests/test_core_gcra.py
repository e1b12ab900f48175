"""The GCRA token bucket core agrees with a plain continuous-refill token counter.

Exactness: every time is on a 1/64 s grid and every rate, period and interval is a power
of two, so all the core's floats (``tat``, ``interval``, ``tolerance``) are exact dyadic
numbers and the reference model, computed with ``Fraction``, decides exactly the same.
Decisions and ``remaining`` must agree exactly; the durations (``retry_after``,
``reset_after``) are compared to 1e-9 s, the core's ``EPSILON``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from brace import Decision
from brace._core.gcra import EPSILON, GCRA, TokenBucketCore

TOLERANCE = 1e-9


class BucketModel:
    """The textbook bucket: ``tokens = min(burst, tokens + elapsed * rate / per)``."""

    def __init__(self, rate: Fraction, per: Fraction, burst: int) -> None:
        self.rate = rate
        self.per = per
        self.burst = burst
        self.tokens = Fraction(burst)
        self.last: Fraction | None = None

    def refill(self, now: Fraction) -> None:
        if self.last is not None:
            self.tokens = min(
                Fraction(self.burst), self.tokens + (now - self.last) * self.rate / self.per
            )
        self.last = now

    def seconds_for(self, tokens: Fraction) -> Fraction:
        return tokens * self.per / self.rate

    def acquire(self, now: Fraction, cost: int) -> tuple[bool, int, Fraction, Fraction]:
        """(allowed, remaining, retry_after, reset_after), consuming when allowed."""
        self.refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return (
                True,
                math.floor(self.tokens),
                Fraction(0),
                self.seconds_for(self.burst - self.tokens),
            )
        retry = self.seconds_for(cost - self.tokens)
        return False, math.floor(self.tokens), retry, self.seconds_for(self.burst - self.tokens)

    def retry_after(self, now: Fraction, cost: int) -> Fraction:
        self.refill(now)
        return max(Fraction(0), self.seconds_for(cost - self.tokens))


def assert_agrees(
    decision: Decision, expected: tuple[bool, int, Fraction, Fraction], burst: int
) -> None:
    allowed, remaining, retry, reset = expected
    assert decision.allowed is allowed
    assert decision.limit == burst
    assert decision.remaining == remaining
    assert decision.retry_after == pytest.approx(float(retry), abs=TOLERANCE)
    assert decision.reset_after == pytest.approx(float(reset), abs=TOLERANCE)


RATES = st.sampled_from(
    [Fraction(1, 4), Fraction(1, 2), Fraction(1), Fraction(2), Fraction(8), Fraction(16)]
)
PERIODS = st.sampled_from([Fraction(1, 2), Fraction(1), Fraction(2), Fraction(4)])


class GCRAMachine(RuleBasedStateMachine):
    """Drive ``TokenBucketCore`` and the model with the same operations and times."""

    @initialize(
        rate=RATES,
        per=PERIODS,
        burst=st.integers(1, 8),
        start=st.integers(0, 64 * 1000),
    )
    def setup(self, rate: Fraction, per: Fraction, burst: int, start: int) -> None:
        self.policy = GCRA(float(rate), float(per), burst)
        self.core = TokenBucketCore(self.policy)
        self.model = BucketModel(rate, per, burst)
        self.burst = burst
        self.now = Fraction(start, 64)

    @rule(ticks=st.integers(0, 400))
    def advance(self, ticks: int) -> None:
        self.now += Fraction(ticks, 64)

    @rule(data=st.data())
    def try_acquire(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(0, self.burst), label="cost")
        decision = self.core.try_acquire(float(self.now), cost)
        assert_agrees(decision, self.model.acquire(self.now, cost), self.burst)

    @rule(data=st.data())
    def grant(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(0, self.burst), label="cost")
        decision = self.core.grant(float(self.now), cost)
        expected = self.model.acquire(self.now, cost)
        if expected[0]:
            assert decision is not None
            assert_agrees(decision, expected, self.burst)
        else:
            assert decision is None

    @rule(data=st.data())
    def admit(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(0, self.burst), label="cost")
        assert self.core.admit(float(self.now), cost) is self.model.acquire(self.now, cost)[0]

    @rule(data=st.data())
    def retry_after(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(0, self.burst), label="cost")
        expected = self.model.retry_after(self.now, cost)
        assert self.core.retry_after(float(self.now), cost) == pytest.approx(
            float(expected), abs=TOLERANCE
        )

    @rule(data=st.data(), queued=st.integers(0, 30))
    def behind(self, data: st.DataObject, queued: int) -> None:
        cost = data.draw(st.integers(0, self.burst), label="cost")
        decision = self.core.behind(float(self.now), cost, queued)
        self.model.refill(self.now)
        left = self.model.tokens - queued
        assert decision.allowed is (cost == 0)
        assert decision.remaining == max(0, math.floor(left))
        expected = (
            Fraction(0) if cost == 0 else max(Fraction(0), self.model.seconds_for(cost - left))
        )
        assert decision.retry_after == pytest.approx(float(expected), abs=TOLERANCE)

    @invariant()
    def available_and_at_rest_agree(self) -> None:
        if not hasattr(self, "core"):
            return
        self.model.refill(self.now)
        now = float(self.now)
        assert self.core.available(now) == pytest.approx(float(self.model.tokens), abs=TOLERANCE)
        assert self.core.at_rest(now) is (self.model.tokens == self.burst)

    @rule(data=st.data())
    def policy_decide_is_pure(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(0, self.burst), label="cost")
        tat = self.core.tat
        first = self.policy.decide(tat, float(self.now), cost)
        assert self.policy.decide(tat, float(self.now), cost) == first
        assert self.core.tat == tat


TestGCRAAgainstModel = GCRAMachine.TestCase
TestGCRAAgainstModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.001, 1e5),
    per=st.floats(0.001, 1e4),
    burst=st.integers(1, 1000),
    start=st.floats(0, 1e7),
)
def test_full_bucket_admits_burst_then_refuses(
    rate: float, per: float, burst: int, start: float
) -> None:
    """Whatever the (non-dyadic) parameters, a fresh bucket admits exactly ``burst`` at once.

    The domain is where the core's absolute ``EPSILON`` is meant to hold: clock readings up
    to 1e7 s (116 days of uptime) and one token every 0.1 ms to every hour, so that the
    rounding accumulated in ``tat`` over a burst of 1000 stays under a microsecond, and a
    microsecond is under a hundredth of a token.
    """
    assume(1e-4 <= per / rate <= 3600)
    core = TokenBucketCore(GCRA(rate, per, burst))
    for taken in range(burst):
        decision = core.try_acquire(start)
        assert decision.allowed, taken
        assert decision.remaining == burst - taken - 1
    refused = core.try_acquire(start)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(per / rate, abs=EPSILON)
    assert core.admit(start + refused.retry_after)


def test_default_burst_is_the_rate_rounded_down() -> None:
    """Without ``burst`` the capacity is ``floor(rate)``, at least 1."""
    assert GCRA(10, 60.0).burst == 10
    assert GCRA(2.5).burst == 2
    assert GCRA(0.5).burst == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"rate": 0}, ValueError, "rate"),
        ({"rate": -1.0}, ValueError, "rate"),
        ({"rate": math.inf}, ValueError, "rate"),
        ({"rate": "10"}, TypeError, "rate"),
        ({"rate": True}, TypeError, "rate"),
        ({"rate": 1, "per": 0}, ValueError, "per"),
        ({"rate": 1, "per": math.nan}, ValueError, "per"),
        ({"rate": 1, "per": None}, TypeError, "per"),
        ({"rate": 1, "burst": 0}, ValueError, "burst"),
        ({"rate": 1, "burst": 1.5}, TypeError, "burst"),
    ],
)
def test_bad_parameters_name_themselves(
    kwargs: dict[str, object], error: type[Exception], name: str
) -> None:
    """A bad parameter raises the right error type with a message naming it."""
    with pytest.raises(error, match=name):
        GCRA(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cost", "error"),
    [(-1, ValueError), (4, ValueError), (1.0, TypeError), (True, TypeError), ("1", TypeError)],
)
def test_check_cost_refuses_what_could_never_be_admitted(
    cost: object, error: type[Exception]
) -> None:
    """A cost that is not an int in ``0..burst`` is refused with a message naming ``cost``."""
    with pytest.raises(error, match="cost"):
        GCRA(1, burst=3).check_cost(cost)
    assert GCRA(1, burst=3).check_cost(3) == 3
