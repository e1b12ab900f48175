"""Retry budget: retries may add at most a fixed fraction to the load.

Theory of operation
-------------------
Retries multiply load exactly when a service is least able to take it: with 3 attempts
per call, a dependency that fails everything receives 3 times its normal traffic. A
retry budget (Finagle's ``RetryBudget``, gRPC's retry throttling, the SRE book's
"per-client retry budget") bounds that: over a sliding ``window`` of seconds,

    retries <= ratio * requests + min_per_second * window

where ``requests`` counts first attempts (calls) and ``retries`` counts the extra
attempts granted. The ``min_per_second * window`` floor lets a quiet client still retry
its occasional failure; the ratio caps the extra load of a busy one at ``1 + ratio``.
A retry is granted only when granting it keeps the inequality true.

The window is a ring of ``buckets`` time slots of ``window / buckets`` seconds each, so
memory is O(buckets) whatever the traffic. Slot ``k`` covers ``[k * width, (k + 1) *
width)``; at ``now`` the window is the current slot and the ``buckets - 1`` before it, a
span between ``window - width`` and ``window`` seconds long. Moving to a later slot zeroes
the slots that fell out of the window and takes their counts off the running totals, so
every operation is O(1) amortised. A clock that goes backwards is read as "still in the
newest slot seen".
"""

from __future__ import annotations

import math

from ._validate import MAX_RING, MIN_WINDOW, check_finite, check_int, check_seconds

__all__ = ("RetryBudgetCore",)

EPSILON = 1e-9


class RetryBudgetCore:
    """Counts requests and retries in a sliding, bucketed window and grants retries."""

    __slots__ = (
        "_requests",
        "_retries",
        "_slot",
        "_total_requests",
        "_total_retries",
        "buckets",
        "granted",
        "min_per_second",
        "ratio",
        "refused",
        "requested",
        "reserve",
        "width",
        "window",
    )

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        window: float = 10.0,
        buckets: int = 10,
    ) -> None:
        self.ratio = check_finite(ratio, "ratio", "in [0, 1]")
        if not 0 <= self.ratio <= 1:
            raise ValueError(f"ratio must be a number in [0, 1], got {ratio!r}")
        self.min_per_second = check_finite(min_per_second, "min_per_second", ">= 0")
        if self.min_per_second < 0:
            raise ValueError(f"min_per_second must be a finite number >= 0, got {min_per_second!r}")
        # at least MIN_WINDOW: a slot of a subnormal width divides ``now`` into infinity
        self.window = check_seconds(window, "window", minimum=MIN_WINDOW)
        self.buckets = check_int(buckets, "buckets", minimum=1, maximum=MAX_RING)
        self.width = self.window / self.buckets
        self.reserve = self.min_per_second * self.window
        self._requests = [0] * self.buckets
        self._retries = [0] * self.buckets
        self._slot: int | None = None
        self._total_requests = 0
        self._total_retries = 0
        # lifetime totals: requests recorded, retries granted and refused
        self.requested = 0
        self.granted = 0
        self.refused = 0

    def slot_of(self, now: float) -> int:
        """The index of the time slot holding ``now``."""
        return math.floor(now / self.width)

    def _advance(self, now: float) -> int:
        """Move the ring to ``now``'s slot, forgetting what fell out; return its ring index."""
        slot = math.floor(now / self.width)
        current = self._slot
        if current is None or slot - current >= self.buckets:
            if current is None or self._total_requests or self._total_retries:
                for i in range(self.buckets):
                    self._requests[i] = 0
                    self._retries[i] = 0
                self._total_requests = 0
                self._total_retries = 0
            self._slot = slot
        elif slot > current:
            n = self.buckets
            for k in range(current + 1, slot + 1):
                i = k % n
                self._total_requests -= self._requests[i]
                self._total_retries -= self._retries[i]
                self._requests[i] = 0
                self._retries[i] = 0
            self._slot = slot
        else:
            slot = current  # the clock went backwards: stay in the newest slot
        return slot % self.buckets

    def record_request(self, now: float) -> None:
        """Count one request (a first attempt) at ``now``."""
        i = self._advance(now)
        self._requests[i] += 1
        self._total_requests += 1
        self.requested += 1

    def try_retry(self, now: float) -> bool:
        """Grant and count one retry at ``now`` if the budget allows it, else count nothing."""
        i = self._advance(now)
        if self._total_retries + 1 > self.ratio * self._total_requests + self.reserve + EPSILON:
            self.refused += 1
            return False
        self._retries[i] += 1
        self._total_retries += 1
        self.granted += 1
        return True

    def counts(self, now: float) -> tuple[int, int]:
        """``(requests, retries)`` in the window at ``now``."""
        self._advance(now)
        return self._total_requests, self._total_retries

    def available(self, now: float) -> int:
        """How many retries would be granted at ``now`` if nothing else happened."""
        self._advance(now)
        room = self.ratio * self._total_requests + self.reserve + EPSILON - self._total_retries
        return max(0, math.floor(room))
