"""The inliner that generates the shells' fast paths from the cores' steps: it refuses a
step it could not inline exactly, and the inlined function computes what the calls do."""

from __future__ import annotations

import importlib.util
import inspect
import math
import textwrap
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brace._core._inline import coroutine_twin, inline_steps, step
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


def _counter_factory(source: str) -> Any:
    """``make`` from ``source`` run by ``exec`` (no file: no source for inline_steps)."""
    namespace: dict[str, Any] = {"coroutine_twin": coroutine_twin}
    exec(textwrap.dedent(source), namespace)
    return namespace["make"]


TWIN_SOURCE = """
def make(clock):
    hits = 0

    def hit(key, cost, now):
        nonlocal hits
        hits += cost
        return (key, cost, now, hits)

    twin = coroutine_twin(hit, clock, cost=1)
    return hit, twin
"""


def _compiled(tmp_path: Any, name: str, source: str) -> Any:
    """``make`` from ``source`` in a real module file, under ``@inline_steps`` (which reads
    a function's source)."""
    path = tmp_path / f"{name}.py"
    path.write_text(
        "from brace._core._inline import coroutine_twin, inline_steps\n\n\n@inline_steps"
        + textwrap.dedent(source)
    )
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make


async def test_coroutine_twin_runs_the_body_in_its_own_frame(tmp_path: Any) -> None:
    """``twin = coroutine_twin(f, clock, cost=1)`` compiled by inline_steps: an ``async
    def (key, cost=1)`` with ``f``'s body and ``now = clock()``, sharing ``f``'s cells."""
    make = _compiled(tmp_path, "brace_twin_inlined", TWIN_SOURCE)
    reads = iter([10.0, 20.0, 30.0])
    hit, twin = make(lambda: next(reads))
    assert inspect.iscoroutinefunction(twin)
    assert "hit" not in twin.__code__.co_freevars  # its own body: it does not call hit
    assert await twin("a") == ("a", 1, 10.0, 1)
    assert await twin("b", 3) == ("b", 3, 20.0, 4)
    assert hit("c", 2, 5.0) == ("c", 2, 5.0, 6)  # the same counter
    assert await twin(key="d", cost=1) == ("d", 1, 30.0, 7)
    assert list(inspect.signature(twin).parameters) == ["key", "cost"]
    assert inspect.signature(twin).parameters["cost"].default == 1


async def test_coroutine_twin_without_the_source_calls_the_function() -> None:
    """Where the source cannot be read, ``coroutine_twin`` is a coroutine calling ``f``:
    the same answers."""
    make = _counter_factory(TWIN_SOURCE)
    reads = iter([1.0, 2.0])
    hit, twin = make(lambda: next(reads))
    assert "hit_twin" in twin.__qualname__
    assert await twin("a") == ("a", 1, 1.0, 1)
    assert await twin("b", 2) == ("b", 2, 2.0, 3)
    with pytest.raises(TypeError, match="not parameters"):
        coroutine_twin(hit, time.monotonic, size=1)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("twin = coroutine_twin(elsewhere, clock)", "no single def"),
        ("twin = coroutine_twin(hit, clock, key='k')", "are its last"),
        ("twin = coroutine_twin(hit, clock, size=1)", "defaults name parameters"),
    ],
)
def test_coroutine_twin_refuses_what_it_cannot_write(
    tmp_path: Any, line: str, message: str
) -> None:
    """A twin of a function not defined beside it, or defaults it cannot take, is refused
    when the function is compiled."""
    source = f"""
def make(clock):
    def hit(key, cost, now):
        return key
    {line}
    return twin
"""
    with pytest.raises(TypeError, match=message):
        _compiled(tmp_path, "brace_twin_refused", source)
