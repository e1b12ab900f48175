"""End to end: BraceMiddleware in a real uvicorn server on 127.0.0.1 (real time, ~1 s)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import brace
from brace.asgi import BraceMiddleware, Rule, health_app
from brace_demo.rules import DEMO_RULES


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


@pytest.fixture
def server() -> Iterator[tuple[str, BraceMiddleware]]:
    """A uvicorn server on a free loopback port, stopped (lifespan shutdown) at the end."""
    registry = brace.Registry()
    executor = registry.register("default", brace.PriorityExecutor(concurrency=10, max_queue=1000))
    inner = Starlette(
        routes=[
            Route("/api/upload", hello, methods=["POST"]),
            Route("/api/items", hello),
            Mount("/api", health_app(registry)),
        ]
    )
    app = BraceMiddleware(
        inner,
        rules=[Rule("/api/health", exempt=True), *DEMO_RULES],
        default=Rule(limits=["60/minute"]),
        executor=executor,
        memory=brace.MemoryGuard(high=2**40),
        drain_timeout=2.0,
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert thread.is_alive(), "uvicorn exited"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = uv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        uv.should_exit = True
        thread.join(10)
    assert not thread.is_alive()
    assert executor.draining  # the lifespan shutdown drained it


def test_uvicorn_end_to_end(server: tuple[str, BraceMiddleware]) -> None:
    """Over real HTTP: limits, 429 headers, success headers and the health endpoints work."""
    url, app = server
    with httpx.Client(base_url=url, timeout=5) as http:
        codes = [http.post("/api/upload").status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]
        refused = http.post("/api/upload")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-policy"] == '"upload";q=5;w=60'
        assert refused.json()["limit"] == "upload"
        ok = http.get("/api/items")
        assert ok.status_code == 200
        assert ok.headers["ratelimit"].startswith('"default";r=59;')
        queue = http.get("/api/health/queue").json()
        assert queue["queue"]["stats"]["totalProcessed"] >= 6
        assert http.get("/api/health").json() == {"schemaVersion": 1, "status": "ok"}
    assert app.statistics().rate_limited == 2


class UnreachableStore(brace.MemoryStore):
    """A store whose check fails, as a RedisStore's does when Redis cannot be reached."""

    async def check(self) -> None:
        raise ConnectionError("Redis at 127.0.0.1:1 refused the connection")


def test_uvicorn_does_not_start_when_a_store_check_fails(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """With a store that cannot serve, uvicorn's startup fails and the server exits
    (lifespan.startup.failed, with the store's error), instead of serving 500s."""
    app = BraceMiddleware(
        Starlette(routes=[Route("/", hello)]),
        default=Rule(limits=["60/minute"]),
        store=UnreachableStore(),
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="auto")
    uv = uvicorn.Server(config)
    exits: list[object] = []

    def run() -> None:
        try:
            uv.run()
        except SystemExit as stop:  # uvicorn exits with status 3 on a failed startup
            exits.append(stop.code)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert not uv.started
    assert exits == [3]
    assert "refused the connection" in capfd.readouterr().err
