"""Type-only checks of brace's public API: never run, checked by mypy (and pyright)."""

from __future__ import annotations

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
