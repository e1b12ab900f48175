"""The shared pipeline through BraceMiddleware: CORS preflights, time to response start,
stream timeouts, answers after a timeout, the lifespan's store check (#13 items 5, 6, 1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

import brace
from asgi_scopes import client, http_scope
from brace.asgi import BraceMiddleware, Rule

PREFLIGHT = {"origin": "https://app.example", "access-control-request-method": "POST"}


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def events(request: Request) -> StreamingResponse:
    """Ten Server-Sent Events, one a second."""
    gap = float(request.query_params.get("gap", "1"))

    async def stream() -> AsyncIterator[str]:
        for n in range(10):
            await anyio.sleep(gap)
            yield f"data: {n}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


async def late(request: Request) -> PlainTextResponse:
    await anyio.sleep(10)
    return PlainTextResponse("late")


def app_with(**options: Any) -> BraceMiddleware:
    options.setdefault("clock", anyio.current_time)
    inner = Starlette(
        routes=[
            Route("/api", hello, methods=["GET", "POST", "OPTIONS"]),
            Route("/events", events),
            Route("/late", late),
        ]
    )
    return BraceMiddleware(inner, **options)


async def test_cors_preflights_are_not_counted_by_default() -> None:
    """OPTIONS preflights pass uncounted: POST, OPTIONS, POST, OPTIONS, POST gives 200s
    until the third POST (limit 2), and every preflight is answered by the app."""
    app = app_with(default=Rule(limits=["2/minute"]))
    async with client(app) as http:
        codes = []
        for _ in range(3):
            codes.append((await http.options("/api", headers=PREFLIGHT)).status_code)
            codes.append((await http.post("/api")).status_code)
        assert codes == [200, 200, 200, 200, 200, 429]
        # a plain OPTIONS (no CORS headers) is an ordinary request and is counted
        assert (await http.options("/api")).status_code == 429
    assert app.statistics().requests == 4


async def test_cors_preflights_can_be_counted() -> None:
    """With count_preflight=True a preflight counts like any request."""
    app = app_with(default=Rule(limits=["2/minute"]), count_preflight=True)
    async with client(app) as http:
        codes = [(await http.options("/api", headers=PREFLIGHT)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


async def test_a_cors_layer_outside_decorates_the_refusals() -> None:
    """CORSMiddleware wrapped around BraceMiddleware adds its headers to brace's 429."""
    brace_app = app_with(default=Rule(limits=["1/minute"]))
    app = CORSMiddleware(brace_app, allow_origins=["https://app.example"], allow_methods=["*"])
    headers = {"origin": "https://app.example"}
    async with client(app) as http:
        assert (await http.post("/api", headers=headers)).status_code == 200
        refused = await http.post("/api", headers=headers)
        preflight = await http.options("/api", headers=PREFLIGHT)
    assert refused.status_code == 429
    assert refused.headers["access-control-allow-origin"] == "https://app.example"
    assert preflight.status_code == 200  # answered by CORSMiddleware, never counted


async def test_timeout_bounds_the_start_not_the_stream() -> None:
    """A 2 s rule timeout lets a 10 s Server-Sent Events stream run to its end (all ten
    events), while a handler that has not answered after 2 s gets a 504."""
    app = app_with(default=Rule(timeout=2.0))
    async with client(app) as http:
        response = await http.get("/events")
        assert response.status_code == 200
        assert response.text.count("data: ") == 10
        assert (await http.get("/late")).status_code == 504
    assert app.statistics().timed_out == 1


async def call(app: Any, path: str, query: bytes = b"") -> list[dict[str, Any]]:
    """Every message the app sends for one GET, straight through ASGI."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()  # the client stays connected
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = http_scope(path, query=query)
    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    ("rule", "gap", "events", "complete"),
    [
        (Rule(timeout=2.0, idle_timeout=1.5), b"gap=2", 0, False),  # silent too long
        (Rule(timeout=2.0, idle_timeout=1.5), b"gap=1", 10, True),  # steady: whole
        (Rule(timeout=2.0, stream_timeout=4.5), b"gap=1", 4, False),  # total bound
    ],
)
async def test_idle_and_total_stream_timeouts_cut_a_stream(
    rule: Rule, gap: bytes, events: int, complete: bool
) -> None:
    """idle_timeout cuts a stream whose events stop coming; stream_timeout bounds it all;
    a cut stream is left unfinished (never a 504 after the 200, never a clean end)."""
    app = app_with(default=rule)
    sent = await call(app, "/events", gap)
    starts = [message["status"] for message in sent if message["type"] == "http.response.start"]
    bodies = [message for message in sent if message["type"] == "http.response.body"]
    assert starts == [200]
    assert sum(message.get("body", b"").count(b"data: ") for message in bodies) == events
    finished = bool(bodies) and not bodies[-1].get("more_body", False)
    assert finished == complete
    assert app.statistics().timed_out == (0 if complete else 1)


async def test_nothing_is_sent_after_brace_answered() -> None:
    """An app whose handler runs in a task of its own (as Quart's does) and answers after
    the timeout never gets a second response out: brace's 504 is the only one."""
    sent: list[dict[str, Any]] = []
    finished = anyio.Event()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with anyio.create_task_group() as handlers:

        async def quart_like(scope: Any, receive: Any, send: Any) -> None:
            done = anyio.Event()

            async def handler() -> None:
                await anyio.sleep(5)
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"late"})
                done.set()
                finished.set()

            handlers.start_soon(handler)  # not cancelled with the ASGI call
            await done.wait()

        app = BraceMiddleware(quart_like, default=Rule(timeout=1.0))
        scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": []}
        await app(scope, receive, send)
        await finished.wait()
    starts = [message["status"] for message in sent if message["type"] == "http.response.start"]
    assert starts == [504]
    assert app.statistics().timed_out == 1


class FailingStore(brace.MemoryStore):
    """A store whose startup check fails, as a RedisStore does with Redis unreachable."""

    async def check(self) -> None:
        raise ConnectionError("redis at 127.0.0.1:1 refused the connection")


async def test_lifespan_startup_fails_when_a_store_check_fails() -> None:
    """The lifespan startup calls check() on each distinct store; a failure fails the
    startup with that message instead of answering 500 to every request later."""
    checked: list[int] = []

    class CountingStore(brace.MemoryStore):
        async def check(self) -> None:
            checked.append(1)

    messages: list[dict[str, Any]] = []
    for store in (CountingStore(), FailingStore()):
        app = app_with(
            rules=[Rule("/a", limits=["1/minute"]), Rule("/b", limits=["2/minute"])],
            store=store,
        )
        inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

        async def receive(inbox: list[dict[str, Any]] = inbox) -> dict[str, Any]:
            return inbox.pop(0)

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert checked == [1]  # one store shared by both rules: checked once
    kinds = [message["type"] for message in messages]
    assert kinds == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
        "lifespan.startup.failed",
    ]
    assert "refused the connection" in messages[-1]["message"]


async def test_lifespan_opens_checks_and_closes_the_stores() -> None:
    """The lifespan opens each store that has open() before checking it (in the lifespan's
    own task, as coredis on trio needs) and closes it at shutdown, after the drain."""
    calls: list[str] = []

    class OpenedStore(brace.MemoryStore):
        async def open(self) -> None:
            calls.append("open")

        async def check(self) -> None:
            calls.append("check")

        async def aclose(self) -> None:
            calls.append("aclose")
            await super().aclose()

    app = app_with(rules=[Rule("/a", limits=["1/minute"])], store=OpenedStore())
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        calls.append(inbox[0]["type"])
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert calls == ["lifespan.startup", "open", "check", "lifespan.shutdown", "aclose"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


@pytest.mark.parametrize("kind", ["queue_full", "circuit_open", "shutting_down"])
async def test_refusals_are_counted_by_name(kind: str) -> None:
    """Each refusal counts under its own name in the statistics."""
    executor = brace.PriorityExecutor(concurrency=1, max_queue=0, clock=anyio.current_time)
    breaker = brace.CircuitBreaker(failure_threshold=1, recovery_time=30, clock=anyio.current_time)
    shutdown = brace.GracefulShutdown(timeout=1, clock=anyio.current_time)
    choices: dict[str, dict[str, Any]] = {
        "queue_full": {"executor": executor},
        "circuit_open": {"default": Rule(breaker=breaker)},
        "shutting_down": {"shutdown": shutdown},
    }
    options = choices[kind]
    app = app_with(**options)
    if kind == "circuit_open":
        breaker.open_for(30)
    elif kind == "shutting_down":
        shutdown.trigger()
    async with client(app) as http, anyio.create_task_group() as tasks:
        if kind == "queue_full":
            tasks.start_soon(http.get, "/late")
            await anyio.sleep(0.1)
        refused = await http.get("/api")
        tasks.cancel_scope.cancel()
    assert refused.status_code == 503
    assert refused.json()["error"] == kind
    assert getattr(app.statistics(), kind) == 1


@pytest.mark.parametrize("shared", [True, False])
async def test_a_guard_shared_with_the_executor_is_asked_once(shared: bool) -> None:
    """When the executor was given the middleware's memory guard, a request passes that
    guard once (the executor asks it), not twice; a guard of its own is still asked."""
    guard = brace.MemoryGuard(100 * 2**20, probe=lambda: 10 * 2**20, clock=anyio.current_time)
    executor = brace.PriorityExecutor(
        concurrency=2, max_queue=10, guard=guard if shared else None, clock=anyio.current_time
    )
    app = app_with(memory=guard, executor=executor)
    async with client(app) as http:
        for _ in range(3):
            assert (await http.get("/api")).status_code == 200
    assert guard.statistics().admitted == 3
