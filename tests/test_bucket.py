"""TokenBucket: the fast path never yields, waiters are served in order, books balance."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Coroutine
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typing_extensions import assert_type

import brace
from brace import Decision, TokenBucket, TokenBucketStatistics
from brace._core.gcra import GCRA, TokenBucketCore
from brace.testing import FakeClock


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


def test_fast_path_never_suspends() -> None:
    """With tokens available and nobody waiting, acquire and async with finish in one step."""
    bucket = TokenBucket(2, burst=3, clock=FakeClock())
    decision = run_without_suspending(bucket.acquire(2))
    assert decision == Decision(True, 3, 1, 0.0, 1.0)
    assert run_without_suspending(bucket.__aenter__()) is None
    assert run_without_suspending(bucket.__aexit__(None, None, None)) is None
    assert bucket.statistics().acquired == 3
    assert bucket.statistics().available == 0


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(0.01, 1e4),
    burst=st.integers(1, 50),
    start=st.floats(0, 1e6),
    steps=st.lists(
        st.tuples(st.floats(0, 2.0), st.sampled_from(["async with", "try_acquire"])),
        max_size=60,
    ),
)
def test_async_with_fast_path_is_the_core_admit(
    rate: float, burst: int, start: float, steps: list[tuple[float, str]]
) -> None:
    """The inlined ``async with`` fast path admits exactly when ``TokenBucketCore.admit``
    does, and leaves the very same ``tat`` (non-dyadic rates and times: same floats)."""
    clock = FakeClock(start)
    bucket = TokenBucket(rate, burst=burst, clock=clock)
    reference = TokenBucketCore(GCRA(rate, burst=burst))
    for elapsed, how in steps:
        clock.advance(elapsed)
        admitted = reference.admit(clock(), 1)
        if how == "try_acquire":
            assert bucket.try_acquire().allowed is admitted
        elif admitted:
            run_without_suspending(bucket.__aenter__())
        else:
            coroutine = bucket.__aenter__()
            with pytest.raises(RuntimeError):  # it would wait: no event loop to wait on
                coroutine.send(None)
        assert bucket._core.tat == reference.tat


def test_slow_path_does_suspend() -> None:
    """The check above can fail: when the bucket is empty, acquire suspends to wait."""
    bucket = TokenBucket(1, clock=FakeClock())
    assert bucket.try_acquire()
    coroutine = bucket.acquire()
    with pytest.raises(RuntimeError):  # anyio finds no running event loop to wait on
        coroutine.send(None)
    coroutine.close()


def test_try_acquire_consumes_and_refuses_with_the_wait() -> None:
    """try_acquire takes tokens while there are some, then refuses saying how long to wait."""
    clock = FakeClock()
    bucket = TokenBucket(10, per=60.0, clock=clock)  # one token every 6 s, 10 at once
    decisions = [bucket.try_acquire() for _ in range(10)]
    assert all(decisions)
    assert [d.remaining for d in decisions] == list(range(9, -1, -1))
    refused = bucket.try_acquire()
    assert_decision(refused, False, 10, 0, 6.0, 60.0)
    clock.advance(6.0)
    assert bucket.try_acquire(cost=1)
    assert bucket.try_acquire(cost=0).allowed  # a query is always allowed
    stats = bucket.statistics()
    assert (stats.acquired, stats.rejected) == (11, 1)


def test_cost_zero_is_a_query() -> None:
    """A cost of 0 takes nothing and is allowed even on an empty bucket."""
    bucket = TokenBucket(1, burst=2, clock=FakeClock())
    assert bucket.try_acquire(2)
    query = bucket.try_acquire(0)
    assert query.allowed
    assert query.remaining == 0
    assert run_without_suspending(bucket.acquire(0)).allowed
    assert bucket.statistics().acquired == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"rate": 0}, ValueError, "rate"),
        ({"rate": "5/s"}, TypeError, "rate"),
        ({"rate": 1, "per": -1}, ValueError, "per"),
        ({"rate": 1, "per": float("nan")}, ValueError, "per"),
        ({"rate": 1, "burst": 0}, ValueError, "burst"),
        ({"rate": 1, "burst": 2.0}, TypeError, "burst"),
        ({"rate": 1, "clock": 3.0}, TypeError, "clock"),
    ],
)
def test_bad_configuration_names_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    """Bad configuration fails at construction with the right type and the parameter's name."""
    with pytest.raises(error, match=name):
        TokenBucket(**kwargs)


@pytest.mark.parametrize(
    ("cost", "error"), [(4, ValueError), (-1, ValueError), (1.0, TypeError), (True, TypeError)]
)
def test_bad_cost_is_refused_at_once(cost: Any, error: type[Exception]) -> None:
    """A cost that could never be granted raises before anything waits or is consumed."""
    bucket = TokenBucket(1, burst=3, clock=FakeClock())
    with pytest.raises(error, match="cost"):
        bucket.try_acquire(cost)
    coroutine = bucket.acquire(cost)
    with pytest.raises(error, match="cost"):
        coroutine.send(None)
    assert bucket.statistics().acquired == 0
    assert bucket.statistics().available == 3


def test_statistics_is_a_frozen_slotted_snapshot() -> None:
    """statistics() reports parameters, tokens and counters in a frozen, slotted dataclass."""
    bucket = TokenBucket(4, per=2.0, burst=6, clock=FakeClock())
    bucket.try_acquire(5)
    bucket.try_acquire(5)
    stats = bucket.statistics()
    assert stats == TokenBucketStatistics(
        rate=4.0,
        per=2.0,
        burst=6,
        available=1.0,
        waiting=0,
        waiting_cost=0,
        acquired=5,
        rejected=1,
        waited=0,
        cancelled=0,
        refusals={"rate_limited": 1},
    )
    assert not hasattr(stats, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.acquired = 0  # type: ignore[misc]


def test_policy_and_properties() -> None:
    """The policy is the GCRA the keyed limiter can reuse; the properties echo the arguments."""
    bucket = TokenBucket(3, per=0.5, burst=7)
    assert isinstance(bucket.policy, GCRA)
    assert (bucket.rate, bucket.per, bucket.burst) == (3.0, 0.5, 7)
    assert (bucket.policy.rate, bucket.policy.per, bucket.policy.burst) == (3.0, 0.5, 7)
    assert bucket.available() == 7
    assert "TokenBucket(rate=3.0" in repr(bucket)
    assert brace.TokenBucket is TokenBucket


def test_from_rate_reads_a_rate_string() -> None:
    """TokenBucket.from_rate("10/minute") is 10 tokens per 60 s with a burst of 10."""
    pytest.importorskip("brace._rate")
    bucket = TokenBucket.from_rate("10/minute", clock=FakeClock())
    assert (bucket.rate, bucket.per, bucket.burst) == (10.0, 60.0, 10)
    assert TokenBucket.from_rate("5/s", burst=1).burst == 1


async def test_acquire_waits_exactly_until_the_tokens_are_back() -> None:
    """An empty bucket makes acquire wait one interval per missing token, on the loop's clock."""
    bucket = TokenBucket(2, burst=2, clock=anyio.current_time)  # a token every 0.5 s
    start = anyio.current_time()
    await bucket.acquire(2)
    decision = await bucket.acquire(2)
    assert anyio.current_time() - start == pytest.approx(1.0)
    assert_decision(decision, True, 2, 0, 0.0, 1.0)
    stats = bucket.statistics()
    assert (stats.acquired, stats.waited, stats.waiting) == (4, 1, 0)


async def test_waiters_are_served_first_come_first_served_whatever_their_cost() -> None:
    """A cheap waiter never overtakes an expensive one ahead of it."""
    bucket = TokenBucket(1, burst=3, clock=anyio.current_time)
    await bucket.acquire(3)
    start = anyio.current_time()
    served: list[tuple[int, float]] = []

    async def wait(number: int, cost: int) -> None:
        await bucket.acquire(cost)
        served.append((number, anyio.current_time() - start))

    costs = [3, 1, 2, 1, 3]
    async with anyio.create_task_group() as group:
        for number, cost in enumerate(costs):
            group.start_soon(wait, number, cost)
            await anyio.lowlevel.checkpoint()  # let it join the queue: arrival order is spawn order
        await anyio.sleep(0.01)
        assert bucket.statistics().waiting == len(costs)
        assert bucket.statistics().waiting_cost == sum(costs)
    assert [number for number, _ in served] == list(range(len(costs)))
    assert [at for _, at in served] == pytest.approx([3, 4, 6, 7, 10])


async def test_nobody_barges_ahead_of_a_waiter() -> None:
    """While someone waits, try_acquire is refused with the exact wait and acquire queues."""
    bucket = TokenBucket(1, burst=3, clock=anyio.current_time)
    await bucket.acquire(3)
    start = anyio.current_time()
    order: list[str] = []

    async def head() -> None:
        await bucket.acquire(3)
        order.append("head")

    async with anyio.create_task_group() as group:
        group.start_soon(head)
        await anyio.sleep(2)  # two tokens are back, the head wants three
        assert bucket.available() == pytest.approx(2)
        refused = bucket.try_acquire(1)
        # Behind the head's 3 tokens, one more is back at 3 + 1 = 4 s; full again at 6 s.
        assert_decision(refused, False, 3, 0, 2.0, 4.0)
        assert bucket.try_acquire(0).allowed  # a query still answers at once
        query = await bucket.acquire(0)  # and so does an async one: it never waits
        assert query.allowed
        assert query.remaining == 0
        assert anyio.current_time() - start == pytest.approx(2.0)
        await bucket.acquire(1)
        order.append("late")
        assert anyio.current_time() - start == pytest.approx(4.0)
    assert order == ["head", "late"]
    assert bucket.statistics().rejected == 1


async def test_async_with_queues_behind_waiters() -> None:
    """async with takes the slow path when someone waits, even if a token is there."""
    bucket = TokenBucket(1, burst=2, clock=anyio.current_time)
    await bucket.acquire(2)
    start = anyio.current_time()
    async with anyio.create_task_group() as group:
        group.start_soon(bucket.acquire, 2)
        await anyio.sleep(1)
        async with bucket:
            assert anyio.current_time() - start == pytest.approx(3.0)


async def test_a_cancelled_head_hands_over_and_takes_nothing() -> None:
    """Cancelling the head waiter lets the next one be served as soon as its tokens are back."""
    bucket = TokenBucket(1, burst=4, clock=anyio.current_time)
    await bucket.acquire(4)
    start = anyio.current_time()
    served: list[float] = []

    async def second() -> None:
        await bucket.acquire(1)
        served.append(anyio.current_time() - start)

    async with anyio.create_task_group() as group:
        with anyio.move_on_after(2.5) as scope:
            group.start_soon(second)  # starts after this task blocks: it queues second
            await bucket.acquire(4)
        assert scope.cancelled_caught
        assert bucket.statistics().waiting == 1
    assert served == [pytest.approx(2.5)]  # its token was back at 1 s; it waited for the head
    stats = bucket.statistics()
    assert (stats.acquired, stats.cancelled, stats.waiting, stats.waiting_cost) == (5, 1, 0, 0)
    assert bucket.available() == pytest.approx(1.5)


async def test_cancelled_reaches_the_caller_unchanged() -> None:
    """The backend's own Cancelled exception propagates out of a waiting acquire."""
    bucket = TokenBucket(1, clock=anyio.current_time)
    await bucket.acquire()
    caught: list[BaseException] = []
    with anyio.CancelScope() as scope:
        scope.deadline = anyio.current_time() + 0.5
        try:
            await bucket.acquire()
        except BaseException as error:
            caught.append(error)
            raise
    assert len(caught) == 1
    assert isinstance(caught[0], anyio.get_cancelled_exc_class())
    assert bucket.statistics().cancelled == 1


async def test_decorator_keeps_the_signature_and_takes_a_token_per_call() -> None:
    """@bucket keeps the name, signature and types of the function and acquires 1 per call."""
    bucket = TokenBucket(1, burst=2, clock=anyio.current_time)

    @bucket
    async def scale(value: int, *, factor: float = 2.0) -> float:
        """Multiply."""
        return value * factor

    assert scale.__name__ == "scale"
    assert scale.__doc__ == "Multiply."
    assert str(inspect.signature(scale)) == "(value: 'int', *, factor: 'float' = 2.0) -> 'float'"
    start = anyio.current_time()
    results = [await scale(1), await scale(2, factor=0.5), await scale(3)]
    assert_type(results[0], float)
    assert results == [2.0, 1.0, 6.0]
    assert anyio.current_time() - start == pytest.approx(1.0)  # the third call waited
    assert bucket.statistics().acquired == 3


async def test_call_takes_a_token_then_calls() -> None:
    """bucket.call(fn, *args, **kwargs) acquires 1, then awaits fn with the arguments."""
    bucket = TokenBucket(1, clock=anyio.current_time)

    async def join(*parts: str, sep: str) -> str:
        return sep.join(parts)

    assert_type(await bucket.call(join, "a", "b", sep="-"), str)
    start = anyio.current_time()
    assert await bucket.call(join, "c", sep="") == "c"
    assert anyio.current_time() - start == pytest.approx(1.0)


def test_decorating_a_non_callable_is_a_type_error() -> None:
    """The decorator names what it needs when given something that cannot be called."""
    with pytest.raises(TypeError, match="fn"):
        TokenBucket(1)(42)  # type: ignore[arg-type]
