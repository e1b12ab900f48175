"""Argument checks shared by the cores: a bad value names its parameter and the range.

The ranges are what the arithmetic of the cores can represent, not only what makes sense:
every duration ends up added to a clock reading or divided by another, every count is
compared with a float. A value outside them would not fail here but on first use, with
an ``OverflowError``, a ``ZeroDivisionError`` or a NaN far from its cause.
"""

from __future__ import annotations

import math

__all__ = (
    "MAX_COUNT",
    "MAX_RING",
    "MAX_SECONDS",
    "MIN_INTERVAL",
    "MIN_WINDOW",
    "check_cost",
    "check_finite",
    "check_int",
    "check_positive",
    "check_seconds",
    "shown",
)

#: The longest duration accepted, in seconds (about 31.7 million years). Float seconds
#: near it are 0.125 s apart, and sums of a few of them with a clock reading stay far
#: from overflow.
MAX_SECONDS = 1e15
#: The largest count (limit, burst) accepted: 2**53, the last integer from which a float
#: can still count one by one.
MAX_COUNT = 2**53
#: The most slots of a ring or bucket array sized by a parameter and allocated at once (a
#: breaker's count window and time buckets, a retry budget's buckets, a reservoir): a
#: larger size would be memory taken at construction for nothing a window needs.
MAX_RING = 10**6
#: The shortest window accepted, in seconds: the windows compare times with a slack of
#: 1e-9 s, so a window must be much longer than that.
MIN_WINDOW = 1e-6
#: The shortest time between two tokens of a bucket (a billion a second): at a clock
#: reading of 1e6 s, floats are 1.2e-10 s apart, so a shorter interval is lost in rounding.
MIN_INTERVAL = 1e-9


def shown(value: object) -> str:
    """``repr(value)``, short: a huge int by its size (its repr may be refused), a long
    text cut to its first 50 characters."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**50:
        return f"{'-' if value < 0 else ''}an int of {value.bit_length()} bits"
    if isinstance(value, str) and len(value) > 50:
        return f"{value[:50]!r}... ({len(value)} characters)"
    return repr(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def check_finite(value: object, name: str, accepted: str = "") -> float:
    """A finite number (int or float, not bool); ``accepted`` describes the range for the
    message, the caller checks it."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    assert isinstance(value, (int, float))
    if not _finite(value):
        what = f"a finite number {accepted}" if accepted else "a finite number"
        raise ValueError(f"{name} must be {what}, got {shown(value)}")
    return float(value)


def check_positive(value: object, name: str) -> float:
    """A finite number > 0 (int or float, not bool)."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    assert isinstance(value, (int, float))
    if not _finite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {shown(value)}")
    return float(value)


def check_seconds(value: object, name: str, *, minimum: float = 0.0) -> float:
    """A duration: a number of seconds > 0 (or >= ``minimum`` when given) and <=
    `MAX_SECONDS`."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    assert isinstance(value, (int, float))
    low_ok = value >= minimum if minimum > 0 else value > 0
    if not _finite(value) or not low_ok or value > MAX_SECONDS:
        low = f">= {minimum:g}" if minimum > 0 else "> 0"
        raise ValueError(
            f"{name} must be a finite number of seconds {low} and <= {MAX_SECONDS:g}, "
            f"got {shown(value)}"
        )
    return float(value)


def check_int(value: object, name: str, *, minimum: int, maximum: int | None = None) -> int:
    """An int >= ``minimum`` (and <= ``maximum`` when given; not bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        accepted = f">= {minimum}" if maximum is None else f">= {minimum} and <= {maximum}"
        raise ValueError(f"{name} must be an int {accepted}, got {shown(value)}")
    return value


def check_cost(cost: object, limit: int) -> int:
    """A cost in ``0..limit``: more than the limit could never be admitted."""
    if isinstance(cost, bool) or not isinstance(cost, int):
        raise TypeError(f"cost must be an int, got {type(cost).__name__}")
    if cost < 0:
        raise ValueError(f"cost must be >= 0, got {shown(cost)}")
    if cost > limit:
        raise ValueError(
            f"cost must be <= the limit {limit} (a larger cost could never be admitted), "
            f"got {shown(cost)}"
        )
    return cost


def check_random(value: object, name: str = "random") -> object:
    """``value`` if it is None or has a ``random()`` method (a ``random.Random``), else a
    ``TypeError``: the one randomness parameter of every primitive."""
    if value is not None and not callable(getattr(value, "random", None)):
        raise TypeError(
            f"{name} must be a random.Random (anything with random()) or None, "
            f"got {type(value).__name__}"
        )
    return value
