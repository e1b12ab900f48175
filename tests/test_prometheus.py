"""The Prometheus collector, read through a real prometheus_client registry's text output."""

from __future__ import annotations

import gc
import re
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import brace
from brace import Registry
from brace.prometheus import RegistryCollector


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the text exposition, keyed by name and sorted labels."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_importing_registers_nothing() -> None:
    """Importing brace.prometheus leaves the global registry untouched."""
    from prometheus_client import REGISTRY

    assert "brace.prometheus" in sys.modules
    assert not any(name.startswith("brace_") for name in REGISTRY._names_to_collectors)


async def test_scrape_shows_primitives_and_their_states() -> None:
    """Queue counters, breaker state and limiter keys appear with the name label."""
    registry = Registry()
    executor = registry.register("default", brace.PriorityExecutor())
    breaker = registry.register("db", brace.CircuitBreaker(failure_threshold=1))
    limiter = registry.register("api", brace.RateLimiter(brace.SlidingWindow(limit=5, window=60)))
    prometheus = CollectorRegistry()
    prometheus.register(RegistryCollector(registry))

    async def work() -> int:
        return 1

    await executor.run(work)
    await limiter.hit("user:1")
    with pytest.raises(KeyError):
        async with breaker:
            raise KeyError("boom")

    samples = scrape(prometheus)
    executor_labels = (("kind", "executor"), ("name", "default"))
    completed = ("brace_queue_processed_total", (*executor_labels, ("outcome", "completed")))
    assert samples[completed] == 1.0
    assert samples[("brace_queue_running", executor_labels)] == 0.0
    breaker_open = (("kind", "circuit_breaker"), ("name", "db"), ("state", "open"))
    assert samples[("brace_circuit_breaker_state", breaker_open)] == 1.0
    assert samples[("brace_rate_limiter_keys", (("kind", "rate_limiter"), ("name", "api")))] == 1.0
    pending = ("brace_queue_pending", (*executor_labels, ("priority", "low")))
    assert samples[pending] == 0.0
    transition = (("from_state", "closed"), ("kind", "circuit_breaker"), ("name", "db"))
    assert samples[("brace_circuit_breaker_transitions_total", (*transition, ("to_state", "open")))]
    text = generate_latest(prometheus).decode()
    assert re.search(r"^# TYPE brace_queue_processed_total counter$", text, re.MULTILINE)
    assert "# TYPE brace_queue_running gauge" in text
    assert "# TYPE brace_queue_wait_seconds histogram" in text


def test_collected_primitives_disappear_from_the_output() -> None:
    """A garbage-collected primitive is gone from the next scrape."""
    registry = Registry()
    kept = registry.register("kept", brace.CircuitBreaker())
    registry.register("gone", brace.CircuitBreaker())
    prometheus = CollectorRegistry()
    prometheus.register(RegistryCollector(registry, prefix="app"))
    gc.collect()
    names = {dict(labels)["name"] for (_, labels) in scrape(prometheus)}
    assert names == {"kept"}
    assert kept is registry.get("kept")


def test_bad_arguments_raise() -> None:
    """The collector needs a brace Registry and a plain prefix."""
    with pytest.raises(TypeError):
        RegistryCollector(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix"):
        RegistryCollector(Registry(), prefix="no spaces")
