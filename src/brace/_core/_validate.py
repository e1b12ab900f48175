"""Argument checks shared by the cores: a bad value names its parameter and the range."""

from __future__ import annotations

import math

__all__ = ("check_cost", "check_finite", "check_int", "check_positive")


def check_finite(value: object, name: str, accepted: str = "") -> float:
    """A finite number (int or float, not bool); ``accepted`` describes the range for the
    message, the caller checks it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        what = f"a finite number {accepted}" if accepted else "a finite number"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)


def check_positive(value: object, name: str) -> float:
    """A finite number > 0 (int or float, not bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_int(value: object, name: str, *, minimum: int) -> int:
    """An int >= ``minimum`` (not bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_cost(cost: object, limit: int) -> int:
    """A cost in ``0..limit``: more than the limit could never be admitted."""
    if isinstance(cost, bool) or not isinstance(cost, int):
        raise TypeError(f"cost must be an int, got {type(cost).__name__}")
    if cost < 0:
        raise ValueError(f"cost must be >= 0, got {cost!r}")
    if cost > limit:
        raise ValueError(
            f"cost must be <= the limit {limit} (a larger cost could never be admitted), "
            f"got {cost!r}"
        )
    return cost
