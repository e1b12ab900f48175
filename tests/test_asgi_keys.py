"""Key helpers: a header, an API key, a cookie, a bearer token's (unverified) subject."""

from __future__ import annotations

import base64
import json
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from brace._keys_http import MAX_VALUE
from brace.asgi import (
    BraceMiddleware,
    Limit,
    Rule,
    by_api_key,
    by_bearer_subject,
    by_cookie,
    by_header,
)


def scope(*headers: tuple[str, str], query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "headers": [(name.encode(), value.encode("latin-1")) for name, value in headers],
        "query_string": query,
    }


def token(claims: Any) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJIUzI1NiJ9.{payload}.c2lnbmF0dXJl"


def test_by_header_reads_the_last_value() -> None:
    """by_header gives the last field line's value, stripped; absent or empty is None."""
    key = by_header("X-Tenant")
    assert key(scope(("x-tenant", "a"), ("x-tenant", " b "))) == "b"
    assert key(scope(("x-other", "a"))) is None
    assert key(scope(("x-tenant", "  "))) is None
    assert key(scope(("x-tenant", "x" * (MAX_VALUE + 1)))) is None  # unreadable: absent
    with pytest.raises(ValueError, match="name"):
        by_header("")


def test_by_api_key_from_header_or_query() -> None:
    """by_api_key reads its header, then (when asked) a query parameter."""
    key = by_api_key(query="api_key")
    assert key(scope(("x-api-key", "k1"))) == "k1"
    assert key(scope(query=b"a=1&api_key=k2")) == "k2"
    assert key(scope()) is None
    assert by_api_key()(scope(query=b"api_key=k2")) is None
    assert by_api_key("authorization")(scope(("authorization", "ApiKey z"))) == "ApiKey z"


def test_by_cookie() -> None:
    """by_cookie finds its cookie among others, quoted or not."""
    key = by_cookie("session")
    assert key(scope(("cookie", 'theme=dark; session="s-1"; x=y'))) == "s-1"
    assert key(scope(("cookie", "theme=dark"))) is None
    assert key(scope()) is None
    with pytest.raises(ValueError, match="name"):
        by_cookie("a=b")


def test_by_bearer_subject_decodes_without_verifying() -> None:
    """The subject of a JWT is read (not verified); anything else is None."""
    key = by_bearer_subject()
    assert key(scope(("authorization", f"Bearer {token({'sub': 'alice'})}"))) == "alice"
    assert key(scope(("authorization", f"bearer {token({'sub': 42})}"))) == "42"
    assert (
        by_bearer_subject("client_id")(
            scope(("authorization", f"Bearer {token({'client_id': 'c'})}"))
        )
        == "c"
    )
    for bad in ("Basic dXNlcg==", "Bearer nonsense", "Bearer a.b.c", f"Bearer {token([1])}"):
        assert key(scope(("authorization", bad))) is None
    assert key(scope(("authorization", f"Bearer {token({'sub': True})}"))) is None
    assert key(scope()) is None


def test_helpers_read_request_objects_too() -> None:
    """A Starlette request (``.scope``) and an aiohttp-like one (``raw_headers``) work."""
    request = Request(scope(("x-api-key", "k")))
    assert by_api_key()(request) == "k"

    class AiohttpLike(dict[str, Any]):  # aiohttp's request is a mapping of its storage
        raw_headers = ((b"X-Api-Key", b"k2"),)
        query_string = "api_key=q"

    assert by_api_key()(AiohttpLike()) == "k2"
    assert by_api_key("x-none", query="api_key")(AiohttpLike()) == "q"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=400)), max_size=8))
def test_helpers_never_raise(headers: list[tuple[bytes, bytes]]) -> None:
    """Whatever the headers, every helper returns a str or None."""
    request = {"type": "http", "headers": headers, "query_string": b""}
    for key in (by_header("x-a"), by_api_key(), by_cookie("s"), by_bearer_subject()):
        assert key(request) is None or isinstance(key(request), str)


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def test_limits_keyed_by_api_key_and_bearer_subject() -> None:
    """Through the middleware: a per-API-key limit and users from the token subject."""
    app = BraceMiddleware(
        Starlette(routes=[Route("/", hello)]),
        default=Rule(limits=[Limit("1/minute", per="user"), Limit("2/minute", per=by_api_key())]),
        user=by_bearer_subject(),
        clock=anyio.current_time,
    )
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:

        async def status(headers: dict[str, str]) -> int:
            return (await http.get("/", headers=headers)).status_code

        alice = {"authorization": f"Bearer {token({'sub': 'alice'})}"}
        bob = {"authorization": f"Bearer {token({'sub': 'bob'})}"}
        assert [await status(alice), await status(alice)] == [200, 429]
        assert await status(bob) == 200
        assert [await status({"x-api-key": "k"}) for _ in range(3)] == [200, 200, 429]
        assert await status({"x-api-key": "j"}) == 200
