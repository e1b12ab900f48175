"""Rate strings: ``"10/minute"``, ``"20/15 minutes"``, ``"100 per second"``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._core._validate import MAX_COUNT, MAX_SECONDS, MIN_WINDOW, check_int, check_seconds, shown

__all__ = ("Rate", "parse_rate")

_UNITS: dict[str, float] = {}
for _seconds, _names in (
    (1.0, ("second", "seconds", "sec", "secs", "s")),
    (60.0, ("minute", "minutes", "min", "mins", "m")),
    (3600.0, ("hour", "hours", "hr", "hrs", "h")),
    (86400.0, ("day", "days", "d")),
):
    for _name in _names:
        _UNITS[_name] = _seconds

_RATE = re.compile(
    r"""
    \s* (?P<limit>[0-9]+)
    \s* (?:/|\bper\b)
    \s* (?P<count>[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?)?  # (as str(Rate) writes it)
    \s* (?P<unit>[a-z]+)
    \s*
    """,
    re.ASCII | re.IGNORECASE | re.VERBOSE,
)
# Longer rate strings are refused before the expression looks at them (its runs of
# optional spaces would otherwise cost time quadratic in the length of a bad string).
_MAX_TEXT = 100

_ACCEPTED = (
    "expected '<limit>/<period>' or '<limit> per <period>', such as '10/minute', "
    "'20/15 minutes', '5/min' or '100 per second': <limit> is an integer >= 1 and "
    "<period> an optional positive number followed by a unit: second (sec, s), "
    "minute (min, m), hour (hr, h) or day (d), singular or plural"
)

_CANONICAL = ((86400.0, "day"), (3600.0, "hour"), (60.0, "minute"), (1.0, "second"))


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``limit`` requests per ``period`` seconds.

    Written as a string it reads ``"10/minute"``; `parse_rate` turns one into the
    other. As the policy of a `brace.RateLimiter` a rate means a sliding-window
    counter of ``limit`` requests per ``period`` seconds (the same as
    ``brace.SlidingWindow(limit=limit, window=period)``).

    >>> Rate(10, 60.0)
    Rate(limit=10, period=60.0)
    >>> str(Rate(20, 900.0))
    '20/15 minutes'
    """

    limit: int
    period: float

    def __post_init__(self) -> None:
        check_int(self.limit, "limit", minimum=1, maximum=MAX_COUNT)
        period = check_seconds(self.period, "period", minimum=MIN_WINDOW)
        object.__setattr__(self, "period", period)

    def __str__(self) -> str:
        for seconds, unit in _CANONICAL:
            count = self.period / seconds
            if count >= 1 and count == int(count):
                if count == 1:
                    return f"{self.limit}/{unit}"
                return f"{self.limit}/{int(count)} {unit}s"
        return f"{self.limit}/{self.period!r} seconds"


def parse_rate(text: str) -> Rate:
    """Read a rate string such as ``"10/minute"`` into a `Rate`.

    Accepted: ``<limit>/<period>`` or ``<limit> per <period>``, where ``<limit>`` is an
    integer >= 1 and ``<period>`` an optional positive number followed by a unit:
    ``second`` (``sec``, ``s``), ``minute`` (``min``, ``m``), ``hour`` (``hr``, ``h``) or
    ``day`` (``d``), singular or plural, any case, spaces anywhere between the parts.

    >>> parse_rate("20/15 minutes")
    Rate(limit=20, period=900.0)
    >>> parse_rate("100 per second")
    Rate(limit=100, period=1.0)

    Anything else is a `ValueError` that says what is accepted.
    """
    if not isinstance(text, str):
        raise TypeError(f"rate must be a str such as '10/minute', got {type(text).__name__}")
    if len(text) > _MAX_TEXT:
        raise ValueError(
            f"invalid rate {shown(text)}: a rate string is at most {_MAX_TEXT} characters; "
            f"{_ACCEPTED}"
        )
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid rate {text!r}: {_ACCEPTED}")
    seconds = _UNITS.get(match["unit"].lower())
    if seconds is None:
        raise ValueError(f"invalid rate {text!r}: unknown unit {match['unit']!r}; {_ACCEPTED}")
    digits = match["limit"].lstrip("0")
    # Compared as text: int() of a long string is slow (and refused past 4,300 digits).
    if len(digits) > len(str(MAX_COUNT)) or int(digits or "0") > MAX_COUNT:
        raise ValueError(f"invalid rate {text!r}: the limit must be <= {MAX_COUNT}; {_ACCEPTED}")
    limit = int(digits or "0")
    if limit < 1:
        raise ValueError(f"invalid rate {text!r}: the limit must be >= 1; {_ACCEPTED}")
    count = float(match["count"]) if match["count"] is not None else 1.0
    period = count * seconds
    if not MIN_WINDOW <= period <= MAX_SECONDS:
        raise ValueError(
            f"invalid rate {text!r}: the period must be between {MIN_WINDOW:g} and "
            f"{MAX_SECONDS:g} seconds, got {period:g} s; {_ACCEPTED}"
        )
    return Rate(limit, period)
