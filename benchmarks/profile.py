"""Profile one benchmark case: where its time goes, function by function.

Usage (from the repository root)::

    python -m benchmarks.profile hit.brace.bucket --backend asyncio -n 200000
    python -m benchmarks.profile bucket.brace.async_with --sort tottime --limit 25

It sets the case up on a plain loop of the backend, runs ``op(n)`` under ``cProfile`` and
prints the costliest functions. cProfile adds a fixed cost to every Python call, so it
inflates call-heavy code: read it for *which* functions and how many calls per operation,
and use ``python -m benchmarks --filter KEY`` for the true cost.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as ``python benchmarks/profile.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

from benchmarks.run import all_cases


def profile_case(key: str, backend: str, n: int, sort: str, limit: int) -> str:
    """The ``pstats`` table of ``n`` operations of case ``key`` on ``backend``."""
    [case] = [c for c in all_cases() if c.key == key]
    profiler = cProfile.Profile()

    async def main() -> None:
        async with case.setup() as op:
            await op(min(n, 1000))  # warm up outside the profile
            profiler.enable()
            await op(n)
            profiler.disable()

    anyio.run(main, backend=backend)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(limit)
    return f"{key} on {backend}, {n} operations (calls / {n} = calls per operation)\n" + (
        out.getvalue()
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("key", help="a case key (python -m benchmarks --list)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args(argv)
    print(profile_case(args.key, args.backend, args.n, args.sort, args.limit))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
