"""A dependency's outage: up, down until a time, or one probe in flight (the Redis store's).

Theory of operation
-------------------
The smallest circuit breaker: one server failure opens it for ``recovery_time`` seconds
(``down_until``); until then callers do not try the dependency at all. Once that time has
passed, the next caller is a *probe*: it pushes ``down_until`` a further ``recovery_time``
ahead so that the others keep away while it runs. A success closes the circuit
(``down_until = -inf``); a server failure opens it again from that moment; a failure that
says nothing about the dependency (a bad call) ends the probe at once, so another caller
may try.

A smoothed latency of the successful calls is kept beside it: an exponentially weighted
moving average with weight ``alpha`` for the newest sample (:func:`ewma`).
"""

from __future__ import annotations

import math

from ._validate import check_positive

__all__ = ("OutageCore", "ewma")


def ewma(average: float, sample: float, alpha: float) -> float:
    """The moving average ``average`` moved ``alpha`` of the way towards ``sample``."""
    return average + alpha * (sample - average)


class OutageCore:
    """Whether to call the dependency now, and what each outcome does to that."""

    __slots__ = ("down_until", "latency", "latency_alpha", "recovery_time")

    def __init__(self, recovery_time: float, *, latency_alpha: float = 0.1) -> None:
        if not (isinstance(recovery_time, int | float) and recovery_time >= 0):
            raise ValueError(f"recovery_time must be a number >= 0, got {recovery_time!r}")
        self.recovery_time = float(recovery_time)
        self.latency_alpha = check_positive(latency_alpha, "latency_alpha")
        self.down_until = -math.inf  # -inf: up
        self.latency = 0.0

    @property
    def up(self) -> bool:
        """No failure since the last success (nothing to check against the clock)."""
        return self.down_until == -math.inf

    def available(self, now: float) -> bool:
        """True when a call may go to the dependency at ``now`` (up, or time to probe)."""
        return now >= self.down_until

    def start(self, now: float) -> bool:
        """A call starts at ``now``; True if it is a probe (the others now keep away)."""
        if self.down_until == -math.inf:
            return False
        self.down_until = now + self.recovery_time
        return True

    def succeeded(self, started: float, finished: float) -> None:
        """The call answered: the dependency is up; its latency joins the average."""
        self.latency = ewma(self.latency, finished - started, self.latency_alpha)
        self.down_until = -math.inf

    def answered(self) -> None:
        """The dependency answered (a reply not timed, or with an error of the call)."""
        self.down_until = -math.inf

    def server_failed(self, now: float) -> None:
        """The dependency failed or timed out at ``now``: down for ``recovery_time``."""
        self.down_until = now + self.recovery_time

    def call_failed(self, probing: bool, now: float) -> None:
        """The call failed for a reason of its own: a probe ends, so another may try."""
        if probing:
            self.down_until = now
