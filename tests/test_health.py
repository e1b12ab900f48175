"""Health checks: timeouts, critical vs degraded, readiness vs liveness."""

from __future__ import annotations

import anyio
import pytest

import brace
from brace import Health, HealthStatus


async def ok() -> None:
    """A check that passes."""


async def down() -> bool:
    """A check that reports failure by returning False."""
    return False


async def broken() -> None:
    """A check that raises."""
    raise ConnectionError("refused")


async def slow() -> None:
    """A check that never answers in time."""
    await anyio.sleep(60.0)


async def test_all_passing_is_ok() -> None:
    """Passing checks give ok and HTTP 200."""
    health = Health(clock=anyio.current_time)
    health.add("db", ok)
    report = await health.readiness()
    assert report.status is HealthStatus.OK
    assert report.http_status == 200
    assert report.to_dict()["checks"]["db"]["status"] == "ok"


async def test_critical_failure_fails_non_critical_degrades() -> None:
    """A failing critical check fails the report; a failing optional one degrades it."""
    health = Health(clock=anyio.current_time)
    health.add("cache", broken, critical=False)
    report = await health.readiness()
    assert report.status is HealthStatus.DEGRADED
    assert report.http_status == 200
    (cache,) = report.checks
    assert cache.error == "ConnectionError: refused"
    health.add("db", down)
    report = await health.readiness()
    assert report.status is HealthStatus.FAILING
    assert report.http_status == 503


async def test_checks_run_concurrently_each_with_its_timeout() -> None:
    """Slow checks time out on their own timeouts, concurrently."""
    health = Health(timeout=5.0, clock=anyio.current_time)
    health.add("slow_default", slow)
    health.add("slow_short", slow, timeout=1.0, critical=False)
    start = anyio.current_time()
    report = await health.readiness()
    assert anyio.current_time() - start == pytest.approx(5.0)
    durations = {check.name: check.duration for check in report.checks}
    assert durations == {"slow_default": pytest.approx(5.0), "slow_short": pytest.approx(1.0)}
    errors = {check.name: check.error for check in report.checks}
    assert errors["slow_short"] == "timed out after 1.0 s"
    assert report.status is HealthStatus.FAILING


async def test_checks_may_return_a_status() -> None:
    """A check returning DEGRADED degrades even when critical."""

    async def so_so() -> HealthStatus:
        return HealthStatus.DEGRADED

    health = Health()
    health.add("so_so", so_so)
    assert (await health.readiness()).status is HealthStatus.DEGRADED


async def test_readiness_and_liveness_are_distinct() -> None:
    """A dependency outage fails readiness but not liveness."""
    health = Health()
    health.add("db", down)
    health.add("loop", ok, liveness=True, readiness=False)
    assert (await health.readiness()).status is HealthStatus.FAILING
    liveness = await health.liveness()
    assert liveness.status is HealthStatus.OK
    assert [check.name for check in liveness.checks] == ["loop"]
    assert liveness.kind == "liveness"


async def test_readiness_follows_shutdown_and_memory() -> None:
    """Readiness fails once shutting down, and tracks the memory level."""
    usage = [0]
    guard = brace.MemoryGuard(100, critical=200, probe=lambda: usage[0], interval=1e-9)
    shutdown = brace.GracefulShutdown()
    health = Health(shutdown=shutdown, memory=guard)
    assert (await health.readiness()).status is HealthStatus.OK
    usage[0] = 150
    assert (await health.readiness()).status is HealthStatus.DEGRADED
    usage[0] = 250
    assert (await health.readiness()).status is HealthStatus.FAILING
    usage[0] = 0
    shutdown.trigger()
    report = await health.readiness()
    assert report.status is HealthStatus.FAILING
    assert report.to_dict()["checks"]["shutdown"]["error"] == "shutting down"
    assert (await health.liveness()).status is HealthStatus.OK


async def test_cancelling_a_health_run_propagates() -> None:
    """Cancelling the caller cancels the checks and reaches the caller unchanged."""
    health = Health(timeout=60.0)
    health.add("slow", slow)
    with anyio.move_on_after(1.0) as scope:
        await health.readiness()
    assert scope.cancelled_caught


def test_bad_registrations_raise() -> None:
    """Duplicate names, non-callables and checks counting for nothing are refused."""
    health = Health()
    health.add("a", ok)
    with pytest.raises(ValueError, match="already"):
        health.add("a", ok)
    with pytest.raises(TypeError):
        health.add("b", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="readiness"):
        health.add("c", ok, readiness=False)
    with pytest.raises(ValueError, match="timeout"):
        health.add("d", ok, timeout=0)
    with pytest.raises(ValueError, match="timeout"):
        Health(timeout=-1)
    health.remove("a")
    with pytest.raises(KeyError):
        health.remove("a")
