"""Rate strings: the accepted forms, their values, and precise errors for the rest."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

import brace
from brace._core.window import SlidingWindowCounter


@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [
        ("10/minute", 10, 60.0),
        ("10/minutes", 10, 60.0),
        ("5/min", 5, 60.0),
        ("5/mins", 5, 60.0),
        ("5/m", 5, 60.0),
        ("100/second", 100, 1.0),
        ("100/seconds", 100, 1.0),
        ("100/sec", 100, 1.0),
        ("100/s", 100, 1.0),
        ("7/hour", 7, 3600.0),
        ("7/hr", 7, 3600.0),
        ("7/hrs", 7, 3600.0),
        ("7/h", 7, 3600.0),
        ("1/day", 1, 86400.0),
        ("1/days", 1, 86400.0),
        ("1/d", 1, 86400.0),
        ("20/15 minutes", 20, 900.0),
        ("20/15minutes", 20, 900.0),
        ("  20 /  15   minutes  ", 20, 900.0),
        ("3/2 hours", 3, 7200.0),
        ("3/0.5 s", 3, 0.5),
        ("100 per second", 100, 1.0),
        ("60 per minute", 60, 60.0),
        ("60 PER 2 Minutes", 60, 120.0),
        ("10/MINUTE", 10, 60.0),
        ("10/1 minute", 10, 60.0),
    ],
)
def test_accepted_forms(text: str, limit: int, period: float) -> None:
    """Every documented form parses to the right limit and period in seconds."""
    assert brace.parse_rate(text) == brace.Rate(limit=limit, period=period)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10",
        "minute",
        "10/",
        "/minute",
        "10/fortnight",
        "10/minute/hour",
        "ten/minute",
        "-1/minute",
        "1.5/minute",
        "10 minute",
        "10/-1 minute",
        "10//minute",
        "10/minute extra",
        "10 perminute",
    ],
)
def test_rejected_forms_say_what_is_accepted(text: str) -> None:
    """A malformed rate is a ValueError quoting the input and listing the accepted forms."""
    with pytest.raises(ValueError, match="invalid rate") as error:
        brace.parse_rate(text)
    message = str(error.value)
    assert repr(text) in message
    assert "'10/minute'" in message
    assert "second (sec, s)" in message
    assert "day (d)" in message


def test_unknown_unit_is_named() -> None:
    """An unknown unit is named in the error."""
    with pytest.raises(ValueError, match="unknown unit 'fortnight'"):
        brace.parse_rate("10/fortnight")


@pytest.mark.parametrize(("text", "what"), [("0/minute", "limit"), ("5/0 minutes", "period")])
def test_zero_limit_or_period(text: str, what: str) -> None:
    """A zero limit or zero period is refused, naming which."""
    with pytest.raises(ValueError, match=f"the {what} must be"):
        brace.parse_rate(text)


def test_not_a_string() -> None:
    """A rate that is not a str is a TypeError."""
    with pytest.raises(TypeError, match="rate must be a str"):
        brace.parse_rate(10)  # type: ignore[arg-type]


def test_rate_validates_its_fields() -> None:
    """Rate refuses a non-int or < 1 limit and a non-positive or infinite period."""
    with pytest.raises(TypeError, match="limit must be an int"):
        brace.Rate(1.5, 60.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limit must be an int"):
        brace.Rate(True, 60.0)
    with pytest.raises(ValueError, match="limit must be an int >= 1"):
        brace.Rate(0, 60.0)
    with pytest.raises(TypeError, match="period must be a number"):
        brace.Rate(1, "60")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period must be a finite number of seconds >= 1e-06"):
        brace.Rate(1, 0)
    with pytest.raises(ValueError, match="period must be a finite number of seconds >= 1e-06"):
        brace.Rate(1, float("inf"))


def test_rate_is_frozen_and_normalises_period() -> None:
    """Rate is a frozen dataclass whose period is stored as a float."""
    rate = brace.Rate(10, 60)
    assert rate.period == 60.0
    assert isinstance(rate.period, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rate.limit = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (brace.Rate(10, 60.0), "10/minute"),
        (brace.Rate(20, 900.0), "20/15 minutes"),
        (brace.Rate(5, 1.0), "5/second"),
        (brace.Rate(5, 86400.0), "5/day"),
        (brace.Rate(5, 7200.0), "5/2 hours"),
        (brace.Rate(5, 90.0), "5/90 seconds"),
        (brace.Rate(5, 0.25), "5/0.25 seconds"),
    ],
)
def test_str_reads_back(rate: brace.Rate, text: str) -> None:
    """str(rate) is a rate string that parses back to the same Rate."""
    assert str(rate) == text
    assert brace.parse_rate(text) == rate


@given(
    limit=st.integers(min_value=1, max_value=10**6),
    count=st.integers(min_value=1, max_value=1000),
    unit=st.sampled_from(["s", "sec", "minutes", "min", "h", "hours", "day", "d"]),
    spaces=st.sampled_from(["", " ", "  "]),
)
def test_round_trip(limit: int, count: int, unit: str, spaces: str) -> None:
    """Any well-formed rate parses, and its str parses back to the same Rate."""
    rate = brace.parse_rate(f"{limit}{spaces}/{spaces}{count}{spaces}{unit}")
    assert rate.limit == limit
    assert brace.parse_rate(str(rate)) == rate


def test_rate_as_limiter_policy_is_a_counter() -> None:
    """A Rate or a rate string as a RateLimiter policy is a sliding-window counter."""
    for policy in ("20/15 minutes", brace.Rate(20, 900.0)):
        limiter = brace.RateLimiter(policy)
        assert isinstance(limiter.policy, SlidingWindowCounter)
        assert (limiter.policy.limit, limiter.policy.window) == (20, 900.0)


@pytest.mark.parametrize("period", [1e-05, 1.5e-06, 3e14, 0.1, 7.25])
def test_a_rate_reads_back_from_its_text_even_in_exponent_form(period: float) -> None:
    """str(Rate) writes a period no unit divides as Python writes the float (1e-05), and
    parse_rate reads that back (found by the hostile-constructor property)."""
    rate = brace.Rate(10, period)
    assert brace.parse_rate(str(rate)) == rate
