"""Registry: named primitives, rendered as one JSON-ready snapshot.

The registry holds each primitive through a weak reference where the object allows one, so
a primitive that is garbage-collected drops out of the snapshot (and of the exporters)
without being unregistered. It only ever calls ``statistics()``; what it knows about each
kind of statistics is how to lay it out in the snapshot, snake_case, in seconds and bytes
(the health endpoints' camelCase bodies are made from the same statistics by
``brace._health_body``)::

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
from typing import Any, Protocol, TypeVar

from ._priority import Priority

__all__ = ("HasStatistics", "Registry")

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


class HasStatistics(Protocol):
    """Anything with a ``statistics()`` method returning a dataclass (every primitive)."""

    def statistics(self) -> Any: ...


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
        reference: Callable[[], HasStatistics | None]
        try:
            reference = weakref.ref(primitive)
        except TypeError:  # a __slots__ class without __weakref__: hold it strongly

            def strongly() -> HasStatistics:
                return primitive

            reference = strongly

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
        return sorted(self.registered(), key=lambda item: item[0])

    def registered(self) -> list[tuple[str, HasStatistics]]:
        """``(name, primitive)`` for every live primitive, in the order they were registered
        (the health endpoints' default executor, breaker, memory guard... is the first)."""
        live: list[tuple[str, HasStatistics]] = []
        with self._lock:
            for name, reference in list(self._entries.items()):
                primitive = reference()
                if primitive is None:
                    del self._entries[name]  # collected: forget it
                else:
                    live.append((name, primitive))
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
            section = section_of(stats)
            sections.setdefault(section, {})[name] = _render(section, stats)
        return sections

    def __repr__(self) -> str:
        return f"Registry({[name for name, _ in self.items()]!r})"


def section_of(stats: object) -> str:
    """The snapshot section a statistics object goes to (``"other"`` when unknown)."""
    return _SECTIONS.get(type(stats).__name__, "other")


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
