"""The overload demo's report: figures per server, side by side, and an optional plot."""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from pathlib import Path

from .loadgen import ERROR, NOT_SENT, PRIORITIES, TIMEOUT, CapacityResult, Recorder, percentile

__all__ = (
    "TARGETS",
    "PlotUnavailable",
    "RunSummary",
    "ServerRun",
    "format_report",
    "plot",
    "require_matplotlib",
    "summarize",
)

MB = 2**20


@dataclass(frozen=True)
class ServerRun:
    """Everything measured about one server: its capacity ramp, the overload run's
    requests, its RSS every second and how it ended."""

    label: str
    capacity: CapacityResult
    rate: float  # offered load, requests per second
    seconds: float
    timeout: float
    recorder: Recorder
    rss: tuple[tuple[float, int], ...]  # (seconds since the run started, bytes)
    survived: bool
    ending: str  # how the process ended once stopped
    slow_logged: int = 0
    errors_logged: int = 0


@dataclass(frozen=True)
class RunSummary:
    """The figures of the report for one server."""

    label: str
    capacity: float
    offered: float
    seconds: float
    timeout: float
    sent: int
    goodput: float
    goodput_ratio: float
    rejections: dict[str, int]
    other_5xx: int
    other_4xx: int
    timeouts: int
    errors: int
    error_kinds: dict[str, int]
    not_sent: int
    latency: dict[str, tuple[float, float, int]]  # priority: p50, p99, count of 2xx
    rss_start: int
    rss_peak: int
    rss_end: int
    rss_series: tuple[tuple[float, int], ...]
    survived: bool
    ending: str
    slow_logged: int
    errors_logged: int
    per_second: tuple[tuple[int, int, float], ...] = field(default=())  # due, 2xx, p99 (s)

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_start


def summarize(run: ServerRun) -> RunSummary:
    """Turn a `ServerRun`'s raw arrays into the report's figures. Goodput counts the 2xx
    answered within the run's seconds; latencies are of 2xx answers, from when each
    request was due."""
    recorder = run.recorder
    seconds = run.seconds
    ok_in_window = 0
    rejections: collections.Counter[str] = collections.Counter()
    other_5xx = other_4xx = timeouts = errors = not_sent = 0
    latencies: dict[int, list[float]] = {index: [] for index in range(len(PRIORITIES))}
    buckets = max(1, math.ceil(seconds))
    due_per_second = [0] * buckets
    ok_per_second = [0] * buckets
    latency_per_second: list[list[float]] = [[] for _ in range(buckets)]
    for due, done, status, priority in zip(
        recorder.due, recorder.done, recorder.status, recorder.priority, strict=True
    ):
        second = min(buckets - 1, max(0, int(due)))
        due_per_second[second] += 1
        if 200 <= status < 300:
            latency = done - due
            latencies[priority].append(latency)
            latency_per_second[second].append(latency)
            if done <= seconds:
                ok_in_window += 1
                ok_per_second[min(buckets - 1, int(done))] += 1
        elif status == TIMEOUT:
            timeouts += 1
        elif status == ERROR:
            errors += 1
        elif status == NOT_SENT:
            not_sent += 1
        elif status in (429, 503):
            pass  # counted by reason below
        elif status >= 500:
            other_5xx += 1
        elif status >= 400:
            other_4xx += 1
    error_kinds: collections.Counter[str] = collections.Counter()
    for (status, reason), count in recorder.reasons.items():
        if status in (429, 503):
            rejections[f"{status} {reason}"] += count
        elif status == ERROR:
            error_kinds[reason] += count
    goodput = ok_in_window / seconds
    capacity = run.capacity.capacity
    rss = run.rss
    values = [size for _, size in rss]
    return RunSummary(
        label=run.label,
        capacity=capacity,
        offered=run.rate,
        seconds=seconds,
        timeout=run.timeout,
        sent=len(recorder) - not_sent,
        goodput=goodput,
        goodput_ratio=goodput / capacity if capacity else 0.0,
        rejections=dict(sorted(rejections.items(), key=lambda item: -item[1])),
        other_5xx=other_5xx,
        other_4xx=other_4xx,
        timeouts=timeouts,
        errors=errors,
        error_kinds=dict(error_kinds),
        not_sent=not_sent,
        latency={
            name: (
                percentile(latencies[index], 0.5),
                percentile(latencies[index], 0.99),
                len(latencies[index]),
            )
            for index, name in enumerate(PRIORITIES)
        },
        rss_start=values[0] if values else 0,
        rss_peak=max(values) if values else 0,
        rss_end=values[-1] if values else 0,
        rss_series=rss,
        survived=run.survived,
        ending=run.ending,
        slow_logged=run.slow_logged,
        errors_logged=run.errors_logged,
        per_second=tuple(
            (due_per_second[i], ok_per_second[i], percentile(latency_per_second[i], 0.99))
            for i in range(buckets)
        ),
    )


#: the acceptance targets of the protected server (issue 8)
TARGETS = {
    "high_p99": 0.050,  # seconds
    "goodput_ratio": 0.90,
    "rss_growth": 50 * MB,
}


def _ms(seconds: float, timeout: float) -> str:
    if math.isnan(seconds):
        return "-"
    if seconds >= timeout:
        return f">{timeout * 1000:.0f}"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f}"
    return f"{seconds * 1000:.0f}"


def _rejections(summary: RunSummary) -> list[str]:
    if not summary.rejections:
        return ["none"]
    return [f"{name} {count}" for name, count in summary.rejections.items()]


def _checks(summary: RunSummary) -> list[tuple[str, bool]]:
    high_p99 = summary.latency["HIGH"][1]
    return [
        (
            f"HIGH p99 {_ms(high_p99, summary.timeout)} ms <= 50 ms",
            not math.isnan(high_p99) and high_p99 <= TARGETS["high_p99"],
        ),
        (
            f"goodput {summary.goodput_ratio:.0%} of capacity >= 90 %",
            summary.goodput_ratio >= TARGETS["goodput_ratio"],
        ),
        (
            f"RSS growth {summary.rss_growth / MB:.1f} MB < 50 MB",
            summary.rss_growth < TARGETS["rss_growth"],
        ),
        (f"other 5xx {summary.other_5xx} == 0", summary.other_5xx == 0),
        ("survived", summary.survived),
    ]


def format_report(
    summaries: list[RunSummary], *, factor: float, seconds: float, mix: str = ""
) -> str:
    """The report as text: one column per server, then the protected server's targets."""
    width = 34
    column = 30
    lines: list[str] = []
    lines.append(f"brace-demo overload: {factor:g} x capacity for {seconds:g} s")
    if mix:
        lines.append(f"request mix: {mix}")
    lines.append("")

    def row(name: str, values: list[str]) -> None:
        lines.append(name.ljust(width) + "".join(value.ljust(column) for value in values))

    row("", [summary.label for summary in summaries])
    row("", ["-" * (column - 2) for _ in summaries])
    row("capacity (closed-loop ramp)", [f"{s.capacity:.0f} req/s" for s in summaries])
    row("offered load (open loop)", [f"{s.offered:.0f} req/s" for s in summaries])
    row("requests sent", [f"{s.sent}" for s in summaries])
    row(
        "goodput (2xx/s)",
        [f"{s.goodput:.0f} req/s ({s.goodput_ratio:.0%} of cap.)" for s in summaries],
    )
    rejection_lines = [_rejections(s) for s in summaries]
    for index in range(max(len(r) for r in rejection_lines)):
        row(
            "rejections (status reason)" if index == 0 else "",
            [r[index] if index < len(r) else "" for r in rejection_lines],
        )
    row("5xx other than 503", [f"{s.other_5xx}" for s in summaries])
    row("other 4xx", [f"{s.other_4xx}" for s in summaries])
    row(
        "client gave up (timeout)",
        [f"{s.timeouts} (> {s.timeout:g} s)" for s in summaries],
    )
    row(
        "connection errors",
        [
            f"{s.errors}"
            + (
                " (" + ", ".join(f"{k} {v}" for k, v in s.error_kinds.items()) + ")"
                if s.errors
                else ""
            )
            for s in summaries
        ],
    )
    row("not sent (all connections busy)", [f"{s.not_sent}" for s in summaries])
    for priority, classes in (
        ("HIGH", "health, auth"),
        ("MEDIUM", "GET items"),
        ("LOW", "POST items"),
    ):
        row(
            f"latency p50 / p99 {priority}",
            [
                f"{_ms(s.latency[priority][0], s.timeout)} / "
                f"{_ms(s.latency[priority][1], s.timeout)} ms ({s.latency[priority][2]} ok)"
                for s in summaries
            ],
        )
        del classes
    row(
        "RSS start / peak / end",
        [
            f"{s.rss_start / MB:.0f} / {s.rss_peak / MB:.0f} / {s.rss_end / MB:.0f} MB"
            for s in summaries
        ],
    )
    row("RSS growth", [f"{s.rss_growth / MB:+.1f} MB" for s in summaries])
    row("slow requests logged (> 3 s)", [f"{s.slow_logged}" for s in summaries])
    row("errors logged", [f"{s.errors_logged}" for s in summaries])
    row("survived the run", ["yes" if s.survived else "NO" for s in summaries])
    row("then", [s.ending for s in summaries])
    lines.append("")
    for summary in summaries:
        step = max(1, len(summary.rss_series) // 10)
        points = " ".join(f"{size / MB:.0f}" for _, size in summary.rss_series[::step])
        lines.append(f"RSS over time, MB every {step} s, {summary.label}: {points}")
    lines.append("")
    if summaries:
        protected = summaries[0]
        lines.append(f"targets for {protected.label}:")
        for text, passed in _checks(protected):
            lines.append(f"  [{'PASS' if passed else 'FAIL'}] {text}")
    return "\n".join(lines) + "\n"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise `PlotUnavailable` unless matplotlib can be imported (checked before a run)."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: pip install matplotlib"
        ) from None


def plot(summaries: list[RunSummary], runs: list[ServerRun], path: str | Path) -> None:
    """A PNG: goodput and p99 latency against offered load (the capacity ramp's steps and
    the overload run), goodput and RSS over the run's seconds."""
    require_matplotlib()
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    (load_goodput, load_latency), (time_goodput, time_rss) = axes
    for summary, run in zip(summaries, runs, strict=True):
        steps = run.capacity.steps
        xs = [step.rate for step in steps] + [summary.offered]
        load_goodput.plot(xs, [step.rate for step in steps] + [summary.goodput], "o-")
        load_goodput.annotate(f"{summary.label}", (summary.offered, summary.goodput))
        p99 = [step.p99 * 1000 for step in steps] + [
            summary.latency[name][1] * 1000 for name in ("MEDIUM",)
        ]
        load_latency.plot(xs, p99, "o-", label=f"{summary.label}: all / MEDIUM")
        high = summary.latency["HIGH"][1] * 1000
        load_latency.plot([summary.offered], [high], "s", label=f"{summary.label}: HIGH p99")
        seconds = list(range(len(summary.per_second)))
        time_goodput.plot(seconds, [ok for _, ok, _ in summary.per_second], label=summary.label)
        time_rss.plot(
            [t for t, _ in summary.rss_series],
            [size / MB for _, size in summary.rss_series],
            label=summary.label,
        )
    load_goodput.set(xlabel="offered load (req/s)", ylabel="goodput (2xx/s)")
    load_goodput.set_title("goodput against offered load")
    load_latency.set(xlabel="offered load (req/s)", ylabel="p99 latency (ms)", yscale="log")
    load_latency.set_title("p99 latency against offered load")
    load_latency.legend(fontsize="small")
    time_goodput.set(xlabel="seconds into the overload", ylabel="2xx per second")
    time_goodput.set_title("goodput over time")
    time_goodput.legend(fontsize="small")
    time_rss.set(xlabel="seconds into the overload", ylabel="RSS (MB)")
    time_rss.set_title("server RSS over time")
    time_rss.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
