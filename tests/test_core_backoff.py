"""The pure backoff schedules: formulas, bounds, caps, monotonicity and validation."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brace import Backoff
from brace._core.backoff import as_backoff

bases = st.floats(min_value=0.001, max_value=10.0)
factors = st.floats(min_value=1.0, max_value=10.0)
attempts = st.integers(min_value=1, max_value=2_000)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


class Fixed:
    """A random source that always returns the same value."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


LOW = Fixed(0.0)
HIGH = Fixed(math.nextafter(1.0, 0.0))


@st.composite
def base_and_cap(draw: st.DrawFn) -> tuple[float, float]:
    base = draw(bases)
    cap = base + draw(st.floats(min_value=0.0, max_value=100.0))
    return base, cap


# -- the formulas -----------------------------------------------------------------------


def test_constant_and_linear_formulas() -> None:
    """constant(d) is always d; linear(start, step) is start + step * (attempt - 1)."""
    rng = random.Random(0)
    assert [Backoff.constant(0.5).delay(n, 0.0, rng) for n in (1, 2, 9)] == [0.5, 0.5, 0.5]
    assert [Backoff.linear(1.0, 0.5).delay(n, 0.0, rng) for n in (1, 2, 3)] == [1.0, 1.5, 2.0]


@given(base_and_cap(), factors, attempts)
def test_exponential_is_min_of_cap_and_geometric(
    bc: tuple[float, float], factor: float, n: int
) -> None:
    """exponential(base, factor, cap) is min(cap, base * factor ** (n - 1)), never above cap."""
    base, cap = bc
    delay = Backoff.exponential(base, factor=factor, cap=cap).delay(n, 0.0, LOW)
    try:
        expected = min(cap, base * factor ** (n - 1))
    except OverflowError:
        expected = cap
    assert delay == pytest.approx(expected)
    assert base <= delay <= cap


@given(base_and_cap(), factors, attempts, st.floats(min_value=0.0, max_value=1.0))
def test_exponential_min_is_a_floor(
    bc: tuple[float, float], factor: float, n: int, share: float
) -> None:
    """exponential(..., min=m) is max(m, min(cap, base * factor ** (n - 1))), within [m, cap]."""
    base, cap = bc
    floor = share * cap
    delay = Backoff.exponential(base, factor=factor, cap=cap, min=floor).delay(n, 0.0, LOW)
    try:
        expected = max(floor, min(cap, base * factor ** (n - 1)))
    except OverflowError:
        expected = cap
    assert delay == pytest.approx(expected)
    assert floor <= delay <= cap


@given(
    st.integers(1, 100).map(lambda k: k / 10),
    st.integers(0, 100).map(lambda k: k / 10),
    st.integers(1, 64),
)
def test_exponential_min_agrees_with_tenacity(multiplier: float, floor: float, n: int) -> None:
    """The floor is tenacity's wait_exponential(min=...): the same delay on every attempt."""
    tenacity = pytest.importorskip("tenacity")
    cap = 60.0
    floor = min(floor, cap)
    theirs = tenacity.wait_exponential(multiplier=multiplier, min=floor, max=cap, exp_base=2)
    state = tenacity.RetryCallState(None, None, (), {})
    state.attempt_number = n
    ours = Backoff.exponential(base=multiplier, factor=2, cap=cap, min=floor)
    assert ours.delay(n, 0.0, LOW) == pytest.approx(theirs(state))


def test_exponential_huge_attempt_does_not_overflow() -> None:
    """A very late attempt gets the cap rather than an OverflowError."""
    assert Backoff.exponential(0.1, factor=2, cap=10.0).delay(100_000, 0.0, LOW) == 10.0


@given(base_and_cap(), factors, attempts, seeds)
def test_full_jitter_within_zero_and_the_exponential(
    bc: tuple[float, float], factor: float, n: int, seed: int
) -> None:
    """Full jitter draws from [0, exponential delay]."""
    base, cap = bc
    ceiling = Backoff.exponential(base, factor=factor, cap=cap).delay(n, 0.0, LOW)
    delay = Backoff.full_jitter(base, factor=factor, cap=cap).delay(n, 0.0, random.Random(seed))
    assert 0.0 <= delay <= ceiling


@given(
    st.floats(min_value=0.0, max_value=100.0),
    st.floats(min_value=0.0, max_value=1.0),
    seeds,
)
def test_with_jitter_bounds(delay: float, fraction: float, seed: int) -> None:
    """with_jitter(f) draws from [(1 - f) * d, d]; f = 0 leaves the delay alone."""
    jittered = Backoff.constant(delay).with_jitter(fraction).delay(1, 0.0, random.Random(seed))
    assert (1 - fraction) * delay - 1e-9 <= jittered <= delay
    assert Backoff.constant(delay).with_jitter(0.0).delay(1, 0.0, random.Random(seed)) == delay


@given(base_and_cap(), seeds, st.integers(min_value=1, max_value=60))
def test_decorrelated_jitter_chain_stays_within_base_and_cap(
    bc: tuple[float, float], seed: int, steps: int
) -> None:
    """Fed its own previous delay, decorrelated jitter stays in [base, min(cap, 3 * prev)]."""
    base, cap = bc
    schedule = Backoff.decorrelated_jitter(base, cap)
    rng = random.Random(seed)
    previous = 0.0
    for n in range(1, steps + 1):
        delay = schedule.delay(n, previous, rng)
        assert base <= delay <= cap
        assert delay <= max(3 * previous, 3 * base) + 1e-9
        previous = delay


@given(base_and_cap())
def test_decorrelated_jitter_extremes(bc: tuple[float, float]) -> None:
    """The lowest draw is base, the highest min(cap, 3 * max(previous, base))."""
    base, cap = bc
    schedule = Backoff.decorrelated_jitter(base, cap)
    assert schedule.delay(1, 0.0, LOW) == base
    assert schedule.delay(1, 0.0, HIGH) == pytest.approx(min(cap, 3 * base))
    assert schedule.delay(5, 2 * cap, HIGH) == cap


def test_default_factory_arguments() -> None:
    """exponential() defaults to 0.1 s doubling up to 10 s."""
    schedule = Backoff.exponential()
    assert [schedule.delay(n, 0.0, LOW) for n in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.4])
    assert schedule.delay(50, 0.0, LOW) == 10.0


# -- combinators ------------------------------------------------------------------------


def test_sum_capped_and_callable() -> None:
    """+ adds delays, capped() clips them, and a plain callable works as a schedule."""
    schedule = Backoff.constant(1.0) + Backoff.linear(0.0, 2.0)
    assert [schedule.delay(n, 0.0, LOW) for n in (1, 2, 3)] == [1.0, 3.0, 5.0]
    assert [schedule.capped(4.0).delay(n, 0.0, LOW) for n in (1, 2, 3)] == [1.0, 3.0, 4.0]
    with_function = Backoff.constant(1.0) + (lambda n: n * 10.0)
    assert with_function.delay(2, 0.0, LOW) == 21.0
    reversed_sum = (lambda n: 0.5) + Backoff.constant(1.0)
    assert reversed_sum.delay(1, 0.0, LOW) == 1.5
    assert sum([Backoff.constant(1.0), Backoff.constant(2.0)]).delay(1, 0.0, LOW) == 3.0  # type: ignore[union-attr]
    assert as_backoff(lambda n: 2.0 * n).delay(3, 0.0, LOW) == 6.0


@st.composite
def deterministic_schedules(draw: st.DrawFn, depth: int = 3) -> Backoff:
    """Trees of constant / linear / exponential joined by + and capped()."""
    leaf = st.one_of(
        st.floats(0.0, 5.0).map(Backoff.constant),
        st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 5.0)).map(lambda a: Backoff.linear(*a)),
        st.tuples(bases, factors, st.floats(0.0, 50.0)).map(
            lambda a: Backoff.exponential(a[0], factor=a[1], cap=a[0] + a[2])
        ),
    )
    if depth == 0 or draw(st.booleans()):
        return draw(leaf)
    left = draw(deterministic_schedules(depth - 1))
    if draw(st.booleans()):
        return left.capped(draw(st.floats(0.0, 20.0)))
    return left + draw(deterministic_schedules(depth - 1))


@given(deterministic_schedules(), st.integers(min_value=1, max_value=200))
def test_monotonic_schedules_never_decrease(schedule: Backoff, n: int) -> None:
    """Constant, linear, exponential and their sums and caps never shrink with the attempt."""
    assert schedule.monotonic
    assert schedule.delay(n + 1, 0.0, LOW) >= schedule.delay(n, 0.0, LOW) >= 0.0


def test_jittered_schedules_are_not_promised_monotonic() -> None:
    """Only deterministic schedules claim monotonicity."""
    assert not Backoff.full_jitter().monotonic
    assert not Backoff.decorrelated_jitter().monotonic
    assert not (Backoff.constant(1.0) + Backoff.decorrelated_jitter()).monotonic
    assert Backoff.exponential().capped(1.0).monotonic


def test_reprs_read_like_the_constructors() -> None:
    """repr shows how the schedule was built."""
    assert repr(Backoff.constant(1.0).capped(0.5)) == "Backoff.constant(1.0).capped(0.5)"
    assert "decorrelated_jitter" in repr(Backoff.decorrelated_jitter())
    assert repr(Backoff.exponential(1.0, factor=2.0, cap=8.0, min=3.0)) == (
        "Backoff.exponential(base=1.0, factor=2.0, cap=8.0, min=3.0)"
    )


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "name"),
    [
        (lambda: Backoff.constant(-1), ValueError, "delay"),
        (lambda: Backoff.constant(math.nan), ValueError, "delay"),
        (lambda: Backoff.constant("1"), TypeError, "delay"),  # type: ignore[arg-type]
        (lambda: Backoff.linear(-1, 1), ValueError, "start"),
        (lambda: Backoff.linear(0, -1), ValueError, "step"),
        (lambda: Backoff.exponential(base=0), ValueError, "base"),
        (lambda: Backoff.exponential(factor=0.5), ValueError, "factor"),
        (lambda: Backoff.exponential(base=1.0, cap=0.5), ValueError, "cap"),
        (lambda: Backoff.exponential(cap=True), TypeError, "cap"),
        (lambda: Backoff.exponential(min=-0.5), ValueError, "min"),
        (lambda: Backoff.exponential(cap=1.0, min=2.0), ValueError, "min"),
        (lambda: Backoff.exponential(min=math.inf), ValueError, "min"),
        (lambda: Backoff.exponential(min=10**400), ValueError, "min"),
        (lambda: Backoff.exponential(min="1"), TypeError, "min"),  # type: ignore[arg-type]
        (lambda: Backoff.decorrelated_jitter(base=-1), ValueError, "base"),
        (lambda: Backoff.decorrelated_jitter(base=2, cap=1), ValueError, "cap"),
        (lambda: Backoff.full_jitter(base=1, cap=0.1), ValueError, "cap"),
        (lambda: Backoff.constant(1).with_jitter(1.5), ValueError, "fraction"),
        (lambda: Backoff.constant(1).capped(-1), ValueError, "maximum"),
        (lambda: Backoff.constant(1) + "x", TypeError, "other"),  # type: ignore[operator]
        (lambda: as_backoff(3), TypeError, "backoff"),
    ],
)
def test_bad_configuration_names_the_parameter(
    build: object, error: type[Exception], name: str
) -> None:
    """Out-of-range values raise ValueError, wrong types TypeError, naming the parameter."""
    with pytest.raises(error, match=name):
        build()  # type: ignore[operator]


def test_callable_returning_garbage_is_refused() -> None:
    """A backoff function returning a negative, infinite or non-number delay is an error."""
    with pytest.raises(ValueError, match="finite number >= 0"):
        as_backoff(lambda n: -1.0).delay(1, 0.0, LOW)
    with pytest.raises(ValueError, match="finite number >= 0"):
        as_backoff(lambda n: math.inf).delay(1, 0.0, LOW)
    with pytest.raises(TypeError, match="number of seconds"):
        as_backoff(lambda n: "1").delay(1, 0.0, LOW)
