"""Adaptive concurrency limits: how many requests may be in flight, learned from latency.

Theory of operation
-------------------
Little's law says a service holding ``L`` requests in flight, each taking ``rtt``
seconds, serves ``L / rtt`` per second. Below the service's *knee* adding concurrency adds
throughput and ``rtt`` stays flat; past it requests only queue inside the service and
``rtt`` grows. Each algorithm watches every completion (its latency, how many were in
flight, whether it was dropped or timed out) and moves a real-valued ``limit``, kept within
``[min_limit, max_limit]``; the executor uses ``round(limit)`` slots. These follow Netflix's
``concurrency-limits`` library.

- **AIMD**: additive increase, multiplicative decrease, like TCP Reno. A drop, or a latency
  above ``latency_threshold``, multiplies the limit by ``backoff_ratio``; any other window
  adds ``increase``, but only while at least half the limit is in use (an idle service
  proves nothing).
- **Gradient2**: compares a short-term latency (the latest sample, smoothed) with a
  long-term exponential average over ``long_window`` samples. The gradient
  ``clamp(tolerance * long / short, 0.5, 1)`` is 1 while latency is flat and shrinks as it
  rises; ``new = limit * gradient + queue_size``, blended into the limit with ``smoothing``.
  The long-term average rises slowly but falls fast, so a service that recovers is
  recognised at once and the limit can grow again without overshooting.
- **Vegas**: keeps the lowest latency seen (``rtt_noload``) and estimates the requests
  queued inside the service as ``limit * (1 - rtt_noload / rtt)``; it grows the limit while
  that queue is small (below ``alpha``), shrinks it when large (above ``beta``), both
  scaled by ``log10(limit)``. Drops shrink it too.

**Windows.** A busy service completes hundreds of calls per round trip; moving the limit
on each would make it swing wildly. Like Netflix's ``WindowedLimit``, samples are pooled
for ``window`` seconds (and at least ``min_samples`` samples): the algorithm then sees one
sample whose latency is the window's mean, whose in-flight count is the window's largest,
and which counts as dropped when any sample was, and moves the limit once.
"""

from __future__ import annotations

import math

from ._validate import check_int, check_positive

__all__ = ("AIMDCore", "Gradient2Core", "LimitCore", "VegasCore")


class LimitCore:
    """The shared shape: a real-valued ``limit`` within bounds, moved once per window."""

    __slots__ = (
        "_count",
        "_dropped",
        "_inflight",
        "_total",
        "_window_end",
        "limit",
        "max_limit",
        "min_limit",
        "min_samples",
        "window",
    )

    name = "limit"

    def __init__(
        self,
        initial: int,
        min_limit: int,
        max_limit: int,
        window: float = 0.1,
        min_samples: int = 10,
    ) -> None:
        self.min_limit = check_int(min_limit, "min_limit", minimum=1)
        self.max_limit = check_int(max_limit, "max_limit", minimum=1)
        if self.max_limit < self.min_limit:
            raise ValueError(
                f"max_limit must be >= min_limit ({self.min_limit}), got {self.max_limit!r}"
            )
        initial = check_int(initial, "initial", minimum=1)
        if not self.min_limit <= initial <= self.max_limit:
            raise ValueError(
                f"initial must be in [{self.min_limit}, {self.max_limit}], got {initial!r}"
            )
        self.limit = float(initial)
        self.window = check_positive(window, "window")
        self.min_samples = check_int(min_samples, "min_samples", minimum=1)
        self._window_end: float | None = None
        self._count = 0
        self._total = 0.0
        self._inflight = 0
        self._dropped = False

    @property
    def slots(self) -> int:
        """The limit as a whole number of slots (at least ``min_limit``)."""
        return max(self.min_limit, min(self.max_limit, round(self.limit)))

    def update(self, now: float, rtt: float, inflight: int, dropped: bool) -> float:
        """Take one completion into account and return the (possibly new) limit."""
        self._count += 1
        self._total += rtt
        if inflight > self._inflight:
            self._inflight = inflight
        if dropped:
            self._dropped = True
        end = self._window_end
        if end is None:
            self._window_end = now + self.window
        elif now >= end and self._count >= self.min_samples:
            self.limit = self._decide(self._total / self._count, self._inflight, self._dropped)
            self._window_end = now + self.window
            self._count = 0
            self._total = 0.0
            self._inflight = 0
            self._dropped = False
        return self.limit

    def _decide(self, rtt: float, inflight: int, dropped: bool) -> float:
        raise NotImplementedError

    def _clamp(self, value: float) -> float:
        return float(max(self.min_limit, min(self.max_limit, value)))


class AIMDCore(LimitCore):
    """Additive increase, multiplicative decrease."""

    __slots__ = ("backoff_ratio", "increase", "latency_threshold")

    name = "aimd"

    def __init__(
        self,
        initial: int = 10,
        min_limit: int = 1,
        max_limit: int = 200,
        *,
        backoff_ratio: float = 0.9,
        increase: float = 1.0,
        latency_threshold: float | None = None,
        window: float = 0.1,
        min_samples: int = 10,
    ) -> None:
        super().__init__(initial, min_limit, max_limit, window, min_samples)
        ratio = check_positive(backoff_ratio, "backoff_ratio")
        if not 0.5 <= ratio < 1:
            raise ValueError(f"backoff_ratio must be in [0.5, 1), got {backoff_ratio!r}")
        self.backoff_ratio = ratio
        self.increase = check_positive(increase, "increase")
        self.latency_threshold = (
            None
            if latency_threshold is None
            else check_positive(latency_threshold, "latency_threshold")
        )

    def _decide(self, rtt: float, inflight: int, dropped: bool) -> float:
        threshold = self.latency_threshold
        if dropped or (threshold is not None and rtt > threshold):
            self.limit = self._clamp(self.limit * self.backoff_ratio)
        elif inflight * 2 >= self.limit:
            self.limit = self._clamp(self.limit + self.increase)
        return self.limit


class Gradient2Core(LimitCore):
    """Netflix's Gradient2: the ratio of long-term to short-term latency steers the limit."""

    __slots__ = (
        "_long",
        "_long_count",
        "_short",
        "long_window",
        "queue_size",
        "smoothing",
        "tolerance",
    )

    name = "gradient2"

    def __init__(
        self,
        initial: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        *,
        smoothing: float = 0.2,
        tolerance: float = 1.5,
        long_window: int = 600,
        queue_size: float = 4.0,
        window: float = 0.1,
        min_samples: int = 10,
    ) -> None:
        super().__init__(initial, min_limit, max_limit, window, min_samples)
        self.smoothing = check_positive(smoothing, "smoothing")
        if self.smoothing > 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing!r}")
        self.tolerance = check_positive(tolerance, "tolerance")
        if self.tolerance < 1:
            raise ValueError(f"tolerance must be >= 1, got {tolerance!r}")
        self.long_window = check_int(long_window, "long_window", minimum=1)
        self.queue_size = check_positive(queue_size, "queue_size")
        self._long = 0.0
        self._long_count = 0
        self._short = 0.0

    def _decide(self, rtt: float, inflight: int, dropped: bool) -> float:
        short = rtt
        # the long-term average: a plain mean while warming up, then an EMA that rises
        # slowly but falls fast (halfway per window) when latency is below it, so that a
        # recovered service is recognised at once (Netflix only shaves 5 % per sample once
        # long > 2 x short, which lets the limit overshoot after a slow spell)
        self._long_count += 1
        if self._long_count <= 10:
            self._long += (rtt - self._long) / self._long_count
        elif rtt < self._long:
            self._long += (rtt - self._long) / 2
        elif rtt <= self.tolerance * self._long:
            self._long += (rtt - self._long) * 2 / (self.long_window + 1)
        else:  # congested: learn the new latency as the baseline ten times more slowly
            self._long += (rtt - self._long) * 0.2 / (self.long_window + 1)
        long = self._long
        if inflight < self.limit / 2 and not dropped:
            return self.limit  # app-limited: too little load to learn from
        gradient = 1.0 if short <= 0 else max(0.5, min(1.0, self.tolerance * long / short))
        if dropped:
            gradient = 0.5
        target = self.limit * gradient + self.queue_size
        self.limit = self._clamp(self.limit * (1 - self.smoothing) + target * self.smoothing)
        return self.limit


class VegasCore(LimitCore):
    """TCP Vegas applied to requests: estimate the queue inside the service from latency."""

    __slots__ = ("_rtt_noload", "alpha", "beta", "smoothing")

    name = "vegas"

    def __init__(
        self,
        initial: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        *,
        alpha: float = 3.0,
        beta: float = 6.0,
        smoothing: float = 1.0,
        window: float = 0.1,
        min_samples: int = 10,
    ) -> None:
        super().__init__(initial, min_limit, max_limit, window, min_samples)
        self.alpha = check_positive(alpha, "alpha")
        self.beta = check_positive(beta, "beta")
        if self.beta <= self.alpha:
            raise ValueError(f"beta must be > alpha ({self.alpha}), got {beta!r}")
        self.smoothing = check_positive(smoothing, "smoothing")
        if self.smoothing > 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing!r}")
        self._rtt_noload = math.inf

    def _decide(self, rtt: float, inflight: int, dropped: bool) -> float:
        limit = self.limit
        step = max(1.0, math.log10(limit))
        if rtt <= 0:
            return limit
        if rtt < self._rtt_noload:
            self._rtt_noload = rtt
            return limit
        if dropped:
            target = limit - step
        elif inflight * 2 < limit:
            return limit  # app-limited
        else:
            queued = math.ceil(limit * (1 - self._rtt_noload / rtt))
            if queued <= step:
                target = limit + self.beta * step
            elif queued < self.alpha * step:
                target = limit + step
            elif queued > self.beta * step:
                target = limit - step
            else:
                return limit
        self.limit = self._clamp(limit * (1 - self.smoothing) + target * self.smoothing)
        return self.limit
