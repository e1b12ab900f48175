"""Retry planning and the Redis store's outage breaker are pure cores that agree with plain
models (no clock, no event loop)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brace._core.backoff import Backoff
from brace._core.budget import RetryBudgetCore
from brace._core.outage import OutageCore, ewma
from brace._core.retry import RetryStop, plan_retry, retry_sleep

RETRY_AFTERS = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.floats(-10, 100),
    st.just(math.nan),
    st.integers(-5, 100),
)


@settings(max_examples=300, deadline=None)
@given(
    number=st.integers(1, 6),
    attempts=st.integers(1, 6),
    retry_after=RETRY_AFTERS,
    elapsed=st.floats(0, 50),
    deadline=st.one_of(st.none(), st.floats(0.5, 60)),
    budget_room=st.one_of(st.none(), st.integers(0, 2)),
    sleeps=st.booleans(),
)
def test_plan_agrees_with_the_documented_order(
    number: int,
    attempts: int,
    retry_after: object,
    elapsed: float,
    deadline: float | None,
    budget_room: int | None,
    sleeps: bool,
) -> None:
    """Attempts, then the sleep (backoff raised to a numeric Retry-After), then the
    deadline, then the budget (charged only when it grants)."""
    backoff = Backoff.exponential(base=0.5, cap=8.0)
    budget = None
    if budget_room is not None:
        budget = RetryBudgetCore(ratio=0.0, min_per_second=budget_room / 10, window=10.0)
    plan = plan_retry(
        number,
        0.0,
        attempts=attempts,
        backoff=backoff,
        random=random.Random(1),
        retry_after=retry_after,
        elapsed=elapsed,
        deadline=deadline,
        budget=budget,
        now=0.0,
        sleeps=sleeps,
    )
    # the model
    if number >= attempts:
        assert plan is RetryStop.EXHAUSTED
        return
    delay = backoff.delay(number, 0.0, random.Random(1))
    sleep = delay
    if (
        type(retry_after) in (int, float)
        and not math.isnan(retry_after)  # type: ignore[arg-type]
        and retry_after > delay  # type: ignore[operator]
    ):
        sleep = float(retry_after)  # type: ignore[arg-type]
    if not sleeps:
        sleep = 0.0
    if deadline is not None and elapsed + sleep >= deadline:
        assert plan is RetryStop.DEADLINE
        assert budget is None or budget.granted == budget.refused == 0  # not asked
        return
    if budget_room == 0:
        assert plan is RetryStop.BUDGET
        assert budget is not None
        assert budget.refused == 1
        return
    assert plan == (sleep, delay)
    assert budget is None or budget.granted == 1


def test_retry_after_ignores_what_is_not_a_larger_number() -> None:
    """bool, NaN, strings and smaller numbers leave the backoff delay as it is."""
    assert retry_sleep(1.0, 3) == 3.0
    for ignored in (True, math.nan, "5", None, 0.5):
        assert retry_sleep(1.0, ignored) == 1.0


class OutageModel:
    """The store's outage rule spelt out: up, down until a time, or one probe out."""

    def __init__(self, recovery: float) -> None:
        self.recovery = recovery
        self.state = "up"
        self.until = 0.0

    def available(self, now: float) -> bool:
        return self.state == "up" or now >= self.until


@settings(max_examples=300, deadline=None)
@given(
    recovery=st.sampled_from([0.0, 0.5, 2.0]),
    steps=st.lists(
        st.tuples(st.sampled_from(["ok", "server", "call"]), st.sampled_from([0.0, 0.25, 1.0])),
        max_size=30,
    ),
)
def test_outage_agrees_with_its_model(recovery: float, steps: list[tuple[str, float]]) -> None:
    """A server failure keeps callers away for recovery_time; then one probe at a time."""
    core = OutageCore(recovery)
    model = OutageModel(recovery)
    now = 0.0
    for outcome, pause in steps:
        now += pause
        assert core.available(now) is model.available(now)
        if not core.available(now):
            continue
        probing = core.start(now)
        assert probing is (model.state != "up")
        if probing:  # the others keep away while it runs
            model.until = now + recovery
            assert not core.available(now) or recovery == 0.0
        if outcome == "ok":
            core.succeeded(now, now)
            model.state = "up"
        elif outcome == "server":
            core.server_failed(now)
            model.state, model.until = "down", now + recovery
        else:
            core.call_failed(probing, now)
            if probing:
                model.until = now
        assert core.up is (model.state == "up")


def test_latency_is_a_moving_average() -> None:
    """Each success moves the average ``alpha`` of the way to its latency."""
    core = OutageCore(1.0, latency_alpha=0.5)
    core.succeeded(0.0, 2.0)
    core.succeeded(0.0, 4.0)
    assert core.latency == pytest.approx(ewma(ewma(0.0, 2.0, 0.5), 4.0, 0.5)) == 2.5
