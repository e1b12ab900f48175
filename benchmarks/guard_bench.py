"""Issue 5: the MemoryGuard's hot-path check, which must cost under 100 ns amortized.

Run with ``python benchmarks/guard_bench.py``. Times, per call, with the real process
probe (``/proc/self/statm`` through a kept-open descriptor) and the default 1 s interval:

- ``guard.level`` while ``guard.run()`` samples in the background (the mode servers use:
  the check is one attribute read and a flag test);
- ``guard.level`` with lazy sampling (no background task: each check reads the clock to
  see whether a sample is due, and one check per interval pays for the sample);
- ``guard.admit(priority)``, the executor's question, in both modes;
- one probe read, what the cache saves on every other call; and an empty loop, subtracted.

Best of several rounds, as ns per call; no assertion (the machine is shared and noisy).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import anyio

import brace

CALLS = 200_000
ROUNDS = 9


def _best(fn: Callable[[], object], calls: int = CALLS) -> float:
    def loop() -> float:
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        return (time.perf_counter_ns() - start) / calls

    samples = []
    gc.disable()
    try:
        for _ in range(ROUNDS):
            samples.append(loop())
    finally:
        gc.enable()
    return min(samples)


def _empty() -> None:
    return None


async def _measure() -> dict[str, float]:
    guard = brace.MemoryGuard(high=1 << 40)
    probe = brace.ProcessMemoryProbe()
    low = int(brace.Priority.LOW)
    results: dict[str, float] = {}
    empty = _best(_empty)
    results["empty loop (subtracted below)"] = empty

    def level() -> object:
        return guard.level

    def admit() -> object:
        return guard.admit(low)

    results["guard.level, lazy sampling"] = _best(level) - empty
    results["guard.admit(LOW), lazy sampling"] = _best(admit) - empty
    async with anyio.create_task_group() as tg:
        await tg.start(guard.run)
        results["guard.level, background sampler"] = _best(level) - empty
        results["guard.admit(LOW), background sampler"] = _best(admit) - empty
        tg.cancel_scope.cancel()
    results["one probe read (what the cache saves)"] = _best(probe, 20_000) - empty
    return results


def main() -> None:
    results = anyio.run(_measure)
    width = max(map(len, results))
    print(f"MemoryGuard hot path, best of {ROUNDS} rounds of {CALLS:,} calls (target < 100 ns)")
    for name, ns in results.items():
        print(f"  {name:<{width}}  {ns:8.1f} ns")


if __name__ == "__main__":
    main()
