"""Memory levels with hysteresis, and when to run the garbage collector.

Theory of operation
-------------------
A memory probe reports ``usage`` (bytes) and, when it knows one, ``limit`` (the
container's or the machine's memory, bytes). Each threshold is either a number of bytes
(an ``int``, or a ``float`` above 1) or a fraction of the limit (a ``float`` in
``(0, 1]``); fractions are resolved against the limit of each sample, so a container
resized at runtime moves the thresholds with it. A fraction with no known limit never
triggers.

Three levels, ordered: NORMAL < HIGH < CRITICAL. The level goes *up* as soon as a sample
reaches a threshold (``usage >= high`` → at least HIGH, ``usage >= critical`` →
CRITICAL). It comes *down* only with a margin, so a usage hovering around a threshold
does not flap:

* HIGH → NORMAL once ``usage < low`` (``low`` defaults to 90 % of ``high``);
* CRITICAL → HIGH once ``usage < critical - (high - low)`` (the same band below
  ``critical``, never below ``high``); a sample below ``low`` goes straight to NORMAL.

Pressure-stall information (the share of time tasks waited for memory, "some avg10", in
percent) is an optional second signal: with ``pressure_high`` set, a sample at or above it
holds the level at least at HIGH until pressure falls below half of ``pressure_high``.

Garbage collection is optional and decided here too, from ``now`` alone: on entering
HIGH (at most once per ``collect_min_interval``) and/or every ``collect_interval``.

**Admission by priority** (:func:`memory_admission`): at NORMAL everything is admitted, at
CRITICAL everything is refused; at HIGH work more urgent than ``shed_priority`` (a lower
value) is admitted and the rest waits (``QUEUE``) or, when shedding, is refused.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from ._inline import step
from ._validate import check_positive, shown

_MAX_BYTES = 2**63

__all__ = (
    "MemoryAdmission",
    "MemoryLevel",
    "MemoryLevelsCore",
    "Thresholds",
    "memory_admission",
    "resolve_threshold",
)


class MemoryLevel(enum.IntEnum):
    """How short of memory the process is; comparisons follow severity."""

    NORMAL = 0
    HIGH = 1
    CRITICAL = 2


class MemoryAdmission(enum.Enum):
    """What an executor should do with new work, given the memory level.

    ``ADMIT``: run it as usual. ``QUEUE``: do not start it now; let it wait (in the queue)
    until memory recovers. ``REJECT``: refuse it with :class:`brace.MemoryPressure`.
    """

    ADMIT = "admit"
    QUEUE = "queue"
    REJECT = "reject"


@step
def memory_admission(
    level: MemoryLevel, priority: int, shed_priority: int, shedding: bool
) -> MemoryAdmission:
    """The guard's decision for new work of ``priority`` at memory ``level`` (the guard
    inlines it)."""
    if level is MemoryLevel.NORMAL or (
        level is not MemoryLevel.CRITICAL and priority < shed_priority  # more urgent
    ):
        admission = MemoryAdmission.ADMIT
    elif level is MemoryLevel.CRITICAL or shedding:
        admission = MemoryAdmission.REJECT
    else:
        admission = MemoryAdmission.QUEUE
    return admission


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The thresholds of one sample, in bytes (``None``: that level cannot be reached)."""

    high: float | None
    critical: float | None
    low: float | None
    critical_low: float | None


# A threshold as stored: an int is bytes, a float is a fraction of the limit.
Threshold = int | float


def check_threshold(value: object, name: str) -> Threshold | None:
    """A threshold: ``None``, bytes (int >= 1, float > 1) or a fraction (float in (0, 1])."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be bytes (int) or a fraction of the limit (float in (0, 1]), "
            f"got {type(value).__name__}"
        )
    # At most 2**63 bytes (8 EiB): also keeps a huge int from failing in float arithmetic.
    if isinstance(value, int):
        if not 1 <= value <= _MAX_BYTES:
            raise ValueError(f"{name} must be bytes in 1..2**63, got {shown(value)}")
    elif not math.isfinite(value) or not 0 < value <= _MAX_BYTES:
        raise ValueError(f"{name} must be a fraction in (0, 1] or bytes up to 2**63, got {value!r}")
    # the type carries the meaning from here on: a float is a fraction, an int is bytes
    return float(value) if isinstance(value, float) and value <= 1.0 else int(value)


def is_fraction(value: Threshold | None) -> bool:
    """True for a threshold given as a fraction of the limit (a float in (0, 1])."""
    return isinstance(value, float)


def resolve_threshold(value: Threshold | None, limit: int | None) -> float | None:
    """The threshold in bytes for a sample with this ``limit`` (``None``: unreachable)."""
    if value is None:
        return None
    if isinstance(value, float):
        return None if limit is None else value * limit
    return value


class MemoryLevelsCore:
    """The level state machine of :class:`brace.MemoryGuard`: usage in, level out."""

    __slots__ = (
        "_collect_interval",
        "_collect_min_interval",
        "_last_collect",
        "_pressure_held",
        "changes",
        "critical",
        "high",
        "level",
        "low",
        "pressure_high",
        "thresholds",
    )

    def __init__(
        self,
        high: float,
        *,
        critical: float | None = None,
        low: float | None = None,
        pressure_high: float | None = None,
        collect_on_high: float | None = None,
        collect_interval: float | None = None,
    ) -> None:
        high_value = check_threshold(high, "high")
        if high_value is None:
            raise TypeError("high must be bytes (int) or a fraction of the limit, got None")
        self.high: Threshold = high_value
        self.critical = check_threshold(critical, "critical")
        self.low = check_threshold(low, "low")
        if self.critical is not None:
            if is_fraction(self.critical) != is_fraction(self.high):
                raise ValueError("critical and high must both be bytes or both be fractions")
            if self.critical <= self.high:
                raise ValueError(f"critical must be > high ({high!r}), got {critical!r}")
        if self.low is not None:
            if is_fraction(self.low) != is_fraction(self.high):
                raise ValueError("low and high must both be bytes or both be fractions")
            if self.low >= self.high:
                raise ValueError(f"low must be < high ({high!r}), got {low!r}")
        if pressure_high is not None:
            if isinstance(pressure_high, bool) or not isinstance(pressure_high, (int, float)):
                raise TypeError(
                    f"pressure_high must be a percentage, got {type(pressure_high).__name__}"
                )
            if not 0 < pressure_high <= 100:
                raise ValueError(f"pressure_high must be in (0, 100], got {pressure_high!r}")
        self.pressure_high = None if pressure_high is None else float(pressure_high)
        self._collect_min_interval = _optional_positive(collect_on_high, "collect_on_high")
        self._collect_interval = _optional_positive(collect_interval, "collect_interval")
        self._last_collect: float | None = None
        self._pressure_held = False
        self.level = MemoryLevel.NORMAL
        self.changes = 0
        self.thresholds = self.resolve(None)

    def resolve(self, limit: int | None) -> Thresholds:
        """The thresholds in bytes for a sample whose limit is ``limit``."""
        high = resolve_threshold(self.high, limit)
        critical = resolve_threshold(self.critical, limit)
        low = resolve_threshold(self.low, limit)
        if low is None and high is not None:
            low = 0.9 * high
        critical_low = None
        if critical is not None and high is not None and low is not None:
            critical_low = max(high, critical - (high - low))
        return Thresholds(high=high, critical=critical, low=low, critical_low=critical_low)

    def update(
        self, usage: int, limit: int | None, now: float, *, pressure: float | None = None
    ) -> MemoryLevel:
        """Feed one sample taken at ``now``; return the (possibly new) level."""
        del now  # levels depend on the sample only; kept for the uniform core signature
        t = self.thresholds = self.resolve(limit)
        level = self.level
        if t.critical is not None and usage >= t.critical:
            level = MemoryLevel.CRITICAL
        elif t.high is not None and usage >= t.high:
            if level is not MemoryLevel.CRITICAL or (
                t.critical_low is not None and usage < t.critical_low
            ):
                level = MemoryLevel.HIGH
        elif t.low is None or usage < t.low:
            level = MemoryLevel.NORMAL
        elif level is MemoryLevel.CRITICAL:
            level = MemoryLevel.HIGH
        if self.pressure_high is not None and pressure is not None:
            if pressure >= self.pressure_high:
                self._pressure_held = True
            elif pressure < self.pressure_high / 2:
                self._pressure_held = False
        if self._pressure_held and level is MemoryLevel.NORMAL:
            level = MemoryLevel.HIGH
        if level is not self.level:
            self.changes += 1
            self.level = level
        return level

    def should_collect(self, previous: MemoryLevel, now: float) -> bool:
        """Whether to run the garbage collector now; records the collection if so.

        True when the level just rose from NORMAL (and collection on HIGH is on and the
        last collection is at least ``collect_on_high`` seconds ago), or when the
        periodic ``collect_interval`` has passed since the last collection.
        """
        last = self._last_collect
        due = False
        if (
            self._collect_min_interval is not None
            and previous is MemoryLevel.NORMAL
            and self.level is not MemoryLevel.NORMAL
        ):
            due = last is None or now - last >= self._collect_min_interval
        if not due and self._collect_interval is not None:
            due = now - (0.0 if last is None else last) >= self._collect_interval
        if due:
            self._last_collect = now
        return due

    def start(self, now: float) -> None:
        """Start the periodic collection schedule at ``now`` (the first one is due later)."""
        if self._last_collect is None:
            self._last_collect = now


def _optional_positive(value: object, name: str) -> float | None:
    return None if value is None else check_positive(value, name)
