"""The OpenTelemetry instruments, read through the SDK's InMemoryMetricReader."""

from __future__ import annotations

import gc

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import brace
from brace import Registry
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
                    attributes = tuple(
                        sorted((k, str(v)) for k, v in (point.attributes or {}).items())
                    )
                    points[(metric.name, attributes)] = point.value  # type: ignore[union-attr]
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
    assert "brace_queue_completed" in instruments.names

    async def work() -> int:
        return 1

    points = collect(reader)
    assert points[("brace_queue_completed", (("name", "default"),))] == 0
    await executor.run(work)
    await executor.run(work)
    with pytest.raises(KeyError):
        async with breaker:
            raise KeyError("boom")
    points = collect(reader)
    assert points[("brace_queue_completed", (("name", "default"),))] == 2
    assert points[("brace_circuit_breakers_state", (("name", "db"), ("state", "open")))] == 1


def test_refresh_adds_instruments_for_new_kinds(reader: InMemoryMetricReader) -> None:
    """A primitive of a new kind gets instruments after refresh(); collected ones vanish."""
    registry = Registry()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    breaker = registry.register("db", brace.CircuitBreaker())
    instruments = instrument(registry, meter)
    guard = registry.register("process", brace.MemoryGuard(100, probe=lambda: 150))
    guard.sample()
    created = instruments.refresh()
    assert "brace_memory_usage" in created
    points = collect(reader)
    assert points[("brace_memory_usage", (("name", "process"),))] == 150
    assert points[("brace_memory_level", (("level", "high"), ("name", "process")))] == 1
    del guard
    gc.collect()
    points = collect(reader)
    assert not any(dict(labels).get("name") == "process" for _, labels in points)
    assert breaker is registry.get("db")


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
    order = sorted(instruments.names)
    for names in (order, order[::-1], order[3:] + order[:3]):
        guard.sample()
        values = {name: instruments.observe(name) for name in names}
        assert values["brace_memory_usage"][0].value == usage[0]
        usage[0] += 5
