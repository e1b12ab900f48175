"""Hedging against a long-tail upstream, and the success-path cost of Fallback and Hedge.

Standalone: ``python benchmarks/hedge_bench.py [--calls 10000] [--calls-overhead 20000]
[--rounds 7] [--backend trio|asyncio] [--seed 2026]``.

Part 1, in virtual time (``brace.testing.virtual_time``: trio's
``MockClock(autojump_threshold=0)``, or a looptime loop on asyncio): a synthetic
upstream sleeps a seeded long-tail latency: 10 ms x lognormal(0, 0.25), and for 3 % of
the calls seven to eleven times that (so p99 is about 10 x p50). ``--calls`` calls are
made by 50 concurrent tasks, bare and through ``brace.Hedge`` whose delay is a
``brace.LatencyQuantile`` (p95 of recent attempts) and whose budget grants extra
attempts up to 10 % of the calls. Reported: p50/p90/p99 of the latency each caller saw,
and the extra calls the upstream received. Pass: hedged p99 <= 1/3 of the bare p99 with
<= 10 % extra calls.

Part 2, CPU time (``time.process_time``) of the success path, the call answering at once
(no sleep): a bare ``await``, ``brace.Fallback``, ``brace.Hedge`` (a task group and one
task per call), an anyio task group running one task (the floor of any racing scheme on
anyio), and the closest peers installed: a tenacity-based fallback
(``AsyncRetrying(stop=stop_after_attempt(1), retry_error_callback=...)``) and aiometer's
``run_any`` racing one attempt. Median ns per call over interleaved rounds, spread
(min-max of the rounds) and the ratio to the bare await.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

if __package__ in (None, ""):  # run as ``python benchmarks/hedge_bench.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import anyio

import brace
from brace.testing import virtual_time

cpu = time.process_time


# -- part 1: tail latency in virtual time ---------------------------------------------------


class Upstream:
    """Sleeps a seeded long-tail latency per call; counts calls."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.calls = 0

    def latency(self) -> float:
        base = 0.010 * self.rng.lognormvariate(0.0, 0.25)
        if self.rng.random() < 0.03:
            base *= self.rng.uniform(7.0, 11.0)
        return base

    async def __call__(self) -> int:
        self.calls += 1
        await anyio.sleep(self.latency())
        return 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


async def measure(
    calls: int, seed: int, hedged: bool
) -> tuple[list[float], int, brace.Hedge | None]:
    upstream = Upstream(seed)
    hedge = None
    target: Callable[[], Awaitable[int]] = upstream
    if hedged:
        hedge = brace.Hedge(
            brace.LatencyQuantile(0.95, initial=0.02),
            budget=brace.RetryBudget(
                ratio=0.1, min_per_second=0.0, window=10.0, clock=anyio.current_time
            ),
        )
        target = hedge(upstream)
    latencies: list[float] = []
    workers = 50

    async def worker(count: int) -> None:
        for _ in range(count):
            start = anyio.current_time()
            await target()
            latencies.append(anyio.current_time() - start)

    async with anyio.create_task_group() as group:
        for index in range(workers):
            group.start_soon(worker, calls // workers + (index < calls % workers))
    return latencies, upstream.calls, hedge


def tail_part(calls: int, seed: int, backend: str) -> bool:
    results: dict[str, tuple[list[float], int]] = {}
    refused = ""
    for hedged in (False, True):
        latencies, upstream_calls, hedge = anyio.run(
            measure, calls, seed, hedged, backend=backend, backend_options=virtual_time(backend)
        )
        results["hedged" if hedged else "bare"] = (latencies, upstream_calls)
        if hedge is not None:
            stats = hedge.statistics()
            refused = f"{stats.refused} refused by the budget, {stats.hedge_wins} won"
    print(f"Long-tail upstream, {calls} calls by 50 tasks, virtual time ({backend}), seed {seed}")
    print(
        f"{'case':8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'upstream calls':>15} {'extra':>7}"
    )
    for case, (latencies, upstream_calls) in results.items():
        extra = upstream_calls / calls - 1
        print(
            f"{case:8} {percentile(latencies, 0.5) * 1e3:8.1f} {percentile(latencies, 0.9) * 1e3:8.1f} "
            f"{percentile(latencies, 0.99) * 1e3:8.1f} {upstream_calls:15d} {extra:7.1%}"
        )
    bare_p99 = percentile(results["bare"][0], 0.99)
    bare_p50 = percentile(results["bare"][0], 0.5)
    hedged_p99 = percentile(results["hedged"][0], 0.99)
    extra = results["hedged"][1] / calls - 1
    ok = hedged_p99 <= bare_p99 / 3 and extra <= 0.10
    print(
        f"bare p99/p50 = {bare_p99 / bare_p50:.1f}; hedged p99 / bare p99 = "
        f"{hedged_p99 / bare_p99:.2f} (target <= 0.33), extra calls {extra:.1%} (target <= 10 %): "
        f"{'PASS' if ok else 'FAIL'}"
    )
    print(f"extra attempts: {refused}")
    return ok


# -- part 2: success-path overhead ----------------------------------------------------------


async def answer() -> int:
    return 1


async def one_task() -> int:
    """The floor of any racing scheme on anyio: a task group running one task."""
    async with anyio.create_task_group() as group:
        group.start_soon(answer)
    return 1


def cases() -> dict[str, Callable[[], Awaitable[int]]]:
    fallback = brace.Fallback(0)
    hedge = brace.Hedge(1.0)
    found: dict[str, Callable[[], Awaitable[int]]] = {
        "bare await": answer,
        "brace.Fallback": lambda: fallback.call(answer),
        "brace.Hedge": lambda: hedge.call(answer),
        "task group + 1 task": one_task,
    }
    try:
        import tenacity
    except ImportError:
        pass
    else:
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(1), retry_error_callback=lambda state: 0
        )

        async def tenacity_fallback() -> int:
            result: int = await retrying(answer)
            return result

        found["tenacity fallback"] = tenacity_fallback
    try:
        import aiometer
    except ImportError:
        pass
    else:

        async def aiometer_race() -> int:
            result: int = await aiometer.run_any([answer])
            return result

        found["aiometer.run_any (1)"] = aiometer_race
    return found


async def overhead(calls: int, rounds: int) -> dict[str, list[float]]:
    table = cases()
    times: dict[str, list[float]] = {name: [] for name in table}
    for _ in range(rounds):
        for name, fn in table.items():  # interleaved: every case in every round
            start = cpu()
            for _ in range(calls):
                await fn()
            times[name].append((cpu() - start) / calls * 1e9)
    return times


def overhead_part(calls: int, rounds: int, backend: str) -> None:
    times = anyio.run(overhead, calls, rounds, backend=backend)
    bare = statistics.median(times["bare await"])
    print(f"\nSuccess-path cost, {calls} calls x {rounds} rounds ({backend}), CPU time")
    print(f"{'case':24} {'median ns':>10} {'spread ns':>16} {'x bare':>8} {'+ns':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values):.0f}-{max(values):.0f}"
        print(f"{name:24} {median:10.0f} {spread:>16} {median / bare:8.1f} {median - bare:8.0f}")


def main(calls: int, calls_overhead: int, rounds: int, backend: str, seed: int) -> int:
    ok = tail_part(calls, seed, backend)
    overhead_part(calls_overhead, rounds, backend)
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--calls-overhead", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--backend", choices=["trio", "asyncio"], default="trio")
    parser.add_argument("--seed", type=int, default=2026)
    arguments = parser.parse_args()
    sys.exit(
        main(
            arguments.calls,
            arguments.calls_overhead,
            arguments.rounds,
            arguments.backend,
            arguments.seed,
        )
    )
