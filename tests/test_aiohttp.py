"""brace.aiohttp: the server middleware on a real aiohttp test server (asyncio only, real
time, short) and the client middleware against a server that fails then recovers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import brace
from brace.aiohttp import BraceMiddleware, ResilientMiddleware
from brace.asgi import Rule
from brace_demo.rules import DEMO_RULES


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs on asyncio: these tests use a real asyncio loop and real sockets."""
    return "asyncio"


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "1")))
    return web.Response(text="late")


async def fail(request: web.Request) -> web.Response:
    return web.Response(text="broken", status=500)


def make_app(middleware: BraceMiddleware) -> web.Application:
    app = web.Application(middlewares=[middleware])
    app.router.add_post("/api/upload", hello)
    app.router.add_get("/api/items", hello)
    app.router.add_get("/slow", slow)
    app.router.add_get("/fail", fail)
    app.cleanup_ctx.append(middleware.context)
    return app


async def test_server_middleware_limits_and_headers() -> None:
    """The demo table applies: 5 uploads then 429 with Retry-After and RateLimit fields."""
    middleware = BraceMiddleware(rules=DEMO_RULES, default=Rule(limits=["60/minute"]))
    async with TestClient(TestServer(make_app(middleware))) as client:
        codes = [(await client.post("/api/upload")).status for _ in range(6)]
        assert codes == [200] * 5 + [429]
        refused = await client.post("/api/upload")
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["RateLimit-Policy"] == '"upload";q=5;w=60'
        assert refused.headers["RateLimit"].startswith('"upload";r=0;t=')
        body = await refused.json()
        assert body["limit"] == "upload"
        ok = await client.get("/api/items")
        assert ok.headers["RateLimit"].startswith('"default";r=59;')
    assert middleware.statistics().rate_limited == 2


async def test_server_middleware_queue_full_timeout_and_breaker() -> None:
    """A full executor answers 503, a rule's timeout 504, an open breaker 503 circuit_open."""
    executor = brace.PriorityExecutor(concurrency=1, max_queue=0)
    breaker = brace.CircuitBreaker(failure_threshold=1, recovery_time=30)
    middleware = BraceMiddleware(
        rules=[Rule("/slow", timeout=0.3), Rule("/fail", breaker=breaker)],
        executor=executor,
    )
    async with TestClient(TestServer(make_app(middleware))) as client:
        busy = asyncio.ensure_future(client.get("/slow", params={"seconds": "0.2"}))
        await asyncio.sleep(0.05)
        refused = await client.get("/api/items")
        assert refused.status == 503
        assert (await refused.json())["error"] == "queue_full"
        assert (await busy).status == 200
        assert (await client.get("/slow", params={"seconds": "2"})).status == 504
        assert (await client.get("/fail")).status == 500
        opened = await client.get("/fail")
        assert opened.status == 503
        assert (await opened.json())["error"] == "circuit_open"
    assert executor.draining  # drained by the cleanup context
    stats = middleware.statistics()
    assert (stats.queue_full, stats.timed_out, stats.circuit_open) == (1, 1, 1)


async def test_server_middleware_spoofing() -> None:
    """An untrusted client cannot change its key with X-Forwarded-For."""
    middleware = BraceMiddleware(default=Rule(limits=["2/minute"]), trusted_proxies=["10.0.0.0/8"])
    async with TestClient(TestServer(make_app(middleware))) as client:
        codes = [
            (await client.get("/api/items", headers={"X-Forwarded-For": f"198.51.100.{n}"})).status
            for n in range(3)
        ]
    assert codes == [200, 200, 429]


# -- the client middleware -------------------------------------------------------------------

SEEN: dict[str, int] = {}


async def flaky(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    seen = SEEN[name] = SEEN.get(name, 0) + 1
    await request.read()
    if seen <= int(request.query.get("fail", "0")):
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        return web.Response(
            text=f"failure {seen}", status=int(request.query.get("status", "503")), headers=headers
        )
    return web.Response(text=f"ok after {seen}")


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    """An aiohttp server that fails a given number of times per name, then answers 200."""
    app = web.Application()
    app.router.add_route("*", "/flaky/{name}", flaky)
    test_server = TestServer(app)
    async with test_server:
        yield test_server


def fast_retry(attempts: int = 3) -> brace.Retry:
    return brace.Retry(
        attempts,
        backoff=brace.Backoff.exponential(base=0.01, cap=0.05),
        retry_on=(aiohttp.ClientError, Exception),
    )


async def session(middleware: ResilientMiddleware) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(middlewares=(middleware,))


async def test_client_retries_until_recovery(server: TestServer) -> None:
    """Two 503s then 200: the caller gets the 200 after three requests."""
    url = server.make_url("/flaky/a")
    async with (
        await session(ResilientMiddleware()) as http,
        http.get(url, params={"fail": "2"}) as response,
    ):
        assert response.status == 200
        assert await response.text() == "ok after 3"
    assert SEEN["a"] == 3


async def test_client_honours_retry_after_and_returns_last(server: TestServer) -> None:
    """Retry-After: 1 makes the retry wait a second; exhausted retries return the last answer."""
    async with await session(ResilientMiddleware(retry=fast_retry())) as http:
        start = time.monotonic()
        url = server.make_url("/flaky/b")
        params = {"fail": "1", "status": "429", "retry_after": "1"}
        async with http.get(url, params=params) as response:
            assert response.status == 200
        assert time.monotonic() - start >= 1.0
        async with http.get(server.make_url("/flaky/c"), params={"fail": "9"}) as response:
            assert response.status == 503
            assert await response.text() == "failure 3"
    assert SEEN["c"] == 3


async def test_client_does_not_retry_post_or_streams(server: TestServer) -> None:
    """POST and streamed bodies are sent once."""

    async def body() -> AsyncIterator[bytes]:
        yield b"data"

    async with await session(ResilientMiddleware(retry=fast_retry())) as http:
        async with http.post(server.make_url("/flaky/d"), params={"fail": "1"}) as response:
            assert response.status == 503
        async with http.put(
            server.make_url("/flaky/e"), params={"fail": "1"}, data=body()
        ) as response:
            assert response.status == 503
        async with http.put(
            server.make_url("/flaky/f"), params={"fail": "1"}, data=b"data"
        ) as response:
            assert response.status == 200
    assert (SEEN["d"], SEEN["e"], SEEN["f"]) == (1, 1, 2)


async def test_client_breaker_opens(server: TestServer) -> None:
    """Retried 503s open the breaker; then calls fail fast with CircuitOpen, unsent."""
    breaker = brace.CircuitBreaker(failure_threshold=2, recovery_time=30)
    middleware = ResilientMiddleware(retry=fast_retry(5), breaker=breaker)
    async with await session(middleware) as http:
        with pytest.raises(brace.CircuitOpen):
            await http.get(server.make_url("/flaky/g"), params={"fail": "9"})
    assert SEEN["g"] == 2


def test_client_bad_configuration() -> None:
    """Wrong types fail at construction."""
    with pytest.raises(TypeError, match="retry"):
        ResilientMiddleware(retry=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limiter"):
        ResilientMiddleware(limiter=object())
    with pytest.raises(TypeError, match="executor"):
        BraceMiddleware(executor=object())  # type: ignore[arg-type]


# -- parity with the ASGI middleware (#13 item 2) --------------------------------------------


async def echo(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    async for message in socket:
        await socket.send_str(f"echo {message.data}")
    return socket


async def ticks(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for n in range(5):
        await asyncio.sleep(0.1)
        await response.write(f"data: {n}\n\n".encode())
    await response.write_eof()
    return response


async def test_websocket_holds_no_slot_and_gets_no_timeout_answer() -> None:
    """With one executor slot and a 0.2 s rule timeout, an open WebSocket echoes past the
    timeout and GET /api/items is still served: an upgrade is no request to queue or time."""
    executor = brace.PriorityExecutor(concurrency=1, max_queue=0)
    middleware = BraceMiddleware(default=Rule(timeout=0.2), executor=executor)
    app = make_app(middleware)
    app.router.add_get("/ws", echo)
    async with TestClient(TestServer(app)) as client:
        socket = await client.ws_connect("/ws")
        await socket.send_str("one")
        assert (await socket.receive_str()) == "echo one"
        assert (await client.get("/api/items")).status == 200
        await asyncio.sleep(0.3)  # past the rule's timeout
        await socket.send_str("two")
        assert (await socket.receive_str()) == "echo two"
        assert executor.statistics().running == 0
        await socket.close()
    assert middleware.statistics().timed_out == 0


async def test_setup_lets_a_stream_outlive_the_timeout() -> None:
    """With setup(app) the rule's timeout bounds the time to the response start, so a
    0.5 s event stream under a 0.2 s timeout arrives whole."""
    middleware = BraceMiddleware(default=Rule(timeout=0.2))
    app = web.Application(middlewares=[middleware])
    app.router.add_get("/ticks", ticks)
    middleware.setup(app)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/ticks")
        assert response.status == 200
        assert (await response.text()).count("data: ") == 5
    assert middleware.statistics().timed_out == 0


async def test_store_shutdown_and_header_style() -> None:
    """store= shares one budget between two apps; rate_limit_headers picks the legacy
    fields; a started shutdown answers 503 with Connection: close."""
    store = brace.MemoryStore()
    shutdown = brace.GracefulShutdown(timeout=1)
    options = {"default": Rule(limits=["3/minute"]), "store": store}
    first = BraceMiddleware(**options, rate_limit_headers="legacy", shutdown=shutdown)  # type: ignore[arg-type]
    second = BraceMiddleware(**options)  # type: ignore[arg-type]
    async with (
        TestClient(TestServer(make_app(first))) as one,
        TestClient(TestServer(make_app(second))) as two,
    ):
        a = await one.get("/api/items")
        assert a.headers["X-RateLimit-Limit"] == "3"
        assert "RateLimit" not in a.headers
        assert (await two.get("/api/items")).status == 200
        assert (await one.get("/api/items")).status == 200
        assert (await two.get("/api/items")).status == 429  # the shared budget is spent
        shutdown.trigger()
        refused = await one.get("/api/items")
        assert refused.status == 503
        assert refused.headers["Connection"] == "close"
        assert (await refused.json())["error"] == "shutting_down"


async def test_stream_timeout_cuts_a_stream_quietly() -> None:
    """A stream_timeout ends a streamed response early: the client sees an unfinished
    body (never a clean end), the timeout is counted, and the server keeps serving."""

    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: 0\n\n")
        await asyncio.sleep(5)
        await response.write_eof()
        return response

    middleware = BraceMiddleware(default=Rule(timeout=0.2, stream_timeout=0.3))
    app = web.Application(middlewares=[middleware])
    app.router.add_get("/stalls", stalls)
    app.router.add_get("/api/items", hello)
    middleware.setup(app)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/stalls")
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
        assert (await client.get("/api/items")).status == 200
    assert middleware.statistics().timed_out == 1
    assert middleware.statistics().errors == 0


async def test_startup_fails_when_a_store_check_fails() -> None:
    """setup(app): a store whose check() fails stops the app from starting."""

    class Unreachable(brace.MemoryStore):
        async def check(self) -> None:
            raise ConnectionError("Redis at 127.0.0.1:1 refused the connection")

    middleware = BraceMiddleware(default=Rule(limits=["5/minute"]), store=Unreachable())
    app = web.Application(middlewares=[middleware])
    app.router.add_get("/api/items", hello)
    middleware.setup(app)
    server = TestServer(app)
    try:
        with pytest.raises(ConnectionError, match="refused"):
            await server.start_server()
    finally:
        await server.close()


async def test_server_middleware_logs_a_slow_request_with_its_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A slow request of a plain rule is logged with the handler's status (the pipeline
    used to time it before the status came back: "status none")."""
    middleware = BraceMiddleware(default=Rule(), slow_request=0.05)
    with caplog.at_level("WARNING", logger="brace.asgi"):
        async with TestClient(TestServer(make_app(middleware))) as client:
            assert (await client.get("/slow", params={"seconds": "0.1"})).status == 200
    assert middleware.statistics().slow == 1
    assert any("GET /slow took" in m and "(status 200," in m for m in caplog.messages)
