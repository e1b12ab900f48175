"""Sliding windows: the weighted two-window counter and the exact sliding log.

Theory of operation
-------------------
**Counter.** Time is cut into fixed windows of ``window`` seconds aligned on multiples of
``window``. The state is the index of the current window and two counts: ``current``
(this window) and ``previous`` (the one before). At offset ``e`` into the current window
the load of the sliding window ``(now - window, now]`` is estimated as::

    previous * (1 - e / window) + current

assuming the previous window's hits were spread evenly. A request of ``cost`` is
admitted when ``estimate + cost <= limit``. Memory: three numbers, whatever the rate.

What the counter guarantees, against the exact log fed the same admitted history
(checked by ``tests/test_core_window.py`` after every admission):

1. Each aligned window admits at most ``limit``: the estimate never undercounts
   ``current``.
2. The sliding window ending at an admission at offset ``e`` holds at most
   ``limit + previous * e / window`` admissions: the admission itself needed
   ``previous * (1 - e / window) + current <= limit``, and the window adds at most the
   ``previous`` hits of the window before. As ``previous <= limit`` and ``e < window``,
   any interval of ``window`` seconds admits fewer than ``2 * limit`` (at most
   ``2 * limit - 1``). The bound is nearly reached when the previous window's hits are
   packed at its end: their weight decays while they are all still inside the sliding
   window, so the counter admits more than the log would.
3. The converse error: hits early in the previous window are weighed as if spread out,
   so the counter may refuse what the log would admit (it is then stricter).
4. When the previous aligned window is empty, the estimate *is* the exact count, and the
   counter admits exactly when the log would.

Neither "the counter admits only what the log admits" nor its converse holds in
general: 2 and 3 are counterexamples, both tested.

When refused, the wait is solved in closed form: either the previous window's weight
decays enough before the current window ends, or the wait runs into the next window
where ``current`` becomes ``previous``.

**Log.** The exact sliding log keeps the time and cost of each admitted request in the
last ``window`` seconds (at most ``limit`` entries, as every cost is >= 1) and admits
when their sum plus ``cost`` is within ``limit``. Exact, at O(limit) memory per key.

**A clock that steps back** never admits more. The counter keeps its newest window (and
decides as at that window's start) until the clock is back in it; the log stamps an
entry made while the clock is behind its newest entry with that entry's time, so that
its entries stay in order and expire no sooner than they would have. Either way a key
stays as limited as it was for at most the length of the step, and no reported value
(``remaining``, ``retry_after``, ``reset_after``) is negative.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from ._inline import inline_steps, step
from ._validate import MAX_COUNT, MIN_WINDOW, check_cost, check_int, check_seconds
from .decision import Decision

__all__ = (
    "CounterState",
    "SlidingLog",
    "SlidingLogCore",
    "SlidingWindowCounter",
    "SlidingWindowCounterCore",
    "window_admits",
    "window_weight",
)

EPSILON = 1e-9


@step
def window_weight(previous: int, offset: float, window: float) -> float:
    """The previous window's share of the estimate, at ``offset`` into the current one."""
    return previous * (1.0 - offset / window) if previous else 0.0


@step
def window_admits(weight: float, current: int, cost: int, reach: float) -> bool:
    """The counter's decision: ``cost`` fits when the estimate plus it is within ``reach``
    (``limit + EPSILON``, :attr:`SlidingWindowCounter.reach`)."""
    return weight + current + cost <= reach


# (index of the current window, count in it, count in the previous window)
CounterState = tuple[int, int, int]


class SlidingWindowCounter:
    """Parameters and decision function of the two-window counter.

    ``decide(state, now, cost)`` takes and returns the state so a keyed store can keep a
    small tuple per key; :class:`SlidingWindowCounterCore` keeps one for a single window.
    """

    __slots__ = ("limit", "reach", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = check_int(limit, "limit", minimum=1, maximum=MAX_COUNT)
        self.window = check_seconds(window, "window", minimum=MIN_WINDOW)
        self.reach = self.limit + EPSILON  # the most the estimate plus a cost may be

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
        """The estimated load of the sliding window ``(now - window, now]``."""
        _, current, previous, offset = self.roll(state, now)
        weight = window_weight(previous, offset, self.window)
        return weight + current

    @inline_steps
    def decide(
        self, state: CounterState | None, now: float, cost: int = 1
    ) -> tuple[Decision, CounterState]:
        """Admit ``cost`` at ``now`` if the estimate allows; return the decision and new state."""
        index, current, previous, offset = self.roll(state, now)
        limit = self.limit
        weight = window_weight(previous, offset, self.window)
        admitted = window_admits(weight, current, cost, self.reach)
        if admitted:
            current += cost
            return self.admitted(weight, current, previous, offset), (index, current, previous)
        remaining = max(0, int(limit - weight - current + EPSILON))
        retry = self._wait(current, previous, offset, cost)
        reset = self._reset_after(current, previous, offset)
        return Decision(False, limit, remaining, retry, reset), (index, current, previous)

    def admitted(self, weight: float, current: int, previous: int, offset: float) -> Decision:
        """The decision for a request just admitted (``current`` already counts it)."""
        limit = self.limit
        remaining = max(0, int(limit - weight - current + EPSILON))
        return Decision(True, limit, remaining, 0.0, self._reset_after(current, previous, offset))

    def retry_after(self, state: CounterState | None, now: float, cost: int = 1) -> float:
        """Seconds until ``cost`` would be admitted, if nothing else is (0 if it would now)."""
        _, current, previous, offset = self.roll(state, now)
        weight = window_weight(previous, offset, self.window)
        admitted = window_admits(weight, current, cost, self.reach)
        if admitted:
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
        """``cost`` if it is an int in ``0..limit``, else a ``TypeError``/``ValueError``."""
        return check_cost(cost, self.limit)

    def __repr__(self) -> str:
        return f"SlidingWindowCounter(limit={self.limit!r}, window={self.window!r})"


class SlidingWindowCounterCore:
    """One two-window counter: a :class:`SlidingWindowCounter` policy and its state.

    Same single-key interface as :class:`~brace._core.gcra.TokenBucketCore`.
    """

    __slots__ = ("policy", "state")

    def __init__(self, policy: SlidingWindowCounter, state: CounterState | None = None) -> None:
        self.policy = policy
        self.state = state

    @property
    def limit(self) -> int:
        return self.policy.limit

    def try_acquire(self, now: float, cost: int = 1) -> Decision:
        decision, self.state = self.policy.decide(self.state, now, cost)
        return decision

    @inline_steps
    def admit(self, now: float, cost: int = 1) -> bool:
        """Count ``cost`` if the estimate allows it; build nothing."""
        policy = self.policy
        index, current, previous, offset = policy.roll(self.state, now)
        weight = window_weight(previous, offset, policy.window)
        admitted = window_admits(weight, current, cost, policy.reach)
        if not admitted:
            return False
        self.state = (index, current + cost, previous)
        return True

    def grant(self, now: float, cost: int = 1) -> Decision | None:
        """Count ``cost`` and return the decision if the estimate allows, else ``None``."""
        policy = self.policy
        index, current, previous, offset = policy.roll(self.state, now)
        weight = window_weight(previous, offset, policy.window)
        admitted = window_admits(weight, current, cost, policy.reach)
        if not admitted:
            return None
        current += cost
        self.state = (index, current, previous)
        return policy.admitted(weight, current, previous, offset)

    def behind(self, now: float, cost: int, queued: int) -> Decision:
        """The answer to ``cost`` asked behind ``queued`` of earlier waiters (see ``_behind``)."""
        policy = self.policy
        _, current, previous, offset = policy.roll(self.state, now)
        weight = window_weight(previous, offset, policy.window)
        estimate = weight + current
        reset = policy._reset_after(current, previous, offset)
        return _behind(
            policy.limit, policy.window, estimate, reset, self.retry_after, now, cost, queued
        )

    def retry_after(self, now: float, cost: int = 1) -> float:
        return self.policy.retry_after(self.state, now, cost)

    def remaining(self, now: float) -> int:
        """How much more would be admitted right now."""
        estimate = self.policy.estimate(self.state, now)
        return max(0, int(self.policy.limit - estimate + EPSILON))

    def at_rest(self, now: float) -> bool:
        return self.policy.at_rest(self.state, now)


def _behind(
    limit: int,
    window: float,
    estimate: float,
    reset: float,
    retry_after: Callable[[float, int], float],
    now: float,
    cost: int,
    queued: int,
) -> Decision:
    """A window's answer to ``cost`` queued behind ``queued``: an estimate.

    The earlier waiters and this request need ``queued + cost`` of room: no sooner than
    that much fits at once (or ``limit``, if more), nor than one window per further
    ``limit``. Never less than this request's own wait with nobody ahead, since the
    admissions of the earlier waiters only add to the count. Nothing is consumed; only
    a ``cost`` of 0 is allowed.
    """
    remaining = max(0, int(limit - estimate + EPSILON) - queued)
    if cost == 0:
        return Decision(True, limit, remaining, 0.0, reset)
    total = queued + cost
    wait = max(retry_after(now, min(total, limit)), (total - 1) // limit * window)
    return Decision(False, limit, remaining, wait, max(reset, wait))


class SlidingLog:
    """Parameters of the exact sliding log; ``core()`` makes the state of one key."""

    __slots__ = ("limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = check_int(limit, "limit", minimum=1, maximum=MAX_COUNT)
        self.window = check_seconds(window, "window", minimum=MIN_WINDOW)

    def core(self) -> SlidingLogCore:
        return SlidingLogCore(self.limit, self.window)

    def check_cost(self, cost: object) -> int:
        return check_cost(cost, self.limit)

    def __repr__(self) -> str:
        return f"SlidingLog(limit={self.limit!r}, window={self.window!r})"


class SlidingLogCore:
    """The exact sliding log for one key: admitted (time, cost) pairs of the last window.

    Same single-key interface as :class:`~brace._core.gcra.TokenBucketCore`.
    """

    __slots__ = ("entries", "limit", "total", "window")

    def __init__(self, limit: int, window: float) -> None:
        # Checked once by SlidingLog, the only maker (``core()`` runs for every new key).
        self.limit = limit
        self.window = window
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def _expire(self, now: float) -> None:
        horizon = now - self.window + EPSILON
        entries = self.entries
        while entries and entries[0][0] <= horizon:
            self.total -= entries.popleft()[1]

    def try_acquire(self, now: float, cost: int = 1) -> Decision:
        decision = self.grant(now, cost)
        if decision is not None:
            return decision
        limit = self.limit
        return Decision(
            False, limit, limit - self.total, self._wait(now, cost), self._reset_after(now)
        )

    def admit(self, now: float, cost: int = 1) -> bool:
        """Log ``cost`` if it fits in the window; build nothing."""
        self._expire(now)
        if self.total + cost > self.limit:
            return False
        if cost:
            entries = self.entries
            if entries and now < entries[-1][0]:  # the clock stepped back: keep the order
                now = entries[-1][0]
            entries.append((now, cost))
            self.total += cost
        return True

    def grant(self, now: float, cost: int = 1) -> Decision | None:
        """Log ``cost`` and return the decision if it fits in the window, else ``None``."""
        if not self.admit(now, cost):
            return None
        return Decision(True, self.limit, self.limit - self.total, 0.0, self._reset_after(now))

    def behind(self, now: float, cost: int, queued: int) -> Decision:
        """The answer to ``cost`` asked behind ``queued`` of earlier waiters; consumes nothing."""
        self._expire(now)
        return _behind(
            self.limit,
            self.window,
            self.total,
            self._reset_after(now),
            self.retry_after,
            now,
            cost,
            queued,
        )

    def retry_after(self, now: float, cost: int = 1) -> float:
        """Seconds until ``cost`` fits, if nothing else is logged (0 if it fits now)."""
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

    def remaining(self, now: float) -> int:
        """How much more would be admitted right now."""
        self._expire(now)
        return self.limit - self.total

    def at_rest(self, now: float) -> bool:
        self._expire(now)
        return not self.entries
