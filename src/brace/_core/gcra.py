"""Token bucket in GCRA form.

Theory of operation
-------------------
A token bucket of capacity ``burst`` refilled at ``rate`` tokens per ``per`` seconds is
equivalent to the Generic Cell Rate Algorithm, which keeps one number instead of two:
the *theoretical arrival time* ``tat``, the moment the bucket would be full again if
nothing else arrived.

- ``interval = per / rate`` is the time one token takes to come back;
- ``tolerance = burst * interval`` is how far ``tat`` may run ahead of ``now``.

A request of ``cost`` tokens at ``now`` moves ``tat`` to ``max(tat, now) + cost *
interval`` and is admitted when that stays within ``now + tolerance``. The tokens
available at ``now`` are ``(tolerance - (max(tat, now) - now)) / interval``. A bucket whose
``tat <= now`` is full: it holds no information a fresh bucket lacks ("at rest"), which
is what lets a keyed store drop it without loss.

All arithmetic is on floats; comparisons allow ``EPSILON`` seconds of rounding so that a
request arriving exactly when its tokens come back is admitted.
"""

from __future__ import annotations

import math

from .._decision import Decision
from ._validate import check_cost, check_int, check_positive

__all__ = ("EPSILON", "GCRA", "TokenBucketCore")

EPSILON = 1e-9


class GCRA:
    """The immutable parameters of a token bucket and its decision function.

    ``decide(tat, now, cost)`` works on a state passed in and returned, so a keyed store
    can keep one float per key; :class:`TokenBucketCore` keeps one for a single bucket.
    """

    __slots__ = ("burst", "interval", "per", "rate", "tolerance")

    def __init__(self, rate: float, per: float = 1.0, burst: int | None = None) -> None:
        self.rate = check_positive(rate, "rate")
        self.per = check_positive(per, "per")
        if burst is None:
            burst = max(1, math.floor(self.rate))
        self.burst = check_int(burst, "burst", minimum=1)
        self.interval = self.per / self.rate
        self.tolerance = self.burst * self.interval

    def decide(self, tat: float, now: float, cost: int = 1) -> tuple[Decision, float]:
        """Admit ``cost`` tokens at ``now`` if they are there; return the decision and new tat."""
        interval = self.interval
        tolerance = self.tolerance
        base = tat if tat > now else now
        new_tat = base + cost * interval
        ahead = new_tat - now
        if ahead <= tolerance + EPSILON:
            remaining = int((tolerance - ahead) / interval + EPSILON)
            return Decision(True, self.burst, remaining, 0.0, ahead), new_tat
        used = base - now
        remaining = int((tolerance - used) / interval + EPSILON)
        return Decision(False, self.burst, remaining, ahead - tolerance, used), tat

    def retry_after(self, tat: float, now: float, cost: int = 1) -> float:
        """Seconds until ``cost`` tokens are available (0 if they are now)."""
        base = tat if tat > now else now
        wait = base + cost * self.interval - self.tolerance - now
        return wait if wait > EPSILON else 0.0

    def available(self, tat: float, now: float) -> float:
        """Tokens in the bucket at ``now`` (fractional)."""
        used = tat - now if tat > now else 0.0
        return (self.tolerance - used) / self.interval

    def at_rest(self, tat: float, now: float) -> bool:
        """True when the bucket is full: it is indistinguishable from a fresh one."""
        return tat <= now

    def check_cost(self, cost: object) -> int:
        return check_cost(cost, self.burst)

    def __repr__(self) -> str:
        return f"GCRA(rate={self.rate!r}, per={self.per!r}, burst={self.burst!r})"


class TokenBucketCore:
    """One token bucket: a :class:`GCRA` policy and its ``tat``."""

    __slots__ = ("policy", "tat")

    def __init__(self, policy: GCRA, tat: float = -math.inf) -> None:
        self.policy = policy
        self.tat = tat

    def try_acquire(self, now: float, cost: int = 1) -> Decision:
        decision, self.tat = self.policy.decide(self.tat, now, cost)
        return decision

    def retry_after(self, now: float, cost: int = 1) -> float:
        return self.policy.retry_after(self.tat, now, cost)

    def available(self, now: float) -> float:
        return self.policy.available(self.tat, now)
