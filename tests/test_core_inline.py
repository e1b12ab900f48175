"""The inliner that generates the shells' fast paths from the cores' steps: it refuses a
step it could not inline exactly, and the inlined function computes what the calls do."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brace._core._inline import inline_steps, step
from brace._core.gcra import gcra_step


def test_steps_have_one_return_at_the_end() -> None:
    """A step with an early return, or one that assigns a parameter, is refused."""
    with pytest.raises(TypeError, match="one return"):

        @step
        def early(x: int) -> int:
            if x:
                return 1
            return 0

    with pytest.raises(TypeError, match="assign its parameters"):

        @step
        def assigns(x: int) -> int:
            x += 1
            return x


def test_a_function_with_nothing_to_inline_is_kept() -> None:
    """inline_steps on a function that assigns no step's result returns it as it is (as
    when the cores' source cannot be read: the calls stay, the decisions are the same)."""

    def plain(x: int) -> int:
        return x

    assert inline_steps(plain) is plain


def test_a_step_reading_a_name_the_caller_lacks_is_refused() -> None:
    """A step's module-level names must be the same objects in the caller's module."""

    @step
    def uses_pi(x: float) -> float:
        y = x * math.pi
        return y

    globals()["uses_pi"] = uses_pi
    saved = globals().pop("math")
    try:
        with pytest.raises(TypeError, match="reads 'math'"):

            @inline_steps
            def caller(x: float) -> float:
                y = uses_pi(x)
                return y
    finally:
        globals()["math"] = saved


def shell_like(tat: float, now: float, cost: int, interval: float, reach: float) -> float | None:
    new_tat = gcra_step(tat, now, cost, interval, reach)
    return new_tat


inlined = inline_steps(shell_like)


@given(
    tat=st.floats(-1e6, 1e6),
    now=st.floats(0, 1e6),
    cost=st.integers(0, 10),
    interval=st.floats(1e-6, 100),
    reach=st.floats(0, 1000),
)
def test_inlined_step_computes_what_the_call_does(
    tat: float, now: float, cost: int, interval: float, reach: float
) -> None:
    """The generated function and the call give the same floats."""
    assert inlined is not shell_like
    assert "gcra_step" not in inlined.__code__.co_names
    assert inlined(tat, now, cost, interval, reach) == shell_like(tat, now, cost, interval, reach)


def shell_reading_after(tat: float, now: float) -> tuple[bool, float | None]:
    new_tat = gcra_step(tat, now, 1, 1.0, 2.0)
    if new_tat is not None:
        return True, new_tat
    return False, new_tat  # read again: the test is not fused away


def test_the_none_test_is_fused_only_when_nothing_else_reads_the_result() -> None:
    """``if x is not None`` after a step becomes the step's own test only when ``x`` is read
    nowhere else; either way the function computes what the call does."""
    fused = inline_steps(shell_reading_after)
    for tat, now in ((0.0, 0.0), (5.0, 0.0), (-3.0, 1.0)):
        assert fused(tat, now) == shell_reading_after(tat, now)
