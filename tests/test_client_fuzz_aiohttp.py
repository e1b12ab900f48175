"""Hostile response headers through the aiohttp client middleware, from a real socket server
on 127.0.0.1 that writes whatever header bytes it is given (asyncio only, real time, short):
the caller gets what a bare session would have got (the answer, or the same error) or,
with a breaker, `brace.CircuitOpen`; never anything else."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import brace
from brace.aiohttp import ResilientMiddleware
from client_headers import HEADERS, STATUSES, fast_retry

ANSWER: list[bytes] = [b""]


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request on the connection with ANSWER[0], as it stands."""
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(ANSWER[0])
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs on asyncio only; each test using this file's aiohttp server runs there."""
    return "asyncio"


@pytest.fixture
async def raw_server() -> AsyncIterator[str]:
    """A socket server on 127.0.0.1 writing ANSWER's bytes to every request."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()
        await server.wait_closed()


def raw_answer(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = [b"HTTP/1.1 %d Whatever" % status]
    lines += [
        name + b": " + value.replace(b"\r", b"").replace(b"\n", b"") for name, value in headers
    ]
    if status in (204, 304):
        body = b""
    else:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes, bytes] | Exception:
    """The status, raw headers and body of a GET, or the error."""
    try:
        async with session.get(url) as response:
            raw = b"\r\n".join(name + b": " + value for name, value in response.raw_headers)
            return response.status, raw, await response.read()
    except brace.CircuitOpen:
        raise
    except Exception as error:
        return error


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(
    status=STATUSES,
    headers=HEADERS,
    body=st.binary(max_size=64),
    breaker=st.booleans(),
    respect=st.booleans(),
)
async def test_aiohttp_middleware_survives_any_headers(
    raw_server: str,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    breaker: bool,
    respect: bool,
) -> None:
    """Through ResilientMiddleware the caller gets the bare session's answer or its error,
    or CircuitOpen when a breaker is configured."""
    ANSWER[0] = raw_answer(status, headers, body)
    async with aiohttp.ClientSession() as bare:
        expected = await fetch(bare, raw_server)
    middleware = ResilientMiddleware(
        retry=fast_retry(),
        breaker=brace.CircuitBreaker(failure_threshold=2) if breaker else None,
        respect_retry_after=respect,
        max_retry_after=0.01 if respect else math.inf,
    )
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        try:
            got = await fetch(session, raw_server)
        except brace.CircuitOpen:
            assert breaker
            return
    if isinstance(expected, Exception):
        assert type(got) is type(expected), (got, expected)
    else:
        assert got == expected
