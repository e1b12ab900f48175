"""The circuit breaker's state machine.

Theory of operation
-------------------
A breaker is in one of three states. **Closed**: calls go through and their outcomes are
recorded. **Open**: calls are refused at once, until ``open_until``. **Half-open**: at most
``half_open_max_calls`` probes run at a time; ``success_threshold`` good probes close the
circuit, one bad probe (failed, or slow when a slow-call rule is set) opens it again.
With ``max_half_open_wait`` set, a half-open period that has not closed within that many
seconds opens again too (probes that hang must not keep the circuit half-open forever).

Which event moves which state where is data, :data:`TRANSITIONS`; the documentation's
diagram is drawn from that same table by :func:`state_diagram`. The code around the table
only decides *when* an event happens and what entering a state resets.

A closed circuit trips on the first rule that holds after an outcome is recorded:

1. ``failure_threshold`` failures in a row;
2. ``failure_rate``: at least ``minimum_calls`` calls in the window and
   ``failures / calls >= failure_rate``;
3. ``slow_call_rate``: the same, for calls that took ``slow_call_duration`` or longer.

The window holds either the last ``window_calls`` calls (a ring of outcome flags) or the
calls of the last ``window`` seconds, cut into ``window_buckets`` buckets of equal width
aligned on multiples of that width: a call at time ``t`` is in the window at ``now`` while
``floor(t / width) > floor(now / width) - window_buckets``. Memory is O(buckets) or
O(window_calls) whatever the traffic; entering the closed state empties the window.

The open period after an automatic trip grows with the number of trips in a row (reset
when the circuit closes again): ``recovery_time * recovery_backoff ** (trips - 1)``, capped
at ``max_recovery_time``, then shortened by up to ``recovery_jitter`` of itself
(``duration * (1 - recovery_jitter * random())``). The move from open to half-open is
lazy: it happens when something looks at the breaker at or after ``open_until``; so is
the move from half-open back to open after ``max_half_open_wait`` (at or after
``half_open_until``: an admission, a live probe's outcome, a look at the state). That
move is an automatic trip: it counts toward ``recovery_backoff`` like a failed probe.

Tickets tie an outcome to its admission. :meth:`CircuitBreakerCore.admit` returns ``0``
for a call admitted while closed and the half-open period's epoch (a positive number) for
a probe. A ticket-0 outcome counts only if the circuit is closed when it arrives; a probe
outcome counts only while the half-open period that admitted it lasts. Anything else is
stale and dropped, so a slow call from before a trip can never pass for a probe nor free
a probe's permit. :meth:`CircuitBreakerCore.release` gives a probe's permit back without
an outcome (the call was cancelled, or raised an exception the shell ignores).
"""

from __future__ import annotations

import enum
import math
import random as _random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

from .._events import Event
from ._inline import step
from ._validate import MAX_RING, check_int, check_positive

__all__ = (
    "CircuitBreakerCore",
    "CircuitBreakerStatistics",
    "CircuitEvent",
    "CircuitState",
    "CircuitStateChange",
    "TRANSITIONS",
    "state_diagram",
    "succeed_closed",
    "succeed_closed_bare",
)


class CircuitState(str, enum.Enum):
    """The state of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


class CircuitEvent(str, enum.Enum):
    """What moves a breaker from one state to another; the ``reason`` of a state change."""

    FAILURE_THRESHOLD = "failure_threshold"
    """``failure_threshold`` failures in a row."""
    FAILURE_RATE = "failure_rate"
    """The failure rate over the window reached ``failure_rate``."""
    SLOW_CALL_RATE = "slow_call_rate"
    """The slow-call rate over the window reached ``slow_call_rate``."""
    RECOVERY_TIME_ELAPSED = "recovery_time_elapsed"
    """The open period is over: probes may test the service."""
    PROBES_SUCCEEDED = "probes_succeeded"
    """``success_threshold`` probes succeeded."""
    PROBE_FAILED = "probe_failed"
    """A probe failed, or took ``slow_call_duration`` or longer."""
    MAX_HALF_OPEN_WAIT = "max_half_open_wait"
    """The half-open period lasted ``max_half_open_wait`` seconds without closing."""
    FORCE_OPEN = "force_open"
    OPEN_FOR = "open_for"
    FORCE_CLOSE = "force_close"
    RESET = "reset"

    def __str__(self) -> str:
        return self.value


_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN

_TRIPS = (CircuitEvent.FAILURE_THRESHOLD, CircuitEvent.FAILURE_RATE, CircuitEvent.SLOW_CALL_RATE)
_MANUAL = {
    CircuitEvent.FORCE_OPEN: _OPEN,
    CircuitEvent.OPEN_FOR: _OPEN,
    CircuitEvent.FORCE_CLOSE: _CLOSED,
    CircuitEvent.RESET: _CLOSED,
}

TRANSITIONS: Mapping[tuple[CircuitState, CircuitEvent], CircuitState] = MappingProxyType(
    {
        **{(_CLOSED, event): _OPEN for event in _TRIPS},
        (_OPEN, CircuitEvent.RECOVERY_TIME_ELAPSED): _HALF_OPEN,
        (_HALF_OPEN, CircuitEvent.PROBES_SUCCEEDED): _CLOSED,
        (_HALF_OPEN, CircuitEvent.PROBE_FAILED): _OPEN,
        (_HALF_OPEN, CircuitEvent.MAX_HALF_OPEN_WAIT): _OPEN,
        **{(state, event): new for state in CircuitState for event, new in _MANUAL.items()},
    }
)
"""``{(state, event): new_state}``: every move the breaker can make, and nothing else."""

_EVENT_LABELS = {
    CircuitEvent.FORCE_OPEN: "force_open()",
    CircuitEvent.OPEN_FOR: "open_for()",
    CircuitEvent.FORCE_CLOSE: "force_close()",
    CircuitEvent.RESET: "reset()",
}


def state_diagram(
    transitions: Mapping[tuple[CircuitState, CircuitEvent], CircuitState] = TRANSITIONS,
) -> str:
    """The body of a mermaid ``stateDiagram-v2`` drawn from ``transitions``.

    Events between the same two states share one arrow; self-loops (a manual operation
    on a state that already is its target) are left out.
    """
    edges: dict[tuple[CircuitState, CircuitState], list[str]] = {}
    for (old, event), new in transitions.items():
        if old is not new:
            edges.setdefault((old, new), []).append(_EVENT_LABELS.get(event, event.value))
    lines = ["stateDiagram-v2", f"    [*] --> {_CLOSED.name}"]
    for state in CircuitState:
        for target in CircuitState:
            labels = edges.get((state, target))
            if labels:
                lines.append(f"    {state.name} --> {target.name}: {', '.join(labels)}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class CircuitStateChange(Event):
    """What a state-change hook receives; a `brace.events.Event` of kind ``"state_change"``
    (``time`` is ``at``)."""

    kind: ClassVar[str] = "state_change"

    name: str | None  # pyright: ignore[reportIncompatibleMethodOverride]
    """The breaker's name."""
    old: CircuitState
    new: CircuitState
    reason: CircuitEvent
    """The event that moved the breaker (a str enum: ``"failure_threshold"``...)."""
    at: float
    """Clock reading when the change was made (or observed, for a lazy open -> half-open)."""
    retry_after: float | None
    """For a change to open: seconds until half-open (``None`` when forced open)."""

    @property
    def time(self) -> float:
        """The clock reading of the change (``at``), as every event has it."""
        return self.at


@dataclass(frozen=True, slots=True)
class CircuitBreakerStatistics:
    """A snapshot of a circuit breaker."""

    name: str | None
    state: CircuitState
    successes: int
    """Calls that succeeded (since construction or :meth:`reset`)."""
    failures: int
    """Calls that failed."""
    ignored: int
    """Calls admitted whose outcome said nothing about the service (cancelled, ``ignore``...)."""
    rejected: int
    """Calls refused because the circuit was open or every probe was taken."""
    slow_calls: int
    """Calls that took ``slow_call_duration`` or longer (0 without a slow-call rule)."""
    consecutive_failures: int
    window_calls: int
    """Calls in the rate window now (0 without a rate rule)."""
    failure_rate: float | None
    """Failures / calls over the window (``None`` without a rate rule or calls)."""
    slow_call_rate: float | None
    """Slow calls / calls over the window (``None`` without a slow-call rule or calls)."""
    opened_count: int
    """How many times the circuit became open."""
    trips_in_a_row: int
    """Automatic trips since the circuit last closed (drives ``recovery_backoff``)."""
    half_open_calls: int
    """Probes running now."""
    time_until_half_open: float | None
    """Seconds until open turns half-open; 0.0 unless open; ``None`` when forced open."""
    refusals: Mapping[str, int]
    """Refusals by reason: ``{"circuit_open": rejected}``."""


class _CountWindow:
    """The last ``size`` outcomes as flags in a ring: bit 0 failed, bit 1 slow."""

    __slots__ = ("calls", "failures", "position", "ring", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self.ring = bytearray(size)
        self.clear()

    def clear(self) -> None:
        self.ring[:] = bytes(self.size)
        self.position = 0
        self.calls = self.failures = self.slow = 0

    def add(self, now: float, failed: bool, slow: bool) -> None:
        position = self.position
        ring = self.ring
        if self.calls == self.size:
            old = ring[position]
            if old:
                self.failures -= old & 1
                self.slow -= old >> 1
        else:
            self.calls += 1
        if failed or slow:
            ring[position] = failed | (slow << 1)
            self.failures += failed
            self.slow += slow
        else:
            ring[position] = 0
        position += 1
        self.position = 0 if position == self.size else position

    def roll(self, now: float) -> None:
        """A count window does not age."""


class _TimeWindow:
    """Calls of the last ``window`` seconds in ``buckets`` aligned buckets."""

    __slots__ = (
        "bucket_calls",
        "bucket_failures",
        "bucket_slow",
        "buckets",
        "calls",
        "failures",
        "index",
        "slow",
        "width",
    )

    def __init__(self, window: float, buckets: int) -> None:
        self.buckets = buckets
        self.width = window / buckets
        self.clear()

    def clear(self) -> None:
        buckets = self.buckets
        self.bucket_calls = [0] * buckets
        self.bucket_failures = [0] * buckets
        self.bucket_slow = [0] * buckets
        self.calls = self.failures = self.slow = 0
        self.index = -(2**62)

    def roll(self, now: float) -> None:
        """Empty the buckets that fell out of the window by ``now``."""
        index = math.floor(now / self.width)
        gap = index - self.index
        if gap <= 0:  # same bucket (or a clock that went back: keep the newer state)
            return
        buckets = self.buckets
        if gap >= buckets:
            self.clear()
        else:
            calls, failures, slow = self.bucket_calls, self.bucket_failures, self.bucket_slow
            for old in range(self.index + 1, index + 1):
                slot = old % buckets
                self.calls -= calls[slot]
                self.failures -= failures[slot]
                self.slow -= slow[slot]
                calls[slot] = failures[slot] = slow[slot] = 0
        self.index = index

    def add(self, now: float, failed: bool, slow: bool) -> None:
        if math.floor(now / self.width) != self.index:
            self.roll(now)
        slot = self.index % self.buckets
        self.bucket_calls[slot] += 1
        self.calls += 1
        if failed:
            self.bucket_failures[slot] += 1
            self.failures += 1
        if slow:
            self.bucket_slow[slot] += 1
            self.slow += 1


def _check_rate(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be a rate in (0, 1], got {value!r}")
    return float(value)


def _check_optional_int(
    value: object, name: str, minimum: int, maximum: int | None = None
) -> int | None:
    return None if value is None else check_int(value, name, minimum=minimum, maximum=maximum)


@step
def succeed_closed_bare(core: CircuitBreakerCore) -> bool:
    """:func:`succeed_closed` for a core known to be closed and to have no window (no
    failure rate to look at): count the success, end the run of consecutive failures.
    Never moves the state (False).

    The breaker's ``async with`` inlines this step while it is closed without a window.
    """
    core.successes += 1
    core.consecutive_failures = 0
    return False


@step
def succeed_closed(core: CircuitBreakerCore, now: float) -> bool:
    """A call admitted while closed, outside a probe, ended well, with no slow-call rule
    (``success(0, now)``, the hot path): count it, end the run of consecutive failures,
    and, with a window, record it and look at the failure rate. True if the state moved.

    The breaker's ``async with`` inlines this step: the core's one copy is its exit.
    """
    moved = False
    core.successes += 1
    if core.state is _CLOSED:
        core.consecutive_failures = 0
        window = core.window
        if window is not None:
            window.add(now, False, False)
            calls = window.calls
            if calls >= core.minimum_calls:
                rate = core.failure_rate  # the slow-call rule is off on this path
                if rate is not None and window.failures / calls >= rate:
                    core._move(CircuitEvent.FAILURE_RATE, now)
                    moved = True
    return moved


class CircuitBreakerCore:
    """The state machine of one circuit breaker, driven by ``now``.

    Call :meth:`admit` before a call, then exactly one of :meth:`success`,
    :meth:`failure` or :meth:`release` with the ticket it returned. State changes are
    reported to ``listener`` (called synchronously, after the state is consistent).
    """

    __slots__ = (
        "consecutive_failures",
        "epoch",
        "failure_rate",
        "failure_threshold",
        "failures",
        "half_open_calls",
        "half_open_max_calls",
        "half_open_until",
        "ignored",
        "listener",
        "max_half_open_wait",
        "max_recovery_time",
        "minimum_calls",
        "name",
        "needs_duration",
        "needs_end_time",
        "open_until",
        "opened_count",
        "probe_successes",
        "random",
        "recovery_backoff",
        "recovery_jitter",
        "recovery_time",
        "rejected",
        "slow_call_duration",
        "slow_call_rate",
        "slow_calls",
        "state",
        "success_threshold",
        "successes",
        "trips_in_a_row",
        "window",
    )

    def __init__(
        self,
        *,
        failure_threshold: int | None = 15,
        recovery_time: float = 30.0,
        half_open_max_calls: int = 1,
        failure_rate: float | None = None,
        minimum_calls: int = 10,
        window: float = 60.0,
        window_calls: int | None = None,
        window_buckets: int = 10,
        slow_call_duration: float | None = None,
        slow_call_rate: float = 1.0,
        success_threshold: int = 1,
        recovery_backoff: float = 1.0,
        max_recovery_time: float | None = None,
        recovery_jitter: float = 0.0,
        random: Callable[[], float] = _random.random,
        max_half_open_wait: float | None = None,
        name: str | None = None,
        listener: Callable[[CircuitStateChange], object] | None = None,
    ) -> None:
        self.failure_threshold = _check_optional_int(failure_threshold, "failure_threshold", 1)
        self.recovery_time = check_positive(recovery_time, "recovery_time")
        self.half_open_max_calls = check_int(half_open_max_calls, "half_open_max_calls", minimum=1)
        self.failure_rate = (
            None if failure_rate is None else _check_rate(failure_rate, "failure_rate")
        )
        self.minimum_calls = check_int(minimum_calls, "minimum_calls", minimum=1)
        window = check_positive(window, "window")
        # (both allocated at once: bounded)
        window_calls = _check_optional_int(window_calls, "window_calls", 1, MAX_RING)
        window_buckets = check_int(window_buckets, "window_buckets", minimum=1, maximum=MAX_RING)
        self.slow_call_duration = (
            None
            if slow_call_duration is None
            else check_positive(slow_call_duration, "slow_call_duration")
        )
        self.slow_call_rate = _check_rate(slow_call_rate, "slow_call_rate")
        self.success_threshold = check_int(success_threshold, "success_threshold", minimum=1)
        self.recovery_backoff = check_positive(recovery_backoff, "recovery_backoff")
        if self.recovery_backoff < 1:
            raise ValueError(
                f"recovery_backoff must be a growth factor >= 1, got {recovery_backoff!r}"
            )
        if max_recovery_time is not None:
            max_recovery_time = check_positive(max_recovery_time, "max_recovery_time")
            if max_recovery_time < self.recovery_time:
                raise ValueError(
                    f"max_recovery_time must be >= recovery_time ({self.recovery_time!r}), "
                    f"got {max_recovery_time!r}"
                )
        self.max_recovery_time = max_recovery_time
        if isinstance(recovery_jitter, bool) or not isinstance(recovery_jitter, (int, float)):
            raise TypeError(
                f"recovery_jitter must be a number, got {type(recovery_jitter).__name__}"
            )
        if not 0 <= recovery_jitter < 1:
            raise ValueError(f"recovery_jitter must be in [0, 1), got {recovery_jitter!r}")
        self.recovery_jitter = float(recovery_jitter)
        if not callable(random):
            raise TypeError(f"random must be a callable returning [0, 1), got {random!r}")
        self.random = random
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        self.max_half_open_wait = (
            None
            if max_half_open_wait is None
            else check_positive(max_half_open_wait, "max_half_open_wait")
        )
        self.name = name
        self.listener = listener

        rated = self.failure_rate is not None or self.slow_call_duration is not None
        self.window: _CountWindow | _TimeWindow | None = None
        if rated:
            if window_calls is not None:
                if window_calls < self.minimum_calls:
                    raise ValueError(
                        f"window_calls must be >= minimum_calls ({self.minimum_calls}), "
                        f"or the rate rules could never trip; got {window_calls!r}"
                    )
                self.window = _CountWindow(window_calls)
            else:
                self.window = _TimeWindow(window, window_buckets)
        self.needs_duration = self.slow_call_duration is not None
        """Outcomes need the call's duration: read the clock at its start and end."""
        self.needs_end_time = self.needs_duration or self.window is not None
        """A ticket-0 success needs ``now`` (a rate rule may trip on it)."""

        self.state = _CLOSED
        self.epoch = 0
        self.open_until = -math.inf
        self.half_open_until = math.inf
        self.consecutive_failures = 0
        self.half_open_calls = 0
        self.probe_successes = 0
        self.trips_in_a_row = 0
        self._zero_counters()

    def _zero_counters(self) -> None:
        self.successes = self.failures = self.ignored = self.rejected = 0
        self.slow_calls = self.opened_count = 0

    # -- admission -----------------------------------------------------------------------

    def poll(self, now: float) -> CircuitState:
        """The state at ``now``, making the lazy move from open to half-open if it is due."""
        state = self.state
        if state is _OPEN:
            if now >= self.open_until:
                self._move(CircuitEvent.RECOVERY_TIME_ELAPSED, now)
        elif state is _HALF_OPEN and now >= self.half_open_until:
            self._move(CircuitEvent.MAX_HALF_OPEN_WAIT, now)
        return self.state

    def admit(self, now: float) -> int | None:
        """Admit one call at ``now``: ``0`` while closed, a probe's epoch, or ``None``."""
        state = self.state
        if state is _CLOSED:
            return 0
        if state is _OPEN:
            if now < self.open_until:
                self.rejected += 1
                return None
            self._move(CircuitEvent.RECOVERY_TIME_ELAPSED, now)
        elif now >= self.half_open_until:
            self._move(CircuitEvent.MAX_HALF_OPEN_WAIT, now)
            self.rejected += 1
            return None
        if self.half_open_calls < self.half_open_max_calls:
            self.half_open_calls += 1
            return self.epoch
        self.rejected += 1
        return None

    def retry_after(self, now: float) -> float | None:
        """Seconds until a call may be admitted: ``None`` if unknown (forced open, probing)."""
        state = self.poll(now)
        if state is _CLOSED:
            return 0.0
        if state is _OPEN:
            wait = self.open_until - now
            return None if math.isinf(wait) else wait
        return 0.0 if self.half_open_calls < self.half_open_max_calls else None

    # -- outcomes ------------------------------------------------------------------------

    def success(self, ticket: int, now: float, duration: float = 0.0) -> None:
        """Record a call that worked.

        ``duration`` matters only with a slow-call rule (``needs_duration``); for a ticket-0
        success ``now`` is read only when ``needs_end_time``, so a breaker with neither rate
        rule needs no clock reading for its closed-state successes.
        """
        self.successes += 1
        limit = self.slow_call_duration
        slow = limit is not None and duration >= limit
        if slow:
            self.slow_calls += 1
        if ticket == 0:
            if self.state is _CLOSED:
                self.consecutive_failures = 0
                if self.window is not None:
                    self._record(now, False, slow)
        elif ticket == self.epoch:
            if now >= self.half_open_until:
                self._move(CircuitEvent.MAX_HALF_OPEN_WAIT, now)
                return
            self.half_open_calls -= 1
            if slow:
                self._move(CircuitEvent.PROBE_FAILED, now)
            else:
                self.probe_successes += 1
                if self.probe_successes >= self.success_threshold:
                    self._move(CircuitEvent.PROBES_SUCCEEDED, now)

    def closed_success(self, now: float) -> None:
        """``success(0, now)`` without a slow-call rule: the hot path, kept short."""
        succeed_closed(self, now)

    def failure(self, ticket: int, now: float, duration: float = 0.0) -> None:
        """Record a call that failed."""
        self.failures += 1
        limit = self.slow_call_duration
        slow = limit is not None and duration >= limit
        if slow:
            self.slow_calls += 1
        if ticket == 0:
            if self.state is _CLOSED:
                self.consecutive_failures += 1
                threshold = self.failure_threshold
                if threshold is not None and self.consecutive_failures >= threshold:
                    if self.window is not None:
                        self.window.add(now, True, slow)
                    self._move(CircuitEvent.FAILURE_THRESHOLD, now)
                elif self.window is not None:
                    self._record(now, True, slow)
        elif ticket == self.epoch:
            if now >= self.half_open_until:
                self._move(CircuitEvent.MAX_HALF_OPEN_WAIT, now)
            else:
                self.half_open_calls -= 1
                self._move(CircuitEvent.PROBE_FAILED, now)

    def release(self, ticket: int) -> None:
        """End a call without an outcome (cancelled, an ignored exception...): a live probe
        frees its permit, and the state stays as it is."""
        self.ignored += 1
        if ticket != 0 and ticket == self.epoch:
            self.half_open_calls -= 1

    def _record(self, now: float, failed: bool, slow: bool) -> None:
        window = self.window
        assert window is not None
        window.add(now, failed, slow)
        if window.calls >= self.minimum_calls:
            self._check_rates(window, now)

    def _check_rates(self, window: _CountWindow | _TimeWindow, now: float) -> None:
        calls = window.calls
        rate = self.failure_rate
        if rate is not None and window.failures / calls >= rate:
            self._move(CircuitEvent.FAILURE_RATE, now)
        elif self.needs_duration and window.slow / calls >= self.slow_call_rate:
            self._move(CircuitEvent.SLOW_CALL_RATE, now)

    # -- manual control ------------------------------------------------------------------

    def force_open(self, now: float) -> None:
        """Open until :meth:`force_close`, :meth:`reset` or :meth:`open_for`."""
        self._move(CircuitEvent.FORCE_OPEN, now)

    def open_for(self, seconds: float, now: float) -> None:
        """Open for exactly ``seconds`` (replacing any current deadline), then half-open."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds must be a number, got {type(seconds).__name__}")
        if not 0 <= seconds < math.inf:
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._move(CircuitEvent.OPEN_FOR, now, float(seconds))

    def force_close(self, now: float) -> None:
        """Close, with an empty window and no memory of earlier trips."""
        self._move(CircuitEvent.FORCE_CLOSE, now)

    def reset(self, now: float) -> None:
        """Back to the state of a new breaker: closed, every counter at zero."""
        self._move(CircuitEvent.RESET, now)
        self._zero_counters()

    # -- the one place that changes state ------------------------------------------------

    def _open_duration(self) -> float:
        duration = self.recovery_time
        trips = self.trips_in_a_row
        if trips > 1 and self.recovery_backoff > 1:
            try:
                duration *= self.recovery_backoff ** (trips - 1)
            except OverflowError:
                duration = math.inf
        cap = self.max_recovery_time
        if cap is not None and duration > cap:
            duration = cap
        if self.recovery_jitter:
            duration *= 1.0 - self.recovery_jitter * self.random()
        return duration

    def _move(self, event: CircuitEvent, now: float, seconds: float = 0.0) -> None:
        old = self.state
        new = TRANSITIONS[old, event]
        retry_after: float | None = None
        self.half_open_calls = 0
        if new is _OPEN:
            if event is CircuitEvent.FORCE_OPEN:
                self.open_until = math.inf
            elif event is CircuitEvent.OPEN_FOR:
                self.open_until = now + seconds
                retry_after = seconds
            else:
                self.trips_in_a_row += 1
                retry_after = self._open_duration()
                self.open_until = now + retry_after
        elif new is _HALF_OPEN:
            self.probe_successes = 0
            wait = self.max_half_open_wait
            self.half_open_until = math.inf if wait is None else now + wait
        else:
            self.consecutive_failures = 0
            self.trips_in_a_row = 0
            if self.window is not None:
                self.window.clear()
        if old is new:
            return
        if new is _OPEN:
            self.opened_count += 1
        self.state = new
        self.epoch += 1
        if self.listener is not None:
            self.listener(CircuitStateChange(self.name, old, new, event, now, retry_after))

    # -- observation ---------------------------------------------------------------------

    def statistics(self, now: float) -> CircuitBreakerStatistics:
        state = self.poll(now)
        window = self.window
        calls = failures = slow = 0
        if window is not None:
            window.roll(now)
            calls, failures, slow = window.calls, window.failures, window.slow
        if state is _OPEN:
            wait = self.open_until - now
            until: float | None = None if math.isinf(wait) else max(wait, 0.0)
        else:
            until = 0.0
        return CircuitBreakerStatistics(
            name=self.name,
            state=state,
            successes=self.successes,
            failures=self.failures,
            ignored=self.ignored,
            rejected=self.rejected,
            slow_calls=self.slow_calls,
            consecutive_failures=self.consecutive_failures,
            window_calls=calls,
            failure_rate=failures / calls if calls and self.failure_rate is not None else None,
            slow_call_rate=slow / calls if calls and self.needs_duration else None,
            opened_count=self.opened_count,
            trips_in_a_row=self.trips_in_a_row,
            half_open_calls=self.half_open_calls,
            time_until_half_open=until,
            refusals=MappingProxyType({"circuit_open": self.rejected}),
        )

    def __repr__(self) -> str:
        return f"<CircuitBreakerCore name={self.name!r} state={self.state.value}>"
