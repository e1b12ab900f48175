"""Registry: names, weak references, and the JSON snapshot in the demo server's shape."""

from __future__ import annotations

import functools
import gc
import json
from dataclasses import dataclass

import anyio
import pytest

import brace
from brace import Priority, PriorityExecutor, Registry


@dataclass(frozen=True, slots=True)
class CustomStatistics:
    """Statistics of a primitive the registry knows nothing about."""

    widgets: int
    ratio: float


class Custom:
    """A user primitive with statistics()."""

    def statistics(self) -> CustomStatistics:
        return CustomStatistics(widgets=3, ratio=float("inf"))


def test_register_returns_the_primitive_and_names_are_unique() -> None:
    """register() hands back its argument; a live name cannot be taken twice."""
    registry = Registry()
    custom = Custom()
    assert registry.register("custom", custom) is custom
    assert "custom" in registry
    assert registry.get("custom") is custom
    with pytest.raises(ValueError, match="already"):
        registry.register("custom", Custom())
    registry.unregister("custom")
    assert "custom" not in registry
    assert len(registry) == 0


@pytest.mark.parametrize("name", ["", "has space", "new\nline", 5])
def test_bad_names_are_refused(name: object) -> None:
    """Names must be plain identifiers-ish strings."""
    with pytest.raises(ValueError, match="name"):
        Registry().register(name, Custom())  # type: ignore[arg-type]


def test_objects_without_statistics_are_refused() -> None:
    """Only primitives with statistics() can be registered."""
    with pytest.raises(TypeError, match="statistics"):
        Registry().register("x", object())  # type: ignore[type-var]


def test_collected_primitives_disappear() -> None:
    """A primitive nobody else holds drops out of the registry, and its name frees up."""
    registry = Registry()
    registry.register("breaker", brace.CircuitBreaker())
    registry.register("custom", Custom())
    gc.collect()
    assert list(registry) == []
    assert registry.snapshot() == {}
    registry.register("custom", Custom())  # the name is free again


def test_primitives_without_weakref_support_are_held() -> None:
    """Slotted objects without __weakref__ are kept (strongly) rather than refused."""

    class Slotted:
        __slots__ = ()

        def statistics(self) -> CustomStatistics:
            return CustomStatistics(1, 0.5)

    registry = Registry()
    registry.register("slotted", Slotted())
    gc.collect()
    assert registry.snapshot() == {"other": {"slotted": {"widgets": 1, "ratio": 0.5}}}


async def test_snapshot_has_the_seed_shape() -> None:
    """Queue stats, distribution, breaker state, memory, load and limiter keys, JSON-ready."""
    registry = Registry()
    executor = registry.register("default", PriorityExecutor(concurrency=1))
    breaker = registry.register("db", brace.CircuitBreaker(failure_threshold=1))
    limiter = registry.register("api", brace.RateLimiter(brace.SlidingWindow(limit=5, window=60)))
    guard = registry.register("process", brace.MemoryGuard(100, probe=lambda: 150))
    monitor = registry.register("loop", brace.LoadMonitor())
    custom = registry.register("custom", Custom())
    shutdown = registry.register("shutdown", brace.GracefulShutdown())

    await limiter.hit("user:1")
    await limiter.hit("user:2")
    with pytest.raises(ZeroDivisionError):
        async with breaker:
            1 / 0  # noqa: B018
    assert guard.level is brace.MemoryLevel.HIGH
    gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(executor.run, gate.wait)
        await anyio.sleep(0.01)  # the gate holds the only slot
        for priority in (Priority.HIGH, Priority.MEDIUM, Priority.MEDIUM, Priority.LOW + 3):
            tg.start_soon(functools.partial(executor.run, anyio.sleep, 0, priority=priority))
        await anyio.sleep(0.01)
        snapshot = registry.snapshot()
        gate.set()

    assert json.loads(json.dumps(snapshot)) == snapshot
    queue = snapshot["queue"]["default"]
    assert queue["stats"]["pending"] == 4
    assert queue["stats"]["running"] == 1
    assert {"completed", "failed", "total_processed", "average_wait_time"} <= set(queue["stats"])
    assert queue["queue_distribution"] == {"high": 1, "medium": 2, "low": 1}
    assert snapshot["circuit_breakers"]["db"]["state"] == "open"
    assert "name" not in snapshot["circuit_breakers"]["db"]
    assert snapshot["rate_limit"]["api"]["active_keys"] == 2
    memory = snapshot["memory"]["process"]
    assert (memory["level"], memory["severity"], memory["usage"]) == ("high", 1, 150)
    assert snapshot["load"]["loop"]["lag"] == 0.0
    assert snapshot["other"]["custom"] == {"widgets": 3, "ratio": None}  # inf is not JSON
    assert snapshot["shutdown"]["shutdown"]["ready"] is True
    assert shutdown.ready
    assert registry.get("loop") is monitor
    assert registry.get("custom") is custom
