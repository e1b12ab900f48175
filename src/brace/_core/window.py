"""Sliding windows: the weighted two-window counter and the exact sliding log.

Theory of operation
-------------------
**Counter.** Time is cut into fixed windows of ``window`` seconds aligned on multiples of
``window``. The state is the index of the current window and two counts: ``current``
(this window) and ``previous`` (the one before). At offset ``e`` into the current window
the load of the sliding window ``(now - window, now]`` is estimated as::

    previous * (1 - e / window) + current

assuming the previous window's hits were spread evenly. A request of ``cost`` is
admitted when ``estimate + cost <= limit``. The estimate never undercounts the current
fixed window, so each aligned window admits at most ``limit``; a sliding interval of
``window`` seconds overlaps two aligned windows, so it admits at most ``2 * limit`` (the
worst case is every previous hit packed at the end of its window). Memory: three
numbers, whatever the rate.

When refused, the wait is solved in closed form: either the previous window's weight
decays enough before the current window ends, or the wait runs into the next window
where ``current`` becomes ``previous``.

**Log.** The exact sliding log keeps the time and cost of each admitted request in the
last ``window`` seconds (at most ``limit`` entries, as every cost is >= 1) and admits
when their sum plus ``cost`` is within ``limit``. Exact, at O(limit) memory per key.
"""

from __future__ import annotations

import math
from collections import deque

from .._decision import Decision
from ._validate import check_cost, check_int, check_positive

__all__ = ("CounterState", "SlidingLog", "SlidingLogCore", "SlidingWindowCounter")

EPSILON = 1e-9

# (index of the current window, count in it, count in the previous window)
CounterState = tuple[int, int, int]


class SlidingWindowCounter:
    """Parameters and decision function of the two-window counter.

    ``decide(state, now, cost)`` takes and returns the state so a keyed store can keep a
    small tuple per key.
    """

    __slots__ = ("limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = check_int(limit, "limit", minimum=1)
        self.window = check_positive(window, "window")

    def roll(self, state: CounterState | None, now: float) -> tuple[int, int, int, float]:
        """Bring ``state`` to the window containing ``now``: (index, current, previous, offset)."""
        window = self.window
        index = math.floor(now / window)
        offset = now - index * window
        if state is None:
            return index, 0, 0, offset
        old_index, current, previous = state
        if index == old_index:
            return index, current, previous, offset
        if index == old_index + 1:
            return index, 0, current, offset
        if index < old_index:  # a clock that went backwards: keep the newer state
            return old_index, current, previous, 0.0
        return index, 0, 0, offset

    def estimate(self, state: CounterState | None, now: float) -> float:
        _, current, previous, offset = self.roll(state, now)
        return previous * (1.0 - offset / self.window) + current

    def decide(
        self, state: CounterState | None, now: float, cost: int = 1
    ) -> tuple[Decision, CounterState]:
        """Admit ``cost`` at ``now`` if the estimate allows; return the decision and new state."""
        index, current, previous, offset = self.roll(state, now)
        window = self.window
        limit = self.limit
        weight = previous * (1.0 - offset / window)
        estimate = weight + current
        if estimate + cost <= limit + EPSILON:
            current += cost
            remaining = max(0, int(limit - estimate - cost + EPSILON))
            reset = self._reset_after(current, previous, offset)
            return Decision(True, limit, remaining, 0.0, reset), (index, current, previous)
        remaining = max(0, int(limit - estimate + EPSILON))
        retry = self._wait(current, previous, offset, cost)
        reset = self._reset_after(current, previous, offset)
        return Decision(False, limit, remaining, retry, reset), (index, current, previous)

    def retry_after(self, state: CounterState | None, now: float, cost: int = 1) -> float:
        _, current, previous, offset = self.roll(state, now)
        estimate = previous * (1.0 - offset / self.window) + current
        if estimate + cost <= self.limit + EPSILON:
            return 0.0
        return self._wait(current, previous, offset, cost)

    def _wait(self, current: int, previous: int, offset: float, cost: int) -> float:
        window = self.window
        limit = self.limit
        # Within this window: previous * (1 - (offset + d) / window) + current + cost <= limit.
        room = limit - current - cost
        if previous > 0 and room >= 0:
            d = (previous * (1.0 - offset / window) - room) * window / previous
            if d <= window - offset:
                return max(d, 0.0)
        # Next window: current becomes previous; current * (1 - e / window) + cost <= limit.
        to_next = window - offset
        if current + cost <= limit:
            return to_next
        e = (1.0 - (limit - cost) / current) * window
        return to_next + e

    def _reset_after(self, current: int, previous: int, offset: float) -> float:
        if current > 0:
            return 2 * self.window - offset
        if previous > 0:
            return self.window - offset
        return 0.0

    def at_rest(self, state: CounterState | None, now: float) -> bool:
        """True when the state is indistinguishable from a fresh one at ``now``."""
        if state is None:
            return True
        index, current, previous = state
        now_index = math.floor(now / self.window)
        if now_index >= index + 2:
            return True
        if now_index == index + 1:
            return current == 0
        return current == 0 and previous == 0

    def check_cost(self, cost: object) -> int:
        return check_cost(cost, self.limit)

    def __repr__(self) -> str:
        return f"SlidingWindowCounter(limit={self.limit!r}, window={self.window!r})"


class SlidingLog:
    """Parameters of the exact sliding log; ``core()`` makes the state of one key."""

    __slots__ = ("limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = check_int(limit, "limit", minimum=1)
        self.window = check_positive(window, "window")

    def core(self) -> SlidingLogCore:
        return SlidingLogCore(self.limit, self.window)

    def check_cost(self, cost: object) -> int:
        return check_cost(cost, self.limit)

    def __repr__(self) -> str:
        return f"SlidingLog(limit={self.limit!r}, window={self.window!r})"


class SlidingLogCore:
    """The exact sliding log for one key: admitted (time, cost) pairs of the last window."""

    __slots__ = ("entries", "limit", "total", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = check_int(limit, "limit", minimum=1)
        self.window = check_positive(window, "window")
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        entries = self.entries
        while entries and entries[0][0] <= horizon + EPSILON:
            self.total -= entries.popleft()[1]

    def try_acquire(self, now: float, cost: int = 1) -> Decision:
        self._expire(now)
        limit = self.limit
        if self.total + cost <= limit:
            if cost:
                self.entries.append((now, cost))
                self.total += cost
            return Decision(True, limit, limit - self.total, 0.0, self._reset_after(now))
        return Decision(
            False, limit, limit - self.total, self._wait(now, cost), self._reset_after(now)
        )

    def retry_after(self, now: float, cost: int = 1) -> float:
        self._expire(now)
        if self.total + cost <= self.limit:
            return 0.0
        return self._wait(now, cost)

    def _wait(self, now: float, cost: int) -> float:
        excess = self.total + cost - self.limit
        for stamp, spent in self.entries:
            excess -= spent
            if excess <= 0:
                return stamp + self.window - now
        raise AssertionError("cost <= limit, so expiring every entry makes room")

    def _reset_after(self, now: float) -> float:
        if not self.entries:
            return 0.0
        return self.entries[-1][0] + self.window - now

    def at_rest(self, now: float) -> bool:
        self._expire(now)
        return not self.entries

    def check_cost(self, cost: object) -> int:
        return check_cost(cost, self.limit)
