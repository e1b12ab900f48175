"""Where the time of a brace hot path goes, step by step (a manual profile).

Usage (from the repository root)::

    python -m benchmarks.breakdown hit          # await RateLimiter.hit(key)
    python -m benchmarks.breakdown bucket       # async with TokenBucket
    python -m benchmarks.breakdown breaker      # async with CircuitBreaker
    python -m benchmarks.breakdown done         # await of the fast paths' finished awaitable
    python -m benchmarks.breakdown run          # await executor.run(noop) (asyncio)

cProfile charges a fixed cost to every Python call, which swamps paths that take a
microsecond. Here each step is timed alone instead (same loop shape as the benchmarks,
median of rounds, thread CPU clock so a busy machine does not blur it), growing from the
empty loop to the full operation, so the difference between two lines is what the added
piece costs (the last column says which line it is compared with). Steps that reach into brace's private attributes say "n/a" if those change.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import itertools
import math
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python benchmarks/breakdown.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

from benchmarks._harness import brace_attr, noop


async def _empty_loop(n: int) -> None:
    """The loop alone: what every other step's figure includes."""
    for _ in range(n):
        pass


# (label, op, index of the step it is compared with, or None for the previous one)
Step = tuple[str, Callable[[int], Awaitable[None]], int | None]
KEYS = tuple(f"user:{i}" for i in range(1000))


def _hit_steps() -> list[Step]:
    def limiter(template: Any) -> Any:
        return brace_attr("RateLimiter")(template, max_keys=100_000)

    bucket = brace_attr("TokenBucket")
    fresh = limiter(bucket(rate=1e9, per=1.0, burst=10**9))  # at rest again after each hit
    kept = limiter(bucket(rate=1.0, per=1.0, burst=10**9))  # keeps live state per key
    window = limiter(brace_attr("SlidingWindow")(limit=10**9, window=1.0))
    keys = itertools.cycle(KEYS)
    decision = brace_attr("Decision")

    async def loop(n: int) -> None:
        for _key in itertools.islice(keys, n):
            pass

    async def clock(n: int) -> None:
        read = time.monotonic
        for _key in itertools.islice(keys, n):
            read()

    async def build_decision(n: int) -> None:
        for _key in itertools.islice(keys, n):
            decision(True, 10, 9, 0.0, 1.0)

    async def drafted(n: int) -> None:
        build = importlib.import_module("brace._core.decision").drafted
        for _key in itertools.islice(keys, n):
            build(True, 10, 9, 0.0, 1.0)

    async def decide(n: int) -> None:
        policy_decide = fresh.policy.decide
        now = time.monotonic()
        for _key in itertools.islice(keys, n):
            policy_decide(-math.inf, now, 1)

    async def awaited(n: int) -> None:
        work = noop
        for _key in itertools.islice(keys, n):
            await work()

    def sync_hit(which: Any) -> Callable[[int], Awaitable[None]]:
        async def op(n: int) -> None:
            hit = which.try_hit
            for key in itertools.islice(keys, n):
                hit(key)

        return op

    def async_hit(which: Any) -> Callable[[int], Awaitable[None]]:
        async def op(n: int) -> None:
            hit = which.hit
            for key in itertools.islice(keys, n):
                await hit(key)

        return op

    def method_hit(which: Any) -> Callable[[int], Awaitable[None]]:
        # RateLimiter.hit itself, a coroutine calling the table's function: what a limiter
        # runs without the table's coroutine twin (a hook, a subclass, a remote store)
        async def op(n: int) -> None:
            hit = brace_attr("RateLimiter").hit.__get__(which)  # the bound method
            for key in itertools.islice(keys, n):
                await hit(key)

        return op

    return [
        ("loop over 1,000 cycling keys (nothing else)", loop, None),
        ("loop + time.monotonic()", clock, 0),
        ("loop + Decision(...) (one decision built)", build_decision, 0),
        ("loop + GCRA.decide(-inf, now, 1) (a fresh key's decision)", decide, 0),
        ("loop + await noop() (the price of a coroutine)", awaited, 0),
        ("TokenBucket 1/s, burst 1e9 (state kept): try_hit(key), sync", sync_hit(kept), 0),
        ("same: await hit(key)", async_hit(kept), 5),
        ("TokenBucket 1e9/s (state at rest): try_hit(key), sync", sync_hit(fresh), 5),
        ("same: await hit(key) (the benchmark's hit.brace.bucket)", async_hit(fresh), 7),
        ("SlidingWindow 1e9/1 s: try_hit(key), sync", sync_hit(window), 5),
        ("same: await hit(key) (the benchmark's hit.brace.window)", async_hit(window), 9),
        ("line 8 through the RateLimiter.hit method (no twin)", method_hit(fresh), 8),
        ("line 10 through the RateLimiter.hit method (no twin)", method_hit(window), 10),
        ("loop + drafted(...) (a decision as the stores build one, a call)", drafted, 0),
    ]


def _done_steps() -> list[Step]:
    """``await`` of a finished awaitable, each form `brace._done` chooses between."""
    done_module = importlib.import_module("brace._done")
    forms = {
        "DONE": done_module.DONE,
        "future": done_module._future(),
        "exhausted": done_module._Done(),
    }

    def awaiting(awaitable: Any) -> Callable[[int], Awaitable[None]]:
        async def op(n: int) -> None:
            for _ in range(n):
                await awaitable

        return op

    async def awaited(n: int) -> None:
        work = noop
        for _ in range(n):
            await work()

    return [
        ("empty loop", _empty_loop, None),
        ("await noop() (a coroutine)", awaited, 0),
        ("await DONE (this interpreter's form)", awaiting(forms["DONE"]), 0),
        ("await a finished asyncio.Future (the form up to 3.11)", awaiting(forms["future"]), 0),
        ("await brace._done._Done() (the form from 3.12)", awaiting(forms["exhausted"]), 0),
    ]


def _run_steps() -> list[Step]:
    """``await executor.run(noop)`` and the look-ups it makes on asyncio to record the job
    for a drain: the running loop (asyncio's, and `brace._cancel.running_loop`, which
    before 3.12 skips asyncio's ``getpid()``), the task, anyio's scope of the task."""
    cancel = importlib.import_module("brace._cancel")
    executor: Any = brace_attr("PriorityExecutor")(concurrency=10)
    semaphore = asyncio.Semaphore(10)  # (bound to the loop at its first wait: 3.10+)

    def repeat(call: Callable[[], Any]) -> Callable[[int], Awaitable[None]]:
        async def op(n: int) -> None:
            for _ in range(n):
                call()

        return op

    async def scope(n: int) -> None:
        scope_of = cancel.scope_of
        task = cancel.current_task(cancel.get_running_loop())
        for _ in range(n):
            scope_of(task)

    async def run(n: int) -> None:
        call = executor.run
        work = noop
        for _ in range(n):
            await call(work)

    async def slot(n: int) -> None:
        enter = executor.slot
        work = noop
        for _ in range(n):
            async with enter():
                await work()

    async def guarded(n: int) -> None:
        work = noop
        for _ in range(n):
            async with semaphore:
                await work()

    return [
        ("empty loop", _empty_loop, None),
        ("asyncio._get_running_loop() (getpid() before 3.12)", repeat(cancel.get_running_loop), 0),
        (
            "brace._cancel.running_loop() (as a call; inlined in run)",
            repeat(cancel.running_loop),
            0,
        ),
        ("scope_of(task) (as a call; inlined in run)", scope, 0),
        ("await noop() in async with asyncio.Semaphore(10)", guarded, 0),
        ("await noop() in async with executor.slot()", slot, 0),
        ("await executor.run(noop)", run, 0),
    ]


def _bucket_steps() -> list[Step]:
    bucket: Any = brace_attr("TokenBucket")(rate=1e9, per=1.0, burst=10**9)

    async def clock(n: int) -> None:
        read = time.monotonic
        for _ in range(n):
            read()

    async def enter(n: int) -> None:
        aenter = bucket.__aenter__
        for _ in range(n):
            await aenter()

    async def enter_exit(n: int) -> None:
        aenter = bucket.__aenter__
        aexit = bucket.__aexit__
        for _ in range(n):
            await aenter()
            await aexit(None, None, None)

    async def with_block(n: int) -> None:
        for _ in range(n):
            async with bucket:
                pass

    return [
        ("empty loop", _empty_loop, None),
        ("+ time.monotonic()", clock, None),
        ("+ await bucket.__aenter__()", enter, None),
        ("+ await bucket.__aexit__(None, None, None)", enter_exit, None),
        ("async with bucket: pass (the benchmark)", with_block, None),
    ]


def _breaker_steps() -> list[Step]:
    breaker: Any = brace_attr("CircuitBreaker")(failure_threshold=15, recovery_time=30.0)

    async def awaited(n: int) -> None:
        work = noop
        for _ in range(n):
            await work()

    async def enter(n: int) -> None:
        aenter = breaker.__aenter__
        work = noop
        for _ in range(n):
            await aenter()
            await work()

    async def enter_exit(n: int) -> None:
        aenter = breaker.__aenter__
        aexit = breaker.__aexit__
        work = noop
        for _ in range(n):
            await aenter()
            await work()
            await aexit(None, None, None)

    async def with_block(n: int) -> None:
        work = noop
        for _ in range(n):
            async with breaker:
                await work()

    return [
        ("await noop() (the protected work)", awaited, None),
        ("+ await breaker.__aenter__()", enter, None),
        ("+ await breaker.__aexit__(None, None, None)", enter_exit, None),
        ("async with breaker: await noop() (the benchmark)", with_block, None),
    ]


PATHS: dict[str, Callable[[], list[Step]]] = {
    "hit": _hit_steps,
    "bucket": _bucket_steps,
    "breaker": _breaker_steps,
    "done": _done_steps,
    "run": _run_steps,
}


async def _median_ns(op: Callable[[int], Awaitable[None]], n: int, rounds: int) -> float:
    await op(n)  # warm up
    samples = []
    for _ in range(rounds):
        gc.disable()
        try:
            start = time.thread_time_ns()
            await op(n)
            samples.append((time.thread_time_ns() - start) / n)
        finally:
            gc.enable()
    return statistics.median(samples)


def breakdown(path: str, backend: str = "asyncio", n: int = 100_000, rounds: int = 9) -> str:
    """The table of steps of ``path`` with their median CPU ns per operation."""
    lines: list[str] = []

    async def main() -> None:
        values: list[float] = []
        for index, (label, op, base) in enumerate(PATHS[path]()):
            try:
                value = await _median_ns(op, n, rounds)
            except (AttributeError, TypeError) as exc:  # a private name changed
                lines.append(f"| {index} | {label} | n/a ({type(exc).__name__}: {exc}) | |")
                values.append(math.nan)
                continue
            reference = index - 1 if base is None else base
            delta = f"{value - values[reference]:+,.0f} ns vs {reference}" if index else ""
            lines.append(f"| {index} | {label} | {value:,.0f} ns | {delta} |")
            values.append(value)

    anyio.run(main, backend=backend)
    header = ["| # | step | CPU ns / op (median) | difference |", "|---|---|---:|---:|"]
    return "\n".join(
        [f"{path} on {backend}, {n} operations x {rounds} rounds", "", *header, *lines]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.breakdown")
    parser.add_argument("path", choices=sorted(PATHS))
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    print(breakdown(args.path, args.backend, args.n, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
