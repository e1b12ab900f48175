"""Rate strings: ``"10/minute"``, ``"20/15 minutes"``, ``"100 per second"``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ._core._validate import check_int

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
    \s* (?P<limit>\d+)
    \s* (?:/|\bper\b)
    \s* (?P<count>\d+(?:\.\d+)?)?
    \s* (?P<unit>[a-z]+)
    \s*
    """,
    re.IGNORECASE | re.VERBOSE,
)

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
        check_int(self.limit, "limit", minimum=1)
        period = self.period
        if isinstance(period, bool) or not isinstance(period, (int, float)):
            raise TypeError(f"period must be a number of seconds, got {type(period).__name__}")
        if not math.isfinite(period) or period <= 0:
            raise ValueError(f"period must be a finite number of seconds > 0, got {period!r}")
        object.__setattr__(self, "period", float(period))

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
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid rate {text!r}: {_ACCEPTED}")
    seconds = _UNITS.get(match["unit"].lower())
    if seconds is None:
        raise ValueError(f"invalid rate {text!r}: unknown unit {match['unit']!r}; {_ACCEPTED}")
    limit = int(match["limit"])
    if limit < 1:
        raise ValueError(f"invalid rate {text!r}: the limit must be >= 1; {_ACCEPTED}")
    count = float(match["count"]) if match["count"] is not None else 1.0
    if count <= 0:
        raise ValueError(f"invalid rate {text!r}: the period must be > 0; {_ACCEPTED}")
    return Rate(limit, count * seconds)
