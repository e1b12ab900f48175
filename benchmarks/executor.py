"""Issue 4: the priority executor, uncontended and in a batch.

Uncontended: one task enters and leaves a slot of an executor with 10 slots and nobody
else around (``async with executor.slot()``, and ``await executor.run(noop)``), against
``async with asyncio.Semaphore(10)`` (see ``floor.py``).

Batch: 1,000 tasks each run ``noop`` through at most 10 at once, so most of them queue:
brace spawns them in an anyio task group, each awaiting ``executor.run(noop)``;
``aiometer.run_on_each(fn, items, max_at_once=10)`` does the same with its own task group
and ``anyio.Semaphore``; the references are an anyio task group with ``anyio.Semaphore(10)``
and (asyncio) ``asyncio.gather`` of tasks with ``asyncio.Semaphore(10)``. Issue 16's
targets compare like with like: gathered asyncio tasks each awaiting ``executor.run(noop)``
against gathered tasks entering ``asyncio.Semaphore(10)``, and on trio a nursery of
``executor.run(noop)`` against a nursery entering ``trio.Semaphore(10)`` (at most 1.3 x).
The figure is ns per task, spawning and scheduling included.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ._harness import Case, Op, Target, brace_attr, import_optional, noop

BATCH = 1000
ASYNCIO = frozenset({"asyncio"})
TRIO = frozenset({"trio"})


def _executor(max_queue: int = BATCH) -> Any:
    return brace_attr("PriorityExecutor")(concurrency=10, max_queue=max_queue)


@asynccontextmanager
async def brace_slot() -> AsyncIterator[Op]:
    executor = _executor()

    async def op(n: int) -> None:
        slot = executor.slot
        for _ in range(n):
            async with slot():
                pass

    yield op


@asynccontextmanager
async def brace_run() -> AsyncIterator[Op]:
    executor = _executor()

    async def op(n: int) -> None:
        run = executor.run
        work = noop
        for _ in range(n):
            await run(work)

    yield op


@asynccontextmanager
async def brace_batch() -> AsyncIterator[Op]:
    executor = _executor()

    async def op(n: int) -> None:
        run = executor.run
        work = noop
        for _ in range(n):
            async with anyio.create_task_group() as group:
                for _ in range(BATCH):
                    group.start_soon(run, work)

    yield op


async def _item_noop(_: int) -> None:
    pass


@asynccontextmanager
async def aiometer_batch() -> AsyncIterator[Op]:
    aiometer = import_optional("aiometer")
    items = list(range(BATCH))

    async def op(n: int) -> None:
        run_on_each = aiometer.run_on_each
        for _ in range(n):
            await run_on_each(_item_noop, items, max_at_once=10)

    yield op


@asynccontextmanager
async def anyio_semaphore_batch() -> AsyncIterator[Op]:
    semaphore = anyio.Semaphore(10)

    async def limited() -> None:
        async with semaphore:
            await noop()

    async def op(n: int) -> None:
        for _ in range(n):
            async with anyio.create_task_group() as group:
                for _ in range(BATCH):
                    group.start_soon(limited)

    yield op


@asynccontextmanager
async def asyncio_semaphore_batch() -> AsyncIterator[Op]:
    semaphore = asyncio.Semaphore(10)

    async def limited() -> None:
        async with semaphore:
            await noop()

    async def op(n: int) -> None:
        for _ in range(n):
            await asyncio.gather(*[asyncio.create_task(limited()) for _ in range(BATCH)])

    yield op


@asynccontextmanager
async def brace_gather_batch() -> AsyncIterator[Op]:
    """The asyncio reference's shape with brace: gathered tasks each awaiting run(noop)."""
    executor = _executor()

    async def op(n: int) -> None:
        run = executor.run
        for _ in range(n):
            await asyncio.gather(*[asyncio.create_task(run(noop)) for _ in range(BATCH)])

    yield op


@asynccontextmanager
async def trio_semaphore_batch() -> AsyncIterator[Op]:
    import trio

    semaphore = trio.Semaphore(10)

    async def limited() -> None:
        async with semaphore:
            await noop()

    async def op(n: int) -> None:
        for _ in range(n):
            async with trio.open_nursery() as nursery:
                for _ in range(BATCH):
                    nursery.start_soon(limited)

    yield op


@asynccontextmanager
async def brace_nursery_batch() -> AsyncIterator[Op]:
    import trio

    executor = _executor()

    async def op(n: int) -> None:
        run = executor.run
        for _ in range(n):
            async with trio.open_nursery() as nursery:
                for _ in range(BATCH):
                    nursery.start_soon(run, noop)

    yield op


CASES = (
    Case(
        "executor",
        "executor.brace.slot",
        "brace: async with executor.slot() (uncontended)",
        "brace",
        brace_slot,
        brace=("PriorityExecutor",),
    ),
    Case(
        "executor",
        "executor.brace.run",
        "brace: await executor.run(noop) (uncontended)",
        "brace",
        brace_run,
        brace=("PriorityExecutor",),
    ),
    Case(
        "executor",
        "executor.brace.batch",
        f"brace: {BATCH} tasks, task group + executor.run, 10 slots (per task)",
        "brace",
        brace_batch,
        brace=("PriorityExecutor",),
        per=BATCH,
    ),
    Case(
        "executor",
        "executor.aiometer.batch",
        f"aiometer: run_on_each({BATCH} items, max_at_once=10) (per task)",
        "peer",
        aiometer_batch,
        requires=("aiometer",),
        per=BATCH,
    ),
    Case(
        "executor",
        "executor.anyio.batch",
        f"anyio task group + anyio.Semaphore(10), {BATCH} tasks (per task)",
        "reference",
        anyio_semaphore_batch,
        per=BATCH,
    ),
    Case(
        "executor",
        "executor.asyncio.batch",
        f"asyncio tasks + gather + asyncio.Semaphore(10), {BATCH} tasks (per task)",
        "reference",
        asyncio_semaphore_batch,
        backends=ASYNCIO,
        per=BATCH,
    ),
    Case(
        "executor",
        "executor.brace.gather_batch",
        f"brace: asyncio tasks + gather + executor.run, {BATCH} tasks (per task)",
        "brace",
        brace_gather_batch,
        brace=("PriorityExecutor",),
        backends=ASYNCIO,
        per=BATCH,
    ),
    Case(
        "executor",
        "executor.trio.batch",
        f"trio nursery + trio.Semaphore(10), {BATCH} tasks (per task)",
        "reference",
        trio_semaphore_batch,
        backends=TRIO,
        requires=("trio",),
        per=BATCH,
    ),
    Case(
        "executor",
        "executor.brace.nursery_batch",
        f"brace: trio nursery + executor.run, {BATCH} tasks (per task)",
        "brace",
        brace_nursery_batch,
        brace=("PriorityExecutor",),
        backends=TRIO,
        requires=("trio",),
        per=BATCH,
    ),
)

FLOORS = (
    "floor.await",
    "floor.asyncio_semaphore",
    "floor.trio_semaphore",
    "floor.trio_capacity_limiter",
)

TARGETS = (
    Target(
        "executor",
        "executor.run per job vs gather + asyncio.Semaphore per job (issue 16)",
        "executor.brace.gather_batch",
        ("executor.asyncio.batch",),
        1.3,
        backends=ASYNCIO,
    ),
    Target(
        "executor",
        "executor.run per job vs nursery + trio.Semaphore per job (issue 16)",
        "executor.brace.nursery_batch",
        ("executor.trio.batch",),
        1.3,
        backends=TRIO,
    ),
    Target(
        "executor",
        "async with executor.slot() <= 1.15 x async with asyncio.Semaphore (issue 16)",
        "executor.brace.slot",
        ("floor.asyncio_semaphore",),
        1.15,
        backends=ASYNCIO,
    ),
    Target(
        "executor",
        "(informative) batch through executor.run below aiometer.run_on_each",
        "executor.brace.batch",
        ("executor.aiometer.batch",),
        1.0,
    ),
)
