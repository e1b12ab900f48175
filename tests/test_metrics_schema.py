"""The metric schema: the histogram type, refusals by reason, and how statistics are read."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import brace
from brace._executor import Dropped
from brace._metrics import KINDS, REFUSAL_REASONS, Histogram, collect, specs
from brace.prometheus import RegistryCollector
from brace.testing import FixedRandom

bounds_strategy = st.lists(
    st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=20, unique=True
).map(sorted)


@given(bounds_strategy, st.lists(st.floats(-2e6, 2e6, allow_nan=False), max_size=200))
def test_histogram_counts_like_a_reference(bounds: list[float], values: list[float]) -> None:
    """Each value lands in the first bucket whose bound is >= the value (Prometheus' le);
    the sum is the values' sum; cumulative counts end at the number of values."""
    histogram = Histogram(bounds)
    for value in values:
        histogram.observe(value)
    snapshot = histogram.snapshot()
    expected = [0] * (len(bounds) + 1)
    for value in values:
        expected[next((i for i, bound in enumerate(bounds) if value <= bound), len(bounds))] += 1
    assert list(snapshot.counts) == expected
    assert snapshot.count == len(values)
    assert snapshot.cumulative()[-1] == len(values)
    assert math.isclose(snapshot.sum, math.fsum(values), abs_tol=1e-6 * (1 + len(values)))
    assert len(histogram.counts) == len(bounds) + 1  # memory does not grow with values


def test_histogram_zeros_and_sinks() -> None:
    """Zeros counted elsewhere land in the bucket of 0; sinks see every observation."""
    seen: list[float] = []
    histogram = Histogram([0.0, 1.0])
    histogram.sinks = (seen.append,)
    histogram.observe(0.5)
    histogram.observe(3.0)
    assert histogram.snapshot(zeros=4).counts == (4, 1, 1)
    assert seen == [0.5, 3.0]


@pytest.mark.parametrize("bounds", [[], [1.0, 1.0], [2.0, 1.0], [math.inf], [math.nan]])
def test_histogram_rejects_bad_bounds(bounds: list[float]) -> None:
    """Bounds must be finite and strictly increasing."""
    with pytest.raises(ValueError, match="bounds"):
        Histogram(bounds)


def test_shared_metrics_agree() -> None:
    """A metric several kinds export (refusals) is declared alike by each of them."""
    by_name: dict[str, list[Any]] = {}
    for kind in KINDS.values():
        names = [spec.prometheus_name() for spec in kind.metrics]
        assert len(names) == len(set(names)), kind.kind
        for spec in kind.metrics:
            by_name.setdefault(spec.prometheus_name(), []).append(spec)
    for name, declared in by_name.items():
        shapes = {(s.type, s.unit, s.help, s.labels, s.buckets) for s in declared}
        assert len(shapes) == 1, name
    assert len(specs()) == len(by_name)


def refusals(registry: brace.Registry) -> dict[tuple[str, str], float]:
    """``brace_refusals_total`` by (primitive name, reason), through a real scrape."""
    metrics = CollectorRegistry()
    metrics.register(RegistryCollector(registry))
    text = generate_latest(metrics).decode()
    return {
        (sample.labels["name"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "brace_refusals"
        for sample in family.samples
    }


async def test_every_refusal_reason_counts_once() -> None:
    """Each reason, provoked once on its primitive, adds exactly 1 to its own series
    (and nothing to any other)."""
    clock = anyio.current_time
    registry = brace.Registry()

    def executor(name: str, **options: Any) -> brace.PriorityExecutor:
        options.setdefault("concurrency", 1)
        options.setdefault("max_queue", 1)
        return registry.register(name, brace.PriorityExecutor(clock=clock, **options))

    full = executor("full")
    dropping = executor("dropping", on_full="drop_oldest")
    waiting = executor("waiting", queue_timeout=1.0)
    draining = executor("draining")
    slow = executor("slow")
    breaker = registry.register("breaker", brace.CircuitBreaker(clock=clock))
    limiter = registry.register("limiter", brace.RateLimiter(brace.SlidingWindow(1, 60.0)))
    bucket = registry.register("bucket", brace.TokenBucket(1, clock=clock))
    window = registry.register("window", brace.SlidingWindow(1, 60.0, clock=clock))
    guard = registry.register("guard", brace.MemoryGuard(high=10, critical=20, probe=lambda: 30))
    load = registry.register("load", brace.LoadMonitor(0.1, random=FixedRandom(0.0), clock=clock))
    timeout = registry.register("timeout", brace.Timeout(0.5))
    before = refusals(registry)
    assert set(before.values()) == {0.0}

    async def hold(executor: brace.PriorityExecutor, seconds: float) -> None:
        await executor.run(anyio.sleep, seconds)

    async def refused(executor: brace.PriorityExecutor, error: type[Exception]) -> None:
        with pytest.raises(error):
            await executor.run(anyio.sleep, 0)

    async with anyio.create_task_group() as tasks:
        for busy in (full, dropping, waiting):
            tasks.start_soon(hold, busy, 5.0)  # the slot
        await anyio.sleep(0.01)
        tasks.start_soon(hold, full, 0)  # the queue's one place
        tasks.start_soon(refused, dropping, Dropped)  # dropped by the next newcomer
        tasks.start_soon(refused, waiting, brace.QueueTimeout)  # waits 1 s, gives up
        await anyio.sleep(0.01)
        tasks.start_soon(hold, dropping, 0)
        await refused(full, brace.QueueFull)
    await draining.drain(timeout=1.0)
    await refused(draining, brace.ShuttingDown)
    with pytest.raises(brace.TimeoutExceeded):
        await slow.run(anyio.sleep, 10.0, timeout=0.5)
    breaker.force_open()
    with pytest.raises(brace.CircuitOpen):
        async with breaker:
            pass
    assert (await limiter.hit("k")).allowed
    assert not (await limiter.hit("k")).allowed
    assert bucket.try_acquire().allowed
    assert not bucket.try_acquire().allowed
    assert window.try_acquire().allowed
    assert not window.try_acquire().allowed
    guard.sample()
    with pytest.raises(brace.MemoryPressure):
        async with guard:
            pass
    load.observe(1.0)
    with pytest.raises(brace.Overloaded):
        load.check()
    with pytest.raises(brace.TimeoutExceeded):
        async with timeout:
            await anyio.sleep(10.0)

    expected = {
        ("full", "queue_full"),
        ("dropping", "dropped"),
        ("waiting", "queue_timeout"),
        ("draining", "shutting_down"),
        ("slow", "timeout"),
        ("breaker", "circuit_open"),
        ("limiter", "rate_limited"),
        ("bucket", "rate_limited"),
        ("window", "rate_limited"),
        ("guard", "memory"),
        ("load", "load"),
        ("timeout", "timeout"),
    }
    after = refusals(registry)
    assert {key for key, value in after.items() if value} == expected
    assert all(after[key] == 1 for key in expected)
    assert {reason for _, reason in after} <= set(REFUSAL_REASONS)


@dataclass(frozen=True)
class TimeoutStatistics:
    """Statistics of the shape the events convention adds: a ``refusals`` mapping."""

    calls: int
    timed_out: int
    refusals: dict[str, int] = field(default_factory=dict)


class Counted:
    def __init__(self, stats: TimeoutStatistics) -> None:
        self.stats = stats

    def statistics(self) -> TimeoutStatistics:
        return self.stats


def test_a_refusals_mapping_in_the_statistics_is_read() -> None:
    """Where statistics carry ``refusals`` (reason -> count), those counts are exported;
    declared reasons it lacks stay at 0."""
    primitive = Counted(TimeoutStatistics(calls=9, timed_out=1, refusals={"timeout": 7}))
    (family,) = [
        family
        for family in collect([("t", primitive)])
        if family.spec.prometheus_name() == "brace_refusals"
    ]
    assert [(dict(labels), value) for labels, value in family.samples] == [
        ({"kind": "timeout", "name": "t", "reason": "timeout"}, 7.0)
    ]


@dataclass(frozen=True)
class BraceMiddlewareStatistics:
    """Middleware statistics of the shape the events convention adds."""

    requests: int = 3
    active: int = 0
    slow: int = 0
    errors: int = 0
    rate_limited: int = 2
    queue_full: int = 0
    circuit_open: int = 0
    memory_pressure: int = 0
    overloaded: int = 0
    shutting_down: int = 0
    timed_out: int = 0
    refusals: dict[str, int] = field(default_factory=lambda: {"rate_limited": 2})
    refusals_by_rule: dict[str, dict[str, int]] = field(
        default_factory=lambda: {"api": {"rate_limited": 2}}
    )


class Middleware:
    def statistics(self) -> BraceMiddlewareStatistics:
        return BraceMiddlewareStatistics()


def test_a_refusals_by_rule_mapping_in_the_statistics_is_read() -> None:
    """Where middleware statistics carry ``refusals_by_rule``, the per-rule metric reads it."""
    (family,) = [
        family
        for family in collect([("http", Middleware())])
        if family.spec.prometheus_name() == "brace_middleware_rule_refusals"
    ]
    assert [(dict(labels), value) for labels, value in family.samples] == [
        ({"kind": "middleware", "name": "http", "rule": "api", "reason": "rate_limited"}, 2.0)
    ]
