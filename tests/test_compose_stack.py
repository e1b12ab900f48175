"""The whole stack through compose(): limiter, breaker, executor slot, retry, timeout."""

from __future__ import annotations

import anyio
import pytest

import brace
from brace import Backoff, CircuitBreaker, PriorityExecutor, Retry, Timeout, TokenBucket


class Flaky:
    """Fails ``failures`` times, then answers; records how many slots were busy at each try."""

    def __init__(self, executor: PriorityExecutor, failures: int) -> None:
        self.executor = executor
        self.failures = failures
        self.calls = 0
        self.running_seen: list[int] = []

    async def __call__(self) -> str:
        self.calls += 1
        self.running_seen.append(self.executor.statistics().running)
        await anyio.sleep(0.01)
        if self.calls <= self.failures:
            raise ConnectionError("try again")
        return "ok"


async def test_retry_outside_the_slot_frees_it_while_sleeping() -> None:
    """compose(retry, executor): between attempts the slot is free for other work."""
    executor = PriorityExecutor(concurrency=1, max_queue=10, clock=anyio.current_time)
    retry = Retry(attempts=3, backoff=Backoff.constant(1.0), clock=anyio.current_time)
    policy = brace.compose(retry, executor)
    flaky = Flaky(executor, failures=2)
    other_ran_at: list[float] = []

    async def other() -> None:
        await anyio.sleep(0.5)  # during the first backoff sleep
        async with executor.slot():
            other_ran_at.append(anyio.current_time())

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        assert await policy.run(flaky) == "ok"
    assert flaky.calls == 3
    assert other_ran_at
    assert other_ran_at[0] - start < 1.0  # not blocked by the retry's sleep


async def test_retry_inside_the_slot_holds_it() -> None:
    """compose(executor, retry): the slot is held across attempts (the order says so)."""
    executor = PriorityExecutor(concurrency=1, max_queue=10, clock=anyio.current_time)
    retry = Retry(attempts=3, backoff=Backoff.constant(1.0), clock=anyio.current_time)
    policy = brace.compose(executor, retry)
    flaky = Flaky(executor, failures=2)
    other_ran_at: list[float] = []

    async def other() -> None:
        await anyio.sleep(0.5)
        async with executor.slot():
            other_ran_at.append(anyio.current_time())

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        assert await policy.run(flaky) == "ok"
    assert other_ran_at[0] - start >= 2.0  # waited for both retries to finish


async def test_breaker_inside_retry_sees_every_attempt_and_opens() -> None:
    """compose(retry, breaker, timeout): each attempt is recorded; an open circuit stops calls."""
    breaker = CircuitBreaker(failure_threshold=3, recovery_time=60.0, clock=anyio.current_time)
    retry = Retry(
        attempts=5, backoff=Backoff.constant(0.1), deadline=10.0, clock=anyio.current_time
    )
    policy = brace.compose(retry, breaker, Timeout(1.0))
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    with pytest.raises((ConnectionError, brace.CircuitOpen)):
        await policy.run(down)
    assert calls == 3  # the breaker opened after three failures; no call reached `down` after
    assert breaker.state is brace.CircuitState.OPEN


async def test_timeout_per_attempt_then_success() -> None:
    """compose(retry, timeout): a slow first attempt times out, the second succeeds."""
    retry = Retry(attempts=2, backoff=Backoff.constant(0.1), clock=anyio.current_time)
    policy = brace.compose(retry, Timeout(1.0))
    attempts = 0

    async def slow_then_fast() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await anyio.sleep(5)
        return "fast"

    assert await policy.run(slow_then_fast) == "fast"
    assert attempts == 2


async def test_limiter_outermost_counts_calls_not_attempts() -> None:
    """compose(bucket, retry, ...): one token per call however many attempts it takes."""
    bucket = TokenBucket(1, per=60.0, burst=2, clock=anyio.current_time)
    executor = PriorityExecutor(concurrency=2, max_queue=10, clock=anyio.current_time)
    retry = Retry(attempts=3, backoff=Backoff.constant(0.1), clock=anyio.current_time)
    policy = brace.compose(bucket, retry, executor)
    flaky = Flaky(executor, failures=2)
    assert await policy.run(flaky) == "ok"
    assert flaky.calls == 3
    assert bucket.try_acquire().allowed  # one of two tokens is left
    assert not bucket.try_acquire().allowed
