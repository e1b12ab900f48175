"""A client of the health endpoints written only from the specification's field list.

This is what a JavaScript dashboard written against ``../shared/SEED.md`` ("Example Queue
Metrics Response") and its health endpoint list would read: the keys by their exact
names and nesting (``body["queue"]["stats"]["averageWaitTime"]``), counts as integers
(``Number.isInteger``), times as numbers of milliseconds, ``heapUsed`` in MB, the breaker
state as one of ``CLOSED`` / ``OPEN`` / ``HALF_OPEN``. It knows nothing of brace's
Python names, and it checks only what the specification promises plus the relations any
reader of it would assume (the distribution adds up to ``pending``, ``totalProcessed`` is
``completed + failed``, ``circuitBreakerOpen`` is ``circuitBreakerState == "OPEN"``).

The JSON Schema (``docs/schema/health-v1.json``) is loaded here too, for the tests that
validate whole bodies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from referencing import Registry, Resource

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "schema" / "health-v1.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
_REGISTRY: Registry[Any] = Registry().with_resource(SCHEMA["$id"], Resource.from_contents(SCHEMA))

#: Which ``$defs`` entry describes the body of each endpoint (relative to the mount point).
BODIES = {
    "/health": "liveness",
    "/health/full": "full",
    "/health/queue": "queueMetrics",
    "/health/metrics": "systemMetrics",
}


def validate(body: object, definition: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``body`` is a valid ``definition``."""
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"{SCHEMA['$id']}#/$defs/{definition}"},
        registry=_REGISTRY,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    errors = sorted(validator.iter_errors(body), key=lambda error: list(error.path))
    if errors:
        details = "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
        raise AssertionError(f"body is not a valid {definition}:\n{details}\n{body!r}")


def _integer(value: object, where: str) -> int:
    assert isinstance(value, int), f"{where}: {value!r}"
    assert not isinstance(value, bool), f"{where}: {value!r}"
    assert value >= 0, f"{where}: {value!r}"
    return value


def _number(value: object, where: str) -> float:
    assert isinstance(value, (int, float)), f"{where}: {value!r}"
    assert not isinstance(value, bool), f"{where}: {value!r}"
    assert value >= 0, f"{where}: {value!r}"
    return float(value)


@dataclass(frozen=True)
class QueueMetrics:
    """The specification's queue metrics, as its client reads them."""

    pending: int
    running: int
    completed: int
    failed: int
    total_processed: int
    average_wait_ms: float
    average_processing_ms: float
    breaker_open: bool
    breaker_state: str
    high: int
    medium: int
    low: int
    active_requests: int
    heap_used_mb: float
    active_windows: int
    active_buckets: int


def read_queue(body: Any) -> QueueMetrics:
    """Read ``GET /api/health/queue`` by the specification's field names."""
    stats = body["queue"]["stats"]
    distribution = body["queue"]["queueDistribution"]
    state = body["queue"]["circuitBreakerState"]
    assert state in ("CLOSED", "OPEN", "HALF_OPEN"), state
    breaker_open = stats["circuitBreakerOpen"]
    assert breaker_open is True or breaker_open is False, breaker_open
    metrics = QueueMetrics(
        pending=_integer(stats["pending"], "pending"),
        running=_integer(stats["running"], "running"),
        completed=_integer(stats["completed"], "completed"),
        failed=_integer(stats["failed"], "failed"),
        total_processed=_integer(stats["totalProcessed"], "totalProcessed"),
        average_wait_ms=_number(stats["averageWaitTime"], "averageWaitTime"),
        average_processing_ms=_number(stats["averageProcessingTime"], "averageProcessingTime"),
        breaker_open=breaker_open,
        breaker_state=state,
        high=_integer(distribution["high"], "high"),
        medium=_integer(distribution["medium"], "medium"),
        low=_integer(distribution["low"], "low"),
        active_requests=_integer(body["middleware"]["activeRequests"], "activeRequests"),
        heap_used_mb=_number(body["middleware"]["memoryUsage"]["heapUsed"], "heapUsed"),
        active_windows=_integer(body["rateLimit"]["activeWindows"], "activeWindows"),
        active_buckets=_integer(body["rateLimit"]["activeBuckets"], "activeBuckets"),
    )
    assert metrics.high + metrics.medium + metrics.low == metrics.pending, body
    assert metrics.total_processed == metrics.completed + metrics.failed, body
    assert metrics.breaker_open == (metrics.breaker_state == "OPEN"), body
    return metrics


@dataclass(frozen=True)
class FullHealth:
    """The full-health endpoint, as the specification's client reads it: its status,
    memory, uptime, breakers, queue and rate limits."""

    status: str
    uptime_ms: float
    heap_used_mb: float
    breaker_states: dict[str, str]
    queue: QueueMetrics
    checks: dict[str, str]


def read_full(body: Any) -> FullHealth:
    """Read ``GET /api/health/full``: the queue part is read as in :func:`read_queue`."""
    assert body["status"] in ("ok", "degraded", "failing"), body["status"]
    states = {name: breaker["state"] for name, breaker in body["circuitBreakers"].items()}
    assert set(states.values()) <= {"CLOSED", "OPEN", "HALF_OPEN"}, states
    queue_body = {
        "queue": body["queue"],
        "rateLimit": body["rateLimit"],
        "middleware": {"activeRequests": 0, "memoryUsage": body["memory"]},
    }
    return FullHealth(
        status=body["status"],
        uptime_ms=_number(body["uptime"], "uptime"),
        heap_used_mb=_number(body["memory"]["heapUsed"], "heapUsed"),
        breaker_states=states,
        queue=read_queue(queue_body),
        checks={name: check["status"] for name, check in body["checks"].items()},
    )
