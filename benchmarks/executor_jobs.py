"""Issue 4: the per-job cost of 10,000 jobs at concurrency 10.

Run with ``python benchmarks/executor_jobs.py``. Every job is ``await checkpoint()`` (one
trip through the scheduler, so that jobs really interleave and wait for slots). The same
10,000 jobs go through:

- the reference: ``asyncio.gather`` of tasks each entering an ``asyncio.Semaphore(10)``
  (on trio: a nursery and ``trio.Semaphore(10)``);
- brace: the same tasks entering ``executor.slot()`` of a ``PriorityExecutor(10, 10_000)``
  (priority-ordered and bounded), and calling ``executor.run(job)``;
- an anyio task group with an ``anyio.CapacityLimiter(10)``;
- aiometer: ``run_on_each(job, items, max_at_once=10)`` (asyncio; it runs on anyio, so on
  trio too).

The figure is the total time divided by 10,000, median of several rounds; the ratio is to
the reference. Target (asyncio): brace at most 1.5 x the reference.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import anyio

import brace

JOBS = 10_000
CONCURRENCY = 10
ROUNDS = 7

Runner = Callable[[], Awaitable[None]]


async def _checkpoint() -> None:
    await anyio.lowlevel.checkpoint()


def _runners(backend: str) -> dict[str, Runner]:
    runners: dict[str, Runner] = {}

    if backend == "asyncio":

        async def reference() -> None:
            semaphore = asyncio.Semaphore(CONCURRENCY)

            async def job() -> None:
                async with semaphore:
                    await asyncio.sleep(0)

            await asyncio.gather(*(job() for _ in range(JOBS)))

        async def brace_slot() -> None:
            executor = brace.PriorityExecutor(CONCURRENCY, JOBS)

            async def job() -> None:
                async with executor.slot():
                    await asyncio.sleep(0)

            await asyncio.gather(*(job() for _ in range(JOBS)))

        async def brace_run() -> None:
            executor = brace.PriorityExecutor(CONCURRENCY, JOBS)
            await asyncio.gather(*(executor.run(asyncio.sleep, 0) for _ in range(JOBS)))

        runners["reference: asyncio.gather + asyncio.Semaphore(10)"] = reference
        runners["brace: asyncio.gather + executor.slot()"] = brace_slot
        runners["brace: asyncio.gather + executor.run(job)"] = brace_run
    else:
        import trio

        async def reference() -> None:
            semaphore = trio.Semaphore(CONCURRENCY)

            async def job() -> None:
                async with semaphore:
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                for _ in range(JOBS):
                    nursery.start_soon(job)

        async def brace_slot() -> None:
            executor = brace.PriorityExecutor(CONCURRENCY, JOBS)

            async def job() -> None:
                async with executor.slot():
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                for _ in range(JOBS):
                    nursery.start_soon(job)

        async def brace_run() -> None:
            executor = brace.PriorityExecutor(CONCURRENCY, JOBS)
            async with trio.open_nursery() as nursery:
                for _ in range(JOBS):
                    nursery.start_soon(executor.run, trio.lowlevel.checkpoint)

        runners["reference: trio nursery + trio.Semaphore(10)"] = reference
        runners["brace: trio nursery + executor.slot()"] = brace_slot
        runners["brace: trio nursery + executor.run(job)"] = brace_run

    async def anyio_limiter() -> None:
        limiter = anyio.CapacityLimiter(CONCURRENCY)

        async def job() -> None:
            async with limiter:
                await _checkpoint()

        async with anyio.create_task_group() as tg:
            for _ in range(JOBS):
                tg.start_soon(job)

    runners["anyio task group + CapacityLimiter(10)"] = anyio_limiter
    try:
        import aiometer
    except ImportError:  # pragma: no cover - an optional peer
        pass
    else:

        async def aiometer_run() -> None:
            async def job(_: int) -> None:
                await _checkpoint()

            await aiometer.run_on_each(job, range(JOBS), max_at_once=CONCURRENCY)

        runners["aiometer: run_on_each(max_at_once=10)"] = aiometer_run
    return runners


async def _measure(backend: str) -> dict[str, float]:
    runners = _runners(backend)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for runner in runners.values():  # warm up
        await runner()
    for _ in range(ROUNDS):
        for name, runner in runners.items():  # interleaved rounds
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter_ns()
                await runner()
                elapsed = time.perf_counter_ns() - start
            finally:
                gc.enable()
            samples[name].append(elapsed / JOBS)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    backends = sys.argv[1:] or ["asyncio", "trio"]
    for backend in backends:
        results = anyio.run(_measure, backend, backend=backend)
        reference = next(iter(results.values()))
        print(f"\n{JOBS:,} jobs at concurrency {CONCURRENCY} on {backend} (median of {ROUNDS})")
        print("| case | per job | x reference |\n|---|---:|---:|")
        for name, ns in results.items():
            print(f"| {name} | {ns / 1000:.2f} µs | {ns / reference:.2f} |")


if __name__ == "__main__":
    main()
