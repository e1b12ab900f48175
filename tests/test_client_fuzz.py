"""Hostile response headers through the httpx transport: whatever a server answers (names,
values, repetitions, sizes up to 64 KB), the caller gets what a bare client would have got
(the answer, or the same error) or, with a breaker, `brace.CircuitOpen`; never anything
else. Over a MockTransport, on asyncio and trio (virtual time). The strategies are in
tests/client_headers.py."""

from __future__ import annotations

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import brace
from brace.httpx import ResilientTransport
from client_headers import HEADERS, STATUSES, fast_retry


def mock(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, content=body)

    return httpx.MockTransport(handle)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    status=STATUSES,
    headers=HEADERS,
    body=st.binary(max_size=64),
    breaker=st.booleans(),
    max_body=st.sampled_from([0, 10, 1 << 20]),
)
async def test_httpx_transport_survives_any_headers(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, breaker: bool, max_body: int
) -> None:
    """Through ResilientTransport the caller gets the bare client's answer (status, headers,
    body) or its error, or CircuitOpen when a breaker is configured."""
    try:
        async with httpx.AsyncClient(transport=mock(status, headers, body)) as bare:
            expected: httpx.Response | Exception = await bare.get("http://fuzz/")
    except Exception as error:
        expected = error
    transport = ResilientTransport(
        mock(status, headers, body),
        retry=fast_retry(),
        breaker=brace.CircuitBreaker(failure_threshold=2) if breaker else None,
        max_body=max_body,
    )
    try:
        async with httpx.AsyncClient(transport=transport) as http:
            got: httpx.Response | Exception = await http.get("http://fuzz/")
    except brace.CircuitOpen:
        assert breaker
        return
    except Exception as error:
        got = error
    if isinstance(expected, Exception):
        assert type(got) is type(expected)
        return
    assert isinstance(got, httpx.Response), got
    assert got.status_code == expected.status_code
    assert got.headers.raw == expected.headers.raw
    assert got.content == expected.content
