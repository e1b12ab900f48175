"""BraceMiddleware around a Litestar app, and the brace.litestar guard, through httpx."""

from __future__ import annotations

import anyio
import httpx
import pytest
from litestar import Litestar, get, post

import brace
from asgi_scopes import client
from brace.asgi import BraceMiddleware, Rule
from brace_demo.rules import DEMO_RULES


@get("/api/items")
async def items() -> dict[str, str]:
    return {"hello": "litestar"}


@post("/api/upload", status_code=200)
async def upload() -> dict[str, bool]:
    return {"ok": True}


async def test_litestar_wrapped_routes_are_limited() -> None:
    """Wrapped around Litestar, the demo table and the default rule apply, 404s included."""
    app = BraceMiddleware(
        Litestar(route_handlers=[items, upload]),
        rules=DEMO_RULES,
        default=Rule(limits=["3/minute"]),
        clock=anyio.current_time,
    )
    async with client(app) as http:
        codes = [(await http.post("/api/upload")).status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]
        response = await http.get("/api/items")
        assert response.json() == {"hello": "litestar"}
        assert response.headers["ratelimit"].startswith('"default";r=2;')
        assert (await http.get("/missing")).status_code == 404  # counted too
        assert (await http.get("/api/items")).headers["ratelimit"].startswith('"default";r=0;')
        refused = await http.get("/api/items")
        assert refused.status_code == 429
        assert refused.json()["limit"] == "default"


async def test_litestar_queue_full() -> None:
    """An executor with no free slot and no queue answers 503 in front of Litestar."""
    executor = brace.PriorityExecutor(concurrency=1, max_queue=0, clock=anyio.current_time)
    gate = anyio.Event()

    @get("/wait")
    async def wait() -> str:
        await gate.wait()
        return "done"

    app = BraceMiddleware(
        Litestar(route_handlers=[wait, items]), executor=executor, clock=anyio.current_time
    )
    async with client(app) as http, anyio.create_task_group() as tg:
        tg.start_soon(http.get, "/wait")
        await anyio.sleep(0.1)
        refused = await http.get("/api/items")
        gate.set()
    assert refused.status_code == 503
    assert refused.json()["error"] == "queue_full"


async def test_litestar_guard_reads_route_opt() -> None:
    """The guard limits each route by its opt['rate_limit'], state shared across requests."""
    from brace.litestar import RateLimitGuard

    guard = RateLimitGuard(clock=anyio.current_time)

    @post("/api/ai", guards=[guard], opt={"rate_limit": "2/minute", "rate_limit_name": "ai"})
    async def ai() -> dict[str, str]:
        return {"answer": "42"}

    @get("/open", guards=[guard])
    async def open_route() -> str:
        return "open"

    app = Litestar(route_handlers=[ai, open_route])
    async with client(app) as http:
        assert (await http.post("/api/ai")).status_code == 201
        assert (await http.post("/api/ai")).status_code == 201
        refused = await http.post("/api/ai")
        for _ in range(3):
            assert (await http.get("/open")).status_code == 200
    assert len(guard._routes) == 2  # one entry per route, however Litestar copies handlers
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-policy"] == '"ai";q=2;w=60'
    assert refused.headers["ratelimit"].startswith('"ai";r=0;t=')
    body = refused.json()
    assert body["status_code"] == 429
    assert body["extra"]["limit"] == "ai"


async def test_litestar_guard_per_user() -> None:
    """With a user callable and rate_limit_per='user', only identified users are counted."""
    from brace.litestar import RateLimitGuard

    guard = RateLimitGuard(
        user=lambda connection: connection.headers.get("x-user"), clock=anyio.current_time
    )

    @get("/me", guards=[guard], opt={"rate_limit": ["1/minute"], "rate_limit_per": "user"})
    async def me() -> str:
        return "me"

    app = Litestar(route_handlers=[me])
    async with client(app) as http:
        assert (await http.get("/me", headers={"x-user": "ann"})).status_code == 200
        assert (await http.get("/me", headers={"x-user": "ann"})).status_code == 429
        assert (await http.get("/me", headers={"x-user": "bob"})).status_code == 200
        for _ in range(3):
            assert (await http.get("/me")).status_code == 200


# -- the drain ------------------------------------------------------------------------


@get("/slow", opt={"rate_limit": "100/minute"})
async def slow() -> dict[str, bool]:
    await anyio.sleep(50)
    return {"late": True}


async def test_litestar_wrapped_a_request_is_cut_at_the_drain_timeout() -> None:
    """Wrapped in BraceMiddleware (the adapter's way to queue), a Litestar request running
    in a slot and one waiting for a slot are cancelled at the drain's timeout and answered
    503 ``shutting_down``, as for any ASGI app; the guard's limits still apply inside."""
    from brace.litestar import RateLimitGuard

    executor = brace.PriorityExecutor(2, 10, clock=anyio.current_time)
    app = BraceMiddleware(
        Litestar(route_handlers=[slow], guards=[RateLimitGuard(clock=anyio.current_time)]),
        executor=executor,
        shutdown=brace.GracefulShutdown(clock=anyio.current_time),  # (never triggered)
        clock=anyio.current_time,
    )
    answers: list[tuple[httpx.Response, float]] = []
    start = anyio.current_time()
    async with client(app) as http:

        async def call() -> None:
            answer = await http.get("/slow")
            answers.append((answer, anyio.current_time() - start))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call)
            tasks.start_soon(call)
            await anyio.sleep(1)
            tasks.start_soon(call)  # waits: both slots are taken
            await anyio.sleep(1)
            report = await executor.drain(30.0)
    assert len(answers) == 3
    for answer, at in answers:
        assert answer.status_code == 503
        assert answer.json()["error"] == "shutting_down"
        assert answer.headers["connection"] == "close"
        assert at == pytest.approx(32.0)
    assert (report.cancelled_running, report.cancelled_queued, report.still_running) == (2, 1, 0)
    assert app.statistics().shutting_down == 3


async def test_the_litestar_guard_alone_holds_no_slot_for_a_drain_to_bound() -> None:
    """RateLimitGuard only rate-limits: its requests take no executor slot, so an
    executor's drain neither waits for nor cuts them (wrap the app, as above, for that)."""
    from brace.litestar import RateLimitGuard

    executor = brace.PriorityExecutor(2, 10, clock=anyio.current_time)
    app = Litestar(route_handlers=[slow], guards=[RateLimitGuard(clock=anyio.current_time)])
    answers: list[tuple[httpx.Response, float]] = []
    start = anyio.current_time()
    async with client(app) as http, anyio.create_task_group() as tasks:

        async def call() -> None:
            answer = await http.get("/slow")
            answers.append((answer, anyio.current_time() - start))

        tasks.start_soon(call)
        await anyio.sleep(1)
        report = await executor.drain(30.0)
        assert anyio.current_time() - start == pytest.approx(1.0)  # nothing to wait for
    assert (report.finished, report.still_running, report.timed_out) == (0, 0, False)
    ((answer, at),) = answers
    assert answer.json() == {"late": True}
    assert at == pytest.approx(50.0)
