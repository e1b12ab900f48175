"""brace.aiohttp.ResilientMiddleware against real aiohttp test servers on 127.0.0.1 (asyncio
only, real time, short): Retry-After, per-host breakers, the body cap."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import brace
from brace.aiohttp import ResilientMiddleware


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs on asyncio: these tests use a real asyncio loop and real sockets."""
    return "asyncio"


SEEN = web.AppKey("seen", dict[str, int])


async def answer(request: web.Request) -> web.StreamResponse:
    """Answers ?status= with ?retry_after= and a body of ?size= bytes (?chunked=1 streams
    it); counts requests per path in the app's "seen"."""
    seen = request.app[SEEN]
    seen[request.path] = seen.get(request.path, 0) + 1
    status = int(request.query.get("status", "200"))
    headers = {}
    if "retry_after" in request.query:
        headers["Retry-After"] = request.query["retry_after"]
    body = b"x" * int(request.query.get("size", "4"))
    if request.query.get("chunked"):
        response = web.StreamResponse(status=status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        return response
    return web.Response(body=body, status=status, headers=headers)


async def start() -> TestServer:
    app = web.Application()
    app[SEEN] = {}
    app.router.add_route("*", "/{name}", answer)
    server = TestServer(app)
    await server.start_server()
    return server


@pytest.fixture
async def servers() -> AsyncIterator[tuple[TestServer, TestServer]]:
    """Two servers: two hosts (host:port keys) for the client."""
    one, two = await start(), await start()
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


def fast_retry(attempts: int = 3) -> brace.Retry:
    return brace.Retry(attempts, backoff=brace.Backoff.exponential(base=0.01, cap=0.05))


def seen(server: TestServer, path: str) -> int:
    assert server.app is not None
    return server.app[SEEN].get(path, 0)


async def test_retry_after_unicode_digit_returns_the_answer(
    servers: tuple[TestServer, TestServer],
) -> None:
    """Regression: a 503 with `Retry-After: ²` is retried as if it had none, then returned."""
    server, _ = servers
    middleware = ResilientMiddleware(retry=fast_retry())
    async with (
        aiohttp.ClientSession(middlewares=(middleware,)) as http,
        http.get(server.make_url("/a"), params={"status": "503", "retry_after": "²"}) as response,
    ):
        assert response.status == 503
        assert response.headers["Retry-After"] == "²"
        assert await response.read() == b"xxxx"
    assert seen(server, "/a") == 3


async def test_breakers_are_per_host_by_default(servers: tuple[TestServer, TestServer]) -> None:
    """After three 500s from host A (failure_threshold=3), host B still answers; A refuses."""
    one, two = servers
    middleware = ResilientMiddleware(breaker=brace.CircuitBreaker(failure_threshold=3))
    async with aiohttp.ClientSession(middlewares=(middleware,)) as http:
        for _ in range(3):
            async with http.get(one.make_url("/a"), params={"status": "500"}) as response:
                assert response.status == 500
        with pytest.raises(brace.CircuitOpen):
            await http.get(one.make_url("/a"))
        async with http.get(two.make_url("/b")) as response:
            assert response.status == 200
    assert (seen(one, "/a"), seen(two, "/b")) == (3, 1)
    assert len(middleware.breakers) == 2


async def test_body_cap(servers: tuple[TestServer, TestServer]) -> None:
    """A retryable answer over max_body, or without a Content-Length, is handed back at once,
    readable whole; one within the cap is retried."""
    server, _ = servers
    middleware = ResilientMiddleware(retry=fast_retry(), max_body=100)
    async with aiohttp.ClientSession(middlewares=(middleware,)) as http:
        for path, params, sent in (
            ("/big", {"status": "503", "size": "101"}, 1),
            ("/chunked", {"status": "503", "size": "10", "chunked": "1"}, 1),
            ("/small", {"status": "503", "size": "100"}, 3),
        ):
            async with http.get(server.make_url(path), params=params) as response:
                assert response.status == 503
                assert await response.read() == b"x" * int(params["size"])
            assert seen(server, path) == sent, path


async def test_repeated_retry_after_is_absent() -> None:
    """Two Retry-After headers count as none (as with httpx): the backoff alone decides,
    so a huge second value does not stop the retries."""
    answers = iter([(503, ("0", "99999")), (200, ())])

    async def twice(request: web.Request) -> web.Response:
        status, values = next(answers)
        response = web.Response(status=status)
        for value in values:
            response.headers.add("Retry-After", value)
        return response

    app = web.Application()
    app.router.add_get("/", twice)
    async with (
        TestServer(app) as other,
        aiohttp.ClientSession(
            middlewares=(ResilientMiddleware(retry=fast_retry(), max_retry_after=60),)
        ) as http,
        http.get(other.make_url("/")) as response,
    ):
        assert response.status == 200
