"""The metric schema: every metric brace exports, declared once, and the histogram type.

Theory of operation. Each kind of primitive is known by the class name of its statistics
(``ExecutorStatistics`` is the ``executor`` kind) and declares a tuple of `MetricSpec`:
a subsystem and a name, a type (counter, gauge or histogram), a UCUM unit, a help
sentence, the labels beyond ``kind`` and ``name``, and how to read the samples from the
primitive and its ``statistics()``. Both exporters are generated from this table:

* Prometheus: ``<prefix>_<subsystem>_<name>[_seconds|_bytes][_total]`` (the unit suffix
  from the UCUM unit, ``_total`` on counters only), labels ``kind``, ``name`` and the
  spec's own (`brace.prometheus`);
* OpenTelemetry: ``<prefix>.<subsystem>.<name>`` with the UCUM unit (``s``, ``By``,
  ``{request}``), attributes as the labels, every instrument created up front
  (`brace.otel`).

Every counter with a label declares its label values (reasons, outcomes, states): a
primitive's series exist, at 0, from the first collection after its registration.

`Histogram` is the library's own: fixed bucket bounds, O(1) memory, recording is a bisect
into a tuple and two additions. The shells keep one where they already read the clock
(a queued wait, a timed run, a Redis call, a request), never on an untimed fast path; on
a hot path (``run()``, the middleware) the shell holds ``None`` until an exporter first
reads the histogram, so that nobody pays for a histogram nobody exports.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._events import REASONS
from ._priority import Priority

__all__ = (
    "CALL_BUCKETS",
    "KINDS",
    "Kind",
    "REDIS_BUCKETS",
    "REFUSAL_REASONS",
    "WAIT_BUCKETS",
    "Family",
    "Histogram",
    "HistogramSnapshot",
    "MetricSpec",
    "collect",
    "kind_of",
    "specs",
)

MetricType = Literal["counter", "gauge", "histogram"]
Labels = tuple[str, ...]
Sample = tuple[Labels, float]

#: Every reason a refusal counter knows (``brace_refusals_total{reason=...}``): the
#: events' reasons (`brace.events.REASONS`), one list.
REFUSAL_REASONS: tuple[str, ...] = REASONS

#: Seconds in the executor's queue; the 0 bucket holds work admitted without waiting.
WAIT_BUCKETS: tuple[float, ...] = (
    0.0, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
#: Seconds of work: executor processing, breaker calls, HTTP requests (up to the
#: specification's 120 s upload timeout).
CALL_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0,
)  # fmt: skip
#: Seconds of one Redis call (a script, or a pipeline of coalesced decisions).
REDIS_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


# -- the histogram ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Counts per bucket (``counts[i]``: values ``<= bounds[i]`` and above the bound
    before; the last, beyond every bound), their ``sum`` and ``count``."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """Counts of values ``<= bounds[i]`` (then ``+Inf``): Prometheus' ``le`` buckets."""
        total = 0
        out: list[int] = []
        for count in self.counts:
            total += count
            out.append(total)
        return out


class Histogram:
    """Fixed-bucket histogram: ``observe(value)`` is a bisect and two additions.

    ``bounds`` are the bucket upper bounds (finite, strictly increasing); values above the
    last go to an overflow bucket. Memory is ``len(bounds) + 1`` ints, whatever is
    recorded. ``sinks`` (callables taking the value) are told of every observation: the
    OpenTelemetry exporter attaches one while instrumented, and only then.
    """

    __slots__ = ("__weakref__", "bounds", "counts", "sinks", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        bounds = tuple(float(bound) for bound in bounds)
        if not bounds or any(not math.isfinite(bound) for bound in bounds):
            raise ValueError(f"bounds must be finite numbers, got {bounds!r}")
        if any(b <= a for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"bounds must be strictly increasing, got {bounds!r}")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.sinks: tuple[Callable[[float], object], ...] = ()

    def observe(self, value: float) -> None:
        """Count one value."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        if self.sinks:
            for sink in self.sinks:
                sink(value)

    def snapshot(self, zeros: int = 0) -> HistogramSnapshot:
        """The counts now; ``zeros`` more values of 0 counted elsewhere (a fast path)."""
        counts = list(self.counts)
        if zeros:
            counts[bisect_left(self.bounds, 0.0)] += zeros
        return HistogramSnapshot(self.bounds, tuple(counts), self.sum)


# -- the schema --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistogramSource:
    """Where a histogram spec finds its live `Histogram` on a primitive, and how many
    zero values a fast path counted beside it."""

    live: Callable[[Any], Histogram | None]
    zeros: Callable[[Any], int] | None = None


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric, declared once for both exporters.

    ``subsystem`` and ``name`` make the metric's name (``subsystem`` may be empty for a
    metric shared by every kind, like ``refusals``); ``unit`` is UCUM (``s``, ``By``,
    ``1``, or a count such as ``{request}``); ``labels`` come after ``kind`` and ``name``;
    ``values`` lists each label's possible values where they are bounded. ``read`` gives
    ``(label values, value)`` samples from ``(primitive, statistics)`` (counters and
    gauges); ``histogram`` finds the live histogram instead.
    """

    subsystem: str
    name: str
    type: MetricType
    unit: str
    help: str
    labels: Labels = ()
    read: Callable[[Any, Any], Iterable[Sample]] | None = None
    histogram: HistogramSource | None = None
    buckets: tuple[float, ...] = ()

    def prometheus_name(self, prefix: str = "brace") -> str:
        """The Prometheus family name, without the ``_total`` a counter's samples get."""
        parts = [prefix]
        if self.subsystem:
            parts.append(self.subsystem)
        parts.append(self.name)
        suffix = _PROMETHEUS_UNITS.get(self.unit)
        if suffix is not None:
            parts.append(suffix)
        return "_".join(parts)

    def sample_name(self, prefix: str = "brace") -> str:
        """The name the samples carry: a counter's ends in ``_total``."""
        name = self.prometheus_name(prefix)
        return name + "_total" if self.type == "counter" else name

    def otel_name(self, prefix: str = "brace") -> str:
        """The OpenTelemetry instrument name: dotted."""
        parts = [prefix, self.subsystem, self.name] if self.subsystem else [prefix, self.name]
        return ".".join(parts)


_PROMETHEUS_UNITS = {"s": "seconds", "By": "bytes"}


@dataclass(frozen=True, slots=True)
class Kind:
    """The metrics of one kind of primitive."""

    kind: str
    metrics: tuple[MetricSpec, ...]


@dataclass(frozen=True, slots=True)
class Family:
    """The samples of one spec over every registered primitive, for an exporter.

    Each sample is ``(labels, value)``: ``labels`` maps ``kind``, ``name`` and the spec's
    labels to their values; ``value`` is a float, or a `HistogramSnapshot`.
    """

    spec: MetricSpec
    samples: tuple[tuple[Mapping[str, str], float | HistogramSnapshot], ...]


# readers ------------------------------------------------------------------------------


def _value(field: str) -> Callable[[Any, Any], Iterable[Sample]]:
    """The statistics field (skipped while ``None``)."""

    def read(primitive: Any, stats: Any) -> Iterable[Sample]:
        value = getattr(stats, field, None)
        return () if value is None else (((), float(value)),)

    return read


def _fields(mapping: Mapping[str, str]) -> Callable[[Any, Any], Iterable[Sample]]:
    """One sample per label value, each from a statistics field."""

    def read(primitive: Any, stats: Any) -> Iterable[Sample]:
        return [((label,), float(getattr(stats, field))) for label, field in mapping.items()]

    return read


def _state(field: str, values: tuple[str, ...]) -> Callable[[Any, Any], Iterable[Sample]]:
    """A state set: 1 for the current value of an enum field, 0 for the others."""

    def read(primitive: Any, stats: Any) -> Iterable[Sample]:
        current = getattr(stats, field)
        text = current.value if isinstance(current.value, str) else current.name.lower()
        return [((value,), 1.0 if value == text else 0.0) for value in values]

    return read


def _refusals(derived: Mapping[str, str]) -> Callable[[Any, Any], Iterable[Sample]]:
    """Refusals by reason: the statistics' ``refusals`` mapping where there is one, else
    the fields in ``derived`` (reason -> field); every declared reason is present."""

    def read(primitive: Any, stats: Any) -> Iterable[Sample]:
        counts = {reason: float(getattr(stats, field)) for reason, field in derived.items()}
        given = getattr(stats, "refusals", None)
        if given is not None:
            for reason, count in given.items():
                counts[str(reason)] = float(count)
        return [((reason,), value) for reason, value in counts.items()]

    return read


_PRIORITY_CLASSES = ("high", "medium", "low")


def _priority_class(priority: int) -> str:
    if priority < Priority.MEDIUM:
        return "high"
    if priority < Priority.LOW:
        return "medium"
    return "low"


def _by_priority(field: str) -> Callable[[Any, Any], Iterable[Sample]]:
    """A per-priority mapping folded into the three classes (finer priorities count in
    the class they fall in)."""

    def read(primitive: Any, stats: Any) -> Iterable[Sample]:
        counts: dict[str, int] = dict.fromkeys(_PRIORITY_CLASSES, 0)
        for priority, count in (getattr(stats, field, None) or {}).items():
            counts[_priority_class(priority)] += count
        return [((name,), float(count)) for name, count in counts.items()]

    return read


def _attribute(*path: str) -> Callable[[Any], Any]:
    """Follow private attributes of a primitive (``None`` when one is missing)."""

    def get(primitive: Any) -> Any:
        for name in path:
            primitive = getattr(primitive, name, None)
            if primitive is None:
                return None
        return primitive

    return get


def _on_demand(
    bounds: tuple[float, ...], attribute: str, *path: str
) -> Callable[[Any], Histogram | None]:
    """A histogram a shell keeps as ``None`` until an exporter first reads it (so that a
    hot path pays one ``is not None`` test while nobody exports): made on that read."""
    owner_of = _attribute(*path)

    def live(primitive: Any) -> Histogram | None:
        owner = owner_of(primitive) if path else primitive
        if owner is None or not hasattr(owner, attribute):
            return None
        histogram: Histogram | None = getattr(owner, attribute)
        if histogram is None:
            histogram = Histogram(bounds)
            setattr(owner, attribute, histogram)
        return histogram

    return live


# spec constructors ---------------------------------------------------------------------


def _counter(
    subsystem: str,
    name: str,
    unit: str,
    help: str,
    read: Callable[[Any, Any], Iterable[Sample]],
    labels: Labels = (),
) -> MetricSpec:
    return MetricSpec(subsystem, name, "counter", unit, help, labels, read)


def _gauge(
    subsystem: str,
    name: str,
    unit: str,
    help: str,
    read: Callable[[Any, Any], Iterable[Sample]],
    labels: Labels = (),
) -> MetricSpec:
    return MetricSpec(subsystem, name, "gauge", unit, help, labels, read)


def _histogram(
    subsystem: str, name: str, help: str, buckets: tuple[float, ...], source: HistogramSource
) -> MetricSpec:
    return MetricSpec(subsystem, name, "histogram", "s", help, (), None, source, buckets)


_REFUSALS_HELP = "Work refused by a primitive, by reason (429 and 503 answers of the middleware)."


def _refusal_spec(derived: Mapping[str, str]) -> MetricSpec:
    return _counter("", "refusals", "{refusal}", _REFUSALS_HELP, _refusals(derived), ("reason",))


_EXECUTOR = Kind(
    "executor",
    (
        _gauge("queue", "concurrency", "{slot}", "Slots the executor runs work in at once.",
               _value("concurrency")),
        _gauge("queue", "capacity", "{request}", "Most work items the executor's queue holds.",
               _value("max_queue")),
        _gauge("queue", "pending", "{request}", "Work items waiting in the queue, by priority.",
               _by_priority("pending_by_priority"), ("priority",)),
        _gauge("queue", "running", "{request}", "Work items holding a slot now.",
               _value("running")),
        _gauge("queue", "held", "{request}",
               "Work items its memory guard holds at the door now (memory high).", _value("held")),
        _gauge("queue", "draining", "1", "1 while the executor drains and admits nothing new.",
               _value("draining")),
        _counter("queue", "admitted", "{request}", "Work items given a slot, by priority.",
                 _by_priority("admitted_by_priority"), ("priority",)),
        _counter("queue", "queued", "{request}", "Work items that had to wait in the queue.",
                 _value("queued")),
        _counter("queue", "processed", "{request}",
                 "Work items that ended after holding a slot, by outcome.",
                 _fields({"completed": "completed", "failed": "failed",
                          "timed_out": "timed_out", "cancelled": "cancelled_running"}),
                 ("outcome",)),
        _counter("queue", "abandoned", "{request}",
                 "Waiting work items their caller cancelled before they got a slot.",
                 _value("cancelled_queued")),
        _refusal_spec({"queue_full": "rejected", "dropped": "dropped",
                       "queue_timeout": "queue_timed_out", "shutting_down": "rejected_draining",
                       "timeout": "timed_out"}),
        _histogram("queue", "wait", "Seconds work items waited for a slot (0: no wait).",
                   WAIT_BUCKETS,
                   HistogramSource(_attribute("_wait_histogram"),
                                   lambda executor: executor._core.acquired_immediately)),
        _histogram("queue", "processing",
                   "Seconds work items run by run() held their slot (from the first collection).",
                   CALL_BUCKETS,
                   HistogramSource(_on_demand(CALL_BUCKETS, "_processing_histogram"))),
    ),
)  # fmt: skip

_BREAKER_STATES = ("closed", "open", "half_open")


def _ratio(field: str, rule: str) -> Callable[[Any, Any], Iterable[Sample]]:
    """A breaker's window ratio: 0 before the window holds calls, absent without the rule
    (``rule``: the core's setting that turns it on)."""

    def read(primitive: Any, stats: Any) -> Iterable[Sample]:
        ratio = getattr(stats, field)
        if ratio is None:
            core = getattr(primitive, "_core", None)
            if getattr(core, rule, None) is None:
                return ()
            ratio = 0.0
        return (((), float(ratio)),)

    return read


def _transitions(primitive: Any, stats: Any) -> Iterable[Sample]:
    counts: Mapping[tuple[str, str], int] = getattr(primitive, "_transitions", None) or {}
    return [
        ((old, new), float(counts.get((old, new), 0)))
        for old in _BREAKER_STATES
        for new in _BREAKER_STATES
        if old != new
    ]


_BREAKER = Kind(
    "circuit_breaker",
    (
        _gauge("circuit_breaker", "state", "1",
               "1 for the state the circuit is in, 0 for the others.",
               _state("state", _BREAKER_STATES), ("state",)),
        _counter("circuit_breaker", "calls", "{call}", "Calls the breaker let through, by outcome.",
                 _fields({"success": "successes", "failure": "failures", "ignored": "ignored"}),
                 ("outcome",)),
        _counter("circuit_breaker", "slow_calls", "{call}",
                 "Calls that took the slow-call duration or longer.", _value("slow_calls")),
        _counter("circuit_breaker", "transitions", "{transition}",
                 "State changes of the circuit, by the state left and the state entered.",
                 _transitions, ("from_state", "to_state")),
        _gauge("circuit_breaker", "consecutive_failures", "{call}",
               "Failures in a row since the last success.", _value("consecutive_failures")),
        _gauge("circuit_breaker", "window_calls", "{call}", "Calls in the failure-rate window now.",
               _value("window_calls")),
        _gauge("circuit_breaker", "failure_ratio", "1",
               "Failed calls over calls in the window (absent without a failure-rate rule).",
               _ratio("failure_rate", "failure_rate")),
        _gauge("circuit_breaker", "slow_call_ratio", "1",
               "Slow calls over calls in the window (absent without a slow-call rule).",
               _ratio("slow_call_rate", "slow_call_duration")),
        _gauge("circuit_breaker", "consecutive_trips", "{trip}",
               "Automatic trips since the circuit last closed (they lengthen the open time).",
               _value("trips_in_a_row")),
        _gauge("circuit_breaker", "half_open_calls", "{call}", "Probes running now.",
               _value("half_open_calls")),
        _gauge("circuit_breaker", "half_open_delay", "s",
               "Seconds until an open circuit turns half-open "
               "(0 unless open; absent when forced open).",
               _value("time_until_half_open")),
        _refusal_spec({"circuit_open": "rejected"}),
        _histogram("circuit_breaker", "call_duration",
                   "Seconds calls took, when the breaker times every call "
                   "(record_durations or a slow-call rule).",
                   CALL_BUCKETS, HistogramSource(_attribute("_durations"))),
    ),
)  # fmt: skip

_LIMITER = Kind(
    "rate_limiter",
    (
        _gauge("rate_limiter", "keys", "{key}",
               "Keys the store holds for this limiter (absent for a remote store).",
               _value("keys")),
        _counter("rate_limiter", "decisions", "{decision}", "Decisions made, by outcome.",
                 _fields({"allowed": "allowed", "refused": "rejected"}), ("outcome",)),
        _counter("rate_limiter", "evictions", "{key}",
                 "Live keys spilled into the memory store's sketch to make room.",
                 _value("evictions")),
        _counter("rate_limiter", "expired_keys", "{key}", "Keys at rest forgotten without loss.",
                 _value("drops")),
        _gauge("rate_limiter", "waiters", "{task}", "Tasks waiting in acquire() now.",
               _value("waiters")),
        _gauge("rate_limiter", "waiting_keys", "{key}", "Keys those tasks wait on.",
               _value("waiting_keys")),
        _refusal_spec({"rate_limited": "rejected"}),
    ),
)  # fmt: skip


def _local_limiter(kind: str, capacity: tuple[str, str, str], level: tuple[str, str, str]) -> Kind:
    return Kind(
        kind,
        (
            _gauge(kind, capacity[0], "{token}", capacity[2], _value(capacity[1])),
            _gauge(kind, level[0], "{token}", level[2], _value(level[1])),
            _gauge(kind, "waiting", "{task}", "Callers waiting in acquire() now.",
                   _value("waiting")),
            _counter(kind, "acquired", "{token}", "Cost admitted since creation.",
                     _value("acquired")),
            _counter(kind, "waited", "{call}", "Calls to acquire() that had to wait.",
                     _value("waited")),
            _counter(kind, "cancelled", "{call}",
                     "Waiting calls cancelled before they were admitted.", _value("cancelled")),
            _refusal_spec({"rate_limited": "rejected"}),
        ),
    )  # fmt: skip


_BUCKET = _local_limiter(
    "token_bucket",
    ("capacity", "burst", "Most tokens the bucket holds (its burst)."),
    ("available", "available", "Tokens in the bucket now."),
)
_WINDOW = _local_limiter(
    "sliding_window",
    ("capacity", "limit", "Most admitted in any window."),
    ("remaining", "remaining", "How much more the window admits now."),
)

_MEMORY_STORE = Kind(
    "memory_store",
    (
        _gauge("memory_store", "keys", "{key}", "Keys the store holds now.", _value("keys")),
        _gauge("memory_store", "capacity", "{key}", "Most keys the store holds per policy.",
               _value("max_keys")),
        _gauge("memory_store", "policies", "{policy}", "Policy tables in the store.",
               _value("policies")),
        _counter("memory_store", "decisions", "{decision}", "Decisions made, by outcome.",
                 _fields({"allowed": "allowed", "refused": "rejected"}), ("outcome",)),
        _counter("memory_store", "evictions", "{key}",
                 "Live keys spilled into the sketch to make room.", _value("evictions")),
        _counter("memory_store", "expired_keys", "{key}", "Keys at rest forgotten without loss.",
                 _value("drops")),
    ),
)  # fmt: skip

_MEMORY_LEVELS = ("normal", "high", "critical")

_MEMORY = Kind(
    "memory_guard",
    (
        _gauge("memory", "usage", "By", "Memory in use at the last sample.", _value("usage")),
        _gauge("memory", "limit", "By", "The limit usage is measured against (absent: none).",
               _value("limit")),
        _gauge("memory", "stall_ratio", "1",
               "Share of time tasks stalled waiting for memory (pressure-stall information).",
               lambda primitive, stats: (
                   () if stats.pressure is None else (((), stats.pressure / 100.0),)
               )),
        _gauge("memory", "threshold", "By", "The usage at which each level starts.",
               lambda primitive, stats: [
                   ((level,), float(value))
                   for level in ("high", "critical", "low")
                   if (value := getattr(stats, level)) is not None
               ], ("level",)),
        _gauge("memory", "level", "1", "1 for the memory level now, 0 for the others.",
               _state("level", _MEMORY_LEVELS), ("level",)),
        _gauge("memory", "severity", "1",
               "The memory level as a number: 0 normal, 1 high, 2 critical.",
               lambda primitive, stats: [((), float(int(stats.level)))]),
        _counter("memory", "samples", "{sample}", "Memory samples taken.", _value("samples")),
        _counter("memory", "level_changes", "{change}", "Times the level changed.",
                 _value("level_changes")),
        _counter("memory", "admitted", "{request}", "Work let through (at once or after waiting).",
                 _value("admitted")),
        _counter("memory", "queued", "{request}", "Work told to wait while memory was high.",
                 _value("queued")),
        _gauge("memory", "waiting", "{request}", "Work waiting for memory now.",
               _value("waiting")),
        _counter("memory", "collections", "{collection}", "Garbage collections the guard ran.",
                 _value("collections")),
        _counter("memory", "probe_errors", "{error}", "Samples whose probe raised.",
                 _value("probe_errors")),
        _refusal_spec({"memory": "rejected"}),
    ),
)  # fmt: skip

_LOAD = Kind(
    "load_monitor",
    (
        _gauge("load", "lag", "s", "Smoothed event-loop lag.", _value("lag")),
        _gauge("load", "last_lag", "s", "The last event-loop lag sample.", _value("last_lag")),
        _gauge("load", "peak_lag", "s", "The largest event-loop lag sampled.", _value("peak_lag")),
        _gauge("load", "max_lag", "s", "The lag above which work starts to be shed.",
               _value("max_lag")),
        _gauge("load", "shed_ratio", "1", "The probability that new work is shed now.",
               _value("shed_probability")),
        _counter("load", "samples", "{sample}", "Event-loop lag samples taken.", _value("samples")),
        _counter("load", "checks", "{check}", "Shedding decisions made.", _value("checks")),
        _counter("load", "uncounted_lag", "s",
                 "Event-loop lateness beyond the CPU time the loop used: waiting for a CPU.",
                 _value("uncounted_lag")),
        _refusal_spec({"load": "shed"}),
    ),
)  # fmt: skip

_SHUTDOWN = Kind(
    "shutdown",
    (
        _gauge("shutdown", "ready", "1", "1 while the service is ready for traffic.",
               _value("ready")),
        _gauge("shutdown", "registered", "{drainable}", "Things the shutdown will drain.",
               _value("registered")),
        _gauge("shutdown", "finished", "1", "1 once the drain has finished.", _value("finished")),
    ),
)  # fmt: skip


def _retry_outcomes(primitive: Any, stats: Any) -> Iterable[Sample]:
    stopped = stats.exhausted + stats.budget_exhausted + stats.deadline_exceeded
    return [
        (("success",), float(stats.successes)),
        (("exhausted",), float(stats.exhausted)),
        (("budget_exhausted",), float(stats.budget_exhausted)),
        (("deadline_exceeded",), float(stats.deadline_exceeded)),
        (("not_retryable",), float(max(0, stats.failures - stopped))),
    ]


_RETRY = Kind(
    "retry",
    (
        _counter("retry", "calls", "{call}",
                 "Calls that ended, by outcome (not_retryable: an error retrying does not cover).",
                 _retry_outcomes, ("outcome",)),
        _counter("retry", "attempts", "{attempt}", "Attempts started (first tries and retries).",
                 _value("attempts")),
        _counter("retry", "backoffs", "{attempt}", "Retries granted (a backoff sleep each).",
                 _value("retries")),
    ),
)  # fmt: skip

_RETRY_BUDGET = Kind(
    "retry_budget",
    (
        _gauge("retry_budget", "available", "{attempt}", "Retries the budget would grant now.",
               _value("available")),
        _counter("retry_budget", "requests", "{request}", "First attempts recorded.",
                 _value("total_requests")),
        _counter("retry_budget", "granted", "{attempt}", "Retries the budget granted.",
                 _value("total_retries")),
        _counter("retry_budget", "refused", "{attempt}", "Retries the budget refused.",
                 _value("refused")),
    ),
)  # fmt: skip

_TIMEOUT = Kind(
    "timeout",
    (
        _counter("timeout", "calls", "{call}", "Calls and blocks started under the timeout.",
                 _value("calls")),
        _refusal_spec({"timeout": "timed_out"}),
    ),
)  # fmt: skip

_ADAPTIVE = Kind(
    "adaptive_limit",
    (
        _gauge("adaptive_limit", "current", "{slot}", "The concurrency the limit allows now.",
               _value("limit")),
        _gauge("adaptive_limit", "estimate", "{slot}", "The algorithm's estimate before rounding.",
               _value("estimate")),
        _gauge("adaptive_limit", "lower_bound", "{slot}", "The least concurrency allowed.",
               _value("min_limit")),
        _gauge("adaptive_limit", "upper_bound", "{slot}", "The most concurrency allowed.",
               _value("max_limit")),
        _counter("adaptive_limit", "samples", "{sample}", "Latency samples taken.",
                 _value("samples")),
        _counter("adaptive_limit", "changes", "{change}", "Times the limit moved, by direction.",
                 _fields({"increase": "increases", "decrease": "decreases"}), ("direction",)),
    ),
)  # fmt: skip

_REDIS = Kind(
    "redis_store",
    (
        _counter("redis_store", "decisions", "{decision}", "Decisions Redis answered.",
                 _value("decisions")),
        _counter("redis_store", "errors", "{error}",
                 "Redis calls that failed, by scope "
                 "(call: that call only; timeout: no answer in time).",
                 lambda primitive, stats: [
                     (("server",), float(stats.errors - stats.call_errors)),
                     (("call",), float(stats.call_errors)),
                     (("timeout",), float(stats.timeouts)),
                 ], ("scope",)),
        _counter("redis_store", "fallbacks", "{decision}",
                 "Decisions made by the on_error policy instead of Redis.", _value("fallbacks")),
        _counter("redis_store", "script_loads", "{load}",
                 "Scripts (re)loaded after NOSCRIPT.", _value("script_loads")),
        _counter("redis_store", "round_trips", "{request}",
                 "Requests sent to Redis (a pipeline of coalesced decisions is one).",
                 _value("round_trips")),
        _gauge("redis_store", "available", "1",
               "1 while the store uses Redis, 0 while it waits to retry.",
               _value("available")),
        _histogram("redis_store", "call_duration", "Seconds Redis calls took to answer.",
                   REDIS_BUCKETS, HistogramSource(_attribute("_latencies"))),
    ),
)  # fmt: skip

_FALLBACK = Kind(
    "fallback",
    (
        _counter("fallback", "calls", "{call}",
                 "Calls that ended, by outcome (fallback: answered with a substitute).",
                 _fields({"success": "successes", "fallback": "fallbacks", "failure": "failures"}),
                 ("outcome",)),
    ),
)  # fmt: skip

_HEDGE = Kind(
    "hedge",
    (
        _counter("hedge", "calls", "{call}", "Calls started.", _value("calls")),
        _counter("hedge", "attempts", "{attempt}", "Attempts started, first and extra.",
                 _value("attempts")),
        _counter("hedge", "extra_attempts", "{attempt}", "Extra attempts started.",
                 _value("hedges")),
        _counter("hedge", "wins", "{call}", "Calls answered by an extra attempt.",
                 _value("hedge_wins")),
        _counter("hedge", "refused", "{attempt}", "Extra attempts the budget refused.",
                 _value("refused")),
        _counter("hedge", "failures", "{call}", "Calls where every attempt failed.",
                 _value("failures")),
    ),
)  # fmt: skip

_CHAOS = Kind(
    "chaos",
    (
        _counter("chaos", "calls", "{call}", "Calls and blocks the fault injector saw.",
                 _value("calls")),
        _counter("chaos", "injected", "{fault}", "Faults injected.", _value("injected")),
    ),
)  # fmt: skip


def _rule_refusals(primitive: Any, stats: Any) -> Iterable[Sample]:
    """Refusals per rule and reason: every reason of every counted rule, 0 until one.

    From the statistics' ``refusals_by_rule`` (rule -> reason -> count)."""
    pipeline = getattr(primitive, "_pipeline", None)
    counts: dict[tuple[str, str], int] = {
        (str(rule), str(reason)): count
        for rule, reasons in stats.refusals_by_rule.items()
        for reason, count in reasons.items()
    }
    rules = getattr(pipeline, "rules", None)
    for rule in () if rules is None else rules.all():
        if not rule.exempt:
            for reason in REFUSAL_REASONS:
                counts.setdefault((rule.name, reason), 0)
    return [((rule, reason), float(count)) for (rule, reason), count in sorted(counts.items())]


_MIDDLEWARE = Kind(
    "middleware",
    (
        _counter("middleware", "requests", "{request}", "HTTP requests the middleware handled.",
                 _value("requests")),
        _gauge("middleware", "active_requests", "{request}", "HTTP requests in progress now.",
               _value("active")),
        _counter("middleware", "slow_requests", "{request}",
                 "HTTP requests that took longer than slow_request.", _value("slow")),
        _counter("middleware", "errors", "{request}", "HTTP requests whose application raised.",
                 _value("errors")),
        _refusal_spec({"rate_limited": "rate_limited", "queue_full": "queue_full",
                       "circuit_open": "circuit_open", "memory": "memory_pressure",
                       "load": "overloaded", "shutting_down": "shutting_down",
                       "timeout": "timed_out"}),
        _counter("middleware", "rule_refusals", "{request}",
                 "HTTP requests refused, by route rule and reason.", _rule_refusals,
                 ("rule", "reason")),
        _histogram("middleware", "request_duration",
                   "Seconds HTTP requests past the rate limits took, 503 answers included "
                   "(while slow_request is set, from the first collection on).",
                   CALL_BUCKETS,
                   HistogramSource(_on_demand(CALL_BUCKETS, "durations", "_pipeline"))),
    ),
)  # fmt: skip

#: The kinds of primitive, by the class name of their statistics.
KINDS: dict[str, Kind] = {
    "ExecutorStatistics": _EXECUTOR,
    "CircuitBreakerStatistics": _BREAKER,
    "RateLimiterStatistics": _LIMITER,
    "TokenBucketStatistics": _BUCKET,
    "SlidingWindowStatistics": _WINDOW,
    "MemoryStoreStatistics": _MEMORY_STORE,
    "MemoryGuardStatistics": _MEMORY,
    "LoadMonitorStatistics": _LOAD,
    "ShutdownStatistics": _SHUTDOWN,
    "RetryStatistics": _RETRY,
    "RetryBudgetStatistics": _RETRY_BUDGET,
    "TimeoutStatistics": _TIMEOUT,
    "AdaptiveLimitStatistics": _ADAPTIVE,
    "RedisStoreStatistics": _REDIS,
    "FallbackStatistics": _FALLBACK,
    "HedgeStatistics": _HEDGE,
    "ChaosStatistics": _CHAOS,
    "BraceMiddlewareStatistics": _MIDDLEWARE,
}


def kind_of(stats: object) -> Kind | None:
    """The kind a statistics object belongs to (``None``: not a brace primitive's)."""
    return KINDS.get(type(stats).__name__)


def specs() -> list[MetricSpec]:
    """Every metric of the schema once, in the order declared (shared ones once)."""
    seen: dict[str, MetricSpec] = {}
    for kind in KINDS.values():
        for spec in kind.metrics:
            seen.setdefault(spec.prometheus_name(), spec)
    return list(seen.values())


def collect(primitives: Iterable[tuple[str, Any]]) -> list[Family]:
    """One `Family` per spec of the registered kinds, from one ``statistics()`` call per
    primitive. Histogram samples are `HistogramSnapshot` objects."""
    by_name: dict[str, tuple[MetricSpec, list[tuple[Mapping[str, str], Any]]]] = {}
    for name, primitive in primitives:
        stats = primitive.statistics()
        kind = kind_of(stats)
        if kind is None:
            continue
        base = {"kind": kind.kind, "name": name}
        for spec in kind.metrics:
            entry = by_name.setdefault(spec.prometheus_name(), (spec, []))
            samples = entry[1]
            if spec.histogram is not None:
                histogram = spec.histogram.live(primitive)
                if histogram is None:
                    continue
                zeros = 0 if spec.histogram.zeros is None else spec.histogram.zeros(primitive)
                samples.append((base, histogram.snapshot(zeros)))
                continue
            assert spec.read is not None
            for values, value in spec.read(primitive, stats):
                if math.isnan(value):
                    continue
                labels = dict(base)
                labels.update(zip(spec.labels, values, strict=True))
                samples.append((labels, value))
    return [Family(spec, tuple(samples)) for spec, samples in by_name.values()]


def metric_table(prefix: str = "brace") -> str:
    """The Markdown table of every metric (docs/observability.md holds a copy that
    docs/gen_metric_table.py writes and a test compares)."""
    kinds_of: dict[str, list[str]] = {}
    for kind in KINDS.values():
        for spec in kind.metrics:
            kinds_of.setdefault(spec.prometheus_name(prefix), []).append(kind.kind)
    lines = [
        "| Prometheus | OpenTelemetry | type | unit | labels | kinds | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in specs():
        name = spec.prometheus_name(prefix)
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "none"
        kinds = ", ".join(f"`{kind}`" for kind in kinds_of[name])
        lines.append(
            f"| `{spec.sample_name(prefix)}` | `{spec.otel_name(prefix)}` | {spec.type} "
            f"| `{spec.unit}` | {labels} | {kinds} | {spec.help} |"
        )
    return "\n".join(lines) + "\n"
