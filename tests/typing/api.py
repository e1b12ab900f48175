"""Type-only checks of brace's public API: never run, checked by mypy (and pyright)."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

import brace


async def limiters() -> None:
    bucket = brace.TokenBucket(rate=10, per=60.0, burst=10)
    assert_type(bucket.try_acquire(cost=1), brace.Decision)
    await bucket.acquire(cost=1)
    limiter = brace.RateLimiter(brace.SlidingWindow(limit=20, window=900))
    assert_type(await limiter.hit("user:42", cost=1), brace.Decision)
    assert_type(brace.__version__, str)


async def executor() -> None:
    executor = brace.PriorityExecutor(concurrency=10, max_queue=1000)

    async def job(x: int) -> str:
        return str(x)

    assert_type(await executor.run(job, 1, priority=brace.Priority.HIGH), str)
    assert_type(executor.queue_bounds(), tuple[int, float | None])


def errors() -> None:
    assert issubclass(brace.Dropped, brace.QueueFull)
    error: brace.Rejected = brace.RateLimited("limited", retry_after=1.0)
    assert_type(error.retry_after, float | None)


def conventions() -> None:
    # options are keyword-only after the first one or two
    breaker = brace.CircuitBreaker(15, 30.0, half_open_max_calls=1)
    assert_type(breaker.state, brace.CircuitState)
    budget = brace.RetryBudget(0.2, min_per_second=1.0, window=10.0)
    retry = brace.Retry(3, backoff=brace.Backoff.exponential(0.1, cap=10.0), budget=budget)
    assert_type(retry.attempts, int)
    # one randomness parameter: random=, anything with random()
    import random

    from brace.testing import FakeClock, FixedRandom

    brace.Retry(3, random=random.Random(1))
    brace.CircuitBreaker(recovery_jitter=0.5, random=FixedRandom(0.5), clock=FakeClock())
    brace.LoadMonitor(0.1, random=random.Random(2))
    assert_type(brace.Backoff.full_jitter(0.1).delay(1, 0.0, FixedRandom(0.5)), float)


def virtual_time() -> None:
    # anyio.run's backend options for virtual time, per backend
    from brace.testing import VirtualTimeLoop, virtual_time

    assert_type(virtual_time("trio"), dict[str, Any])
    loop = VirtualTimeLoop()
    assert_type(loop.time(), float)
    loop.close()


def wrong() -> None:
    brace.CircuitBreaker(15, 30.0, 1)  # type: ignore[call-arg]
    brace.Retry(3, rng=None)  # type: ignore[call-arg]
