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

A clock that steps back never admits more: ``tat`` keeps its value, so the bucket is
decided as if the time had not come back (for at most the length of the step, a bucket
that was used stays as empty as it was). The values reported are clamped at 0: a
``tat`` further ahead of ``now`` than the tolerance would otherwise report a negative
``remaining``.

All arithmetic is on floats; comparisons allow ``EPSILON`` seconds of rounding so that a
request arriving exactly when its tokens come back is admitted. Rounding accumulates in
``tat``: each request adds ``cost * interval`` to a number of the size of the clock
reading (about 1e-10 s of error per request at a reading of 1e6 s, a monotonic clock after
12 days), so a burst of a few hundred requests at one instant drifts by tens of
nanoseconds; a slack of one nanosecond refused the last token of a burst of 85. One
microsecond covers bursts of a thousand at clock readings up to 1e7 s with intervals up to
an hour, and is below any meaningful interval (a Python process does not usefully limit
more than 1e5 requests per second). ``remaining`` counts the requests of cost 1 that the
same test would admit now, ``floor((tolerance + EPSILON - ahead) / interval)``: the slack
is in seconds there too (added to the token count instead, it is lost to rounding at
high rates, where ``interval`` is microseconds).

:func:`gcra_step` is the one copy of the decision: every shell and store calls it (the
hot paths through :func:`~brace._core._inline.inline_steps`, which inlines it), and the
Lua script is held to it by the differential tests. ``TokenBucketCore`` keeps the
``tat`` of one bucket and offers the single-key interface
the shells use (``try_acquire``, ``grant``, ``admit``, ``behind``, ``retry_after``); the
sliding windows' cores offer the same.
"""

from __future__ import annotations

import math

from ._inline import inline_steps, step
from ._validate import (
    MAX_COUNT,
    MAX_SECONDS,
    MIN_INTERVAL,
    check_cost,
    check_int,
    check_positive,
    check_seconds,
    shown,
)
from .decision import Decision

__all__ = ("EPSILON", "GCRA", "TokenBucketCore", "gcra_step")

EPSILON = 1e-6


@step
def gcra_step(tat: float, now: float, cost: int, interval: float, reach: float) -> float | None:
    """The new ``tat`` if ``cost`` tokens are there at ``now``, else ``None`` (refused).

    ``reach`` is how far ``tat`` may run ahead of ``now``: the tolerance plus ``EPSILON``
    (:attr:`GCRA.reach`).
    """
    new_tat = (tat if tat > now else now) + cost * interval
    return new_tat if new_tat - now <= reach else None


class GCRA:
    """The immutable parameters of a token bucket and its decision function.

    ``decide(tat, now, cost)`` works on a state passed in and returned, so a keyed store
    can keep one float per key; :class:`TokenBucketCore` keeps one for a single bucket.
    """

    __slots__ = ("burst", "interval", "per", "rate", "reach", "tolerance")

    def __init__(self, rate: float, per: float = 1.0, burst: int | None = None) -> None:
        self.rate = check_positive(rate, "rate")
        self.per = check_seconds(per, "per")
        self.interval = self.per / self.rate
        if not MIN_INTERVAL <= self.interval <= MAX_SECONDS:  # 0 and inf included
            raise ValueError(
                f"rate and per: per / rate (the time one token takes to come back) must be "
                f"in [{MIN_INTERVAL:g}, {MAX_SECONDS:g}] s, got rate={shown(rate)}, "
                f"per={shown(per)}"
            )
        if burst is None:
            burst = max(1, math.floor(self.rate))
            if burst > MAX_COUNT:
                raise ValueError(
                    f"burst (by default the rate rounded down) must be <= {MAX_COUNT}: "
                    f"give burst= for a rate of {shown(rate)}"
                )
        self.burst = check_int(burst, "burst", minimum=1, maximum=MAX_COUNT)
        self.tolerance = self.burst * self.interval
        self.reach = self.tolerance + EPSILON  # how far tat may run ahead, slack included
        if not self.tolerance <= MAX_SECONDS:
            raise ValueError(
                f"burst * per / rate (the time an empty bucket takes to refill) must be at "
                f"most {MAX_SECONDS:g} s, got burst={shown(burst)}, per={shown(per)}, "
                f"rate={shown(rate)}"
            )

    @inline_steps
    def decide(self, tat: float, now: float, cost: int = 1) -> tuple[Decision, float]:
        """Admit ``cost`` tokens at ``now`` if they are there; return the decision and new tat."""
        interval = self.interval
        new_tat = gcra_step(tat, now, cost, interval, self.reach)
        if new_tat is not None:
            return self.admitted(new_tat, now), new_tat
        return self.refused(tat, now, cost), tat

    def admitted(self, new_tat: float, now: float) -> Decision:
        """The decision for a request admitted at ``now`` that moved ``tat`` to ``new_tat``."""
        ahead = new_tat - now
        remaining = int((self.reach - ahead) / self.interval)
        return Decision(True, self.burst, remaining, 0.0, ahead)

    def refused(self, tat: float, now: float, cost: int) -> Decision:
        """The decision for ``cost`` tokens refused at ``now`` (``tat`` unchanged)."""
        base = tat if tat > now else now
        ahead = base + cost * self.interval - now
        used = base - now
        # Below 0 only after the clock stepped back (then ``used`` exceeds the tolerance).
        remaining = max(0, int((self.reach - used) / self.interval))
        return Decision(False, self.burst, remaining, ahead - self.tolerance, used)

    def retry_after(self, tat: float, now: float, cost: int = 1) -> float:
        """Seconds until ``cost`` tokens are available (0 if they are now)."""
        base = tat if tat > now else now
        wait = base + cost * self.interval - self.tolerance - now
        return wait if wait > EPSILON else 0.0

    def available(self, tat: float, now: float) -> float:
        """Tokens in the bucket at ``now`` (fractional)."""
        if tat <= now:
            return float(self.burst)  # exactly, not tolerance / interval
        return max(0.0, (self.tolerance - (tat - now)) / self.interval)  # 0: a clock step back

    def at_rest(self, tat: float, now: float) -> bool:
        """True when the bucket is full: it is indistinguishable from a fresh one."""
        return tat <= now

    def check_cost(self, cost: object) -> int:
        return check_cost(cost, self.burst)

    def __repr__(self) -> str:
        return f"GCRA(rate={self.rate!r}, per={self.per!r}, burst={self.burst!r})"


class TokenBucketCore:
    """One token bucket: a :class:`GCRA` policy and its ``tat``.

    The single-key interface the shells use (the sliding windows' cores have the same):
    ``try_acquire`` always answers with a :class:`Decision`; ``grant`` builds one only when
    it admits; ``admit`` builds none (the ``async with`` fast path); ``behind`` answers for
    a request queued behind ``queued`` tokens of earlier waiters, consuming nothing.
    """

    __slots__ = ("interval", "policy", "reach", "tat")

    def __init__(self, policy: GCRA, tat: float = -math.inf) -> None:
        self.policy = policy
        self.tat = tat
        # Copied out of the policy for the fast path (TokenBucket.__aenter__ reads them):
        # one token's time, and how far ``tat`` may run ahead of ``now``, slack included.
        self.interval = policy.interval
        self.reach = policy.tolerance + EPSILON

    @property
    def limit(self) -> int:
        return self.policy.burst

    def try_acquire(self, now: float, cost: int = 1) -> Decision:
        decision, self.tat = self.policy.decide(self.tat, now, cost)
        return decision

    @inline_steps
    def admit(self, now: float, cost: int = 1) -> bool:
        """Consume ``cost`` tokens if they are there; build nothing."""
        new_tat = gcra_step(self.tat, now, cost, self.interval, self.reach)
        if new_tat is not None:
            self.tat = new_tat
            return True
        return False

    def grant(self, now: float, cost: int = 1) -> Decision | None:
        """Consume ``cost`` tokens and return the decision if they are there, else ``None``."""
        if not self.admit(now, cost):
            return None
        return self.policy.admitted(self.tat, now)

    def behind(self, now: float, cost: int, queued: int) -> Decision:
        """The answer to ``cost`` tokens asked behind ``queued`` tokens of earlier waiters.

        Exact for a bucket: waiters are served first come, first served, each as soon as
        its tokens are back, so the last of them is served when ``queued + cost`` tokens
        have come back. Nothing is consumed; only a ``cost`` of 0 is allowed.
        """
        policy = self.policy
        tat = self.tat
        virtual = (tat if tat > now else now) + queued * policy.interval
        used = virtual - now
        remaining = max(0, int((self.reach - used) / self.interval))
        if cost == 0:
            return Decision(True, policy.burst, remaining, 0.0, used)
        wait = used + cost * policy.interval - policy.tolerance
        return Decision(False, policy.burst, remaining, wait if wait > 0.0 else 0.0, used)

    def retry_after(self, now: float, cost: int = 1) -> float:
        return self.policy.retry_after(self.tat, now, cost)

    def available(self, now: float) -> float:
        return self.policy.available(self.tat, now)

    def at_rest(self, now: float) -> bool:
        return self.policy.at_rest(self.tat, now)
