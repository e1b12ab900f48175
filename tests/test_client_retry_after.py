"""parse_retry_after: RFC 9110 delay-seconds (ASCII digits) or an HTTP-date, anything else
absent; never raises, bounded work."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brace._client import MAX_RETRY_AFTER
from brace.httpx import parse_retry_after

NOW = 1445412480.0  # 2015-10-21 07:28:00 UTC


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 7\t", 7.0),
        ("007", 7.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),  # IMF-fixdate
        ("Wednesday, 21-Oct-15 07:28:30 GMT", 30.0),  # obsolete RFC 850
        ("Wed Oct 21 07:28:30 2015", None),  # asctime has no zone: unreadable here
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past
        ("9" * 30, float(MAX_RETRY_AFTER)),  # huge: clamped
        ("Fri, 31 Dec 9999 23:59:59 GMT", float(MAX_RETRY_AFTER)),
    ],
)
def test_readable_values(value: str, seconds: float | None) -> None:
    """Delay-seconds and HTTP-dates give their seconds, clamped to MAX_RETRY_AFTER."""
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "soon",
        "²",  # superscript two: str.isdigit() says True
        "\u0661",  # Arabic-Indic one
        "\uff11\uff12",  # fullwidth one, two
        "-1",
        "+1",
        "1e3",
        "1.5",
        "0x10",
        "1_000",
        "inf",
        "nan",
        "1" * 65,  # over the 64 characters read
        " " * 100 + "1",
        "x" * 10_240,
        "Wed, 21 Oct 2015 07:28:30 GMT" + " " * 40,
        "Wed, 32 Oct 2015 07:28:30 GMT",
        "Wed, 21 Oct 99999999 07:28:30 GMT",
    ],
)
def test_unreadable_values_are_absent(value: str | None) -> None:
    """A sign, fraction, exponent, non-ASCII digit, junk or an over-long value is None."""
    assert parse_retry_after(value, now=NOW) is None


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200) | st.text(alphabet="0123456789 ,:-+GMTWedOct", max_size=80))
def test_never_raises(value: str) -> None:
    """Any text gives None or a finite number of seconds in [0, MAX_RETRY_AFTER]."""
    seconds = parse_retry_after(value, now=NOW)
    assert seconds is None or (math.isfinite(seconds) and 0 <= seconds <= MAX_RETRY_AFTER)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789", min_size=1, max_size=64))
def test_ascii_digits_are_delay_seconds(value: str) -> None:
    """Up to 64 ASCII digits are read as an integer number of seconds, clamped."""
    assert parse_retry_after(value) == float(min(int(value), MAX_RETRY_AFTER))


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=60).filter(lambda text: not text.isascii()))
def test_non_ascii_is_absent(value: str) -> None:
    """Any value with a non-ASCII character (Unicode digits included) is None."""
    assert parse_retry_after(value) is None
