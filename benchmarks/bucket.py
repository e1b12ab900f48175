"""Issue 2: the local limiter's fast path, ``async with bucket`` when a token is there.

Every limiter gets a rate so high it never waits (a billion per second, burst a billion),
so what is timed is the bookkeeping of an admitted request: the price a service pays on
every request while it is *not* overloaded.

- brace: ``async with TokenBucket`` (the target), its sync ``try_acquire()``, and
  ``async with SlidingWindow`` (counter) for comparison;
- peers: ``aiolimiter.AsyncLimiter`` (asyncio only: it reads the asyncio loop's clock and
  waits on asyncio futures);
- floor: ``async with asyncio.Semaphore`` (see ``floor.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ._harness import Case, Op, Target, brace_attr, import_optional

HUGE_RATE = 1e9
HUGE_BURST = 10**9


@asynccontextmanager
async def brace_bucket_async_with() -> AsyncIterator[Op]:
    bucket: Any = brace_attr("TokenBucket")(rate=HUGE_RATE, per=1.0, burst=HUGE_BURST)

    async def op(n: int) -> None:
        for _ in range(n):
            async with bucket:
                pass

    yield op


@asynccontextmanager
async def brace_bucket_try_acquire() -> AsyncIterator[Op]:
    bucket: Any = brace_attr("TokenBucket")(rate=HUGE_RATE, per=1.0, burst=HUGE_BURST)

    async def op(n: int) -> None:
        try_acquire = bucket.try_acquire
        for _ in range(n):
            if not try_acquire():
                raise AssertionError("the bucket ran dry")

    yield op


@asynccontextmanager
async def brace_window_async_with() -> AsyncIterator[Op]:
    window: Any = brace_attr("SlidingWindow")(limit=HUGE_BURST, window=1.0)

    async def op(n: int) -> None:
        for _ in range(n):
            async with window:
                pass

    yield op


@asynccontextmanager
async def aiolimiter_async_with() -> AsyncIterator[Op]:
    aiolimiter = import_optional("aiolimiter")
    limiter = aiolimiter.AsyncLimiter(max_rate=HUGE_RATE, time_period=1)

    async def op(n: int) -> None:
        for _ in range(n):
            async with limiter:
                pass

    yield op


ASYNCIO = frozenset({"asyncio"})

CASES = (
    Case(
        "bucket",
        "bucket.brace.async_with",
        "brace: async with TokenBucket",
        "brace",
        brace_bucket_async_with,
        brace=("TokenBucket",),
    ),
    Case(
        "bucket",
        "bucket.brace.try_acquire",
        "brace: TokenBucket.try_acquire() (sync)",
        "brace",
        brace_bucket_try_acquire,
        brace=("TokenBucket",),
    ),
    Case(
        "bucket",
        "bucket.brace.window",
        "brace: async with SlidingWindow",
        "brace",
        brace_window_async_with,
        brace=("SlidingWindow",),
    ),
    Case(
        "bucket",
        "bucket.aiolimiter",
        "aiolimiter: async with AsyncLimiter",
        "peer",
        aiolimiter_async_with,
        backends=ASYNCIO,
        requires=("aiolimiter",),
    ),
)

# Floors and references shown in this group's table.
FLOORS = (
    "floor.await",
    "floor.asyncio_semaphore",
    "floor.trio_semaphore",
    "floor.trio_capacity_limiter",
    "floor.anyio_semaphore",
    "floor.anyio_capacity_limiter",
)

TARGETS = (
    Target(
        "bucket",
        "async with TokenBucket <= 0.8 x async with asyncio.Semaphore",
        "bucket.brace.async_with",
        ("floor.asyncio_semaphore",),
        0.8,
        backends=ASYNCIO,
    ),
    Target(
        "bucket",
        "(trio analogue) async with TokenBucket <= 0.8 x async with trio.Semaphore",
        "bucket.brace.async_with",
        ("floor.trio_semaphore",),
        0.8,
        backends=frozenset({"trio"}),
    ),
    Target(
        "bucket",
        "async with TokenBucket below aiolimiter",
        "bucket.brace.async_with",
        ("bucket.aiolimiter",),
        1.0,
        backends=ASYNCIO,
    ),
)
