"""Backoff schedules: how long to wait before the next attempt.

Theory of operation
-------------------
A schedule is a small immutable object with one pure method,
``delay(attempt, previous, random) -> seconds``:

- ``attempt`` is the number of the attempt that just failed (1 for the first one), so
  ``delay(1, ...)`` is the wait before the second attempt;
- ``previous`` is what the same schedule returned for the attempt before (0.0 before the
  first): only decorrelated jitter, a Markov chain, looks at it;
- ``random`` is the random source (anything with ``random() -> float`` in ``[0, 1)``, such
  as a ``random.Random``); only the jittered schedules draw from it.

Schedules combine like tenacity's ``wait`` objects: ``a + b`` adds two delays,
``s.capped(m)`` clips a delay to at most ``m``, ``s.with_jitter(f)`` draws uniformly from
``[(1 - f) * d, d]``. A plain callable ``(attempt) -> seconds`` is accepted wherever a
schedule is (:func:`as_backoff`).

The default is AWS's "decorrelated jitter" (Marc Brooker, *Exponential Backoff And
Jitter*): ``sleep = min(cap, uniform(base, 3 * previous_sleep))``, starting from ``base``.
It spreads competing clients apart as well as full jitter does while growing about as
fast as plain exponential backoff, and every delay stays within ``[base, cap]``.

Nothing here reads a clock or sleeps: the retry shell asks for a number and waits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, cast

from ._validate import check_finite

__all__ = (
    "Backoff",
    "Capped",
    "Constant",
    "DecorrelatedJitter",
    "Exponential",
    "FromCallable",
    "Jittered",
    "Linear",
    "RandomSource",
    "Sum",
    "as_backoff",
)


class RandomSource(Protocol):
    """A source of uniform floats in ``[0, 1)``; ``random.Random`` is one."""

    def random(self) -> float: ...


class Backoff:
    """A backoff schedule: ``delay(attempt, previous, random)`` seconds before the next attempt.

    Build one with the constructors below and combine them with ``+``, :meth:`capped` and
    :meth:`with_jitter`::

        Backoff.exponential(base=0.1, factor=2, cap=10.0).with_jitter()
        Backoff.constant(0.5) + Backoff.linear(0.0, 0.1)
    """

    __slots__ = ()

    @property
    def monotonic(self) -> bool:
        """True when ``delay`` never decreases as ``attempt`` grows (for any ``previous``)."""
        return False

    def delay(self, attempt: int, previous: float, random: RandomSource) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        raise NotImplementedError

    # -- combinators -------------------------------------------------------------------

    def __add__(self, other: Backoff | Callable[[int], float]) -> Backoff:
        return Sum(self, as_backoff(other, "other"))

    def __radd__(self, other: Backoff | Callable[[int], float] | int) -> Backoff:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self  # lets sum([...]) start from 0
        return Sum(as_backoff(other, "other"), self)

    def capped(self, maximum: float) -> Backoff:
        """The same schedule with every delay clipped to at most ``maximum`` seconds."""
        return Capped(self, maximum)

    def with_jitter(self, fraction: float = 1.0) -> Backoff:
        """Draw each delay uniformly from ``[(1 - fraction) * d, d]`` (1.0: full jitter)."""
        return Jittered(self, fraction)

    # -- constructors ------------------------------------------------------------------

    @staticmethod
    def constant(delay: float) -> Backoff:
        """Always ``delay`` seconds."""
        return Constant(delay)

    @staticmethod
    def linear(start: float = 0.1, step: float = 0.1) -> Backoff:
        """``start + step * (attempt - 1)`` seconds: ``start``, ``start + step``, ..."""
        return Linear(start, step)

    @staticmethod
    def exponential(
        base: float = 0.1, *, factor: float = 2.0, cap: float = 10.0, min: float = 0.0
    ) -> Backoff:
        """``max(min, min(cap, base * factor ** (attempt - 1)))`` seconds, no randomness.

        ``min`` is a floor, as tenacity's ``wait_exponential(min=...)``: no delay is
        shorter (it must be in ``[0, cap]``).
        """
        return Exponential(base, factor, cap, min)

    @staticmethod
    def full_jitter(base: float = 0.1, *, factor: float = 2.0, cap: float = 10.0) -> Backoff:
        """AWS "full jitter": ``uniform(0, min(cap, base * factor ** (attempt - 1)))``."""
        return Jittered(Exponential(base, factor, cap), 1.0)

    @staticmethod
    def decorrelated_jitter(base: float = 0.1, cap: float = 10.0) -> Backoff:
        """AWS "decorrelated jitter" (the default): ``min(cap, uniform(base, 3 * previous))``."""
        return DecorrelatedJitter(base, cap)


class Constant(Backoff):
    """Always the same delay."""

    __slots__ = ("seconds",)

    @property
    def monotonic(self) -> bool:
        return True

    def __init__(self, delay: float) -> None:
        self.seconds = check_delay(delay, "delay")

    def delay(self, attempt: int, previous: float, random: RandomSource) -> float:
        return self.seconds

    def __repr__(self) -> str:
        return f"Backoff.constant({self.seconds!r})"


class Linear(Backoff):
    """``start``, ``start + step``, ``start + 2 * step``, ..."""

    __slots__ = ("start", "step")

    @property
    def monotonic(self) -> bool:
        return True

    def __init__(self, start: float, step: float) -> None:
        self.start = check_delay(start, "start")
        self.step = check_delay(step, "step")

    def delay(self, attempt: int, previous: float, random: RandomSource) -> float:
        return self.start + self.step * (attempt - 1)

    def __repr__(self) -> str:
        return f"Backoff.linear({self.start!r}, {self.step!r})"


class Exponential(Backoff):
    """``base * factor ** (attempt - 1)``, never more than ``cap`` nor less than ``floor``."""

    __slots__ = ("base", "cap", "factor", "floor")

    @property
    def monotonic(self) -> bool:
        return True

    def __init__(self, base: float, factor: float, cap: float, floor: float = 0.0) -> None:
        self.base = check_delay(base, "base", positive=True)
        self.factor = check_finite(factor, "factor")
        if self.factor < 1:
            raise ValueError(f"factor must be a finite number >= 1, got {factor!r}")
        self.cap = check_cap(cap, self.base)
        self.floor = check_delay(floor, "min")
        if self.floor > self.cap:
            raise ValueError(
                f"min must be a number of seconds <= cap ({self.cap!r}), got {self.floor!r}"
            )

    def delay(self, attempt: int, previous: float, random: RandomSource) -> float:
        try:
            seconds = self.base * self.factor ** (attempt - 1)
        except OverflowError:
            return self.cap
        if seconds < self.floor:
            return self.floor
        return seconds if seconds < self.cap else self.cap

    def __repr__(self) -> str:
        floor = f", min={self.floor!r}" if self.floor else ""
        return (
            f"Backoff.exponential(base={self.base!r}, factor={self.factor!r}, "
            f"cap={self.cap!r}{floor})"
        )


class DecorrelatedJitter(Backoff):
    """``min(cap, uniform(base, 3 * previous))`` with ``previous`` at least ``base``."""

    __slots__ = ("base", "cap")

    def __init__(self, base: float, cap: float) -> None:
        self.base = check_delay(base, "base", positive=True)
        self.cap = check_cap(cap, self.base)

    def delay(self, attempt: int, previous: float, random: RandomSource) -> float:
        base = self.base
        high = 3.0 * previous if previous > base else 3.0 * base
        seconds = base + (high - base) * random.random()
        return seconds if seconds < self.cap else self.cap

    def __repr__(self) -> str:
        return f"Backoff.decorrelated_jitter(base={self.base!r}, cap={self.cap!r})"


class Sum(Backoff):
    """The sum of two schedules' delays (both see the sum's ``previous``)."""

    __slots__ = ("first", "second")

    def __init__(self, first: Backoff, second: Backoff) -> None:
        self.first = first
        self.second = second

    @property
    def monotonic(self) -> bool:  # a sum of non-decreasing schedules is non-decreasing
        return self.first.monotonic and self.second.monotonic

    def delay(self, attempt: int, previous: float, random: RandomSource) -> float:
        return self.first.delay(attempt, previous, random) + self.second.delay(
            attempt, previous, random
        )

    def __repr__(self) -> str:
        return f"({self.first!r} + {self.second!r})"


class Capped(Backoff):
    """Another schedule's delays, clipped to at most ``maximum``."""

    __slots__ = ("inner", "maximum")

    def __init__(self, inner: Backoff, maximum: float) -> None:
        self.inner = as_backoff(inner, "inner")
        self.maximum = check_delay(maximum, "maximum")

    @property
    def monotonic(self) -> bool:  # min(m, f) keeps f non-decreasing
        return self.inner.monotonic

    def delay(self, attempt: int, previous: float, random: RandomSource) -> float:
        seconds = self.inner.delay(attempt, previous, random)
        return seconds if seconds < self.maximum else self.maximum

    def __repr__(self) -> str:
        return f"{self.inner!r}.capped({self.maximum!r})"


class Jittered(Backoff):
    """Another schedule's delay ``d``, drawn uniformly from ``[(1 - fraction) * d, d]``."""

    __slots__ = ("fraction", "inner")

    def __init__(self, inner: Backoff, fraction: float) -> None:
        self.inner = as_backoff(inner, "inner")
        self.fraction = check_finite(fraction, "fraction")
        if not 0 <= self.fraction <= 1:
            raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")

    def delay(self, attempt: int, previous: float, random: RandomSource) -> float:
        seconds = self.inner.delay(attempt, previous, random)
        return seconds * (1.0 - self.fraction * random.random())

    def __repr__(self) -> str:
        return f"{self.inner!r}.with_jitter({self.fraction!r})"


class FromCallable(Backoff):
    """A plain function ``(attempt) -> seconds`` used as a schedule."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[[int], float]) -> None:
        self.function = function

    def delay(self, attempt: int, previous: float, random: RandomSource) -> float:
        seconds = self.function(attempt)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(
                f"backoff function {self.function!r} must return a number of seconds, "
                f"got {type(seconds).__name__}"
            )
        if not 0 <= seconds < math.inf:
            raise ValueError(
                f"backoff function {self.function!r} must return a finite number >= 0, "
                f"got {seconds!r}"
            )
        return float(seconds)

    def __repr__(self) -> str:
        return f"FromCallable({self.function!r})"


def as_backoff(value: object, name: str = "backoff") -> Backoff:
    """A :class:`Backoff` as is, a plain callable ``(attempt) -> seconds`` wrapped."""
    if isinstance(value, Backoff):
        return value
    if callable(value) and not isinstance(value, type):
        return FromCallable(cast("Callable[[int], float]", value))  # it checks each result
    raise TypeError(
        f"{name} must be a Backoff or a callable (attempt: int) -> float, "
        f"got {type(value).__name__}"
    )


def check_delay(value: object, name: str, *, positive: bool = False) -> float:
    """A finite number of seconds, >= 0 (or > 0 when ``positive``)."""
    seconds = check_finite(value, name)
    if positive and seconds <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    if seconds < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def check_cap(value: object, base: float) -> float:
    """A cap in ``[base, inf]`` (``math.inf`` means no cap)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"cap must be a number of seconds, got {type(value).__name__}")
    if value != value or value < base:  # NaN; math.isnan overflows on a huge int
        raise ValueError(f"cap must be a number of seconds >= base ({base!r}), got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int beyond any float: no cap
        return math.inf
