"""Run brace's benchmarks against the floor and the peer libraries, in the same process.

Usage (from the repository root)::

    python -m benchmarks                       # both backends, all benchmarks
    python -m benchmarks --backend asyncio --filter hit --quick
    python -m benchmarks --json out.json --markdown out.md

The cases are timed one *batch* at a time, each batch in its own ``anyio.run(...)`` (the
plain asyncio or trio loop, no virtual time): the floors alone, then each group's cases
with the floors its table and targets read, timed again beside them; then, for each
target, a pair batch: its brace case beside the reference the group's batch chose. In a
batch every case is set up once and then timed in interleaved rounds (see
``_harness.py``). The tables give the median ns per operation over the rounds, its
spread, and ``brace ÷ this`` for each brace variant of the table: below 1 means brace is
cheaper than that row. A target's figure is the median over its pair batch's rounds of
brace's time over the reference's in the same round.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

if __package__ in (None, ""):  # run as ``python benchmarks/run.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

from benchmarks import breaker, bucket, executor, floor, hit, policy, retry
from benchmarks._harness import (
    BACKENDS,
    Case,
    CaseResult,
    Target,
    TargetResult,
    check_targets,
    machine_info,
    measure,
    pair_batch,
    references,
)

GROUPS: dict[str, tuple[str, ModuleType]] = {
    "bucket": ("Local limiter fast path: async with bucket (issue 2)", bucket),
    "hit": ("Keyed limiter: RateLimiter.hit(key), memory store, 1,000 keys (issue 2)", hit),
    "breaker": ("Circuit breaker, closed path (issue 3)", breaker),
    "retry": ("Retry, success path (issue 3)", retry),
    "executor": ("Priority executor (issue 4)", executor),
    "timeout": ("Timeout, nothing times out (issue 3, informative)", policy),
    "compose": (
        "A composed client stack: breaker > retry > timeout (issue 3, informative)",
        policy,
    ),
}


def _modules() -> list[ModuleType]:
    modules: list[ModuleType] = []
    for _, module in GROUPS.values():
        if module not in modules:
            modules.append(module)
    return modules


def all_cases() -> tuple[Case, ...]:
    """Every case of every benchmark, floors first."""
    cases: list[Case] = list(floor.CASES)
    for module in _modules():
        cases.extend(module.CASES)
    return tuple(cases)


def all_targets() -> tuple[Target, ...]:
    targets: list[Target] = []
    for module in _modules():
        targets.extend(module.TARGETS)
    return tuple(targets)


def select(pattern: str | None) -> tuple[Case, ...]:
    """The cases whose group, key or label matches ``pattern`` (a regex), and the floors."""
    cases = all_cases()
    if not pattern:
        return cases
    regex = re.compile(pattern, re.IGNORECASE)
    return tuple(
        case
        for case in cases
        if case.group == "floor" or regex.search(f"{case.group} {case.key} {case.label}")
    )


def batches(cases: Sequence[Case]) -> list[tuple[str, list[Case]]]:
    """The selected cases as batches timed one after the other: ``("floor", floors)``,
    then each group with the floors its table shows and its targets are judged against
    (timed again in each batch: a reference must be timed beside the case it judges)."""
    floors = {case.key: case for case in cases if case.group == "floor"}
    out: list[tuple[str, list[Case]]] = []
    if floors:
        out.append(("floor", list(floors.values())))
    for group, (_, module) in GROUPS.items():
        own = [case for case in cases if case.group == group]
        if not own:
            continue
        wanted = set(getattr(module, "FLOORS", ()))
        for target in module.TARGETS:
            if target.group == group:
                wanted.update(target.against)
        out.append((group, [case for key, case in floors.items() if key in wanted] + own))
    return out


def pair_batches(
    targets: Sequence[Target], results: Sequence[CaseResult], backend: str
) -> list[tuple[str, list[Case]]]:
    """One batch per target on ``backend``: its brace case beside the reference(s) its
    group's batch chose (`references`), and nothing else, so that the two are timed a
    round of two cases apart, not one of the whole group's. Targets sharing a brace case
    and references share a batch."""
    out: dict[str, list[Case]] = {}
    cases = {r.case.key: r.case for r in results if r.backend == backend}
    for target in targets:
        if backend not in target.backends or target.brace_key not in cases:
            continue
        refs = references(target, results, backend)
        if refs:
            out.setdefault(pair_batch(target), [cases[target.brace_key], *refs])
    return list(out.items())


# --- formatting ----------------------------------------------------------------------


def _ns(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value >= 10_000:
        return f"{value / 1000:,.1f} µs"
    return f"{value:,.0f} ns"


def _ratio(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A Markdown table whose columns are padded so it also reads well in a terminal."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if kind == "l" else cell.rjust(width)
            for cell, width, kind in zip(cells, widths, align, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (w + 1) + ":" if kind == "r" else "-" * (w + 2)
        for w, kind in zip(widths, align, strict=True)
    ]
    return "\n".join([line(headers), "|" + "|".join(rule) + "|", *(line(r) for r in rows)])


def group_table(group: str, backend: str, results: Sequence[CaseResult]) -> str | None:
    """The table of one benchmark on one backend (None if nothing of it was selected)."""
    module = floor if group == "floor" else GROUPS[group][1]
    keys = [case.key for case in module.CASES if case.group == group]
    # the results of this group's batch (or of a run not timed by group)
    by_key = {r.case.key: r for r in results if r.backend == backend and r.batch in ("", group)}
    mine = [
        by_key[k]
        for k in keys
        if k in by_key and not (group == "floor" and by_key[k].status == "n/a")
    ]
    if not mine:
        return None
    floor_keys: tuple[str, ...] = getattr(module, "FLOORS", ())
    floors = [by_key[k] for k in floor_keys if k in by_key and by_key[k].status != "n/a"]
    rows_in = [*floors, *mine]
    braces = [r for r in mine if r.case.role == "brace" and r.ok]
    headers = ["case", "role", "median / op", "min / op", "± %", "cpu median"] + [
        f"{r.case.key.rsplit('.', 1)[-1]} ÷ this" for r in braces
    ]
    rows: list[list[str]] = []
    for r in rows_in:
        if r.ok:
            cells = [
                r.case.label,
                r.case.role,
                _ns(r.median),
                _ns(min(r.samples)),
                f"{100 * r.spread:.1f}",
                _ns(r.cpu_median),
            ]
            cells += [_ratio(b.median / r.median) for b in braces]
        else:
            cells = [r.case.label, r.case.role, r.status, "", "", ""] + [""] * len(braces)
        rows.append(cells)
    return _table(headers, rows, "llrrrr" + "r" * len(braces))


def targets_table(target_results: Sequence[TargetResult]) -> str:
    rows = [
        [
            t.target.title,
            t.backend,
            _ratio(t.ratio),
            _ratio(t.cpu_ratio),
            _ratio(t.target.limit),
            t.reference or "-",
            t.status,
            _ratio(t.median_ratio),
        ]
        for t in target_results
    ]
    headers = ["target", "backend", "brace ÷ ref", "(cpu clock)", "limit", "reference", "status"]
    return _table([*headers, "÷ of medians"], rows, "llrrrllr")


def machine_text(machine: dict[str, Any], settings: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v is not None)
    missing = [k for k, v in machine["packages"].items() if v is None]
    lines = [
        f"- CPU: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
        f"load average at start {machine['load_average']}",
        f"- Python {machine['python']} ({machine['implementation']}), {machine['platform']}",
        f"- packages: {packages}" + (f"; not installed: {', '.join(missing)}" if missing else ""),
        f"- run: {machine['when']}; backends {', '.join(settings['backends'])}; "
        f"{settings['rounds']} rounds of about {settings['round_seconds'] * 1000:.0f} ms per case",
    ]
    pairs = settings.get("pair_rounds", 0)
    lines.append(
        f"- targets: judged on pair batches (brace's case beside its reference), {pairs} rounds"
        if pairs
        else "- targets: judged on their group's batch"
    )
    return "\n".join(lines)


def report(
    machine: dict[str, Any],
    settings: dict[str, Any],
    results: Sequence[CaseResult],
    target_results: Sequence[TargetResult],
) -> str:
    parts = ["## Machine", "", machine_text(machine, settings), ""]
    for backend in settings["backends"]:
        table = group_table("floor", backend, results)
        if table is not None:
            parts += [f"## Floor: the event loop's own primitives — {backend}", "", table, ""]
    for group, (title, _) in GROUPS.items():
        for backend in settings["backends"]:
            table = group_table(group, backend, results)
            if table is not None:
                parts += [f"## {title} — {backend}", "", table, ""]
    if target_results:
        parts += ["## Targets", "", targets_table(target_results), ""]
    return "\n".join(parts)


# --- main ----------------------------------------------------------------------------


def _batch_progress(batch: str, message: str) -> None:
    print(f"  .. {batch}: {message}", file=sys.stderr, flush=True)


def _timed(
    batch: str, cases: Sequence[Case], backend: str, rounds: int, round_seconds: float
) -> list[CaseResult]:
    """Time one batch in its own ``anyio.run``; its results carry its name."""
    run = functools.partial(
        measure,
        cases,
        backend,
        rounds=rounds,
        round_seconds=round_seconds,
        progress=functools.partial(_batch_progress, batch),
    )
    results = anyio.run(run, backend=backend)
    for result in results:
        result.batch = batch
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--backend", choices=("asyncio", "trio", "both"), default="both")
    parser.add_argument("--filter", help="regex on benchmark group / case key / label")
    parser.add_argument("--quick", action="store_true", help="3 short rounds: a smoke run")
    parser.add_argument("--rounds", type=int, help="rounds per case (default 7, quick 3)")
    parser.add_argument(
        "--round-ms", type=float, help="target duration of one case in one round (default 100)"
    )
    parser.add_argument(
        "--pair-rounds",
        type=int,
        help="rounds of each target's pair batch (brace's case beside its reference; "
        "default 15, quick 3; 0: judge targets on their group's batch)",
    )
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the report as Markdown")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)

    cases = select(args.filter)
    if args.list:
        for case in cases:
            print(f"{case.key:34} {sorted(case.backends)!s:22} {case.label}")
        return 0
    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    rounds = args.rounds or (3 if args.quick else 7)
    round_seconds = (args.round_ms or (20 if args.quick else 100)) / 1000
    pair_rounds = args.pair_rounds if args.pair_rounds is not None else 3 if args.quick else 15
    settings = {
        "backends": backends,
        "rounds": rounds,
        "round_seconds": round_seconds,
        "pair_rounds": pair_rounds,
        "filter": args.filter,
    }
    machine = machine_info()
    targets = [t for t in all_targets() if any(c.key == t.brace_key for c in cases)]

    results: list[CaseResult] = []
    for backend in backends:
        mine: list[CaseResult] = []
        for batch, batch_cases in batches(cases):
            mine += _timed(batch, batch_cases, backend, rounds, round_seconds)
        if pair_rounds > 0:
            for batch, batch_cases in pair_batches(targets, mine, backend):
                mine += _timed(batch, batch_cases, backend, pair_rounds, round_seconds)
        results += mine
    target_results = check_targets(targets, results)
    text = report(machine, settings, results, target_results)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    if args.json:
        payload = {
            "machine": machine,
            "settings": settings,
            "results": [r.as_json() for r in results],
            "targets": [t.as_json() for t in target_results],
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
