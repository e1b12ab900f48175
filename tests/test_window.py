"""SlidingWindow (counter and exact log): fast path, first come first served, books balance."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Coroutine
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from typing_extensions import assert_type

from brace import Decision, SlidingWindow, SlidingWindowStatistics
from brace._core.window import SlidingLog, SlidingWindowCounter
from brace.testing import FakeClock

KINDS = pytest.mark.parametrize("exact", [False, True], ids=["counter", "log"])


def assert_decision(
    decision: Decision,
    allowed: bool,
    limit: int,
    remaining: int,
    retry_after: float,
    reset_after: float,
) -> None:
    """The decision's counts match exactly and its durations to a nanosecond."""
    assert (decision.allowed, decision.limit, decision.remaining) == (allowed, limit, remaining)
    assert decision.retry_after == pytest.approx(retry_after, abs=1e-9)
    assert decision.reset_after == pytest.approx(reset_after, abs=1e-9)


def run_without_suspending(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine one step; fail if it suspends (it would have reached the loop)."""
    with pytest.raises(StopIteration) as stop:
        coroutine.send(None)
    return stop.value.value


@KINDS
def test_fast_path_never_suspends(exact: bool) -> None:
    """With room in the window and nobody waiting, acquire and async with finish in one step."""
    window = SlidingWindow(3, 1.0, exact=exact, clock=FakeClock())
    decision = run_without_suspending(window.acquire(2))
    assert decision == Decision(True, 3, 1, 0.0, 2.0 if not exact else 1.0)
    assert run_without_suspending(window.__aenter__()) is None
    assert run_without_suspending(window.__aexit__(None, None, None)) is None
    assert window.remaining() == 0
    assert window.statistics().acquired == 3


@KINDS
def test_try_acquire_counts_and_refuses_with_the_wait(exact: bool) -> None:
    """try_acquire admits up to the limit, then refuses with the wait until there is room."""
    clock = FakeClock()
    window = SlidingWindow(2, 10.0, exact=exact, clock=clock)
    clock.advance(5.0)
    assert window.try_acquire()
    assert window.try_acquire()
    refused = window.try_acquire()
    assert not refused.allowed
    assert refused.remaining == 0
    # The log frees the slot at 15 s; the counter once current (2) decays enough in the
    # next window: 2 * (1 - e / 10) + 1 <= 2 at e = 5, so at 15 s as well.
    assert refused.retry_after == pytest.approx(10.0)
    assert window.try_acquire(0).allowed
    clock.advance(10.0)
    assert window.try_acquire()
    stats = window.statistics()
    assert (stats.acquired, stats.rejected) == (3, 1)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((0, 1.0), {}, ValueError, "limit"),
        ((2.5, 1.0), {}, TypeError, "limit"),
        ((1, 0.0), {}, ValueError, "window"),
        ((1, "1s"), {}, TypeError, "window"),
        ((1, float("inf")), {}, ValueError, "window"),
        ((1, 1.0), {"exact": "yes"}, TypeError, "exact"),
        ((1, 1.0), {"clock": "monotonic"}, TypeError, "clock"),
    ],
)
def test_bad_configuration_names_the_parameter(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    """Bad configuration fails at construction with the right type and the parameter's name."""
    with pytest.raises(error, match=name):
        SlidingWindow(*args, **kwargs)


@KINDS
@pytest.mark.parametrize(("cost", "error"), [(3, ValueError), (-2, ValueError), (0.5, TypeError)])
def test_bad_cost_is_refused_at_once(exact: bool, cost: Any, error: type[Exception]) -> None:
    """A cost that could never be admitted raises before anything waits or is counted."""
    window = SlidingWindow(2, 1.0, exact=exact, clock=FakeClock())
    with pytest.raises(error, match="cost"):
        window.try_acquire(cost)
    coroutine = window.acquire(cost)
    with pytest.raises(error, match="cost"):
        coroutine.send(None)
    assert window.remaining() == 2


@KINDS
def test_statistics_is_a_frozen_slotted_snapshot(exact: bool) -> None:
    """statistics() reports parameters, room and counters in a frozen, slotted dataclass."""
    window = SlidingWindow(5, 2.0, exact=exact, clock=FakeClock())
    window.try_acquire(4)
    window.try_acquire(4)
    stats = window.statistics()
    assert stats == SlidingWindowStatistics(
        limit=5,
        window=2.0,
        exact=exact,
        remaining=1,
        waiting=0,
        waiting_cost=0,
        acquired=4,
        rejected=1,
        waited=0,
        cancelled=0,
        refusals={"rate_limited": 1},
    )
    assert not hasattr(stats, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.remaining = 0  # type: ignore[misc]


def test_policy_is_the_counter_or_the_log() -> None:
    """.policy is the core policy a keyed limiter reuses: the counter, or the log if exact."""
    counter = SlidingWindow(20, 900.0)
    log = SlidingWindow(20, 900.0, exact=True)
    assert isinstance(counter.policy, SlidingWindowCounter)
    assert isinstance(log.policy, SlidingLog)
    assert (counter.limit, counter.window, counter.exact) == (20, 900.0, False)
    assert (log.limit, log.window, log.exact) == (20, 900.0, True)
    assert repr(log) == "SlidingWindow(limit=20, window=900.0, exact=True, waiting=0)"


def test_from_rate_reads_a_rate_string() -> None:
    """SlidingWindow.from_rate("20/15 minutes") is a limit of 20 in a window of 900 s."""
    pytest.importorskip("brace._rate")
    window = SlidingWindow.from_rate("20/15 minutes", exact=True)
    assert (window.limit, window.window, window.exact) == (20, 900.0, True)


@KINDS
async def test_waiters_are_served_first_come_first_served(anyio_backend: Any, exact: bool) -> None:
    """A cheap waiter never overtakes an expensive one ahead of it; each is served in turn.

    (``anyio_backend`` is requested by name so that anyio's plugin keeps the parametrize.)
    """
    window = SlidingWindow(3, 1.0, exact=exact, clock=anyio.current_time)
    await window.acquire(3)
    served: list[int] = []

    async def wait(number: int, cost: int) -> None:
        await window.acquire(cost)
        served.append(number)

    costs = [3, 1, 2, 1, 3, 1]
    async with anyio.create_task_group() as group:
        for number, cost in enumerate(costs):
            group.start_soon(wait, number, cost)
            await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        assert window.statistics().waiting == len(costs)
        refused = window.try_acquire()
        assert not refused.allowed
        assert refused.retry_after > 0
    assert served == list(range(len(costs)))
    assert window.statistics().acquired == 3 + sum(costs)


async def test_log_waiter_is_served_when_the_oldest_entry_expires() -> None:
    """The exact log admits a waiter exactly when enough old entries leave the window."""
    window = SlidingWindow(2, 1.0, exact=True, clock=anyio.current_time)
    start = anyio.current_time()
    await window.acquire()
    await anyio.sleep(0.25)
    await window.acquire()
    decision = await window.acquire()
    assert anyio.current_time() - start == pytest.approx(1.0)
    decision = await window.acquire()
    assert anyio.current_time() - start == pytest.approx(1.25)
    assert_decision(decision, True, 2, 0, 0.0, 1.0)


async def test_a_cancelled_waiter_is_never_counted() -> None:
    """A waiter cancelled while queued leaves the window's count as it was."""
    window = SlidingWindow(1, 1.0, exact=True, clock=anyio.current_time)
    await window.acquire()
    with anyio.move_on_after(0.5):
        await window.acquire()
    stats = window.statistics()
    assert (stats.acquired, stats.cancelled, stats.waiting) == (1, 1, 0)
    await anyio.sleep(0.5)
    assert window.remaining() == 1


async def test_decorator_and_call_keep_types_and_take_one() -> None:
    """@window keeps the function's signature and types; call() forwards the arguments."""
    window = SlidingWindow(2, 1.0, clock=anyio.current_time)

    async def greet(name: str, punctuation: str = "!") -> str:
        return f"hello {name}{punctuation}"

    limited = window(greet)
    assert limited.__name__ == "greet"
    assert str(inspect.signature(limited)) == "(name: 'str', punctuation: 'str' = '!') -> 'str'"
    assert_type(await limited("a"), str)
    assert_type(await window.call(greet, "b", punctuation="?"), str)
    assert window.statistics().acquired == 2
    start = anyio.current_time()
    assert await limited("c") == "hello c!"
    assert anyio.current_time() > start
    assert await window.call(greet, "d", punctuation="?") == "hello d?"
    assert window.statistics().acquired == 4
