"""The Prometheus collector, read through a real prometheus_client registry's text output."""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import brace
from brace import Registry
from brace.prometheus import MultiProcessCollector, RegistryCollector


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


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_multiprocess_sums_counters_and_keeps_gauges_of_live_workers(tmp_path: Path) -> None:
    """Another worker's file adds to counters and histogram buckets; gauges come by pid,
    a dead worker's gauges are dropped while its counters stay; unreadable files are
    skipped."""
    registry = Registry()
    breaker = registry.register("db", brace.CircuitBreaker(record_durations=True))
    collector = MultiProcessCollector(registry, tmp_path, interval=None)
    breaker.force_open()
    collector.write()
    other = json.loads(collector.path.read_text())
    (tmp_path / "brace-live.json").write_text(json.dumps({**other, "pid": os.getppid()}))
    (tmp_path / "brace-dead.json").write_text(json.dumps({**other, "pid": dead_pid()}))
    (tmp_path / "brace-broken.json").write_text("{not json")
    collector.write()
    prometheus = CollectorRegistry()
    prometheus.register(collector)
    samples = scrape(prometheus)
    labels = (("kind", "circuit_breaker"), ("name", "db"))
    # this process's live figures plus the two other workers' files
    transitions = ("brace_circuit_breaker_transitions_total", (
        ("from_state", "closed"), *labels, ("to_state", "open")))  # fmt: skip
    assert samples[transitions] == 3.0
    refusals = ("brace_refusals_total", (*labels, ("reason", "circuit_open")))
    assert samples[refusals] == 0.0
    states = {
        dict(key)["pid"]: value
        for (name, key) in samples
        if name == "brace_circuit_breaker_state" and dict(key)["state"] == "open"
        for value in [samples[(name, key)]]
    }
    assert states == {str(os.getpid()): 1.0, str(os.getppid()): 1.0}  # not the dead one
    count = ("brace_circuit_breaker_call_duration_seconds_count", labels)
    assert samples[count] == 0.0
    collector.close()
    assert collector.path.exists()


def test_multiprocess_writes_in_a_thread(tmp_path: Path) -> None:
    """With an interval a thread writes the file; close() stops it after a last write."""
    registry = Registry()
    kept = registry.register("default", brace.PriorityExecutor())
    collector = MultiProcessCollector(registry, tmp_path, interval=0.05)
    collector.close()
    data = json.loads(collector.path.read_text())
    assert data["pid"] == os.getpid()
    assert "brace_queue_wait_seconds" in {family["name"] for family in data["families"]}
    assert kept is registry.get("default")


@pytest.mark.parametrize("interval", [0, -1.0, float("inf"), True, "1"])
def test_multiprocess_bad_arguments_raise(tmp_path: Path, interval: object) -> None:
    """interval must be seconds > 0 (or None); the directory must exist."""
    with pytest.raises(ValueError, match="interval"):
        MultiProcessCollector(Registry(), tmp_path, interval=interval)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="directory"):
        MultiProcessCollector(Registry(), tmp_path / "missing", interval=None)
