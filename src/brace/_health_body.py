"""The health endpoints' JSON bodies, in the specification's shapes (schema version 1).

The Python side keeps snake_case statistics in seconds and bytes (``statistics()``,
:meth:`brace.Registry.snapshot`). The HTTP bodies are what a client written from the
specification's field list reads: camelCase, durations in milliseconds, memory in MB
(2**20 bytes, Node's ``heapUsed / 1024 / 1024``). The schema is
``docs/schema/health-v1.json``; every body carries ``schemaVersion``.

The queue body is the specification's example field for field::

    {"queue": {"stats": {"pending", "running", "completed", "failed", "totalProcessed",
                         "averageWaitTime", "averageProcessingTime", "circuitBreakerOpen"},
               "circuitBreakerState": "CLOSED",
               "queueDistribution": {"high", "medium", "low"}},
     "middleware": {"activeRequests", "memoryUsage": {"heapUsed"}},
     "rateLimit": {"activeWindows", "activeBuckets"}}

The specification has one queue and one breaker; brace may have several. ``queue`` and
``circuitBreakerState`` are the *default* executor and breaker (the first registered, or
the ones named), and every executor, breaker and rate limiter is beside them, by name,
under ``executors``, ``circuitBreakers`` and ``rateLimiters``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._core.gcra import GCRA
from ._core.window import SlidingLog
from ._health import CheckResult, HealthReport
from ._registry import HasStatistics, Registry, _distribution, section_of
from ._store import _policy_identity

__all__ = ("SCHEMA_VERSION", "Defaults", "Snapshot")

#: The version of the bodies' schema (``docs/schema/health-v1.json``). It changes when a
#: field is removed or renamed or changes type or unit; new fields keep the version.
SCHEMA_VERSION = 1

MB = 2**20
_MIDDLEWARE_STATISTICS = "BraceMiddlewareStatistics"


def milliseconds(seconds: float | None) -> float | None:
    """Seconds to milliseconds, to the microsecond; ``None`` (or not finite) is ``None``."""
    if seconds is None or not math.isfinite(seconds):
        return None
    return round(seconds * 1000.0, 3)


def megabytes(size: float | None) -> int | None:
    """Bytes to whole MB (2**20 bytes); ``None`` (or not finite) is ``None``."""
    if size is None or not math.isfinite(size):
        return None
    return round(size / MB)


@dataclass(frozen=True, slots=True)
class Defaults:
    """Which registered primitives the specification's single-queue fields describe:
    names, or ``None`` for the first registered of its kind."""

    executor: str | None = None
    breaker: str | None = None
    memory: str | None = None
    load: str | None = None


class Snapshot:
    """One reading of a registry, rendered into the bodies (each call reads it once)."""

    __slots__ = (
        "breakers",
        "default_breaker",
        "default_executor",
        "default_load",
        "default_memory",
        "executors",
        "limiters",
        "loads",
        "memories",
        "middlewares",
        "shutdowns",
    )

    def __init__(self, registry: Registry | None, defaults: Defaults) -> None:
        self.executors: dict[str, Any] = {}
        self.breakers: dict[str, Any] = {}
        self.memories: dict[str, Any] = {}
        self.loads: dict[str, Any] = {}
        self.shutdowns: dict[str, Any] = {}
        self.middlewares: dict[str, Any] = {}
        self.limiters: dict[str, _Limiter] = {}
        entries = [] if registry is None else registry.registered()
        seen_limiters: set[int] = set()
        for name, primitive in entries:
            stats = primitive.statistics()
            section = section_of(stats)
            if section == "queue":
                self.executors[name] = stats
            elif section == "circuit_breakers":
                self.breakers[name] = stats
            elif section == "memory":
                self.memories[name] = stats
            elif section == "load":
                self.loads[name] = stats
            elif section == "shutdown":
                self.shutdowns[name] = stats
            elif section == "rate_limit":
                limiter = _limiter(primitive, stats)
                if limiter is not None:
                    self.limiters[name] = limiter
                    seen_limiters.add(id(primitive))
            elif type(stats).__name__ == _MIDDLEWARE_STATISTICS:
                self.middlewares[name] = stats
        # The middleware's own limiters (one per rule limit), unless registered by name.
        for name, primitive in entries:
            inner = getattr(primitive, "limiters", None) if name in self.middlewares else None
            if not isinstance(inner, Mapping):
                continue
            for limit_name, limiter_object in inner.items():
                if id(limiter_object) in seen_limiters:
                    continue
                seen_limiters.add(id(limiter_object))
                limiter = _limiter(limiter_object, limiter_object.statistics())
                if limiter is None:
                    continue
                key, number = str(limit_name), 1
                while key in self.limiters:  # a registered name: the middleware's beside it
                    number += 1
                    key = f"{name}.{limit_name}" if number == 2 else f"{name}.{limit_name}.{number}"
                self.limiters[key] = limiter
        self.default_executor = _pick(self.executors, defaults.executor)
        self.default_breaker = _pick(self.breakers, defaults.breaker)
        self.default_memory = _pick(self.memories, defaults.memory)
        self.default_load = _pick(self.loads, defaults.load)

    # -- the specification's sections ----------------------------------------------------

    def breaker_state(self) -> str:
        """``CLOSED`` / ``OPEN`` / ``HALF_OPEN`` of the default breaker (``CLOSED`` with
        none: nothing refuses calls)."""
        if self.default_breaker is None:
            return "CLOSED"
        return _state(self.breakers[self.default_breaker].state)

    def queue(self, name: str | None) -> dict[str, Any]:
        """The specification's ``queue`` object for executor ``name`` (zeros with none)."""
        state = self.breaker_state()
        stats = None if name is None else self.executors[name]
        if stats is None:
            figures: dict[str, Any] = {
                "pending": 0,
                "running": 0,
                "completed": 0,
                "failed": 0,
                "totalProcessed": 0,
                "averageWaitTime": 0.0,
                "averageProcessingTime": 0.0,
            }
            distribution = {"high": 0, "medium": 0, "low": 0}
        else:
            failed = stats.failed + stats.timed_out
            figures = {
                "pending": stats.pending,
                "running": stats.running,
                "completed": stats.completed,
                "failed": failed,
                "totalProcessed": stats.completed + failed,
                "averageWaitTime": milliseconds(stats.average_wait_time) or 0.0,
                "averageProcessingTime": milliseconds(stats.average_processing_time) or 0.0,
            }
            distribution = _distribution(stats.pending_by_priority)
        figures["circuitBreakerOpen"] = state == "OPEN"
        return {"stats": figures, "circuitBreakerState": state, "queueDistribution": distribution}

    def executor(self, name: str) -> dict[str, Any]:
        """The specification's ``queue`` object for one executor, and its other figures."""
        stats = self.executors[name]
        return {
            **self.queue(name),
            "concurrency": stats.concurrency,
            "maxQueue": stats.max_queue,
            "held": stats.held,
            "draining": stats.draining,
            "timedOut": stats.timed_out,
            "rejected": stats.rejected,
            "dropped": stats.dropped,
            "queueTimedOut": stats.queue_timed_out,
            "rejectedDraining": stats.rejected_draining,
            "cancelled": stats.cancelled_running + stats.cancelled_queued,
            "waitTimeP50": milliseconds(stats.wait_time_p50) or 0.0,
            "waitTimeP90": milliseconds(stats.wait_time_p90) or 0.0,
            "waitTimeP99": milliseconds(stats.wait_time_p99) or 0.0,
        }

    def middleware(self, heap_used: int) -> dict[str, Any]:
        """The specification's ``middleware`` object: requests in flight in every
        registered middleware, and the memory figure."""
        active = sum(stats.active for stats in self.middlewares.values())
        return {"activeRequests": active, "memoryUsage": {"heapUsed": heap_used}}

    def rate_limit(self) -> dict[str, int]:
        """The specification's ``rateLimit`` object: keys (clients) holding a sliding
        window, and keys holding a token bucket, over every local limiter. Limiters that
        share a store and the same parameters share their keys: counted once."""
        windows = buckets = 0
        tables: set[tuple[object, ...]] = set()
        for limiter in self.limiters.values():
            if limiter.keys is None or limiter.table in tables:
                continue
            tables.add(limiter.table)
            if limiter.algorithm == "tokenBucket":
                buckets += limiter.keys
            else:
                windows += limiter.keys
        return {"activeWindows": windows, "activeBuckets": buckets}

    # -- brace's own, beside them ----------------------------------------------------------

    def circuit_breakers(self) -> dict[str, Any]:
        """Every breaker, by name."""
        return {name: _breaker(stats) for name, stats in self.breakers.items()}

    def rate_limiters(self) -> dict[str, Any]:
        """Every rate limiter (registered, or inside a registered middleware), by name."""
        return {
            name: {
                "algorithm": limiter.algorithm,
                "activeKeys": limiter.keys,
                "allowed": limiter.allowed,
                "rejected": limiter.rejected,
            }
            for name, limiter in self.limiters.items()
        }

    def defaults(self) -> dict[str, str | None]:
        """The names the specification's single-queue fields describe."""
        return {
            "executor": self.default_executor,
            "circuitBreaker": self.default_breaker,
            "memoryGuard": self.default_memory,
            "loadMonitor": self.default_load,
        }

    def memory(self, rss: int | None) -> dict[str, Any]:
        """``heapUsed`` (what the default memory guard measures, else the RSS), ``rss``,
        and the default guard's level and thresholds (``None`` without a guard)."""
        guard = None if self.default_memory is None else self.memories[self.default_memory]
        heap = rss
        if guard is not None and guard.samples:
            heap = guard.usage
        return {
            "heapUsed": megabytes(heap) or 0,
            "rss": megabytes(rss),
            "level": None if guard is None else guard.level.name,
            "high": None if guard is None else megabytes(guard.high),
            "critical": None if guard is None else megabytes(guard.critical),
        }

    def event_loop(self) -> dict[str, Any] | None:
        """The default load monitor's figures (``None`` without one)."""
        if self.default_load is None:
            return None
        stats = self.loads[self.default_load]
        return {
            "lag": milliseconds(stats.lag) or 0.0,
            "peakLag": milliseconds(stats.peak_lag) or 0.0,
            "maxLag": milliseconds(stats.max_lag) or 0.0,
            "shedProbability": stats.shed_probability,
        }

    def shutdown(self) -> dict[str, bool]:
        """Whether every registered shutdown is ``ready`` (not draining) and ``finished``."""
        states = list(self.shutdowns.values())
        return {
            "ready": all(stats.ready for stats in states),
            "finished": bool(states) and all(stats.finished for stats in states),
        }


def checks(report: HealthReport) -> dict[str, Any]:
    """A readiness report's checks, durations in milliseconds."""
    return {check.name: _check(check) for check in report.checks}


def _check(check: CheckResult) -> dict[str, Any]:
    return {
        "status": check.status.value,
        "duration": milliseconds(check.duration) or 0.0,
        "critical": check.critical,
        "error": check.error,
    }


def _pick(found: Mapping[str, object], chosen: str | None) -> str | None:
    if chosen is not None:
        return chosen if chosen in found else None
    return next(iter(found), None)


def _state(state: object) -> str:
    name = getattr(state, "name", str(state))
    return str(name).upper()


def _breaker(stats: Any) -> dict[str, Any]:
    return {
        "state": _state(stats.state),
        "successes": stats.successes,
        "failures": stats.failures,
        "consecutiveFailures": stats.consecutive_failures,
        "rejected": stats.rejected,
        "openedCount": stats.opened_count,
        "halfOpenCalls": stats.half_open_calls,
        "failureRate": stats.failure_rate,
        "timeUntilHalfOpen": milliseconds(stats.time_until_half_open),
    }


@dataclass(frozen=True, slots=True)
class _Limiter:
    """What the bodies show of one rate limiter; ``table`` identifies the keys it holds
    (limiters on one store with the same parameters hold the same keys)."""

    algorithm: str
    keys: int | None
    allowed: int
    rejected: int
    table: tuple[object, ...]


def _limiter(primitive: HasStatistics, stats: Any) -> _Limiter | None:
    """A limiter's figures; ``None`` for a store (its keys are its limiters' keys)."""
    kind = type(stats).__name__
    if kind == "TokenBucketStatistics":  # a lone bucket: admitted cost, refused calls
        return _Limiter("tokenBucket", 1, stats.acquired, stats.rejected, (id(primitive),))
    if kind == "SlidingWindowStatistics":
        algorithm = "slidingLog" if stats.exact else "slidingWindow"
        return _Limiter(algorithm, 1, stats.acquired, stats.rejected, (id(primitive),))
    if kind != "RateLimiterStatistics":
        return None
    policy = getattr(primitive, "policy", None)
    store = getattr(primitive, "store", None)
    if isinstance(policy, GCRA):
        algorithm = "tokenBucket"
    elif isinstance(policy, SlidingLog):
        algorithm = "slidingLog"
    else:  # SlidingWindowCounter, what a rate string makes
        algorithm = "slidingWindow"
    try:
        table: tuple[object, ...] = (id(store), *_policy_identity(policy))
    except TypeError:  # not a core policy: count it on its own
        table = (id(primitive),)
    return _Limiter(algorithm, stats.keys, stats.allowed, stats.rejected, table)
