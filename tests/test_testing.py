"""brace.testing.FakeClock: a clock that moves only forward and only when told."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brace.testing import FakeClock


def test_starts_where_told() -> None:
    """A new clock reads its start value, 0.0 by default."""
    assert FakeClock()() == 0.0
    assert FakeClock(12.5)() == 12.5
    assert FakeClock(3).now == 3.0


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=50))
def test_advance_accumulates(steps: list[float]) -> None:
    """advance() moves the reading by exactly the sum of the steps and never backwards."""
    clock = FakeClock()
    previous = clock()
    for step in steps:
        clock.advance(step)
        assert clock() >= previous
        previous = clock()
    assert clock() == pytest.approx(math.fsum(steps))


def test_refuses_to_go_backwards() -> None:
    """A negative advance or an earlier set() is a ValueError, and the reading is unchanged."""
    clock = FakeClock(10.0)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-0.001)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(9.0)
    assert clock() == 10.0
    clock.set(10.0)
    clock.set(11.0)
    assert clock() == 11.0


@pytest.mark.parametrize(
    "bad",
    [10**400, -(10**400), 2**1024, 10**5000],
    ids=["10**400", "-10**400", "2**1024", "10**5000"],
)
def test_huge_ints_are_named_not_overflow(bad: int) -> None:
    """An int beyond the largest float is a ValueError naming the parameter and its size."""
    with pytest.raises(ValueError, match=r"start must be finite .*an int of \d+ bits"):
        FakeClock(bad)
    with pytest.raises(ValueError, match="seconds must be finite"):
        FakeClock().advance(bad)
    with pytest.raises(ValueError, match="now must be finite"):
        FakeClock().set(bad)


def test_advancing_past_the_largest_float_is_refused() -> None:
    """A step that would make the reading infinite is refused and leaves the clock as it was."""
    clock = FakeClock(1e308)
    with pytest.raises(ValueError, match="seconds must keep the clock finite"):
        clock.advance(1e308)
    assert clock() == 1e308


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_rejects_non_finite(bad: float) -> None:
    """NaN and infinities are refused, naming the parameter."""
    with pytest.raises(ValueError, match="seconds must be finite"):
        FakeClock().advance(bad)
    with pytest.raises(ValueError, match="start must be finite"):
        FakeClock(bad)


@pytest.mark.parametrize("bad", ["1", None, True])
def test_rejects_non_numbers(bad: object) -> None:
    """Strings, None and bools are a TypeError naming the parameter."""
    with pytest.raises(TypeError, match="seconds must be a number"):
        FakeClock().advance(bad)  # type: ignore[arg-type]


def test_repr_shows_the_time() -> None:
    """The repr names the current reading."""
    assert repr(FakeClock(2.0)) == "FakeClock(now=2.0)"
