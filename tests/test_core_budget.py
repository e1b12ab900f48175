"""The pure retry budget against a reference model that keeps every timestamp."""

from __future__ import annotations

import math

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from brace._core._validate import MAX_RING
from brace._core.budget import EPSILON, RetryBudgetCore


class Model:
    """Every event as (time, kind) in a plain list; counts are recomputed by filtering."""

    def __init__(self, ratio: float, min_per_second: float, window: float, buckets: int) -> None:
        self.ratio = ratio
        self.floor = min_per_second * window
        self.width = window / buckets
        self.buckets = buckets
        self.events: list[tuple[float, str]] = []

    def in_window(self, now: float) -> tuple[int, int]:
        first_slot = math.floor(now / self.width) - self.buckets + 1
        kept = [kind for t, kind in self.events if math.floor(t / self.width) >= first_slot]
        return kept.count("request"), kept.count("retry")

    def record_request(self, now: float) -> None:
        self.events.append((now, "request"))

    def try_retry(self, now: float) -> bool:
        requests, retries = self.in_window(now)
        if retries + 1 > self.ratio * requests + self.floor + EPSILON:
            return False
        self.events.append((now, "retry"))
        return True


class BudgetMachine(RuleBasedStateMachine):
    """Drive core and model with the same operations at the same (non-decreasing) times."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.core: RetryBudgetCore | None = None
        self.model: Model | None = None

    @initialize(
        ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]),
        min_per_second=st.sampled_from([0.0, 0.1, 0.5, 2.0]),
        window=st.sampled_from([1.0, 3.0, 10.0]),
        buckets=st.integers(min_value=1, max_value=12),
        start=st.floats(min_value=0.0, max_value=1e6),
    )
    def configure(
        self, ratio: float, min_per_second: float, window: float, buckets: int, start: float
    ) -> None:
        self.core = RetryBudgetCore(ratio, min_per_second, window, buckets)
        self.model = Model(ratio, min_per_second, window, buckets)
        self.now = start

    @rule(dt=st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=25.0)))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(n=st.integers(min_value=1, max_value=20))
    def requests(self, n: int) -> None:
        assert self.core is not None
        assert self.model is not None
        for _ in range(n):
            self.core.record_request(self.now)
            self.model.record_request(self.now)

    @rule()
    def retry(self) -> None:
        assert self.core is not None
        assert self.model is not None
        granted = self.core.try_retry(self.now)
        assert granted == self.model.try_retry(self.now)
        if granted:
            requests, retries = self.model.in_window(self.now)
            assert retries <= self.model.ratio * requests + self.model.floor + EPSILON

    @invariant()
    @precondition(lambda self: self.core is not None)
    def counts_agree(self) -> None:
        assert self.core is not None
        assert self.model is not None
        assert self.core.counts(self.now) == self.model.in_window(self.now)
        requests, retries = self.model.in_window(self.now)
        room = self.model.ratio * requests + self.model.floor + EPSILON - retries
        assert self.core.available(self.now) == max(0, math.floor(room))


TestBudgetMachine = BudgetMachine.TestCase
TestBudgetMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_ratio_without_floor() -> None:
    """With no floor, 10 requests at ratio 0.2 allow exactly 2 retries."""
    core = RetryBudgetCore(ratio=0.2, min_per_second=0.0, window=10.0)
    for _ in range(10):
        core.record_request(0.0)
    assert [core.try_retry(1.0) for _ in range(3)] == [True, True, False]
    assert core.counts(1.0) == (10, 2)


def test_floor_allows_retries_without_traffic() -> None:
    """min_per_second * window retries are allowed even with no requests."""
    core = RetryBudgetCore(ratio=0.0, min_per_second=0.5, window=10.0)
    assert sum(core.try_retry(0.0) for _ in range(10)) == 5


def test_old_events_leave_the_window() -> None:
    """After a full window of silence the counts are back to zero and retries refill."""
    core = RetryBudgetCore(ratio=0.0, min_per_second=0.1, window=10.0)
    assert core.try_retry(0.0)
    assert not core.try_retry(5.0)
    assert core.counts(5.0) == (0, 1)
    assert core.counts(10.5) == (0, 0)
    assert core.try_retry(10.5)


def test_clock_going_backwards_stays_in_the_newest_slot() -> None:
    """An earlier time than seen before counts in the newest slot; nothing is lost."""
    core = RetryBudgetCore(ratio=1.0, min_per_second=0.0, window=10.0)
    core.record_request(100.0)
    core.record_request(50.0)
    assert core.counts(100.0) == (2, 0)


def test_memory_is_constant() -> None:
    """A million events keep the same two ring lists of `buckets` ints."""
    core = RetryBudgetCore(window=1.0, buckets=4)
    for i in range(100_000):
        core.record_request(i * 0.001)
        core.try_retry(i * 0.001)
    assert len(core._requests) == len(core._retries) == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"ratio": -0.1}, ValueError, "ratio"),
        ({"ratio": 1.5}, ValueError, "ratio"),
        ({"ratio": math.nan}, ValueError, "ratio"),
        ({"ratio": "0.2"}, TypeError, "ratio"),
        ({"min_per_second": -1}, ValueError, "min_per_second"),
        ({"window": 0}, ValueError, "window"),
        ({"window": math.inf}, ValueError, "window"),
        ({"buckets": 0}, ValueError, "buckets"),
        ({"buckets": 2.5}, TypeError, "buckets"),
        ({"buckets": MAX_RING + 1}, ValueError, "buckets"),  # allocated at once: bounded
    ],
)
def test_bad_configuration_names_the_parameter(
    kwargs: dict[str, object], error: type[Exception], name: str
) -> None:
    """Out-of-range values raise ValueError, wrong types TypeError, naming the parameter."""
    with pytest.raises(error, match=name):
        RetryBudgetCore(**kwargs)  # type: ignore[arg-type]
