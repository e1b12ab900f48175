"""RateLimit / RateLimit-Policy fields against draft-ietf-httpapi-ratelimit-headers-10."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from brace._headers import PolicyField, delay_seconds, ratelimit_item, sf_string

# RFC 9651 sf-list of sf-string items with integer parameters, the only shape used here.
_MEMBER = re.compile(r'"((?:[^"\\]|\\["\\])*)"((?:;[a-z*][a-z0-9_.*-]*=\d{1,15})*)')


def parse_list(value: str) -> list[tuple[str, dict[str, int]]]:
    """A strict parser of the sf-list shape the draft uses: fails on anything else."""
    members = []
    position = 0
    while True:
        match = _MEMBER.match(value, position)
        assert match is not None, f"not an sf-list member at {value[position:]!r}"
        name = re.sub(r"\\(.)", r"\1", match[1])
        params = {
            key: int(number)
            for key, number in (param.split("=") for param in match[2].split(";")[1:])
        }
        members.append((name, params))
        position = match.end()
        if position == len(value):
            return members
        assert value.startswith(", ", position), f"bad separator in {value!r}"
        position += 2


def test_draft_policy_example() -> None:
    """The draft's 'RateLimit-Policy: "default";q=100;w=10' is produced exactly."""
    assert PolicyField("default", 100, 10.0).member == '"default";q=100;w=10'


def test_draft_ratelimit_example() -> None:
    """The draft's 'RateLimit: "default";r=50;t=30' is produced exactly."""
    assert ratelimit_item(PolicyField("default", 100, 10.0), 50, 30.0) == '"default";r=50;t=30'


def test_draft_multiple_policies_example() -> None:
    """Several policies form one list field, in the draft's member syntax."""
    value = ", ".join(
        [PolicyField("permin", 50, 60.0).member, PolicyField("perhr", 1000, 3600.0).member]
    )
    assert value == '"permin";q=50;w=60, "perhr";q=1000;w=3600'
    assert parse_list(value) == [("permin", {"q": 50, "w": 60}), ("perhr", {"q": 1000, "w": 3600})]


def test_draft_throttled_example() -> None:
    """An exhausted policy reads r=0 and t the seconds to wait, like the draft's 429 example."""
    item = ratelimit_item(PolicyField("problemPolicy", 10, 60.0), 0, 9.2)
    assert item == '"problemPolicy";r=0;t=10'


def test_delay_seconds_rounds_up_and_clamps() -> None:
    """Delays round up (never early), are never negative, and stay within 15 digits."""
    assert delay_seconds(0.0) == 0
    assert delay_seconds(0.0, minimum=1) == 1
    assert delay_seconds(0.2) == 1
    assert delay_seconds(30.0) == 30
    assert delay_seconds(30.000000001) == 30  # float noise is not a whole extra second
    assert delay_seconds(30.01) == 31
    assert delay_seconds(-5.0) == 0
    assert delay_seconds(float("nan")) == 0
    assert delay_seconds(float("inf")) == 999_999_999_999_999


def test_negative_remaining_is_zero() -> None:
    """A remaining count below zero is reported as 0."""
    assert ratelimit_item(PolicyField("a", 1, 1.0), -3, 1.0) == '"a";r=0;t=1'


def test_sf_string_escapes() -> None:
    """Quotes and backslashes are escaped; characters outside printable ASCII are replaced."""
    assert sf_string('a"b\\c') == '"a\\"b\\\\c"'
    assert sf_string("café\n") == '"caf??"'


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.characters(max_codepoint=300), max_size=20) | st.just('a", "b'),
    st.integers(min_value=0, max_value=10**18),
    st.floats(min_value=0, max_value=1e18, allow_nan=False),
    st.integers(min_value=-(10**6), max_value=10**18),
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_any_values_give_valid_fields(
    name: str, quota: int, window: float, remaining: int, reset: float
) -> None:
    """Whatever the name and numbers, both fields parse as sf-lists with in-range integers."""
    policy = PolicyField(name, max(quota, 1), window)
    ((parsed_name, params),) = parse_list(policy.member)
    assert set(params) == {"q", "w"}
    ((_, item),) = parse_list(ratelimit_item(policy, remaining, reset))
    assert set(item) == {"r", "t"}
    assert all(0 <= value <= 999_999_999_999_999 for value in (*params.values(), *item.values()))
    if all(" " <= char <= "~" for char in name):
        assert parsed_name == name
    # r is the clamped remaining count, t what delay_seconds says of the reset
    assert item == {"r": min(max(remaining, 0), 999_999_999_999_999), "t": delay_seconds(reset)}
