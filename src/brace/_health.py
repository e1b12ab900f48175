"""Health checks: user async callables, each with its own timeout, run together.

Readiness ("send me traffic?") and liveness ("restart me?") are asked separately: a
database outage should take a pod out of the load balancer, not get it restarted, so a
check is registered for one or both. Readiness also turns failing as soon as a
:class:`brace.GracefulShutdown` starts, and follows a :class:`brace.MemoryGuard`'s level.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio

from ._clock import check_clock
from ._core._validate import check_positive

if TYPE_CHECKING:
    from ._memory import MemoryGuard
    from ._shutdown import GracefulShutdown

__all__ = ("CheckResult", "Health", "HealthReport", "HealthStatus")

logger = logging.getLogger("brace.health")


class HealthStatus(str, enum.Enum):
    """Overall health, ordered: ``ok`` < ``degraded`` < ``failing``."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"

    @property
    def severity(self) -> int:
        """0, 1 or 2: for taking the worst of several statuses."""
        return _SEVERITY[self]


_SEVERITY = {HealthStatus.OK: 0, HealthStatus.DEGRADED: 1, HealthStatus.FAILING: 2}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome: its ``status``, how long it took (``duration``, seconds), and
    why it did not pass (``error``: the exception or "timed out after ... s")."""

    name: str
    status: HealthStatus
    duration: float
    critical: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The overall ``status`` and every check's result, for ``kind`` readiness or liveness."""

    kind: Literal["readiness", "liveness"]
    status: HealthStatus
    checks: tuple[CheckResult, ...]

    @property
    def http_status(self) -> int:
        """200 unless failing (503), the usual answer of a health endpoint."""
        return 503 if self.status is HealthStatus.FAILING else 200

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"status": "ok", "checks": {"db": {"status": "ok", ...}}}``."""
        return {
            "status": self.status.value,
            "checks": {
                check.name: {
                    "status": check.status.value,
                    "duration": check.duration,
                    "critical": check.critical,
                    "error": check.error,
                }
                for check in self.checks
            },
        }


CheckFunction = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class _Check:
    name: str
    function: CheckFunction
    timeout: float
    critical: bool
    readiness: bool
    liveness: bool


class Health:
    """A set of named health checks and the overall status they add up to.

    ``add(name, check)`` registers an ``async def`` returning ``None`` / ``True`` (ok),
    ``False`` (failing) or a :class:`HealthStatus`; raising or running past its
    ``timeout`` counts as failing. A failing ``critical`` check makes the report failing,
    a failing non-critical one only degraded. ``shutdown``: readiness fails once it
    started. ``memory``: readiness is degraded at HIGH and failing at CRITICAL.
    """

    __slots__ = ("__weakref__", "_checks", "_clock", "memory", "shutdown", "timeout")

    def __init__(
        self,
        *,
        timeout: float = 1.0,
        shutdown: GracefulShutdown | None = None,
        memory: MemoryGuard | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.timeout = check_positive(timeout, "timeout")
        self.shutdown = shutdown
        self.memory = memory
        clock = check_clock(clock)
        self._clock: Callable[[], float] = time.monotonic if clock is None else clock
        self._checks: dict[str, _Check] = {}

    def add(
        self,
        name: str,
        check: CheckFunction,
        *,
        timeout: float | None = None,
        critical: bool = True,
        readiness: bool = True,
        liveness: bool = False,
    ) -> None:
        """Register ``check`` as ``name`` (for readiness by default; ``liveness=True`` too)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        if name in self._checks:
            raise ValueError(f"a check is already registered as {name!r}")
        if not callable(check):
            raise TypeError(f"check must be an async callable, got {check!r}")
        if not (readiness or liveness):
            raise ValueError("a check must count for readiness, liveness or both")
        self._checks[name] = _Check(
            name,
            check,
            self.timeout if timeout is None else check_positive(timeout, "timeout"),
            bool(critical),
            bool(readiness),
            bool(liveness),
        )

    def remove(self, name: str) -> None:
        """Unregister the check ``name`` (a ``KeyError`` if there is none)."""
        del self._checks[name]

    async def readiness(self) -> HealthReport:
        """Run the readiness checks (and look at shutdown and memory) at once."""
        results = await self._run([c for c in self._checks.values() if c.readiness])
        if self.shutdown is not None:
            ready = self.shutdown.ready
            results.append(
                CheckResult(
                    "shutdown",
                    HealthStatus.OK if ready else HealthStatus.FAILING,
                    0.0,
                    True,
                    None if ready else "shutting down",
                )
            )
        if self.memory is not None:
            level = int(self.memory.level)
            status = (HealthStatus.OK, HealthStatus.DEGRADED, HealthStatus.FAILING)[level]
            error = None if level == 0 else f"memory level {self.memory.level.name}"
            results.append(CheckResult("memory", status, 0.0, True, error))
        return _report("readiness", results)

    async def liveness(self) -> HealthReport:
        """Run the liveness checks at once (none registered: ok, the loop answered)."""
        results = await self._run([c for c in self._checks.values() if c.liveness])
        return _report("liveness", results)

    async def _run(self, checks: list[_Check]) -> list[CheckResult]:
        results: list[CheckResult | None] = [None] * len(checks)
        async with anyio.create_task_group() as tg:
            for index, check in enumerate(checks):
                tg.start_soon(self._run_one, check, results, index)
        return [result for result in results if result is not None]

    async def _run_one(self, check: _Check, results: list[CheckResult | None], index: int) -> None:
        start = self._clock()
        failing = HealthStatus.FAILING if check.critical else HealthStatus.DEGRADED
        error: str | None = None
        status = failing
        with anyio.move_on_after(check.timeout) as scope:
            try:
                outcome = await check.function()
            except Exception as exception:
                logger.warning("health check %r raised", check.name, exc_info=True)
                error = f"{type(exception).__name__}: {exception}"
            else:
                status = _status(outcome, failing)
                if status is not HealthStatus.OK:
                    error = f"returned {outcome!r}"
        if scope.cancelled_caught:
            error = f"timed out after {check.timeout} s"
        results[index] = CheckResult(
            check.name, status, self._clock() - start, check.critical, error
        )


def _status(outcome: object, failing: HealthStatus) -> HealthStatus:
    if isinstance(outcome, HealthStatus):
        return outcome
    if outcome is None or outcome is True:
        return HealthStatus.OK
    return failing


def _report(kind: Literal["readiness", "liveness"], results: list[CheckResult]) -> HealthReport:
    status = HealthStatus.OK
    for result in results:
        effective = result.status
        if not result.critical and effective is HealthStatus.FAILING:
            effective = HealthStatus.DEGRADED
        if effective.severity > status.severity:
            status = effective
    return HealthReport(kind, status, tuple(results))
