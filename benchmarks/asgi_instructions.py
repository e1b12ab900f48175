"""Instructions per request of each `asgi_bench` case, counted by callgrind: a figure that a
busy or slower machine does not move.

Standalone: ``python benchmarks/asgi_instructions.py [--cases bare,limit] [--jobs 2]``
(needs ``valgrind``; Debian's package).

Each case of ``benchmarks/asgi_bench.py`` runs in its own ``valgrind --tool=callgrind``
process twice, for ``--low`` and ``--high`` requests after the same warm-up; the
difference of the two totals divided by the difference of the counts is the cost of one
request, without the interpreter's start, the imports and the warm-up. Timings on a
shared machine move by a third from one run to the next and by half from one day to the
next; a case's count moves by under 1 % (its overhead over the bare app by about 1,000
instructions; slowapi's by a third, its storage expiring keys on a background thread).
They are not time: a first-level cache
miss costs no instruction (see docs/performance.md), so they rank changes to the request
path, and the timed benchmark says what a request costs.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import asgi_bench

CASES = {
    "bare": "bare Starlette app",
    "none": "brace (no rules)",
    "limit": "brace (limit + headers)",
    "limit-no-headers": "brace (limit, no headers)",
    "executor": "brace (limit + executor + memory)",
    "full": "brace (fully configured rule)",
    "slowapi": "slowapi (limit + headers)",
    "floor": "floor: limiter + fields only",
}
WARM = 500
_COLLECTED = re.compile(r"Collected : (\d+)")


def child(case: str, requests: int) -> None:
    """Run ``requests`` requests of ``case`` after the warm-up (in the measured process)."""
    app = asgi_bench.CASES[CASES[case]]()
    if app is None:
        raise SystemExit(f"{case}: its library is not installed")
    templates = asgi_bench.scopes()

    async def main() -> None:
        await asgi_bench.run(app, WARM, templates)
        await asgi_bench.run(app, requests, templates)

    asyncio.run(main())


def count(case: str, requests: int) -> int:
    """Instructions of a whole child process (callgrind's total)."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            case,
            str(requests),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{case} ({requests} requests) failed:\n{done.stderr[-2000:]}")
    return int(found[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--low", type=int, default=1000)
    parser.add_argument("--high", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=2, help="callgrind processes at once")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    cases = [case.strip() for case in args.cases.split(",")]
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; choose from {list(CASES)}")
    if "bare" not in cases:
        cases.insert(0, "bare")
    if args.high <= args.low:
        raise SystemExit("--high must be more than --low")
    runs = [(case, requests) for case in cases for requests in (args.low, args.high)]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        totals = dict(zip(runs, pool.map(lambda run: count(*run), runs), strict=True))
    per_request = {
        case: (totals[case, args.high] - totals[case, args.low]) / (args.high - args.low)
        for case in cases
    }
    bare = per_request["bare"]
    print(f"Python {sys.version.split()[0]}, instructions per request (callgrind)\n")
    print(f"| {'case':<36} | {'per request':>12} | {'over bare':>10} |")
    print(f"|{'-' * 38}|{'-' * 14}|{'-' * 12}|")
    for case in cases:
        value = per_request[case]
        print(f"| {CASES[case]:<36} | {value:12,.0f} | {value - bare:10,.0f} |")


if __name__ == "__main__":
    main()
