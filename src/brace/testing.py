"""Helpers for testing code that uses brace: a fake clock you move by hand.

Every brace primitive takes ``clock=``, a zero-argument callable returning seconds.
Pass a :class:`FakeClock` to drive it deterministically in synchronous tests, or
``anyio.current_time`` when the test runs on a virtual-time event loop (trio's
``MockClock``, ``looptime`` on asyncio) so that the primitive's clock and its sleeps agree.
"""

from __future__ import annotations

import math

__all__ = ("FakeClock",)


class FakeClock:
    """A monotonic clock that only moves when told to.

    >>> clock = FakeClock()
    >>> clock.advance(1.5)
    >>> clock()
    1.5
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = _check_time(start, "start")

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        """The current reading, in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0); going backwards is a ``ValueError``."""
        seconds = _check_time(seconds, "seconds")
        if seconds < 0:
            raise ValueError(
                f"seconds must be >= 0 (a clock never goes backwards), got {seconds!r}"
            )
        self._now += seconds

    def set(self, now: float) -> None:
        """Jump to ``now``, which must not be earlier than the current reading."""
        now = _check_time(now, "now")
        if now < self._now:
            raise ValueError(
                f"now must be >= the current time {self._now!r} (a clock never goes backwards)"
            )
        self._now = now

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"


def _check_time(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)
