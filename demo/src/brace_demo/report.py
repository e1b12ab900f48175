"""The overload demo's report: figures per server, side by side, and an optional plot."""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from pathlib import Path

from .loadgen import (
    ERROR,
    NO_RETRY_AFTER,
    NOT_SENT,
    PRIORITIES,
    TIMEOUT,
    CapacityResult,
    Recorder,
    percentile,
)

__all__ = (
    "REASONS",
    "TARGETS",
    "Machine",
    "PlotData",
    "PlotUnavailable",
    "RunSummary",
    "Series",
    "ServerRun",
    "format_report",
    "explain",
    "plot",
    "plot_data",
    "require_matplotlib",
    "summarize",
    "summarize_reports",
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
    log: str | None = None  # the server's log file (kept after the run)
    cpu: tuple[float, float] | None = None  # CPU share of the server and load generator


@dataclass(frozen=True)
class Machine:
    """Where the run took place: usable ``cores``, the load average before it, the
    ``noise`` started beside the servers (and the CPU seconds it burnt), the processes'
    CPU ``priority``, and the directory holding the servers' ``logs``."""

    cores: int
    load_before: tuple[float, float, float]
    noise: str | None = None
    noise_cpu: float | None = None
    priority: str = ""
    logs: str | None = None

    def title(self) -> str:
        """One line for the report and the plot's title."""
        noise = f", noise: {self.noise}" if self.noise else ", no noise"
        return f"{self.cores} cores, load average {self.load_before[0]:.1f} before the run{noise}"


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
    # "503 queue_full": {"MEDIUM": n, "LOW": m}
    rejections_by_priority: dict[str, dict[str, int]] = field(default_factory=dict)
    log: str | None = None
    cpu: tuple[float, float] | None = None
    high_per_second: tuple[float, ...] = field(default=())  # HIGH p99 (s) by second due
    missing_retry_after: int = 0  # 429 and 503 answers without a Retry-After header

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
    high_per_second: list[list[float]] = [[] for _ in range(buckets)]
    for due, done, status, priority in zip(
        recorder.due, recorder.done, recorder.status, recorder.priority, strict=True
    ):
        second = min(buckets - 1, max(0, int(due)))
        due_per_second[second] += 1
        if 200 <= status < 300:
            latency = done - due
            latencies[priority].append(latency)
            latency_per_second[second].append(latency)
            if priority == 0:
                high_per_second[second].append(latency)
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
    by_priority: dict[str, collections.Counter[str]] = {}
    missing_retry_after = 0
    for (status, reason, priority), count in recorder.reasons.items():
        if status in (429, 503) and reason.endswith(NO_RETRY_AFTER):
            missing_retry_after += count
            reason = reason[: -len(NO_RETRY_AFTER)]
        if status in (429, 503):
            name = f"{status} {reason}"
            rejections[name] += count
            by_priority.setdefault(name, collections.Counter())[PRIORITIES[priority]] += count
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
        rejections_by_priority={
            name: {p: counts[p] for p in PRIORITIES if counts[p]}
            for name, counts in by_priority.items()
        },
        log=run.log,
        cpu=run.cpu,
        high_per_second=tuple(percentile(values, 0.99) for values in high_per_second),
        missing_retry_after=missing_retry_after,
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
    lines = []
    for name, count in summary.rejections.items():
        split = summary.rejections_by_priority.get(name, {})
        parts = ", ".join(f"{p} {n}" for p, n in split.items())
        lines.append(f"{name} {count}")
        if parts:
            lines.append(f"  of which {parts}")
    return lines


#: what each refusal of the protected server means (the ``error`` field of its body)
REASONS = {
    "503 queue_full": "the executor's queue (1000 places) was full of work at least as "
    "important: the newcomer was refused",
    "503 dropped": "a waiting request (a LOW write, or a MEDIUM read behind HIGH work) was "
    "dropped from the full queue to make room for a more important newcomer",
    "503 queue_timeout": "a request waited in the queue longer than the queue timeout",
    "503 overloaded": "the event loop ran late by more than 100 ms of its own work "
    "(brace.LoadMonitor): part of MEDIUM and LOW work was shed",
    "503 memory_pressure": "the process's memory was over the guard's limit",
    "503 circuit_open": "the AI upstream's circuit breaker was open",
    "503 shutting_down": "the server was draining after a signal",
    "429 rate_limited": "a user went over the route's rate limit",
}


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
        (
            f"503s without Retry-After {summary.missing_retry_after} == 0",
            summary.missing_retry_after == 0,
        ),
        ("survived", summary.survived),
        ("stopped on SIGTERM", summary.ending.startswith("stopped on SIGTERM")),
    ]


def format_report(
    summaries: list[RunSummary],
    *,
    factor: float,
    seconds: float,
    mix: str = "",
    machine: Machine | None = None,
) -> str:
    """The report as text: one column per server, what the figures mean, then the
    protected server's targets."""
    width = 34
    column = 30
    lines: list[str] = []
    lines.append(f"brace-demo overload: {factor:g} x capacity for {seconds:g} s")
    if mix:
        lines.append(f"request mix: {mix}")
    if machine is not None:
        lines.append(f"machine: {machine.title()}")
        if machine.priority:
            lines.append(f"CPU priority: {machine.priority}")
    lines.append("")

    def row(name: str, values: list[str]) -> None:
        lines.append(
            (name.ljust(width) + "".join(value.ljust(column) for value in values)).rstrip()
        )

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
    for index in range(max((len(r) for r in rejection_lines), default=0)):
        row(
            "refusals (status reason)" if index == 0 else "",
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
    for priority in PRIORITIES:
        row(
            f"latency p50 / p99 {priority}",
            [
                f"{_ms(s.latency[priority][0], s.timeout)} / "
                f"{_ms(s.latency[priority][1], s.timeout)} ms ({s.latency[priority][2]} ok)"
                for s in summaries
            ],
        )
    row(
        "RSS start / peak / end",
        [
            f"{s.rss_start / MB:.0f} / {s.rss_peak / MB:.0f} / {s.rss_end / MB:.0f} MB"
            for s in summaries
        ],
    )
    row("RSS growth", [f"{s.rss_growth / MB:+.1f} MB" for s in summaries])
    row(
        "CPU: server / load generator",
        ["-" if s.cpu is None else f"{s.cpu[0]:.0%} / {s.cpu[1]:.0%} of a core" for s in summaries],
    )
    row("slow requests logged (> 3 s)", [f"{s.slow_logged}" for s in summaries])
    row("tracebacks logged", [f"{s.errors_logged}" for s in summaries])
    row("survived the run", ["yes" if s.survived else "NO" for s in summaries])
    row("then", [s.ending for s in summaries])
    lines.append("")
    for summary in summaries:
        step = max(1, len(summary.rss_series) // 10)
        points = " ".join(f"{size / MB:.0f}" for _, size in summary.rss_series[::step])
        lines.append(f"RSS over time, MB every {step} s, {summary.label}: {points}")
    lines.append("")
    lines.extend(explain(summaries, seconds=seconds))
    if machine is not None and machine.logs:
        lines.append(f"the servers' logs are kept in {machine.logs}")
    lines.append("")
    if summaries:
        protected = summaries[0]
        lines.append(f"targets for {protected.label}:")
        for text, passed in _checks(protected):
            lines.append(f"  [{'PASS' if passed else 'FAIL'}] {text}")
    return "\n".join(lines) + "\n"


def explain(summaries: list[RunSummary], *, seconds: float) -> list[str]:
    """What each figure of the report means, with this run's numbers."""
    lines = ["what the figures mean:"]

    def say(text: str) -> None:
        words = text.split()
        line = "  -"
        for word in words:
            if len(line) + 1 + len(word) > 92:
                lines.append(line)
                line = "   "
            line += " " + word
        lines.append(line)

    say(
        "capacity: the best rate of 2xx answers while 1, 2, 4, ... clients each waited for "
        "an answer before sending again; offered load: requests due per second whatever "
        f"happened to earlier ones; goodput: 2xx answered within the {seconds:g} s, per "
        "second. Goodput can pass capacity: under overload the refused requests are mostly "
        "the 60 ms writes, and health checks need no query."
    )
    say(
        "latency is timed from the moment a request was due to its answer, for 2xx answers "
        "only, per priority class: HIGH = GET /health and POST /api/auth, MEDIUM = GET "
        "/api/items, LOW = POST /api/items."
    )
    reasons: dict[str, None] = {}
    for summary in summaries:
        reasons.update(dict.fromkeys(summary.rejections))
    for name in reasons:
        meaning = REASONS.get(name, "a refusal the server named so")
        say(f"{name}: {meaning}. Every 503 carries Retry-After.")
    if summaries:
        protected = summaries[0]
        medium = protected.latency["MEDIUM"]
        if not math.isnan(medium[0]) and medium[0] > 1.0:
            say(
                f"MEDIUM waits ({medium[0]:.1f} s at the median) by design: the executor runs "
                "10 requests at a time (2 slots kept for HIGH, which starts at once) and "
                "serves HIGH first; MEDIUM and LOW wait in its priority queue of 1000 places, "
                "which at the database's pace of about 200-250 answers a second is a wait "
                "of up to about 4-5 s. The SEED queues excess "
                "requests rather than dropping them; a smaller max_queue or a queue_timeout "
                "trades that wait for refusals."
            )
        low = protected.latency["LOW"]
        if low[2] < 0.01 * max(1, protected.sent):
            say(
                f"LOW answered {low[2]} times: with the queue full, every more important "
                "newcomer drops a waiting write (on_full='drop_less_important'), as the SEED "
                "orders (LOW: POST operations)."
            )
        say(
            f"slow requests logged: {protected.slow_logged} requests the protected server "
            "logged for taking more than the SEED's 3 s slow threshold (logger brace.asgi). "
            "They are the MEDIUM reads that waited in the queue above, counted so an "
            "operator sees the wait; they are not errors. The twin has no such log."
        )
        say(
            "tracebacks logged: exceptions in the servers' logs (0 expected; a client that "
            "hangs up in the middle of sending a body can cause one)."
        )
        say(
            "client gave up: no answer within the client timeout, the connection closed; "
            "not sent: a request fell due while every allowed connection was busy."
        )
    return lines


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


@dataclass(frozen=True)
class Series:
    """One measured series of the plot: ``panel``, ``label``, ``color``, the points, and
    ``style`` (a matplotlib format: ``"o-"`` joins points, ``"*"`` marks one alone)."""

    panel: str
    label: str
    color: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    style: str


@dataclass(frozen=True)
class PlotData:
    """Everything the plot draws, so tests can check it without rendering pixels."""

    title: str
    series: tuple[Series, ...]
    # (panel, y, label, color): a horizontal reference line, such as a capacity
    lines: tuple[tuple[str, float, str, str], ...]
    # (server label, color, {"503 queue_full": count, ...})
    refusals: tuple[tuple[str, str, dict[str, int]], ...]


#: one colour per server, the same in every panel (matplotlib's first two)
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")

PANELS = {
    "load_goodput": ("goodput against offered load", "offered load (req/s)", "goodput (2xx/s)"),
    "load_latency": (
        "p99 latency against offered load",
        "offered load (req/s)",
        "p99 latency (ms, log scale)",
    ),
    "refusals": ("refusals by reason (whole run)", "", "requests refused"),
    "time_goodput": ("goodput over time", "seconds into the overload", "2xx per second"),
    "time_high": (
        "HIGH p99 latency over time",
        "seconds into the overload (by when due)",
        "HIGH p99 (ms, log scale)",
    ),
    "time_rss": ("server RSS over time", "seconds into the overload", "RSS (MB)"),
}


def plot_data(
    summaries: list[RunSummary],
    runs: list[ServerRun],
    *,
    factor: float,
    machine: Machine | None = None,
) -> PlotData:
    """The plot's measured points: the capacity ramp's steps joined by a line (each a
    closed-loop measurement over all requests), the overload run's single point per
    class on its own (never joined to the ramp: nothing was measured between them), the
    per-second figures of the run, and the refusals by reason."""
    series: list[Series] = []
    lines: list[tuple[str, float, str, str]] = []
    refusals: list[tuple[str, str, dict[str, int]]] = []
    seconds = summaries[0].seconds if summaries else 0.0
    for index, (summary, run) in enumerate(zip(summaries, runs, strict=True)):
        color = COLORS[index % len(COLORS)]
        name = summary.label
        steps = run.capacity.steps
        ramp_x = tuple(step.rate for step in steps)
        series.append(
            Series(
                "load_goodput",
                f"{name}: capacity ramp",
                color,
                ramp_x,
                tuple(step.rate for step in steps),
                "o-",
            )
        )
        series.append(
            Series(
                "load_goodput",
                f"{name}: overload ({factor:g} x)",
                color,
                (summary.offered,),
                (summary.goodput,),
                "*",
            )
        )
        series.append(
            Series(
                "load_latency",
                f"{name}: capacity ramp, p99 of all requests",
                color,
                ramp_x,
                tuple(step.p99 * 1000 for step in steps),
                "o-",
            )
        )
        for priority, marker in (("HIGH", "s"), ("MEDIUM", "D")):
            p99 = summary.latency[priority][1]
            if not math.isnan(p99):
                series.append(
                    Series(
                        "load_latency",
                        f"{name}: overload, p99 of {priority} requests",
                        color,
                        (summary.offered,),
                        (p99 * 1000,),
                        marker,
                    )
                )
        lines.append(("load_goodput", summary.capacity, f"{name}: capacity", color))
        lines.append(("time_goodput", summary.capacity, f"{name}: capacity", color))
        per_second = summary.per_second
        series.append(
            Series(
                "time_goodput",
                name,
                color,
                tuple(float(i) + 0.5 for i in range(len(per_second))),
                tuple(float(ok) for _, ok, _ in per_second),
                "-",
            )
        )
        high = [
            (float(i) + 0.5, p99 * 1000)
            for i, p99 in enumerate(summary.high_per_second)
            if not math.isnan(p99)
        ]
        series.append(
            Series(
                "time_high",
                name,
                color,
                tuple(x for x, _ in high),
                tuple(y for _, y in high),
                ".-",
            )
        )
        series.append(
            Series(
                "time_rss",
                name,
                color,
                tuple(t for t, _ in summary.rss_series),
                tuple(size / MB for _, size in summary.rss_series),
                "-",
            )
        )
        refusals.append((name, color, dict(summary.rejections)))
    lines.append(("time_high", TARGETS["high_p99"] * 1000, "target for HIGH p99", "gray"))
    where = f"; {machine.title()}" if machine is not None else ""
    title = f"brace-demo overload: {factor:g} x capacity for {seconds:g} s{where}"
    return PlotData(title, tuple(series), tuple(lines), tuple(refusals))


def plot(
    summaries: list[RunSummary],
    runs: list[ServerRun],
    path: str | Path,
    *,
    factor: float = 5.0,
    machine: Machine | None = None,
) -> None:
    """A PNG of `plot_data`: six panels (against load, over time, refusals)."""
    require_matplotlib()
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    data = plot_data(summaries, runs, factor=factor, machine=machine)
    figure, grid = plt.subplots(2, 3, figsize=(17, 9))
    axes = dict(zip(PANELS, grid.flat, strict=True))
    for item in data.series:
        axes[item.panel].plot(
            item.xs, item.ys, item.style, color=item.color, label=item.label, markersize=7
        )
    for panel, y, label, color in data.lines:
        axes[panel].axhline(y, linestyle="--", linewidth=1, color=color, label=label)
    bars = axes["refusals"]
    reasons = sorted({reason for _, _, counts in data.refusals for reason in counts})
    width = 0.8 / max(1, len(data.refusals))
    for index, (label, color, counts) in enumerate(data.refusals):
        xs = [position + index * width for position in range(len(reasons))]
        bars.bar(xs, [counts.get(r, 0) for r in reasons], width, color=color, label=label)
    bars.set_xticks(
        [position + width * (len(data.refusals) - 1) / 2 for position in range(len(reasons))]
    )
    bars.set_xticklabels(reasons, fontsize="small")
    if not reasons:
        bars.text(0.5, 0.5, "no refusals", ha="center", transform=bars.transAxes)
    for panel, (title, xlabel, ylabel) in PANELS.items():
        axis = axes[panel]
        axis.set_title(title)
        axis.set(xlabel=xlabel, ylabel=ylabel)
        axis.legend(fontsize="x-small")
    axes["load_latency"].set_yscale("log")
    axes["time_high"].set_yscale("log")
    figure.suptitle(data.title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


#: the figures `summarize_reports` reads back from stored reports (label, pattern)
_STORED = (
    ("HIGH p99 ms", r"\[(?:PASS|FAIL)\] HIGH p99 >?([0-9.]+) ms"),
    ("goodput % cap.", r"\[(?:PASS|FAIL)\] goodput ([0-9.]+)% of capacity"),
    ("RSS growth MB", r"\[(?:PASS|FAIL)\] RSS growth (-?[0-9.]+) MB"),
    ("other 5xx", r"\[(?:PASS|FAIL)\] other 5xx ([0-9]+)"),
    ("no Retry-After", r"\[(?:PASS|FAIL)\] 503s without Retry-After ([0-9]+)"),
    ("capacity req/s", r"capacity \(closed-loop ramp\)\s+([0-9.]+) req/s"),
    ("load avg", r"load average ([0-9.]+) before the run"),
)


def summarize_reports(texts: dict[str, str]) -> str:
    """A table of stored overload reports (name: text): each run's key figures and
    verdict, then the median and the range of each figure across the runs."""
    import re
    import statistics

    rows: list[tuple[str, list[float | None], str]] = []
    for name, text in texts.items():
        values: list[float | None] = []
        for _, pattern in _STORED:
            found = re.search(pattern, text)
            values.append(float(found[1]) if found else None)
        verdicts = re.findall(r"\[(PASS|FAIL)\]", text)
        ending = re.search(r"^then\s+(.*)$", text, re.MULTILINE)
        stopped = ending is not None and ending[1].startswith("stopped on SIGTERM")
        verdict = (
            "all targets met"
            if verdicts and "FAIL" not in verdicts
            else f"{verdicts.count('FAIL')} target(s) missed"
            if verdicts
            else "no report"
        )
        rows.append((name, values, verdict + ("" if stopped else ", did not stop on SIGTERM")))
    lines = ["run".ljust(30) + "".join(label.ljust(14)[:14] + " " for label, _ in _STORED)]
    for name, values, verdict in rows:
        cells = "".join(("-" if v is None else f"{v:g}").ljust(15) for v in values)
        lines.append(name.ljust(30)[:30] + cells + verdict)
    medians, ranges = [], []
    for index in range(len(_STORED)):
        column = [x for x in (v[index] for _, v, _ in rows) if x is not None]
        medians.append(f"{statistics.median(column):g}" if column else "-")
        ranges.append(f"{min(column):g}-{max(column):g}" if column else "-")
    lines.append("median".ljust(30) + "".join(m.ljust(15) for m in medians))
    lines.append("range".ljust(30) + "".join(r.ljust(15) for r in ranges))
    return "\n".join(line.rstrip() for line in lines) + "\n"
