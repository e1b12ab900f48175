"""brace.asgi.BraceMiddleware on Starlette and FastAPI apps, through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

import brace
import brace.testing
from asgi_scopes import client
from brace import Priority
from brace.asgi import (
    BraceMiddleware,
    Limit,
    Rule,
    default_priority,
    health_app,
)
from brace_demo.rules import DEMO_DEFAULT, DEMO_RULES

Scope = dict[str, Any]


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def fail(request: Request) -> PlainTextResponse:
    return PlainTextResponse("broken", status_code=500)


async def slow(request: Request) -> PlainTextResponse:
    await anyio.sleep(float(request.query_params.get("seconds", "5")))
    return PlainTextResponse("late")


async def boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("boom")


def starlette_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/api/ai/chat", hello, methods=["GET", "POST"]),
            Route("/api/auth/login", hello, methods=["POST"]),
            Route("/api/upload", hello, methods=["POST"]),
            Route("/api/items", hello, methods=["GET", "POST"]),
            Route("/fail", fail),
            Route("/slow", slow),
            Route("/boom", boom),
        ]
    )


def middleware(**options: Any) -> BraceMiddleware:
    options.setdefault("clock", anyio.current_time)
    options.setdefault("rules", DEMO_RULES)
    options.setdefault("default", DEMO_DEFAULT)
    return BraceMiddleware(starlette_app(), **options)


async def test_demo_table_limits_each_route_separately() -> None:
    """The demo's table holds: 5 uploads, 10 AI calls and 20 logins per client, then 429."""
    app = middleware()
    async with client(app) as http:
        for _ in range(5):
            assert (await http.post("/api/upload")).status_code == 200
        assert (await http.post("/api/upload")).status_code == 429
        for _ in range(10):
            assert (await http.post("/api/ai/chat")).status_code == 200
        assert (await http.get("/api/ai/chat")).status_code == 429
        for _ in range(20):
            assert (await http.post("/api/auth/login")).status_code == 200
        assert (await http.post("/api/auth/login")).status_code == 429
        # the default rule still has its own 60
        assert (await http.get("/api/items")).status_code == 200


async def test_429_body_and_headers() -> None:
    """A 429 carries Retry-After, the IETF fields with r=0, and a JSON body naming the limit."""
    app = middleware(rate_limit_headers="both")
    async with client(app) as http:
        for _ in range(5):
            await http.post("/api/upload")
        response = await http.post("/api/upload")
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/json"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 120  # a sliding-window counter may ask for more than a window
    assert response.headers["ratelimit-policy"] == '"upload";q=5;w=60'
    assert response.headers["ratelimit"] == f'"upload";r=0;t={retry_after}'
    assert response.headers["x-ratelimit-limit"] == "5"
    assert response.headers["x-ratelimit-remaining"] == "0"
    body = response.json()
    assert body["error"] == "rate_limited"
    assert body["limit"] == "upload"
    assert body["policy"] == "5/minute"
    assert body["retry_after"] == retry_after


async def test_ratelimit_fields_on_success_count_down() -> None:
    """Admitted responses carry RateLimit with the remaining quota, one less each time."""
    app = middleware()
    async with client(app) as http:
        first = await http.post("/api/upload")
        second = await http.post("/api/upload")
    assert first.headers["ratelimit-policy"] == '"upload";q=5;w=60'
    assert re.fullmatch(r'"upload";r=4;t=\d+', first.headers["ratelimit"])
    assert re.fullmatch(r'"upload";r=3;t=\d+', second.headers["ratelimit"])


async def test_headers_on_success_can_be_turned_off() -> None:
    """With headers_on_success=False admitted responses carry no rate-limit field."""
    app = middleware(headers_on_success=False)
    async with client(app) as http:
        response = await http.post("/api/upload")
    assert response.status_code == 200
    assert "ratelimit" not in response.headers
    assert "ratelimit-policy" not in response.headers


async def test_limit_recovers_with_time() -> None:
    """After the window passes the client is admitted again."""
    app = middleware()
    async with client(app) as http:
        for _ in range(5):
            await http.post("/api/upload")
        refused = await http.post("/api/upload")
        assert refused.status_code == 429
        await anyio.sleep(int(refused.headers["retry-after"]) + 60)
        assert (await http.post("/api/upload")).status_code == 200


async def test_per_user_and_per_ip_limits() -> None:
    """Users behind one address have their own quota; the per-IP limit caps them together."""
    rule = Rule(
        "/api/items",
        limits=[Limit("2/minute", per="user"), Limit("3/minute", per="ip")],
        name="items",
    )

    def user_of(scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"x-user":
                return str(value.decode())
        return None

    app = middleware(rules=[rule], user=user_of)
    async with client(app) as http:
        assert (await http.get("/api/items", headers={"x-user": "ann"})).status_code == 200
        assert (await http.get("/api/items", headers={"x-user": "ann"})).status_code == 200
        refused = await http.get("/api/items", headers={"x-user": "ann"})
        assert refused.status_code == 429
        assert refused.json()["limit"] == "items-user"
        ok = await http.get("/api/items", headers={"x-user": "bob"})
        assert ok.status_code == 200
        assert ok.headers["ratelimit-policy"] == '"items-user";q=2;w=60, "items-ip";q=3;w=60'
        refused = await http.get("/api/items", headers={"x-user": "bob"})
        assert refused.status_code == 429
        assert refused.json()["limit"] == "items-ip"


async def test_user_falls_back_to_address() -> None:
    """A 'client' limit counts anonymous requests per address, identified ones per user."""
    rule = Rule("/api/items", limits=["1/minute"], name="items")
    app = middleware(
        rules=[rule], user=lambda scope: scope.get("state", {}).get("user"), default=None
    )
    async with client(app, peer="198.51.100.1") as http:
        assert (await http.get("/api/items")).status_code == 200
        assert (await http.get("/api/items")).status_code == 429
    async with client(app, peer="198.51.100.2") as http:
        assert (await http.get("/api/items")).status_code == 200


async def test_async_user_callable() -> None:
    """An async user callable is awaited; one raising counts the request per address."""

    async def user_of(scope: Scope) -> str | None:
        await anyio.lowlevel.checkpoint()
        return "carol"

    def broken(scope: Scope) -> str | None:
        raise ValueError("bad token")

    rule = Rule("/api/items", limits=["1/minute"], name="items")
    app = middleware(rules=[rule], user=user_of)
    async with client(app, peer="198.51.100.1") as http:
        assert (await http.get("/api/items")).status_code == 200
    async with client(app, peer="198.51.100.2") as http:
        assert (await http.get("/api/items")).status_code == 429  # same user
    app = middleware(rules=[rule], user=broken)
    async with client(app) as http:
        assert (await http.get("/api/items")).status_code == 200
        assert (await http.get("/api/items")).status_code == 429


async def test_custom_key_and_methods() -> None:
    """A rule limited to POST leaves GET alone; a custom key returning None skips its limit."""

    def api_key(scope: Scope) -> str | None:
        headers = dict(scope["headers"])
        key = headers.get(b"x-api-key")
        return None if key is None else key.decode()

    rule = Rule("/api/items", methods=["post"], limits=[Limit("1/minute", per=api_key)])
    app = middleware(rules=[rule], default=None)
    async with client(app) as http:
        for _ in range(3):
            assert (await http.get("/api/items")).status_code == 200
            assert (await http.post("/api/items")).status_code == 200  # no key: skipped
        assert (await http.post("/api/items", headers={"x-api-key": "k"})).status_code == 200
        assert (await http.post("/api/items", headers={"x-api-key": "k"})).status_code == 429
        assert (await http.post("/api/items", headers={"x-api-key": "j"})).status_code == 200


async def test_token_bucket_limit_and_cost() -> None:
    """A TokenBucket policy works as a limit, and a rule's cost is charged per request."""
    rule = Rule(
        "/api/items", limits=[brace.TokenBucket(rate=10, per=60.0, burst=10)], cost=5, name="b"
    )
    app = middleware(rules=[rule])
    async with client(app) as http:
        first = await http.get("/api/items")
        assert first.headers["ratelimit-policy"] == '"b";q=10;w=60'
        assert first.headers["ratelimit"].startswith('"b";r=5;')
        assert (await http.get("/api/items")).status_code == 200
        assert (await http.get("/api/items")).status_code == 429


async def test_exempt_rule_and_pattern_rule() -> None:
    """An exempt rule skips every check; a regex rule matches by pattern."""
    rules = [
        Rule("/api/items", exempt=True),
        Rule(re.compile(r"/api/(ai|upload)"), limits=["1/minute"], name="pattern"),
    ]
    app = middleware(rules=rules, default=Rule(limits=["1/minute"]))
    async with client(app) as http:
        for _ in range(3):
            response = await http.get("/api/items")
            assert response.status_code == 200
            assert "ratelimit" not in response.headers
        assert (await http.post("/api/upload")).status_code == 200
        assert (await http.post("/api/ai/chat")).status_code == 429  # shared key, same rule
        assert (await http.get("/fail")).status_code == 500  # default: first is allowed
        assert (await http.get("/fail")).status_code == 429


def test_prefix_matching_respects_segments() -> None:
    """'/api/ai' matches /api/ai and /api/ai/x but not /api/aim; methods filter."""
    rule = Rule("/api/ai", methods=["POST"])
    assert rule.matches("POST", "/api/ai")
    assert rule.matches("POST", "/api/ai/chat")
    assert not rule.matches("POST", "/api/aim")
    assert not rule.matches("GET", "/api/ai")
    assert Rule("/api/").matches("GET", "/api/x")
    assert Rule("/").matches("GET", "/anything")


def test_default_priorities_follow_the_seed() -> None:
    """Health is HIGH, reads MEDIUM, writes LOW; the demo rules set auth HIGH and AI MEDIUM."""
    assert default_priority("GET", "/health") == Priority.HIGH
    assert default_priority("GET", "/api/health/queue") == Priority.HIGH
    assert default_priority("GET", "/api/items") == Priority.MEDIUM
    assert default_priority("POST", "/api/items") == Priority.LOW
    assert default_priority("GET", "/healthy") == Priority.MEDIUM
    rules = {rule.name: rule for rule in DEMO_RULES}
    assert rules["auth"].priority == Priority.HIGH
    assert rules["ai"].priority == Priority.MEDIUM
    assert rules["upload"].priority == Priority.LOW


def test_bad_configuration_raises() -> None:
    """Wrong types and values fail at construction, naming the parameter."""
    with pytest.raises(TypeError, match="limits"):
        Rule("/x", limits="10/minute")
    with pytest.raises(ValueError, match="path"):
        Rule("x")
    with pytest.raises(ValueError, match="cost"):
        Rule("/x", cost=0)
    with pytest.raises(ValueError, match="invalid rate"):
        BraceMiddleware(starlette_app(), rules=[Rule("/x", limits=["ten a minute"])])
    with pytest.raises(ValueError, match="trusted proxy"):
        BraceMiddleware(starlette_app(), trusted_proxies=["not-a-network"])
    with pytest.raises(TypeError, match="executor"):
        BraceMiddleware(starlette_app(), executor=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate_limit_headers"):
        BraceMiddleware(starlette_app(), rate_limit_headers="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="share the name"):
        BraceMiddleware(starlette_app(), rules=[Rule("/x", limits=["1/s", "2/m"])])


async def test_queue_full_is_503_with_retry_after() -> None:
    """With one slot and no queue, a second concurrent request gets 503 queue_full."""
    executor = brace.PriorityExecutor(concurrency=1, max_queue=0, clock=anyio.current_time)
    app = middleware(executor=executor, rules=(), default=None)
    responses: list[httpx.Response] = []
    async with client(app) as http:

        async def get(path: str) -> None:
            responses.append(await http.get(path))

        async with anyio.create_task_group() as tg:
            tg.start_soon(get, "/slow?seconds=1")
            await anyio.sleep(0.1)
            tg.start_soon(get, "/api/items")
    by_status = {response.status_code: response for response in responses}
    assert set(by_status) == {200, 503}
    refused = by_status[503]
    assert refused.json()["error"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1
    assert app.statistics().queue_full == 1


async def test_priority_decides_who_goes_first() -> None:
    """Queued behind a busy slot, a HIGH (auth) request runs before an earlier LOW one."""
    executor = brace.PriorityExecutor(concurrency=1, max_queue=10, clock=anyio.current_time)
    order: list[str] = []

    async def record(request: Request) -> PlainTextResponse:
        order.append(request.url.path)
        await anyio.sleep(0.5)
        return PlainTextResponse("ok")

    inner = Starlette(
        routes=[
            Route("/api/upload", record, methods=["POST"]),
            Route("/api/auth/login", record, methods=["POST"]),
            Route("/api/items", record),
        ]
    )
    app = BraceMiddleware(inner, rules=DEMO_RULES, executor=executor, clock=anyio.current_time)
    async with client(app) as http, anyio.create_task_group() as tg:
        tg.start_soon(http.get, "/api/items")
        await anyio.sleep(0.1)
        tg.start_soon(http.post, "/api/upload")
        await anyio.sleep(0.1)
        tg.start_soon(http.post, "/api/auth/login")
    assert order == ["/api/items", "/api/auth/login", "/api/upload"]


async def test_circuit_breaker_opens_and_answers_503() -> None:
    """Two 500s open the route's breaker: the next request is 503 circuit_open."""
    breaker = brace.CircuitBreaker(failure_threshold=2, recovery_time=10, clock=anyio.current_time)
    app = middleware(rules=[Rule("/fail", breaker=breaker)], default=None)
    async with client(app) as http:
        assert (await http.get("/fail")).status_code == 500
        assert (await http.get("/fail")).status_code == 500
        refused = await http.get("/fail")
        assert refused.status_code == 503
        assert refused.json()["error"] == "circuit_open"
        assert 1 <= int(refused.headers["retry-after"]) <= 10
        assert (await http.get("/api/items")).status_code == 200  # other routes unaffected
        await anyio.sleep(10)
        assert (await http.get("/fail")).status_code == 500  # the probe goes through
    assert breaker.state is brace.CircuitState.OPEN


async def test_breaker_counts_exceptions_and_success() -> None:
    """An exception counts as a breaker failure and still reaches the server."""
    breaker = brace.CircuitBreaker(failure_threshold=1, recovery_time=10, clock=anyio.current_time)
    app = middleware(rules=[Rule("/boom", breaker=breaker)], default=None)
    with pytest.raises(RuntimeError, match="boom"):
        async with client(app) as http:
            await http.get("/boom")
    assert breaker.state is brace.CircuitState.OPEN
    assert app.statistics().errors == 1


async def test_rejection_raised_by_the_app_is_mapped() -> None:
    """A brace.Rejected raised by the app before answering becomes a 503 with its retry_after."""

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise brace.CircuitOpen("downstream open", retry_after=7.0)

    app = BraceMiddleware(inner, clock=anyio.current_time)
    async with client(app) as http:
        response = await http.get("/anything")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"] == "circuit_open"


async def test_memory_critical_is_503_and_high_memory_sheds_low_priority() -> None:
    """CRITICAL memory refuses everything with 503; HIGH with on_high='shed' refuses LOW only."""
    usage = [100]
    guard = brace.MemoryGuard(
        high=200, critical=300, probe=lambda: usage[0], on_high="shed", clock=anyio.current_time
    )
    app = middleware(memory=guard, rules=DEMO_RULES, default=None)
    async with client(app) as http:
        assert (await http.post("/api/items")).status_code == 200
        usage[0] = 250
        await anyio.sleep(2)
        assert (await http.get("/api/items")).status_code == 200  # MEDIUM passes
        refused = await http.post("/api/items")  # LOW is shed
        assert refused.status_code == 503
        assert refused.json()["error"] == "memory_pressure"
        usage[0] = 350
        await anyio.sleep(2)
        refused = await http.get("/api/items")
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
    assert app.statistics().memory_pressure == 2


async def test_load_monitor_sheds_but_not_high_priority() -> None:
    """Under full shedding probability ordinary requests get 503 overloaded, auth still passes."""
    monitor = brace.LoadMonitor(
        max_lag=0.1, random=brace.testing.FixedRandom(0.0), clock=anyio.current_time
    )
    for _ in range(20):
        monitor.observe(1.0)
    assert monitor.shed_probability == 1.0
    app = middleware(load=monitor, default=None)
    async with client(app) as http:
        refused = await http.get("/api/items")
        assert refused.status_code == 503
        assert refused.json()["error"] == "overloaded"
        assert (await http.post("/api/auth/login")).status_code == 200


async def test_timeout_gives_504_and_counts() -> None:
    """A request over its rule's timeout is cancelled and answered 504."""
    app = middleware(rules=[Rule("/slow", timeout=2.0)], default=None)
    async with client(app) as http:
        response = await http.get("/slow?seconds=5")
        assert response.status_code == 504
        assert (await http.get("/slow?seconds=1")).status_code == 200
    assert app.statistics().timed_out == 1


async def test_slow_requests_are_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    """A request over slow_request seconds is logged on brace.asgi and counted."""
    app = middleware(slow_request=3.0, rules=(), default=None)
    with caplog.at_level(logging.WARNING, logger="brace.asgi"):
        async with client(app) as http:
            assert (await http.get("/slow?seconds=4")).status_code == 200
            assert (await http.get("/slow?seconds=1")).status_code == 200
    assert app.statistics().slow == 1
    messages = [record.getMessage() for record in caplog.records]
    assert any("slow request: GET /slow took 4." in message for message in messages)


async def test_shutting_down_answers_503_with_connection_close() -> None:
    """Once the shutdown started, new requests get 503 shutting_down and Connection: close."""
    shutdown = brace.GracefulShutdown(timeout=1, clock=anyio.current_time)
    app = middleware(shutdown=shutdown, default=None)
    async with client(app) as http:
        assert (await http.get("/api/items")).status_code == 200
        shutdown.trigger()
        refused = await http.get("/api/items")
    assert refused.status_code == 503
    assert refused.json()["error"] == "shutting_down"
    assert refused.headers["connection"] == "close"
    assert refused.headers["retry-after"] == "5"


async def test_draining_executor_answers_503() -> None:
    """Requests arriving while the executor drains get 503 shutting_down."""
    executor = brace.PriorityExecutor(concurrency=2, clock=anyio.current_time)
    app = middleware(executor=executor, default=None)
    await executor.drain(timeout=1)
    async with client(app) as http:
        refused = await http.get("/api/items")
    assert refused.status_code == 503
    assert refused.json()["error"] == "shutting_down"


async def test_fastapi_app_is_limited() -> None:
    """The middleware wraps a FastAPI app unchanged: its routes are limited, 404s too."""
    api = FastAPI()

    @api.get("/api/items")
    async def items() -> dict[str, str]:
        return {"hello": "world"}

    app = BraceMiddleware(api, default=Rule(limits=["2/minute"]), clock=anyio.current_time)
    async with client(app) as http:
        assert (await http.get("/api/items")).json() == {"hello": "world"}
        assert (await http.get("/missing")).status_code == 404
        assert (await http.get("/api/items")).status_code == 429


async def test_fastapi_add_middleware() -> None:
    """app.add_middleware(BraceMiddleware, ...) works like wrapping."""
    api = FastAPI()

    @api.post("/api/upload")
    async def upload() -> dict[str, bool]:
        return {"ok": True}

    api.add_middleware(BraceMiddleware, rules=DEMO_RULES, clock=anyio.current_time)
    async with client(api) as http:
        codes = [(await http.post("/api/upload")).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]


async def test_websocket_and_other_scopes_pass_through() -> None:
    """Websocket and unknown scopes reach the app untouched even when HTTP is limited to 0."""
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    app = BraceMiddleware(inner, default=Rule(limits=["1/hour"]), clock=anyio.current_time)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        raise AssertionError("the middleware must not answer a websocket")

    for _ in range(3):
        await app({"type": "websocket", "path": "/ws", "client": ("1.2.3.4", 1)}, receive, send)
        await app({"type": "custom.thing"}, receive, send)
    assert seen == ["websocket", "custom.thing"] * 3


async def test_lifespan_starts_background_tasks_and_drains() -> None:
    """The lifespan runs the memory guard's sampler and drains the executor on shutdown."""
    samples: list[int] = []

    def probe() -> int:
        samples.append(1)
        return 10

    guard = brace.MemoryGuard(high=100, probe=probe, interval=1.0, clock=anyio.current_time)
    executor = brace.PriorityExecutor(concurrency=2, clock=anyio.current_time)
    inner = Starlette(routes=[Route("/", hello)])
    app = BraceMiddleware(inner, memory=guard, executor=executor, clock=anyio.current_time)
    sent: list[str] = []
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    gate = anyio.Event()

    async def receive() -> dict[str, Any]:
        if len(inbox) == 1:
            await gate.wait()
        return inbox.pop(0)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    async with anyio.create_task_group() as tg:
        tg.start_soon(app, {"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        await anyio.sleep(10.5)
        gate.set()
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert len(samples) >= 10  # sampled by the background task while idle
    assert executor.draining


def lifespan_app(background: bool) -> BraceMiddleware:
    """A middleware whose lifespan runs a background task (the memory guard's sampler),
    or none."""
    guard = brace.MemoryGuard(high=100, probe=lambda: 10, interval=1.0, clock=anyio.current_time)
    inner = Starlette(routes=[Route("/", hello)])
    return BraceMiddleware(inner, memory=guard if background else None, clock=anyio.current_time)


@pytest.mark.parametrize("background", [False, True])
async def test_the_lifespan_is_over_when_its_shutdown_is_reported(background: bool) -> None:
    """Once the server reads ``lifespan.shutdown.complete``, the lifespan call has nothing
    left to wait for: hypercorn (asyncio) cancels the lifespan task right then and awaits
    it, and a call still at a checkpoint (brace's background tasks ending) raised
    ``CancelledError`` out of the server on Python 3.12+. Here the server cancels the
    call's scope when it reads the message: no checkpoint may follow."""
    app = lifespan_app(background)
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []
    scope = anyio.CancelScope()

    async def receive() -> dict[str, Any]:
        await anyio.sleep(5)
        return inbox.pop(0)

    async def send(message: Any) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.shutdown.complete":
            scope.cancel()

    with scope:
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert not scope.cancelled_caught


@pytest.mark.parametrize("background", [False, True])
async def test_hypercorn_cancelling_the_finished_lifespan_is_harmless(
    background: bool, anyio_backend_name: str
) -> None:
    """hypercorn's asyncio worker, at shutdown: wait for ``lifespan.shutdown.complete``,
    then ``lifespan_task.cancel()`` and ``await lifespan_task``. The task must be over by
    then, or the server exits with ``CancelledError``."""
    if anyio_backend_name != "asyncio":
        pytest.skip("asyncio's Task.cancel(), what hypercorn's asyncio worker calls")
    app = lifespan_app(background)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started, shut = asyncio.Event(), asyncio.Event()

    async def send(message: Any) -> None:
        {"lifespan.startup.complete": started, "lifespan.shutdown.complete": shut}[
            message["type"]
        ].set()

    task = asyncio.ensure_future(app({"type": "lifespan"}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    await started.wait()
    await anyio.sleep(5)
    await inbox.put({"type": "lifespan.shutdown"})
    await shut.wait()
    task.cancel()
    await task  # raises CancelledError if the lifespan was still running


async def test_health_app_endpoints_under_a_prefix() -> None:
    """Mounted at /api, health_app serves /api/health, /full, /queue and /metrics."""
    registry = brace.Registry()
    executor = registry.register(
        "default", brace.PriorityExecutor(concurrency=10, clock=anyio.current_time)
    )
    health = brace.Health(clock=anyio.current_time)

    async def database() -> bool:
        return True

    health.add("db", database)
    inner = Starlette(routes=[Mount("/api", health_app(registry, health=health))])
    app = BraceMiddleware(inner, executor=executor, clock=anyio.current_time)
    registry.register("http", app)
    async with client(app) as http:
        basic = await http.get("/api/health")
        assert basic.status_code == 200
        assert basic.json() == {"schemaVersion": 1, "status": "ok"}
        full = await http.get("/api/health/full")
        assert full.json()["checks"]["db"]["status"] == "ok"
        queue = (await http.get("/api/health/queue")).json()
        assert queue["executors"]["default"]["concurrency"] == 10
        assert queue["queue"]["queueDistribution"] == {"high": 0, "medium": 0, "low": 0}
        assert queue["middleware"]["activeRequests"] == 1  # this request
        metrics = (await http.get("/api/health/metrics")).json()
        assert metrics["process"]["pid"] > 0
        assert metrics["memory"]["rss"] > 0
        assert metrics["statistics"]["other"]["http"]["requests"] >= 3
        assert (await http.get("/api/health/nope")).status_code == 404
        assert (await http.post("/api/health")).status_code == 405


async def test_health_full_fails_with_503() -> None:
    """A failing critical check makes /health/full answer 503."""
    health = brace.Health(clock=anyio.current_time)

    async def database() -> bool:
        return False

    health.add("db", database)
    async with client(health_app(health=health)) as http:
        response = await http.get("/health/full")
    assert response.status_code == 503
    assert response.json()["status"] == "failing"


async def test_health_detail_restricted_by_allowlist_and_callable() -> None:
    """Detailed endpoints answer 403 outside the allowlist; /health stays open."""
    app = health_app(brace.Registry(), allow=["10.0.0.0/8"])
    async with client(app, peer="203.0.113.9") as http:
        assert (await http.get("/health")).status_code == 200
        for path in ("/health/full", "/health/queue", "/health/metrics"):
            assert (await http.get(path)).status_code == 403
    async with client(app, peer="10.1.2.3") as http:
        assert (await http.get("/health/queue")).status_code == 200
    token = health_app(allow=lambda scope: (b"x-token", b"s3cret") in scope["headers"])
    async with client(token) as http:
        assert (await http.get("/health/metrics")).status_code == 403
        ok = await http.get("/health/metrics", headers={"x-token": "s3cret"})
        assert ok.status_code == 200


async def test_health_allowlist_is_not_fooled_by_forwarded_headers() -> None:
    """A client outside the allowlist cannot get in by sending X-Forwarded-For."""
    app = health_app(allow=["127.0.0.1/32"])
    async with client(app, peer="203.0.113.9") as http:
        response = await http.get("/health/queue", headers={"x-forwarded-for": "127.0.0.1"})
    assert response.status_code == 403


async def test_json_response_app_sees_its_own_headers_kept() -> None:
    """The app's own headers survive next to the added RateLimit fields."""

    async def tagged(request: Request) -> JSONResponse:
        return JSONResponse({"a": 1}, headers={"x-app": "yes"})

    inner = Starlette(routes=[Route("/", tagged)])
    app = BraceMiddleware(inner, default=Rule(limits=["5/minute"]), clock=anyio.current_time)
    async with client(app) as http:
        response = await http.get("/")
    assert response.headers["x-app"] == "yes"
    assert response.headers["ratelimit"].startswith('"default";r=4;')
    assert response.json() == {"a": 1}


async def test_cancelled_requests_leave_nothing_behind() -> None:
    """Requests cancelled at random points (queued, running, answering) leak no slot,
    no breaker permit and no active count."""
    import random

    rng = random.Random(6)
    executor = brace.PriorityExecutor(concurrency=2, max_queue=100, clock=anyio.current_time)
    breaker = brace.CircuitBreaker(
        failure_threshold=1000, recovery_time=1, half_open_max_calls=1, clock=anyio.current_time
    )
    app = middleware(
        executor=executor,
        rules=[Rule("/slow", breaker=breaker, timeout=50)],
        default=Rule(limits=["1000/minute"]),
    )
    async with client(app) as http:
        for _ in range(30):
            async with anyio.create_task_group() as tg:
                for _ in range(5):

                    async def one() -> None:
                        with anyio.move_on_after(rng.uniform(0, 0.3)):
                            await http.get(f"/slow?seconds={rng.uniform(0, 0.3):.3f}")

                    tg.start_soon(one)
        stats = executor.statistics()
        assert (stats.running, stats.pending) == (0, 0)
        assert app.statistics().active == 0
        breaker.open_for(1.0)
        await anyio.sleep(1.5)
        # half-open with one probe permit: it must still be free
        assert (await http.get("/slow?seconds=0")).status_code == 200
    assert breaker.state is brace.CircuitState.CLOSED


@pytest.mark.parametrize(
    ("style", "present", "absent"),
    [
        ("ietf", {"ratelimit", "ratelimit-policy"}, {"x-ratelimit-limit"}),
        (
            "legacy",
            {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"},
            {"ratelimit"},
        ),
        ("none", set(), {"ratelimit", "ratelimit-policy", "x-ratelimit-limit"}),
    ],
)
async def test_header_styles(style: Any, present: set[str], absent: set[str]) -> None:
    """rate_limit_headers picks the IETF fields, the legacy trio, or nothing; Retry-After
    stays on refusals whatever the style."""
    app = middleware(rate_limit_headers=style, rules=(), default=Rule(limits=["1/minute"]))
    async with client(app) as http:
        admitted = await http.get("/api/items")
        refused = await http.get("/api/items")
    for response in (admitted, refused):
        assert present <= set(response.headers)
        assert not absent & set(response.headers)
    assert "retry-after" in refused.headers
    if style == "legacy":
        assert admitted.headers["x-ratelimit-limit"] == "1"
        assert admitted.headers["x-ratelimit-remaining"] == "0"


async def test_key_function_raising_skips_its_limit(caplog: pytest.LogCaptureFixture) -> None:
    """A custom key function that raises is logged and its limit skipped: never a 500."""

    def broken(scope: Scope) -> str | None:
        raise KeyError("no tenant")

    app = middleware(rules=(), default=Rule(limits=[Limit("1/minute", per=broken), "2/minute"]))
    with caplog.at_level(logging.ERROR, logger="brace.asgi"):
        async with client(app) as http:
            codes = [(await http.get("/api/items")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert any("key function" in record.getMessage() for record in caplog.records)
