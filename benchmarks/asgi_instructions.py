"""Instructions per request of each `asgi_bench` case, counted by callgrind: a figure that a
busy or slower machine does not move.

Standalone: ``python benchmarks/asgi_instructions.py [--cases bare,limit] [--jobs 2]``
(needs ``valgrind``; Debian's package). With ``--bytecodes`` it counts instead the
interpreter's bytecodes and Python calls per request (``sys.settrace``, ``sys.monitoring``
on 3.12+; no valgrind), and ``--functions CASE`` says where one case's bytecodes go: by
part of the request (`GROUPS`), over the bare app, then by function.

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

Bytecodes follow time more closely than instructions do (docs/performance.md), and
their count is exact: the same in every run, except one during which a limit's window
turns over (one limit with headers once read 14 more than in every other run; each key
rolling its window once would account for it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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


#: the parts of a request's path, by the functions' "file:line:name" (the first that
#: matches); brace's functions no part names are its own bookkeeping
GROUPS = (
    (
        "the limits: key, decision, recording",
        re.compile(
            r"brace/(_store|_limiter|_client_ip|_core/window)\.py|(check|hit)_(local|limits)|_limited"
        ),
    ),
    ("the RateLimit fields", re.compile(r"brace/_headers\.py|ratelimit_value|raw_rate_limit")),
    ("the cancel scope and its deadline", re.compile(r"brace/_cancel\.py")),
    ("the executor slot", re.compile(r"brace/_executor\.py")),
    ("the breaker's ticket", re.compile(r"brace/(_breaker|_core/breaker)\.py")),
    ("the memory guard", re.compile(r"brace/_memory\.py")),
    ("the request's own bookkeeping", re.compile(r"brace/")),
    ("the event loop", re.compile(r"asyncio/|selectors\.py")),
    ("the application and the harness", re.compile(r"")),
)


def _app(case: str) -> tuple[Any, list[dict[str, Any]]]:
    """The app of ``case`` and the request scopes it is called with."""
    app = asgi_bench.CASES[CASES[case]]()
    if app is None:
        raise SystemExit(f"{case}: its library is not installed")
    return app, asgi_bench.scopes()


def child(case: str, requests: int) -> None:
    """Run ``requests`` requests of ``case`` after the warm-up (in the measured process)."""
    app, templates = _app(case)

    async def main() -> None:
        await asgi_bench.run(app, WARM, templates)
        await asgi_bench.run(app, requests, templates)

    asyncio.run(main())


def bytecodes(case: str, requests: int) -> tuple[float, float, collections.Counter[str]]:
    """Bytecodes and Python calls per request of ``case`` after the warm-up, and the
    bytecodes of each function over the ``requests`` requests (in this process)."""
    app, templates = _app(case)
    ops: collections.Counter[Any] = collections.Counter()  # by code object
    calls = 0

    def instruction(code: Any, offset: int) -> None:
        ops[code] += 1

    def call(code: Any, offset: int) -> None:
        nonlocal calls
        calls += 1

    def trace(frame: Any, event: str, arg: Any) -> Any:
        if event == "opcode":
            ops[frame.f_code] += 1
        elif event == "call":  # (a coroutine's resumption is a call too)
            call(frame.f_code, 0)
            frame.f_trace_opcodes = True
        return trace

    async def main() -> None:
        # every client once at least: the counted requests find their keys, as the
        # difference of two callgrind runs does
        await asgi_bench.run(app, max(WARM, asgi_bench.CLIENTS), templates)
        monitoring: Any = getattr(sys, "monitoring", None)
        if monitoring is None:  # before 3.12: settrace's opcode events
            previous = sys.gettrace()  # (a coverage tool's, under the tests)
            sys.settrace(trace)
            try:
                await asgi_bench.run(app, requests, templates)
            finally:
                sys.settrace(previous)
            return
        # 3.12+: sys.monitoring (settrace's opcode events do not come on 3.12.1)
        tool = next(tool for tool in range(6) if monitoring.get_tool(tool) is None)
        events = monitoring.events
        monitoring.use_tool_id(tool, "asgi_instructions")
        monitoring.register_callback(tool, events.INSTRUCTION, instruction)
        monitoring.register_callback(tool, events.PY_START, call)
        monitoring.register_callback(tool, events.PY_RESUME, call)
        monitoring.set_events(tool, events.INSTRUCTION | events.PY_START | events.PY_RESUME)
        try:
            await asgi_bench.run(app, requests, templates)
        finally:
            monitoring.set_events(tool, 0)
            monitoring.free_tool_id(tool)

    asyncio.run(main())
    functions: collections.Counter[str] = collections.Counter()
    for code, count in ops.items():
        name = getattr(code, "co_qualname", code.co_name)  # (3.11+)
        functions[f"{code.co_filename}:{code.co_firstlineno}:{name}"] += count
    return functions.total() / requests, calls / requests, functions


def groups(functions: collections.Counter[str]) -> collections.Counter[str]:
    """Bytecodes by part of the request (`GROUPS`)."""
    parts: collections.Counter[str] = collections.Counter()
    for name, count in functions.items():
        parts[next(label for label, pattern in GROUPS if pattern.search(name))] += count
    return parts


def print_functions(case: str, requests: int, top: int = 40) -> None:
    """Where the bytecodes of ``case`` go: by part of the request, over the bare app, then
    by function."""
    total, calls, ops = bytecodes(case, requests)
    parts = groups(ops)
    bare = groups(bytecodes("bare", requests)[2])
    print(f"{CASES[case]}: {total:,.0f} bytecodes, {calls:.1f} Python calls per request\n")
    print(f"| {'over the bare app':<40} | {'bytecodes':>9} |")
    print(f"|{'-' * 42}|{'-' * 11}|")
    for label, _ in GROUPS:
        print(f"| {label:<40} | {(parts[label] - bare[label]) / requests:9,.0f} |")
    print()
    print(f"| {'bytecodes':>9} | function |")
    print(f"|{'-' * 11}|----------|")
    for name, value in ops.most_common(top):
        short = re.sub(r"^.*/(site-packages|src|lib/python3\.\d+)/", "", name)
        print(f"| {value / requests:9.1f} | {short} |")


def print_bytecodes(cases: list[str], requests: int) -> None:
    per_request = {case: bytecodes(case, requests)[:2] for case in cases}
    bare, bare_calls = per_request["bare"]
    print(f"Python {sys.version.split()[0]}, bytecodes and Python calls per request\n")
    print(f"| {'case':<36} | {'bytecodes':>9} | {'over bare':>9} | {'calls over bare':>15} |")
    print(f"|{'-' * 38}|{'-' * 11}|{'-' * 11}|{'-' * 17}|")
    for case in cases:
        value, calls = per_request[case]
        print(
            f"| {CASES[case]:<36} | {value:9,.0f} | {value - bare:9,.0f} "
            f"| {calls - bare_calls:15,.1f} |"
        )


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
    parser.add_argument(
        "--bytecodes", action="store_true", help="count bytecodes and calls (no valgrind)"
    )
    parser.add_argument("--functions", metavar="CASE", help="one case's functions by bytecodes")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    if args.functions:
        if args.functions not in CASES:
            raise SystemExit(f"unknown case {args.functions!r}; choose from {list(CASES)}")
        print_functions(args.functions, args.low)
        return
    cases = [case.strip() for case in args.cases.split(",")]
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; choose from {list(CASES)}")
    if "bare" not in cases:
        cases.insert(0, "bare")
    if args.bytecodes:
        print_bytecodes(cases, args.low)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
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
