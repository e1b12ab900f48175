"""The OpenTelemetry instruments, read through the SDK's InMemoryMetricReader."""

from __future__ import annotations

import gc

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import brace
from brace import Registry
from brace._metrics import WAIT_BUCKETS
from brace.otel import instrument


def collect(reader: InMemoryMetricReader) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every data point of one collection, keyed by metric name and sorted attributes."""
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if not hasattr(point, "value"):  # a histogram: see the histogram tests
                        continue
                    attributes = tuple(
                        sorted((k, str(v)) for k, v in (point.attributes or {}).items())
                    )
                    points[(metric.name, attributes)] = point.value
    return points


@pytest.fixture
def reader() -> InMemoryMetricReader:
    """A fresh in-memory reader."""
    return InMemoryMetricReader()


async def test_instruments_report_current_values(reader: InMemoryMetricReader) -> None:
    """Each collection reads a fresh snapshot: values move with the primitives."""
    registry = Registry()
    executor = registry.register("default", brace.PriorityExecutor())
    breaker = registry.register("db", brace.CircuitBreaker(failure_threshold=1))
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    instruments = instrument(registry, meter)
    assert "brace.queue.processed" in instruments.names

    async def work() -> int:
        return 1

    completed = (
        "brace.queue.processed",
        (("kind", "executor"), ("name", "default"), ("outcome", "completed")),
    )
    points = collect(reader)
    assert points[completed] == 0
    await executor.run(work)
    await executor.run(work)
    with pytest.raises(KeyError):
        async with breaker:
            raise KeyError("boom")
    points = collect(reader)
    assert points[completed] == 2
    state = (
        "brace.circuit_breaker.state",
        (("kind", "circuit_breaker"), ("name", "db"), ("state", "open")),
    )
    assert points[state] == 1


def test_primitives_registered_later_appear_without_refresh(
    reader: InMemoryMetricReader,
) -> None:
    """Every instrument exists from instrument(): a primitive of a new kind registered
    afterwards is observed at the next collection; collected ones vanish."""
    registry = Registry()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    breaker = registry.register("db", brace.CircuitBreaker())
    instrument(registry, meter)
    guard = registry.register("process", brace.MemoryGuard(100, probe=lambda: 150))
    guard.sample()
    points = collect(reader)
    labels = (("kind", "memory_guard"), ("name", "process"))
    assert points[("brace.memory.usage", labels)] == 150
    assert (
        points[
            (
                "brace.memory.level",
                (("kind", "memory_guard"), ("level", "high"), ("name", "process")),
            )
        ]
        == 1
    )
    del guard
    gc.collect()
    points = collect(reader)
    assert not any(dict(labels).get("name") == "process" for _, labels in points)
    assert breaker is registry.get("db")


async def test_histograms_of_later_primitives_record_after_a_collection(
    reader: InMemoryMetricReader,
) -> None:
    """A histogram is attached at the first collection after its primitive's
    registration (refresh() does it at once) and records from then on."""
    registry = Registry()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    instruments = instrument(registry, meter)
    executor = registry.register(
        "default", brace.PriorityExecutor(concurrency=1, clock=anyio.current_time)
    )
    assert instruments.refresh() == ["default"]
    assert instruments.refresh() == []

    async def work() -> None:
        await anyio.sleep(0.004)

    async with anyio.create_task_group() as tasks:
        for _ in range(3):
            tasks.start_soon(executor.run, work)
    data = reader.get_metrics_data()
    assert data is not None
    histograms = {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name in ("brace.queue.wait", "brace.queue.processing")
    }
    wait = histograms["brace.queue.wait"].data.data_points[0]
    processing = histograms["brace.queue.processing"].data.data_points[0]
    assert histograms["brace.queue.wait"].unit == "s"
    assert list(wait.explicit_bounds) == list(WAIT_BUCKETS)  # type: ignore[union-attr]
    # one admitted at once (a zero wait, counted by the fast path), two after waiting
    assert wait.count == 3  # type: ignore[union-attr]
    assert wait.bucket_counts[0] == 1  # type: ignore[union-attr]
    assert processing.count == 3  # type: ignore[union-attr]
    assert processing.sum == pytest.approx(0.012)  # type: ignore[union-attr]


def test_bad_arguments_raise(reader: InMemoryMetricReader) -> None:
    """instrument() needs a brace Registry and a plain prefix."""
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    with pytest.raises(TypeError):
        instrument(object(), meter)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix"):
        instrument(Registry(), meter, prefix="a b")


def test_one_snapshot_per_collection_in_any_order(reader: InMemoryMetricReader) -> None:
    """Whatever order the instruments are observed in, each collection sees fresh values."""
    registry = Registry()
    usage = [10]
    guard = registry.register("process", brace.MemoryGuard(100, probe=lambda: usage[0]))
    guard.sample()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    instruments = instrument(registry, meter)
    order = sorted(name for name, spec in instruments.specs.items() if spec.type != "histogram")
    for names in (order, order[::-1], order[3:] + order[:3]):
        guard.sample()
        values = {name: instruments.observe(name) for name in names}
        assert values["brace.memory.usage"][0].value == usage[0]
        usage[0] += 5
