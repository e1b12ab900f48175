"""Hostile headers through BraceMiddleware: any header list gives an answer, never a 500.

Header names, values, repetitions and sizes are drawn by hypothesis (values up to 64 KB,
the most a server lets through; uvicorn's h11 allows 64 KB of headers by default) and sent
from a trusted proxy, so that every header brace reads is parsed. The CPU per request is
measured in ``benchmarks/asgi_bench.py``, not here.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_scopes import http_scope
from brace.asgi import BraceMiddleware, Limit, Rule

Headers = list[tuple[bytes, bytes]]

_READ = [b"x-forwarded-for", b"forwarded", b"x-real-ip", b"authorization", b"cookie"]
_READ += [b"x-api-key", b"x-user", b"host", b"origin", b"access-control-request-method"]

_NAMES = st.one_of(st.sampled_from(_READ), st.binary(max_size=24))
_SMALL = st.binary(max_size=300)
_PIECES = st.sampled_from(
    [b"for=", b'"', b"\\", b",", b";", b"[", b"]", b":", b"=", b" ", b"1.2.3.4", b"::1"]
)
_SHAPED = st.lists(_PIECES, max_size=60).map(b"".join)
_LARGE = st.builds(
    lambda chunk, count: (chunk * count)[: 64 * 1024],
    st.binary(min_size=1, max_size=16),
    st.integers(min_value=1, max_value=8192),
)
_VALUES = st.one_of(_SMALL, _SHAPED, _LARGE)
_HEADERS = st.lists(st.tuples(_NAMES, _VALUES), max_size=12)


def _user(scope: Any) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-user":
            return str(value.decode("latin-1"))
    return None


def _api_key(scope: Any) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            return str(value.decode("latin-1"))
    return None


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _middleware(header: str) -> BraceMiddleware:
    limits = [
        Limit("1000/minute"),
        Limit("1000/minute", per="ip"),
        Limit("1000/minute", per="user"),
        Limit("1000/minute", per=_api_key, name="key"),
    ]
    return BraceMiddleware(
        _ok,
        default=Rule(limits=limits, timeout=5.0),
        user=_user,
        trusted_proxies=["10.0.0.0/8", "127.0.0.1"],
        forwarded_header=header,  # type: ignore[arg-type]
        rate_limit_headers="both",
    )


async def _request(app: BraceMiddleware, headers: Headers, peer: str) -> int:
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
            for name, value in message["headers"]:
                assert isinstance(name, bytes)
                assert isinstance(value, bytes)
                assert b"\r" not in value
                assert b"\n" not in value

    scope = http_scope("/api/items", headers=headers, client=(peer, 4000))
    await app(scope, receive, send)
    assert len(statuses) == 1
    return statuses[0]


APPS = {header: _middleware(header) for header in ("x-forwarded-for", "forwarded")}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("header", ["x-forwarded-for", "forwarded"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=_HEADERS, peer=st.sampled_from(["10.0.0.2", "127.0.0.1", "203.0.113.9"]))
def test_any_header_list_gets_an_answer(
    backend: str, header: str, headers: Headers, peer: str
) -> None:
    """Whatever headers arrive (from a trusted proxy or not), the answer is 200 or 429."""
    status = anyio.run(_request, APPS[header], headers, peer, backend=backend)
    assert status in (200, 429)


def test_a_value_brace_cannot_read_is_treated_as_absent() -> None:
    """An unreadable forwarding header keys the request by the proxy, like no header."""
    app = _middleware("forwarded")
    garbage: Headers = [(b"forwarded", b'for="' + b"\\" * 70_000)]
    assert anyio.run(_request, app, garbage, "10.0.0.2") == 200
    assert app._client({"client": ("10.0.0.2", 1), "headers": garbage}) == "10.0.0.2"
    assert app._client({"client": ("10.0.0.2", 1), "headers": [(b"forwarded", 5)]}) == "10.0.0.2"
    assert app._client({"client": ("10.0.0.2", 1), "headers": [(b"forwarded",)]}) == "10.0.0.2"
