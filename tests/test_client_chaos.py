"""Chaos on the client adapters: injected connection errors, 5xx answers and latency go
through the same retry and breaker loop as real faults."""

from __future__ import annotations

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import brace
import brace.chaos
from brace.aiohttp import ResilientMiddleware
from brace.httpx import ResilientTransport


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, text="ok")


async def test_httpx_injected_faults_are_retried() -> None:
    """Injected ConnectErrors and 503s are retried like real ones; every call ends in 200."""
    errors = brace.chaos.exception(lambda: httpx.ConnectError("chaos"), injection_rate=0.2, seed=1)
    statuses = brace.chaos.outcome(factory=lambda: httpx.Response(503), injection_rate=0.2, seed=2)
    retry = brace.Retry(
        20,
        backoff=brace.Backoff.constant(0.1),
        retry_on=lambda exc: isinstance(exc, (httpx.TransportError, brace.Rejected)),
    )
    transport = ResilientTransport(httpx.MockTransport(ok), retry=retry, chaos=[errors, statuses])
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(50):
            assert (await client.get("http://upstream/")).status_code == 200
    injected = errors.statistics().injected + statuses.statistics().injected
    assert injected > 0
    assert retry.statistics().retries == injected


async def test_httpx_injected_errors_open_the_breaker() -> None:
    """Injected connection errors count as breaker failures: the circuit opens."""
    errors = brace.chaos.exception(lambda: httpx.ConnectError("chaos"), injection_rate=1.0)
    breaker = brace.CircuitBreaker(failure_threshold=3, recovery_time=60.0)
    transport = ResilientTransport(
        httpx.MockTransport(ok), retry=brace.Retry(1), breaker=breaker, key=None, chaos=errors
    )
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            with pytest.raises(httpx.ConnectError):
                await client.get("http://upstream/")
        with pytest.raises(brace.CircuitOpen):
            await client.get("http://upstream/")
    assert breaker.state is brace.CircuitState.OPEN


async def test_httpx_injected_latency_trips_a_timeout() -> None:
    """Injected latency is anyio's sleep: a Timeout around the request fires in virtual time."""
    slow = brace.chaos.latency(5.0, injection_rate=1.0)
    transport = ResilientTransport(httpx.MockTransport(ok), chaos=slow)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(brace.TimeoutExceeded):
            await brace.Timeout(1.0).call(client.get, "http://upstream/")


def test_bad_chaos_names_the_parameter() -> None:
    """A chaos that is not a policy raises a TypeError naming chaos."""
    with pytest.raises(TypeError, match="chaos"):
        ResilientTransport(httpx.MockTransport(ok), chaos=3)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_aiohttp_injected_connection_errors_are_retried(anyio_backend: str) -> None:
    """Through the aiohttp middleware, injected ClientConnectionErrors are retried and
    every request reaches the real server (asyncio, real time, short)."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", answer)
    server = TestServer(app)
    await server.start_server()
    errors = brace.chaos.exception(
        lambda: aiohttp.ClientConnectionError("chaos"), injection_rate=0.3, seed=5
    )
    retry = brace.Retry(20, backoff=brace.Backoff.constant(0.001))
    middleware = ResilientMiddleware(retry=retry, chaos=errors)
    try:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            for _ in range(20):
                async with session.get(server.make_url("/")) as response:
                    assert response.status == 200
    finally:
        await server.close()
    assert errors.statistics().injected > 0
    assert retry.statistics().retries == errors.statistics().injected
