"""The floor: what the event loop's own primitives cost, measured beside everything else.

- ``await noop()``: one await of an empty coroutine, the least any call-shaped async
  primitive can cost (the work every breaker / retry benchmark protects);
- ``async with asyncio.Semaphore``: the uncontended enter/exit of the standard library's
  semaphore, which never reaches the loop when a permit is free;
- on trio, ``async with trio.Semaphore`` and ``trio.CapacityLimiter``: both checkpoint
  (yield to the scheduler) on every acquire, as trio requires of its blocking calls;
- for reference, anyio's ``Semaphore`` and ``CapacityLimiter`` on both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from ._harness import Case, Op, noop


@asynccontextmanager
async def empty_await() -> AsyncIterator[Op]:
    async def op(n: int) -> None:
        work = noop
        for _ in range(n):
            await work()

    yield op


@asynccontextmanager
async def asyncio_semaphore() -> AsyncIterator[Op]:
    semaphore = asyncio.Semaphore(10)

    async def op(n: int) -> None:
        for _ in range(n):
            async with semaphore:
                pass

    yield op


@asynccontextmanager
async def trio_semaphore() -> AsyncIterator[Op]:
    import trio

    semaphore = trio.Semaphore(10)

    async def op(n: int) -> None:
        for _ in range(n):
            async with semaphore:
                pass

    yield op


@asynccontextmanager
async def trio_capacity_limiter() -> AsyncIterator[Op]:
    import trio

    limiter = trio.CapacityLimiter(10)

    async def op(n: int) -> None:
        for _ in range(n):
            async with limiter:
                pass

    yield op


@asynccontextmanager
async def anyio_semaphore() -> AsyncIterator[Op]:
    semaphore = anyio.Semaphore(10)

    async def op(n: int) -> None:
        for _ in range(n):
            async with semaphore:
                pass

    yield op


@asynccontextmanager
async def anyio_capacity_limiter() -> AsyncIterator[Op]:
    limiter = anyio.CapacityLimiter(10)

    async def op(n: int) -> None:
        for _ in range(n):
            async with limiter:
                pass

    yield op


ASYNCIO = frozenset({"asyncio"})
TRIO = frozenset({"trio"})

CASES = (
    Case("floor", "floor.await", "await noop()", "floor", empty_await),
    Case(
        "floor",
        "floor.asyncio_semaphore",
        "async with asyncio.Semaphore",
        "floor",
        asyncio_semaphore,
        backends=ASYNCIO,
    ),
    Case(
        "floor",
        "floor.trio_semaphore",
        "async with trio.Semaphore",
        "floor",
        trio_semaphore,
        backends=TRIO,
        requires=("trio",),
    ),
    Case(
        "floor",
        "floor.trio_capacity_limiter",
        "async with trio.CapacityLimiter",
        "floor",
        trio_capacity_limiter,
        backends=TRIO,
        requires=("trio",),
    ),
    Case(
        "floor",
        "floor.anyio_semaphore",
        "async with anyio.Semaphore",
        "reference",
        anyio_semaphore,
    ),
    Case(
        "floor",
        "floor.anyio_capacity_limiter",
        "async with anyio.CapacityLimiter",
        "reference",
        anyio_capacity_limiter,
    ),
)
