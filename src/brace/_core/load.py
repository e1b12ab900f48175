"""Event-loop lag, smoothed, and the probability of shedding new work.

Theory of operation
-------------------
A sampling task asks to sleep ``interval`` seconds and measures how late it woke up: that
lateness is the loop's *lag*, the time every ready task waits for a busy loop. One late
wake-up is noise, so the samples are smoothed by an exponentially weighted moving average,
``lag <- lag + smoothing * (sample - lag)`` (``smoothing`` in (0, 1]: 1 keeps only the last
sample).

Shedding is probabilistic so a single spike does not reject everything. With the smoothed
lag ``L`` and the configured ``max_lag`` ``M``, new work is shed with probability

    p(L) = 0                 for L <= M
    p(L) = (L - M) / M       for M < L < 2M
    p(L) = 1                 for L >= 2M

a straight ramp from nothing at ``max_lag`` to everything at twice ``max_lag``. The
caller supplies the uniform random number, so the core stays deterministic.
"""

from __future__ import annotations

import math

from ._validate import check_positive

__all__ = ("LoadCore", "shed_probability")


def shed_probability(lag: float, max_lag: float) -> float:
    """The documented ramp: 0 up to ``max_lag``, 1 from ``2 * max_lag``, linear between."""
    if lag <= max_lag:
        return 0.0
    return min(1.0, (lag - max_lag) / max_lag)


class LoadCore:
    """The smoothed lag and the shedding decision of :class:`brace.LoadMonitor`."""

    __slots__ = ("lag", "last_lag", "max_lag", "peak_lag", "probability", "samples", "smoothing")

    def __init__(self, max_lag: float, *, smoothing: float = 0.3) -> None:
        self.max_lag = check_positive(max_lag, "max_lag")
        smoothing = check_positive(smoothing, "smoothing")
        if smoothing > 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing!r}")
        self.smoothing = smoothing
        self.lag = 0.0
        self.last_lag = 0.0
        self.peak_lag = 0.0
        self.samples = 0
        self.probability = 0.0

    def observe(self, lag: float, now: float) -> float:
        """Feed one lag sample (seconds late, clamped at 0) taken at ``now``; return the
        new smoothed lag."""
        del now  # the average weighs samples, not seconds: the sampler runs at a steady pace
        if math.isnan(lag) or lag < 0:
            lag = 0.0
        self.last_lag = lag
        self.peak_lag = max(self.peak_lag, lag)
        self.samples += 1
        self.lag += self.smoothing * (lag - self.lag)
        self.probability = shed_probability(self.lag, self.max_lag)
        return self.lag

    def should_shed(self, uniform: float) -> bool:
        """Shed this piece of work? ``uniform`` is a random number in [0, 1)."""
        return uniform < self.probability
