"""Rule and Limit check every argument where they are written, naming the parameter."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette

import brace
from brace._headers import sf_string
from brace.asgi import BraceMiddleware, Limit, Rule


def test_bad_rate_fails_in_the_rule_not_on_the_first_request() -> None:
    """An unreadable rate string fails when the Rule (or Limit) is made, naming the rate."""
    with pytest.raises(ValueError, match="invalid rate 'ten/minute'"):
        Rule("/api", limits=["ten/minute"])
    with pytest.raises(ValueError, match="invalid rate"):
        Limit("10 a minute")
    with pytest.raises(TypeError, match="rate must be"):
        Limit(10)
    with pytest.raises(TypeError, match="rate must be"):
        Rule("/api", limits=[object()])  # type: ignore[list-item]


def test_bad_per_fails_at_construction() -> None:
    """``per`` must be 'client', 'ip', 'user' or a callable: a typo fails at once."""
    with pytest.raises(ValueError, match="per must be"):
        Limit("10/minute", per="usr")  # type: ignore[arg-type]
    assert Limit("10/minute", per=lambda scope: None).quota == 10


def test_impossible_cost_fails_at_construction() -> None:
    """A cost above a limit's quota could never be admitted: the Rule refuses it (#19 item 2)."""
    with pytest.raises(ValueError, match="cost must be <= every limit"):
        Rule(limits=["5/second"], cost=6)
    with pytest.raises(ValueError, match="cost"):
        Rule(limits=["100/minute", brace.TokenBucket(rate=1, per=1.0, burst=3)], cost=4)
    with pytest.raises(ValueError, match="cost"):
        BraceMiddleware(Starlette(), default=Rule(limits=["5/second"], cost=6))
    assert Rule(limits=["5/second"], cost=5).cost == 5


def test_methods_are_upper_cased_or_refused() -> None:
    """Method names are upper-cased; a non-token name or a bare string is refused."""
    assert Rule("/x", methods=["get", "Post"]).matches("POST", "/x")
    assert Rule("/x", methods=["get"]).matches("GET", "/x")
    with pytest.raises(TypeError, match="methods"):
        Rule("/x", methods="GET")
    for bad in ("GET POST", "", "GÉT", "GET\r\n"):
        with pytest.raises(ValueError, match="methods"):
            Rule("/x", methods=[bad])
    with pytest.raises(ValueError, match="methods"):
        Rule("/x", methods=[])
    with pytest.raises(ValueError, match="methods"):
        Rule("/x", methods=[b"GET"])  # type: ignore[list-item]


def test_other_rule_arguments_are_checked() -> None:
    """exempt, name, timeout, priority and breaker are checked with the parameter named."""
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"exempt": "yes"}, TypeError, "exempt"),
        ({"name": ""}, ValueError, "name"),
        ({"name": 3}, TypeError, "name"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": float("nan")}, ValueError, "timeout"),
        ({"priority": 1.5}, TypeError, "priority"),
        ({"breaker": object()}, TypeError, "breaker"),
        ({"cost": True}, ValueError, "cost"),
        ({"limits": "10/minute"}, TypeError, "limits"),
        ({"limits": Limit("10/minute")}, TypeError, "limits"),
    ]
    for options, error, parameter in cases:
        with pytest.raises(error, match=parameter):
            Rule("/x", **options)


def test_policy_names_must_be_structured_field_strings() -> None:
    """Non-ASCII names (which escaping would alter: 'café' and 'cafè' both 'caf?') are refused."""
    with pytest.raises(ValueError, match="printable ASCII"):
        Limit("10/minute", name="café")
    with pytest.raises(ValueError, match="printable ASCII"):
        Rule("/x", name="cafè")
    with pytest.raises(ValueError, match="printable ASCII"):
        Limit("10/minute", name="x" * 65)
    with pytest.raises(ValueError, match="share the name"):
        Rule("/x", limits=[Limit("1/s", name="a"), Limit("2/m", name="a")])
    with pytest.raises(ValueError, match="share the name"):
        Rule("/x", limits=["1/s", "2/m"])
    rule = Rule("/x", limits=["1/s", Limit("2/m", per="ip"), Limit("3/h", per="user")])
    assert [name for _, name in rule._limits] == ["x", "x-ip", "x-user"]


@given(st.lists(st.text(min_size=1, max_size=70), min_size=2, max_size=4))
def test_accepted_names_stay_distinct_when_sent(names: list[str]) -> None:
    """Whatever names a rule accepts reach clients as distinct sf-strings."""
    try:
        rule = Rule("/x", limits=[Limit(f"{n + 1}/s", name=name) for n, name in enumerate(names)])
    except ValueError:
        return
    sent = [sf_string(name) for _, name in rule._limits]
    assert len(set(sent)) == len(sent) == len(names)
    assert all(text[1:-1].replace('\\"', '"').replace("\\\\", "\\") in names for text in sent)


def test_fastapi_rate_limit_checks_name_and_cost() -> None:
    """The FastAPI dependency refuses a non-ASCII policy name and an impossible cost."""
    from brace.fastapi import RateLimit

    with pytest.raises(ValueError, match="name"):
        RateLimit("10/minute", name="café")
    with pytest.raises(ValueError, match="cost"):
        RateLimit("5/second", cost=6)
    with pytest.raises(ValueError, match="invalid rate"):
        RateLimit("ten/minute")
