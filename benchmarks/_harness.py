"""The timing engine: cases, interleaved rounds, medians, ratios and targets.

A *case* is one thing to time: an async context manager (``setup``) that builds its
objects inside the running event loop and yields ``op(n)``, a coroutine function doing the
operation ``n`` times in a plain ``for`` loop. The cases given to :func:`measure` are set
up once, then timed in *rounds*: in each round every case runs ``op(n)`` once (its ``n``
calibrated so that a round lasts about ``round_seconds``), in a rotating order, with the
garbage collector disabled. The reported figure is the median over the rounds of ns per
operation, so brace, the floor and the peers are measured in the same process, on the
same loop, interleaved in time: a noisy neighbour slows all of them alike.

That holds only if a round is short. ``python -m benchmarks`` (``run.py``) therefore
measures one *batch* at a time: a group's cases with the floors its table and targets read
(timed again beside each group), and then, for each target, a *pair batch*: its brace case
beside the reference its group's batch chose, and nothing else, so that the two are timed
a moment apart in every round. Each result carries its ``batch``; a target is judged on
its pair batch (else on its group's).

A target's figure is the median over the rounds of brace's time divided by the
reference's time *in the same round* (`paired_ratio`). On a machine whose speed drifts
from one round to the next, a slow moment slows both of a pair; the ratio of the two
medians (also reported) can instead set a fast round of one against a slow round of the
other (docs/performance.md, "Stop 30", has both for six runs).

Each round is timed with two clocks: ``time.perf_counter_ns`` (wall time, the headline
figure) and ``time.thread_time_ns`` (this thread's CPU time). On a machine shared with
other busy processes the wall clock also counts the time the process sat preempted, which
can add tens of percent to any round; the CPU clock leaves that out (as well as any work a
peer does in a background thread, such as limits' expiry timer). A target is "met" when
its figure meets it on both clocks, "MISSED" when on neither, "borderline" when they
disagree.

The ``for`` loop itself is part of every figure (about 15-30 ns per iteration); it is the
same for every case, which slightly pulls all ratios towards 1.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

import anyio

__all__ = (
    "BACKENDS",
    "Case",
    "CaseResult",
    "Op",
    "Target",
    "TargetResult",
    "brace_attr",
    "brace_has",
    "check_targets",
    "import_optional",
    "machine_info",
    "measure",
    "noop",
    "pair_batch",
    "paired_ratio",
    "references",
    "run_once",
    "unavailable_reason",
)

BACKENDS = ("asyncio", "trio")

Op = Callable[[int], Awaitable[None]]
Setup = Callable[[], AbstractAsyncContextManager[Op]]
Role = Literal["brace", "floor", "reference", "peer"]


@dataclass(frozen=True)
class Case:
    """One timed thing: a brace primitive, a floor, a reference or a peer library."""

    group: str  # which table it belongs to: "bucket", "hit", "breaker", ...
    key: str  # stable id, e.g. "bucket.brace.async_with"
    label: str  # what the table shows
    role: Role
    setup: Setup
    backends: frozenset[str] = frozenset(BACKENDS)
    requires: tuple[str, ...] = ()  # modules that must import (peer packages)
    brace: tuple[str, ...] = ()  # names that must exist in ``brace``
    per: int = 1  # operations done by one iteration of ``op`` (batches)
    settle: float = 0.0  # seconds to let background work finish after each timing
    note: str = ""

    def supports(self, backend: str) -> bool:
        return backend in self.backends


def brace_has(*names: str) -> bool:
    """Whether every name exists in the installed ``brace`` package (it is being written)."""
    import brace

    return all(hasattr(brace, name) for name in names)


def brace_attr(name: str) -> Any:
    """``brace.<name>``, looked up at setup time (the class may not exist yet)."""
    import brace

    return getattr(brace, name)


def unavailable_reason(case: Case, backend: str) -> str | None:
    """Why ``case`` cannot run on ``backend`` (``None`` when it can)."""
    if not case.supports(backend):
        return "n/a"
    for module in case.requires:
        if importlib.util.find_spec(module) is None:
            return "not installed"
    if case.brace and not brace_has(*case.brace):
        return "missing"
    return None


@dataclass
class CaseResult:
    """The samples of one case on one backend, or why there are none."""

    case: Case
    backend: str
    status: str = "ok"  # "ok", "n/a", "missing", "not installed", "error: ..."
    # the group whose cases this one was timed beside ("" when not timed by group): a
    # floor is timed again beside each group whose table or targets read it
    batch: str = ""
    n: int = 0
    samples: list[float] = field(default_factory=list)  # ns per operation, one per round
    # The same rounds timed with this thread's CPU clock: time spent preempted by other
    # processes is left out (but so is work the case does in background threads).
    cpu_samples: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_samples) if self.cpu_samples else math.nan

    @property
    def spread(self) -> float:
        """Half the inter-quartile range as a fraction of the median (noise indicator)."""
        if len(self.samples) < 4:
            return (
                (max(self.samples) - min(self.samples)) / 2 / self.median
                if self.samples
                else math.nan
            )
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return (q3 - q1) / 2 / self.median

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.case.group,
            "key": self.case.key,
            "label": self.case.label,
            "role": self.case.role,
            "backend": self.backend,
            "batch": self.batch,
            "status": self.status,
            "n": self.n,
            "per": self.case.per,
            "median_ns": None if not self.ok else round(self.median, 1),
            "min_ns": None if not self.ok else round(min(self.samples), 1),
            "spread": None if not self.ok else round(self.spread, 4),
            "samples_ns": [round(s, 1) for s in self.samples],
            "cpu_median_ns": None if not self.ok else round(self.cpu_median, 1),
            "cpu_samples_ns": [round(s, 1) for s in self.cpu_samples],
            "note": self.case.note,
        }


async def _time(op: Op, n: int) -> tuple[int, int]:
    """Run ``op(n)`` with the collector off; return the elapsed wall and CPU nanoseconds."""
    gc.disable()
    try:
        cpu = time.thread_time_ns()
        start = time.perf_counter_ns()
        await op(n)
        elapsed = time.perf_counter_ns() - start
        return elapsed, time.thread_time_ns() - cpu
    finally:
        gc.enable()


async def _calibrate(op: Op, round_seconds: float) -> int:
    """An iteration count for which one ``op(n)`` lasts about ``round_seconds``."""
    n = 1
    budget = round_seconds * 1e9
    while True:
        elapsed, _ = await _time(op, n)
        if elapsed >= budget / 5 or n >= 10_000_000:
            break
        n *= 8 if elapsed < budget / 100 else 2
    return max(1, min(10_000_000, int(n * budget / max(elapsed, 1))))


async def measure(
    cases: Sequence[Case],
    backend: str,
    *,
    rounds: int = 7,
    round_seconds: float = 0.1,
    progress: Callable[[str], None] | None = None,
) -> list[CaseResult]:
    """Time ``cases`` on the running loop (which is ``backend``), interleaved in rounds."""
    results = [CaseResult(case, backend) for case in cases]
    runnable: list[tuple[CaseResult, Op]] = []
    async with AsyncExitStack() as stack:
        for result in results:
            reason = unavailable_reason(result.case, backend)
            if reason is not None:
                result.status = reason
                continue
            try:
                op = await stack.enter_async_context(result.case.setup())
                # Warm up (and check it works), then calibrate.
                await op(3)
                result.n = await _calibrate(op, round_seconds)
                await op(result.n)
            except Exception as exc:  # a peer or an unfinished brace API: report, go on
                result.status = f"error: {type(exc).__name__}: {exc}"[:200]
                continue
            runnable.append((result, op))
            if result.case.settle:
                await anyio.sleep(result.case.settle)
        if progress is not None:
            progress(f"{backend}: {len(runnable)} cases calibrated, {rounds} rounds")
        for index in range(rounds):
            gc.collect()
            shift = index % max(1, len(runnable))
            order = runnable[shift:] + runnable[:shift]
            if index % 2:
                order.reverse()
            for result, op in order:
                try:
                    elapsed, cpu = await _time(op, result.n)
                except Exception as exc:
                    result.status = f"error: {type(exc).__name__}: {exc}"[:200]
                    result.samples.clear()
                    result.cpu_samples.clear()
                    runnable.remove((result, op))
                    continue
                result.samples.append(elapsed / (result.n * result.case.per))
                result.cpu_samples.append(cpu / (result.n * result.case.per))
                if result.case.settle:
                    await anyio.sleep(result.case.settle)
            if progress is not None:
                progress(f"{backend}: round {index + 1}/{rounds} done")
    return results


def run_once(case: Case, backend: str, n: int = 3) -> None:
    """Set ``case`` up on a fresh ``backend`` loop and run ``op(n)`` once (smoke test)."""

    async def main() -> None:
        async with case.setup() as op:
            await op(n)

    anyio.run(main, backend=backend)


# --- targets -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A performance goal: ``brace_key`` costs at most ``limit`` times a reference.

    ``against`` lists case keys; the reference is the fastest of those that ran
    (``mode="fastest"``), or each of them in turn (``mode="every"``: brace must beat all).
    """

    group: str
    title: str
    brace_key: str
    against: tuple[str, ...]
    limit: float
    mode: Literal["fastest", "every"] = "fastest"
    backends: frozenset[str] = frozenset(BACKENDS)


@dataclass(frozen=True)
class TargetResult:
    target: Target
    backend: str
    status: str  # "met", "MISSED", "borderline" (the two clocks disagree), "missing", "n/a"
    # brace / reference (the worst one for mode="every"): the median over the rounds of
    # brace's time divided by the reference's time in the same round, wall clock
    ratio: float
    reference: str  # label of the reference used
    cpu_ratio: float = math.nan  # the same ratio on the CPU clock
    batch: str = ""  # the batch whose timings judged it (its pair batch, else its group's)
    # brace's median divided by the reference's median (wall, CPU): shown, not judged
    median_ratio: float = math.nan
    cpu_median_ratio: float = math.nan

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.target.group,
            "title": self.target.title,
            "backend": self.backend,
            "status": self.status,
            "ratio": _rounded(self.ratio),
            "cpu_ratio": _rounded(self.cpu_ratio),
            "limit": self.target.limit,
            "reference": self.reference,
            "batch": self.batch,
            "median_ratio": _rounded(self.median_ratio),
            "cpu_median_ratio": _rounded(self.cpu_median_ratio),
        }


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def paired_ratio(mine: Sequence[float], reference: Sequence[float]) -> float:
    """The median over the rounds of ``mine[i] / reference[i]``: each round's two timings
    were taken a moment apart, so a machine whose speed drifts between rounds slows both
    of a pair alike (the ratio of the two medians mixes rounds of different speeds).
    The ratio of the medians when the samples are not paired round by round."""
    if mine and len(mine) == len(reference):
        return statistics.median(m / r for m, r in zip(mine, reference, strict=True))
    if not mine or not reference:
        return math.nan
    return statistics.median(mine) / statistics.median(reference)


def pair_batch(target: Target) -> str:
    """The name of the batch timing ``target``'s brace case beside its references alone."""
    return f"pair:{target.brace_key}>{target.mode}:{','.join(target.against)}"


def _beside(
    by_key: dict[tuple[str, str, str], CaseResult],
    key: str,
    backend: str,
    batch: str,
    strict: bool = False,
) -> CaseResult | None:
    """The result of ``key`` timed in ``batch``, else (unless ``strict``) one not timed by
    batch."""
    found = by_key.get((key, backend, batch))
    return found if found is not None or strict else by_key.get((key, backend, ""))


def _judge(target: Target, mine: CaseResult, refs: Sequence[CaseResult]) -> CaseResult:
    """The reference ``target`` compares ``mine`` with: the fastest (mode "fastest": by its
    quickest round, which a noisy moment cannot make slower, where a few slow rounds can
    move a median past a slower peer's), or the one brace is closest to failing against
    (mode "every")."""
    if target.mode == "fastest":
        return min(refs, key=lambda r: min(r.samples))
    return max(refs, key=lambda r: paired_ratio(mine.samples, r.samples))


def _timed_together(
    by_key: dict[tuple[str, str, str], CaseResult],
    target: Target,
    backend: str,
    batch: str,
    strict: bool = False,
) -> tuple[CaseResult | None, list[CaseResult]]:
    """``target``'s brace result in ``batch`` (see `_beside`) and its references there
    that ran."""
    mine = _beside(by_key, target.brace_key, backend, batch, strict)
    found = (_beside(by_key, key, backend, batch, strict) for key in target.against)
    return mine, [r for r in found if r is not None and r.ok]


def references(target: Target, results: Sequence[CaseResult], backend: str) -> list[Case]:
    """The cases a pair batch times beside ``target``'s brace case on ``backend``, chosen
    from its group's batch: the fastest reference (mode "fastest") or every one that ran
    (mode "every"); none if brace's case or every reference failed there."""
    by_key = {(r.case.key, r.backend, r.batch): r for r in results}
    mine, refs = _timed_together(by_key, target, backend, target.group)
    if mine is None or not mine.ok or not refs:
        return []
    if target.mode == "fastest":
        return [_judge(target, mine, refs).case]
    return [r.case for r in refs]


def check_targets(targets: Iterable[Target], results: Sequence[CaseResult]) -> list[TargetResult]:
    """Each target on each backend, from the results timed beside each other: those of the
    target's pair batch (`pair_batch`) when there is one, else of the target's group (its
    ``batch``), or results not timed by group."""
    by_key = {(r.case.key, r.backend, r.batch): r for r in results}
    backends = sorted({r.backend for r in results}, key=BACKENDS.index)
    out: list[TargetResult] = []
    for target in targets:
        for backend in backends:
            if backend not in target.backends:
                continue
            batch = pair_batch(target)
            strict = (target.brace_key, backend, batch) in by_key
            if not strict:
                batch = target.group
            mine, refs = _timed_together(by_key, target, backend, batch, strict)
            if mine is None:
                continue
            if not mine.ok:
                out.append(TargetResult(target, backend, mine.status, math.nan, "", batch=batch))
                continue
            if not refs:
                out.append(TargetResult(target, backend, "n/a", math.nan, "", batch=batch))
                continue
            ref = _judge(target, mine, refs)
            ratio = paired_ratio(mine.samples, ref.samples)
            cpu_ratio = paired_ratio(mine.cpu_samples, ref.cpu_samples)
            # Judged on both clocks: on a busy machine the wall clock also counts the time
            # this process spent preempted, which the thread's CPU clock leaves out.
            met = (ratio <= target.limit, cpu_ratio <= target.limit)
            status = "met" if all(met) else "MISSED" if not any(met) else "borderline"
            out.append(
                TargetResult(
                    target,
                    backend,
                    status,
                    ratio,
                    ref.case.label,
                    cpu_ratio,
                    batch,
                    mine.median / ref.median,
                    mine.cpu_median / ref.cpu_median,
                )
            )
    return out


# --- machine -------------------------------------------------------------------------

_PACKAGES = (
    "brace",
    "anyio",
    "trio",
    "aiolimiter",
    "limits",
    "pyrate-limiter",
    "throttled-py",
    "purgatory",
    "circuitbreaker",
    "pybreaker",
    "aiobreaker",
    "tenacity",
    "stamina",
    "backoff",
    "aiometer",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    try:
        load = os.getloadavg()
    except OSError:
        load = (math.nan, math.nan, math.nan)
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "load_average": [round(x, 2) for x in load],
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


async def noop() -> None:
    """The protected work of every call-shaped benchmark: an empty coroutine."""


def import_optional(name: str) -> Any:
    """Import ``name`` (a peer) at setup time, so a missing peer only skips its rows."""
    return importlib.import_module(name)
