"""brace.Hedge: the first good answer wins, at most 1 + max_extra attempts, within the
budget, and nothing is left running."""

from __future__ import annotations

import contextlib
import logging
import math

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import brace
from brace._hedge import quantile


def _budget(ratio: float = 1.0, floor: float = 100.0) -> brace.RetryBudget:
    """A budget on the loop's clock (virtual time) over 1000 s, generous unless told
    otherwise (``floor``: extra attempts granted whatever the ratio)."""
    return brace.RetryBudget(
        ratio=ratio, min_per_second=floor / 1000.0, window=1000.0, clock=anyio.current_time
    )


class Upstream:
    """Attempts with scripted durations and outcomes, counting starts, ends and cancels."""

    def __init__(self, script: list[tuple[float, bool]]) -> None:
        self.script = script
        self.started = 0
        self.running = 0
        self.cancelled = 0

    async def __call__(self) -> int:
        index = self.started
        self.started += 1
        duration, ok = self.script[min(index, len(self.script) - 1)]
        self.running += 1
        try:
            await anyio.sleep(duration)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        if not ok:
            raise ConnectionError(index)
        return index


def _expected(
    script: list[tuple[float, bool]], delay: float, max_extra: int
) -> tuple[int | None, int]:
    """A reference model: (index of the winning attempt or None, attempts started).

    Attempt 0 starts at 0; each next one starts ``delay`` after the previous one, or as soon
    as every running attempt has failed, whichever is first; the first success wins."""
    starts = [0.0]
    while True:
        finished = [(starts[i] + script[min(i, len(script) - 1)][0], i) for i in range(len(starts))]
        successes = sorted((end, i) for end, i in finished if script[min(i, len(script) - 1)][1])
        next_start = None
        if len(starts) <= max_extra:
            last = starts[-1]
            failures_before = [end for end, i in finished if not script[min(i, len(script) - 1)][1]]
            all_failed_at = (
                max(failures_before) if len(failures_before) == len(starts) else math.inf
            )
            next_start = min(last + delay, all_failed_at)
        if successes and (next_start is None or successes[0][0] <= next_start):
            return successes[0][1], len(starts)
        if next_start is None:
            return None, len(starts)
        starts.append(next_start)


@settings(max_examples=30, deadline=None)
@given(
    script=st.lists(
        st.tuples(st.integers(min_value=1, max_value=20).map(float), st.booleans()),
        min_size=1,
        max_size=4,
    ),
    delay=st.integers(min_value=1, max_value=10).map(lambda d: d + 0.37),
    max_extra=st.integers(min_value=1, max_value=3),
)
async def test_hedge_matches_the_reference_model(
    script: list[tuple[float, bool]], delay: float, max_extra: int
) -> None:
    """In virtual time: the winner and the number of attempts started are the model's,
    never more than 1 + max_extra, and no attempt is left running."""
    winner, started = _expected(script, delay, max_extra)
    assert started <= 1 + max_extra
    tasks_before = len(anyio.get_running_tasks())
    upstream = Upstream(script)
    hedge = brace.Hedge(delay, max_extra=max_extra, budget=_budget())
    if winner is None:
        with pytest.raises(ConnectionError) as caught:
            await hedge.call(upstream)
        assert caught.value.args == (0,)  # the primary's exception
    else:
        assert await hedge.call(upstream) == winner
    assert upstream.started == started
    assert upstream.running == 0
    assert len(anyio.get_running_tasks()) == tasks_before
    stats = hedge.statistics()
    assert stats.attempts == started
    assert stats.hedge_wins == (1 if winner else 0)


async def test_first_good_answer_wins_and_losers_are_cancelled() -> None:
    """A slow primary loses to a fast hedge; the primary is cancelled and awaited."""
    upstream = Upstream([(10.0, True), (1.0, True)])
    hedge = brace.Hedge(2.0, budget=_budget())
    start = anyio.current_time()
    assert await hedge.call(upstream) == 1
    assert anyio.current_time() - start == pytest.approx(3.0)
    assert upstream.cancelled == 1
    assert upstream.running == 0


async def test_alternatives_are_used_by_the_extra_attempts() -> None:
    """The extra attempts call the alternatives in turn, the last one again when short."""
    calls: list[str] = []

    def named(name: str, seconds: float):  # type: ignore[no-untyped-def]
        async def attempt(x: int) -> str:
            calls.append(name)
            await anyio.sleep(seconds)
            return f"{name} {x}"

        return attempt

    hedge = brace.Hedge(
        1.0, max_extra=3, alternatives=[named("b", 10), named("c", 10)], budget=_budget()
    )
    assert await hedge.call(named("a", 10), 7) == "a 7"
    assert calls == ["a", "b", "c", "c"]


@settings(max_examples=25, deadline=None)
@given(
    ratio=st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.5, 1.0]),
    calls=st.integers(min_value=1, max_value=40),
    max_extra=st.integers(min_value=1, max_value=3),
)
async def test_budget_bounds_extra_attempts(ratio: float, calls: int, max_extra: int) -> None:
    """With a budget of ``ratio`` and no floor, extra attempts never exceed ratio x calls,
    and every extra attempt asked for and not granted is counted as refused."""
    hedge = brace.Hedge(1.0, max_extra=max_extra, budget=_budget(ratio=ratio, floor=0.0))
    upstream = Upstream([(5.0, True)])  # every call is slow enough to ask for extras
    for _ in range(calls):
        await hedge.call(upstream)
    stats = hedge.statistics()
    assert stats.hedges <= ratio * stats.calls + 1e-9
    assert stats.attempts == stats.calls + stats.hedges == upstream.started
    if ratio * calls >= 1:
        assert stats.hedges >= 1
    assert stats.refused >= 1 if stats.hedges < calls * max_extra else stats.refused == 0


async def test_outside_cancellation_cancels_every_attempt() -> None:
    """Cancelling the caller cancels the primary and the hedges and reaches the caller."""
    upstream = Upstream([(100.0, True)])
    hedge = brace.Hedge(1.0, max_extra=2, budget=_budget())
    with anyio.move_on_after(5.0) as scope:
        await hedge.call(upstream)
    assert scope.cancelled_caught
    assert upstream.started == 3
    assert upstream.cancelled == 3
    assert upstream.running == 0


async def test_hedge_holds_no_permit_after_the_call() -> None:
    """Hedges inside an executor slot leave the executor's books balanced."""
    executor = brace.PriorityExecutor(concurrency=2, max_queue=10)
    upstream = Upstream([(10.0, True), (1.0, True)])
    hedge = brace.Hedge(1.0, budget=_budget())
    assert await executor.run(hedge.call, upstream) == 1
    assert executor.statistics().running == 0


async def test_latency_quantile_delay_is_recorded_and_followed() -> None:
    """A LatencyQuantile delay follows the p95 of recorded attempt durations."""
    delay = brace.LatencyQuantile(0.95, initial=1.0, minimum=5, refresh=1)
    hedge = brace.Hedge(delay, budget=_budget())
    upstream = Upstream([(0.25, True)])
    for _ in range(10):
        await hedge.call(upstream)
    assert delay() == pytest.approx(0.25)
    assert delay.recorded == 10


@given(
    st.lists(st.floats(min_value=0, max_value=100), min_size=1),
    st.floats(min_value=0.01, max_value=1),
)
def test_quantile_is_a_seen_value_with_the_right_rank(values: list[float], q: float) -> None:
    """quantile() returns a recorded value with at least q of the values at or below it."""
    ordered = sorted(values)
    value = quantile(ordered, q)
    assert value in ordered
    assert sum(v <= value for v in ordered) >= q * len(ordered) - 1e-9
    assert sum(v < value for v in ordered) < max(1, math.ceil(q * len(ordered)))


def test_bad_configuration_names_the_parameter() -> None:
    """Bad options raise at construction, naming the parameter."""
    with pytest.raises(ValueError, match="delay"):
        brace.Hedge(-1.0)
    with pytest.raises(ValueError, match="max_extra"):
        brace.Hedge(1.0, max_extra=0)
    with pytest.raises(TypeError, match="alternatives"):
        brace.Hedge(1.0, alternatives=[3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="budget"):
        brace.Hedge(1.0, budget=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="q"):
        brace.LatencyQuantile(0.0, initial=1.0)
    with pytest.raises(ValueError, match="size"):
        brace.LatencyQuantile(0.9, initial=1.0, size=0)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_hedge_bench_runs(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/hedge_bench.py runs on both backends and prints both tables (few calls)."""
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:  # the benchmarks package lives beside src/, not inside it
        sys.path.insert(0, root)
    from benchmarks import hedge_bench

    assert hedge_bench.main(calls=2000, calls_overhead=20, rounds=1, backend=backend, seed=1) == 0
    printed = capsys.readouterr().out
    for text in ("hedged", "bare await", "brace.Fallback", "brace.Hedge"):
        assert text in printed


# -- the on_hedge hook and the brace.hedge log -------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    script=st.lists(
        st.tuples(st.integers(min_value=1, max_value=20).map(float), st.booleans()),
        min_size=1,
        max_size=4,
    ),
    delay=st.integers(min_value=1, max_value=10).map(lambda d: d + 0.37),
    max_extra=st.integers(min_value=1, max_value=3),
    calls=st.integers(min_value=1, max_value=3),
)
async def test_one_event_per_extra_attempt(
    script: list[tuple[float, bool]], delay: float, max_extra: int, calls: int
) -> None:
    """Over any calls, the hook sees exactly the statistics' hedges, numbered 1, 2, ... in
    each call, each after at most ``delay``, with ``elapsed`` the sum of the waits."""
    events: list[brace.HedgeDetails] = []
    hedge = brace.Hedge(
        delay, max_extra=max_extra, budget=_budget(), on_hedge=events.append, name="h"
    )
    for _ in range(calls):
        before = hedge.statistics()
        seen = len(events)
        start = anyio.current_time()
        with contextlib.suppress(ConnectionError):
            await hedge.call(Upstream(script))
        after = hedge.statistics()
        mine = events[seen:]
        assert len(mine) == after.hedges - before.hedges
        assert [event.attempt for event in mine] == list(range(1, len(mine) + 1))
        assert all(event.name == "h" for event in mine)
        waited = 0.0
        for event in mine:
            assert 0.0 <= event.delay <= delay + 1e-5  # the loop clock's resolution
            waited += event.delay
            assert event.elapsed == pytest.approx(waited, abs=1e-5)
            assert event.elapsed <= anyio.current_time() - start + 1e-5


async def test_details_of_a_failed_over_and_a_delayed_hedge() -> None:
    """An extra attempt starts as soon as every running attempt has failed (waiting less
    than the delay), the next one after the full delay, and their details say so."""
    events: list[brace.HedgeDetails] = []
    upstream = Upstream([(1.0, False), (10.0, True), (1.0, True)])
    hedge = brace.Hedge(2.0, max_extra=2, budget=_budget(), on_hedge=events.append)
    assert await hedge.call(upstream) == 2
    assert [(event.attempt, event.name) for event in events] == [(1, ""), (2, "")]
    assert [event.delay for event in events] == pytest.approx([1.0, 2.0], abs=1e-5)
    assert [event.elapsed for event in events] == pytest.approx([1.0, 3.0], abs=1e-5)


async def test_no_event_when_the_budget_refuses() -> None:
    """An extra attempt the budget refuses is counted as refused and announces nothing."""
    events: list[brace.HedgeDetails] = []
    hedge = brace.Hedge(1.0, budget=_budget(ratio=0.0, floor=0.0), on_hedge=events.append)
    assert await hedge.call(Upstream([(5.0, True)])) == 0
    assert hedge.statistics().refused == 1
    assert events == []


async def test_a_raising_hook_cancels_the_attempts_and_reaches_the_caller() -> None:
    """The hook's exception reaches the caller unwrapped, the extra attempt is not
    started, the primary is cancelled and awaited, and nothing is left running."""

    def hook(details: brace.HedgeDetails) -> None:
        raise RuntimeError(details.attempt)

    upstream = Upstream([(10.0, True)])
    hedge = brace.Hedge(2.0, budget=_budget(), on_hedge=hook)
    tasks_before = len(anyio.get_running_tasks())
    start = anyio.current_time()
    with pytest.raises(RuntimeError) as caught:
        await hedge.call(upstream)
    assert caught.value.args == (1,)
    assert anyio.current_time() - start == pytest.approx(2.0)
    assert upstream.started == 1
    assert upstream.cancelled == 1
    assert upstream.running == 0
    assert len(anyio.get_running_tasks()) == tasks_before
    stats = hedge.statistics()
    assert (stats.attempts, stats.hedges, stats.failures) == (1, 0, 0)


async def test_extra_attempts_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    """Each extra attempt is logged at DEBUG on brace.hedge, naming the hedge, even
    without a hook."""
    hedge = brace.Hedge(2.0, max_extra=2, budget=_budget(), name="search")
    with caplog.at_level(logging.DEBUG, logger="brace.hedge"):
        await hedge.call(Upstream([(10.0, True)]))
    records = [record for record in caplog.records if record.name == "brace.hedge"]
    assert len(records) == hedge.statistics().hedges == 2
    assert all(record.levelno == logging.DEBUG for record in records)
    assert "'search'" in records[0].getMessage()
    assert "attempt 1" in records[0].getMessage()


def test_on_hedge_must_be_callable() -> None:
    """A non-callable on_hedge is refused at construction, naming the parameter."""
    with pytest.raises(TypeError, match="on_hedge"):
        brace.Hedge(1.0, on_hedge=3)  # type: ignore[arg-type]
