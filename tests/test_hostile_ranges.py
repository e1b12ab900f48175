"""Issue 19, item 4: extreme values fail at construction, naming the parameter and range.

Every parameter is checked against what the cores' arithmetic can represent (finite,
positive, within float range after the divisions the cores do), and rate strings accept
ASCII digits only and name themselves in every error.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import brace
from brace._core._validate import MAX_COUNT, MAX_SECONDS, MIN_INTERVAL, MIN_WINDOW

EXTREMES: list[tuple[str, Callable[[], object], str]] = [
    ("TokenBucket(1e-320)", lambda: brace.TokenBucket(1e-320), "rate"),
    ("TokenBucket(1e308, per=1e-300)", lambda: brace.TokenBucket(1e308, per=1e-300), "rate"),
    ("SlidingWindow(5, 1e-320)", lambda: brace.SlidingWindow(5, 1e-320), "window"),
    ("SlidingWindow(10**400, 1.0)", lambda: brace.SlidingWindow(10**400, 1.0), "limit"),
    (
        "SlidingWindow(10**400, 1.0, exact)",
        lambda: brace.SlidingWindow(10**400, 1.0, exact=True),
        "limit",
    ),
    ("TokenBucket(1, burst=10**400)", lambda: brace.TokenBucket(1, burst=10**400), "burst"),
    ("TokenBucket(10**400)", lambda: brace.TokenBucket(10**400), "rate"),
    ("TokenBucket(1e20)", lambda: brace.TokenBucket(1e20, burst=1), "rate"),
    ("TokenBucket(1, per=1e300)", lambda: brace.TokenBucket(1, per=1e300), "per"),
    (
        "TokenBucket(1, per=1e14, burst=100)",
        lambda: brace.TokenBucket(1, per=1e14, burst=100),
        "burst",
    ),
    ("TokenBucket(1e17, per=1e8)", lambda: brace.TokenBucket(1e17, per=1e8), "burst"),
    ("SlidingWindow(5, 1e300)", lambda: brace.SlidingWindow(5, 1e300), "window"),
    ("SlidingWindow(5, -0.0)", lambda: brace.SlidingWindow(5, -0.0), "window"),
    ("Rate(10**400, 1.0)", lambda: brace.Rate(10**400, 1.0), "limit"),
    ("Rate(1, 1e-320)", lambda: brace.Rate(1, 1e-320), "period"),
    ("Rate(1, 10**400)", lambda: brace.Rate(1, 10**400), "period"),
]


@pytest.mark.parametrize(("label", "make", "parameter"), EXTREMES, ids=[e[0] for e in EXTREMES])
def test_item4_extreme_values_fail_at_construction(
    label: str, make: Callable[[], object], parameter: str
) -> None:
    """Each extreme value of item 4 is a ValueError at construction naming its parameter."""
    with pytest.raises(ValueError, match=re.escape(parameter)) as info:
        make()
    # The message states the range and never Python's own complaint about the number.
    assert "must be" in str(info.value)
    assert "Exceeds the limit" not in str(info.value)


def test_item4_the_edges_of_the_ranges_work() -> None:
    """The extremes of the accepted ranges construct and decide without error."""
    cases: list[brace.TokenBucket | brace.SlidingWindow] = [
        brace.TokenBucket(1 / MIN_INTERVAL, per=1.0, burst=1),
        brace.TokenBucket(1.0, per=MAX_SECONDS, burst=1),
        brace.TokenBucket(1.0, per=1.0, burst=MAX_COUNT // 2**30),
        brace.SlidingWindow(MAX_COUNT, MIN_WINDOW),
        brace.SlidingWindow(MAX_COUNT, MAX_SECONDS),
        brace.SlidingWindow(1, MIN_WINDOW, exact=True),
        brace.SlidingWindow(1, MAX_SECONDS, exact=True),
    ]
    for limiter in cases:
        for _ in range(3):
            decision = limiter.try_acquire()
            assert decision.remaining >= 0
            assert decision.retry_after >= 0
            assert decision.reset_after >= 0


@pytest.mark.parametrize(
    "text",
    [
        "1" + "0" * 5000 + "/s",
        "1" + "0" * 60 + "/s",
        "10000000000000000000/s",
        "\u0661\u0660/minute",  # Arabic-Indic digits ten
        "10/\u0665 minutes",
        "\u00b2/s",  # superscript two
        "10/\u017f",  # long s, which IGNORECASE would fold to "s" in Unicode mode
        "10/\u212a",  # Kelvin sign
        "10/1" + "0" * 400 + " s",
        "10/0.0000000001 s",
        "1/" + " " * 5000 + "!",
    ],
)
def test_item4_rate_strings_name_themselves(text: str) -> None:
    """parse_rate refuses non-ASCII digits and huge numbers with brace's message naming the text."""
    with pytest.raises(ValueError, match="invalid rate") as info:
        brace.parse_rate(text)
    message = str(info.value)
    assert repr(text[:50])[:-1] in message  # the text, or its first 50 characters
    assert "Exceeds the limit" not in message
    assert len(message) < 1000


@given(st.text(max_size=200))
def test_item4_any_text_is_a_rate_or_a_value_error_naming_it(text: str) -> None:
    """Any text parses to a Rate within the ranges or is a ValueError naming (a prefix of) it."""
    message = ""
    try:
        rate = brace.parse_rate(text)
    except ValueError as error:
        message = str(error)
    if message:
        assert repr(text[:50])[:-1] in message
        return
    assert 1 <= rate.limit <= MAX_COUNT
    assert MIN_WINDOW <= rate.period <= MAX_SECONDS
    assert text.isascii()


@given(limit=st.integers(1, MAX_COUNT), count=st.integers(1, 10**6))
def test_item4_ascii_rates_still_parse(limit: int, count: int) -> None:
    """Every ASCII rate within the ranges parses to its numbers."""
    rate = brace.parse_rate(f"{limit}/{count} minutes")
    assert rate == brace.Rate(limit, count * 60.0)
