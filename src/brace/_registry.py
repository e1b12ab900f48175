"""Registry: named primitives, rendered as one JSON-ready snapshot and as metric families.

The registry holds each primitive through a weak reference where the object allows one, so
a primitive that is garbage-collected drops out of the snapshot (and of the exporters)
without being unregistered. It only ever calls ``statistics()``; what it knows about each
kind of statistics is how to lay it out in the snapshot, in the snake_case shape of the
demo server's ``/api/health/queue`` answer::

    {"queue": {"default": {"stats": {"pending": 5, "running": 3, ...},
                           "queue_distribution": {"high": 1, "medium": 3, "low": 1}}},
     "circuit_breakers": {"db": {"state": "closed", ...}},
     "rate_limit": {"api": {"active_keys": 23, ...}},
     "memory": {"process": {"level": "normal", "usage": 312475648, ...}},
     "load": {"loop": {"lag": 0.002, ...}}}
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from ._priority import Priority

__all__ = ("HasStatistics", "MetricFamily", "Registry", "metric_families")

S = TypeVar("S", bound="HasStatistics")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")

# Which snapshot section each known statistics type goes to (matched by class name, so
# the registry imports none of the primitives).
_SECTIONS: dict[str, str] = {
    "ExecutorStatistics": "queue",
    "CircuitBreakerStatistics": "circuit_breakers",
    "RateLimiterStatistics": "rate_limit",
    "TokenBucketStatistics": "rate_limit",
    "SlidingWindowStatistics": "rate_limit",
    "MemoryStoreStatistics": "rate_limit",
    "MemoryGuardStatistics": "memory",
    "LoadMonitorStatistics": "load",
    "ShutdownStatistics": "shutdown",
    "RetryStatistics": "retry",
    "RetryBudgetStatistics": "retry",
    "TimeoutStatistics": "timeouts",
    "AdaptiveLimitStatistics": "adaptive_limits",
    "RedisStoreStatistics": "stores",
    "FallbackStatistics": "fallbacks",
    "HedgeStatistics": "hedges",
    "ChaosStatistics": "chaos",
}

# Fields that only ever grow, per section: exported as counters, everything else as gauges.
_COUNTERS: dict[str, frozenset[str]] = {
    "queue": frozenset(
        {
            "admitted",
            "queued",
            "completed",
            "failed",
            "timed_out",
            "cancelled_running",
            "cancelled_queued",
            "dropped",
            "queue_timed_out",
            "rejected",
            "rejected_draining",
            "total_processed",
        }
    ),
    "circuit_breakers": frozenset(
        {"successes", "failures", "ignored", "rejected", "slow_calls", "opened_count"}
    ),
    "rate_limit": frozenset(
        {"hits", "allowed", "rejected", "evictions", "drops", "acquired", "waited", "cancelled"}
    ),
    "memory": frozenset(
        {
            "samples",
            "level_changes",
            "admitted",
            "queued",
            "rejected",
            "collections",
            "probe_errors",
        }
    ),
    "load": frozenset({"samples", "checks", "shed", "uncounted_lag"}),
    "timeouts": frozenset({"calls", "timed_out"}),
    "adaptive_limits": frozenset({"samples", "increases", "decreases"}),
    "stores": frozenset(
        {
            "decisions",
            "errors",
            "call_errors",
            "timeouts",
            "fallbacks",
            "script_loads",
            "round_trips",
        }
    ),
    "fallbacks": frozenset({"calls", "successes", "fallbacks", "failures"}),
    "hedges": frozenset({"calls", "attempts", "hedges", "hedge_wins", "refused", "failures"}),
    "chaos": frozenset({"calls", "injected"}),
}

# Free text for people (the snapshot), not a metric: as a label it would make a new series
# for every message.
_TEXT_ONLY = frozenset({"last_error"})

# Mappings whose keys become a label instead of part of the metric name.
_LABELLED: dict[str, str] = {
    "queue_distribution": "priority",
    "admitted_by_priority": "priority",
}


class HasStatistics(Protocol):
    """Anything with a ``statistics()`` method returning a dataclass (every primitive)."""

    def statistics(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class MetricFamily:
    """One metric for the exporters: its ``name``, whether it is a ``counter`` or a
    ``gauge``, its help text, and ``(labels, value)`` samples."""

    name: str
    kind: Literal["counter", "gauge"]
    documentation: str
    samples: tuple[tuple[Mapping[str, str], float], ...]


class Registry:
    """Names primitives and renders their statistics.

    ``register(name, primitive)`` accepts anything with ``statistics()`` and returns it.
    :meth:`snapshot` gives a JSON-ready dict (sections ``queue``, ``circuit_breakers``,
    ``rate_limit``, ``memory``, ``load``, ``shutdown``, ``retry``, ``timeouts``,
    ``adaptive_limits``, ``stores``, ``fallbacks``, ``hedges``, ``chaos``, ``other``; each
    maps a name to that primitive's figures; a store's ``status`` is ``"ok"``, or
    ``"degraded"`` while it cannot reach its backend, its ``last_error`` saying why).
    Primitives are held through weak references (strongly only when the object allows
    none), so garbage-collected ones disappear by themselves.
    """

    __slots__ = ("__weakref__", "_entries", "_lock")

    def __init__(self) -> None:
        self._entries: dict[str, Callable[[], HasStatistics | None]] = {}
        self._lock = threading.Lock()

    def register(self, name: str, primitive: S) -> S:
        """Add ``primitive`` under ``name`` and return it.

        A ``ValueError`` when ``name`` is taken by a live primitive or is not a plain name
        (letters, digits, ``_ . : -``); a ``TypeError`` when it has no ``statistics()``.
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"name must be a non-empty str of letters, digits, '_', '.', ':', '-', got {name!r}"
            )
        if not callable(getattr(primitive, "statistics", None)):
            raise TypeError(f"primitive must have a statistics() method, got {primitive!r}")
        try:
            reference: Callable[[], HasStatistics | None] = weakref.ref(primitive)
        except TypeError:  # a __slots__ class without __weakref__: hold it strongly

            def reference() -> HasStatistics:
                return primitive

        with self._lock:
            existing = self._entries.get(name)
            if existing is not None and existing() is not None:
                raise ValueError(f"a primitive is already registered as {name!r}")
            self._entries[name] = reference
        return primitive

    def unregister(self, name: str) -> None:
        """Remove the primitive registered as ``name`` (a ``KeyError`` if there is none)."""
        with self._lock:
            del self._entries[name]

    def get(self, name: str) -> HasStatistics | None:
        """The live primitive registered as ``name``, or ``None``."""
        reference = self._entries.get(name)
        return None if reference is None else reference()

    def items(self) -> list[tuple[str, HasStatistics]]:
        """``(name, primitive)`` for every live primitive, in name order."""
        live: list[tuple[str, HasStatistics]] = []
        with self._lock:
            for name, reference in list(self._entries.items()):
                primitive = reference()
                if primitive is None:
                    del self._entries[name]  # collected: forget it
                else:
                    live.append((name, primitive))
        live.sort(key=lambda item: item[0])
        return live

    def __len__(self) -> int:
        return len(self.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self.items()])

    def statistics(self) -> dict[str, Any]:
        """``{name: primitive.statistics()}`` for every live primitive."""
        return {name: primitive.statistics() for name, primitive in self.items()}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every live primitive's figures, JSON-ready, grouped by section then name."""
        sections: dict[str, dict[str, Any]] = {}
        for name, primitive in self.items():
            stats = primitive.statistics()
            section = _SECTIONS.get(type(stats).__name__, "other")
            sections.setdefault(section, {})[name] = _render(section, stats)
        return sections

    def __repr__(self) -> str:
        return f"Registry({[name for name, _ in self.items()]!r})"


def _render(section: str, stats: object) -> Any:
    data = _jsonable(stats)
    if not isinstance(data, dict):
        return {"value": data}
    data.pop("name", None)  # the registry's name is the name
    if section == "memory":
        level = getattr(stats, "level", None)
        if isinstance(level, int):
            data["severity"] = int(level)  # 0 normal, 1 high, 2 critical: for alert rules
    if section == "queue":
        pending = getattr(stats, "pending_by_priority", None) or {}
        admitted = data.pop("admitted_by_priority", {})
        data.pop("pending_by_priority", None)
        return {
            "stats": data,
            "queue_distribution": _distribution(pending),
            "admitted_by_priority": admitted,
        }
    if section == "stores" and "available" in data:
        data["status"] = "ok" if data["available"] else "degraded"
    if section == "rate_limit" and "keys" in data:
        data["active_keys"] = data.pop("keys")
    return data


def _distribution(by_priority: Mapping[int, int]) -> dict[str, int]:
    """Waiters per priority class: finer priorities count in the class they fall in."""
    counts = {"high": 0, "medium": 0, "low": 0}
    for priority, count in by_priority.items():
        if priority < Priority.MEDIUM:
            counts["high"] += count
        elif priority < Priority.LOW:
            counts["medium"] += count
        else:
            counts["low"] += count
    return counts


def _jsonable(value: object) -> Any:
    """Plain JSON types: dataclasses to dicts, enums to their value (or lower-case name)."""
    if isinstance(value, enum.Enum):  # before str / int: StrEnum and IntEnum are both
        return value.value if isinstance(value.value, str) else value.name.lower()
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: _jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {str(_jsonable(key)): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(item) for item in value]
    return str(value)


# -- metric families for the exporters ---------------------------------------------------


def metric_families(
    snapshot: Mapping[str, Mapping[str, Any]], prefix: str = "brace"
) -> list[MetricFamily]:
    """Flatten a :meth:`Registry.snapshot` into metric families.

    Numbers (and booleans, as 0/1) become samples labelled with the primitive's ``name``;
    nested figures join their keys with ``_``; a string figure (a state, a level) becomes
    a 1-valued sample with the string as a label (``brace_circuit_breakers_state{name=
    "db",state="open"} 1``); per-priority mappings get a ``priority`` label.
    """
    families: dict[str, tuple[str, list[tuple[dict[str, str], float]]]] = {}

    def add(section: str, path: list[str], labels: dict[str, str], value: float) -> None:
        field = path[-1]
        name = _metric_name("_".join([prefix, section, *path]))
        kind = "counter" if field in _COUNTERS.get(section, ()) and len(path) <= 2 else "gauge"
        entry = families.setdefault(name, (kind, []))
        entry[1].append((labels, value))

    def walk(section: str, path: list[str], labels: dict[str, str], value: object) -> None:
        if isinstance(value, (int, float)):  # booleans too, as 0 / 1
            add(section, path, labels, float(value))
        elif isinstance(value, str):
            if path[-1] in _TEXT_ONLY:
                return
            add(section, path, {**labels, _metric_name(path[-1]): value}, 1.0)
        elif isinstance(value, Mapping):
            label = _LABELLED.get(path[-1]) if path else None
            for key, item in value.items():
                if label is not None:
                    walk(section, path, {**labels, label: str(key)}, item)
                elif not (path and path[-1] == "stats"):
                    walk(section, [*path, str(key)], labels, item)
                else:  # "stats" is only a grouping in the JSON shape
                    walk(section, [*path[:-1], str(key)], labels, item)

    for section, primitives in snapshot.items():
        for name, figures in primitives.items():
            walk(section, [], {"name": name}, figures)
    return [
        MetricFamily(
            name=name,
            kind=kind,  # type: ignore[arg-type]
            documentation=f"brace {name.removeprefix(prefix + '_').replace('_', ' ')}",
            samples=tuple((labels, value) for labels, value in samples),
        )
        for name, (kind, samples) in sorted(families.items())
    ]


def _metric_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)
