"""What the demo server does, protected or not: a fake database and the route handlers.

`FakeDatabase` stands in for a real one: ``connections`` connections, each query holding
one for its latency; when every connection is busy a query waits its turn (FIFO, without
bound, as a driver's pool does). The protected app (`brace_demo.app`) and its unprotected
twin (`brace_demo.twin`) share these handlers, so the only difference between them is
brace.
"""

from __future__ import annotations

import collections
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from brace import MemorySample

__all__ = ("DemoSettings", "FakeDatabase", "FakeDatabaseStatistics", "routes", "user_of")

#: the largest JSON body /api/items, /api/auth and /api/ai read; uploads may be bigger
MAX_JSON_BODY = 64 * 1024
MAX_UPLOAD = 8 * 2**20


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """Every figure of the demo server; the defaults are SEED.md's.

    Protections (the protected app only): ``concurrency`` requests run at a time
    (``reserved`` of the slots kept for HIGH work, which SEED processes immediately) and
    ``max_queue`` wait (at most ``queue_timeout`` seconds each; ``None``: no limit, the
    route's timeout starts once a request runs); the ``/api/ai`` route's breaker opens
    after ``failure_threshold`` failed requests in a row (``recovery_time`` seconds
    open); ``retries`` retries with exponential backoff; timeouts
    ``timeout`` (default), ``ai_timeout`` and ``upload_timeout`` seconds; rate limits per
    user (the ``X-User`` header) or, for anonymous requests, per client address;
    the default rule also has a token bucket allowing bursts of ``burst`` requests;
    ``memory_high`` bytes of RSS starts holding low-priority work back (it counts against
    the queue's ``max_queue`` places), ``memory_critical`` bytes (the ceiling) refuses
    every new request, and the garbage collector runs every ``collect_interval`` seconds
    (``memory_probe``: what measures memory, default the process's RSS); requests slower
    than ``slow_request`` seconds are logged; ``drain_timeout`` seconds to finish on
    SIGTERM / SIGINT / SIGUSR2. ``clock``: the protections' clock (default
    ``time.monotonic``; tests pass ``anyio.current_time`` to run in virtual time).

    The service itself (both apps): the database's ``db_connections`` and query latencies,
    and the AI upstream (``upstream_url``; ``None``: an in-process fake with
    ``upstream_latency`` seconds per answer, ``upstream_failure_rate`` of them 503s).
    """

    concurrency: int = 10
    reserved: int = 2
    max_queue: int = 1000
    queue_timeout: float | None = None
    failure_threshold: int = 15
    recovery_time: float = 30.0
    retries: int = 3
    timeout: float = 30.0
    ai_timeout: float = 60.0
    upload_timeout: float = 120.0
    ai_limit: str = "10/minute"
    auth_limit: str = "20/15 minutes"
    upload_limit: str = "5/minute"
    default_limit: str = "60/minute"
    burst: int = 10
    memory_high: int = 350 * 2**20
    memory_critical: int | None = 1024 * 2**20
    collect_interval: float | None = 300.0
    memory_probe: Callable[[], MemorySample | int] | None = None
    clock: Callable[[], float] | None = None
    slow_request: float = 3.0
    drain_timeout: float = 30.0
    max_lag: float = 0.1
    db_connections: int = 10
    read_latency: float = 0.040
    write_latency: float = 0.060
    auth_latency: float = 0.010
    upstream_url: str | None = None
    upstream_latency: float = 0.5
    upstream_failure_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class FakeDatabaseStatistics:
    """``connections`` in the pool, ``in_use`` now, ``waiting`` for one, ``queries`` run."""

    connections: int
    in_use: int
    waiting: int
    queries: int


class FakeDatabase:
    """A pool of ``connections``; a query holds one for its latency (FIFO wait, unbounded)."""

    def __init__(self, connections: int = 10) -> None:
        if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
            raise ValueError(f"connections must be an int >= 1, got {connections!r}")
        self.connections = connections
        self._pool: anyio.CapacityLimiter | None = None  # made in the event loop, on first use
        self._queries = 0
        self._waiting = 0

    async def query(self, seconds: float) -> None:
        """Run one query of ``seconds`` on a free connection, waiting for one if needed."""
        pool = self._pool
        if pool is None:
            pool = self._pool = anyio.CapacityLimiter(self.connections)
        self._waiting += 1
        try:
            await pool.acquire()
        finally:
            self._waiting -= 1
        try:
            await anyio.sleep(seconds)
            self._queries += 1
        finally:
            pool.release()

    async def ping(self) -> bool:
        """The health check: a connection can be had within the health check's time."""
        await self.query(0.0)
        return True

    def statistics(self) -> FakeDatabaseStatistics:
        pool = self._pool
        in_use = 0 if pool is None else pool.borrowed_tokens
        return FakeDatabaseStatistics(self.connections, int(in_use), self._waiting, self._queries)


def user_of(scope: Any) -> str | None:
    """The demo's user: the ``X-User`` header (a real server would verify a token)."""
    for name, value in scope.get("headers", ()):
        if name == b"x-user":
            text: str = value.decode("latin-1").strip()
            return text[:64] or None
    return None


async def _json_body(request: Request, limit: int = MAX_JSON_BODY) -> Any:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _BadRequest(f"the body is larger than {limit} bytes")
    if not body:
        return {}
    try:
        return json.loads(body)
    except ValueError:
        raise _BadRequest("the body is not JSON") from None


class _BadRequest(Exception):
    pass


def routes(settings: DemoSettings, database: FakeDatabase, ai: httpx.AsyncClient) -> list[Route]:
    """The service's routes (not the health endpoints, which each app adds its own way)."""
    items: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
    ids = itertools.count(1)

    async def list_items(request: Request) -> JSONResponse:
        await database.query(settings.read_latency)
        return JSONResponse({"items": list(itertools.islice(reversed(items), 10))})

    async def create_item(request: Request) -> JSONResponse:
        try:
            body = await _json_body(request)
        except _BadRequest as error:
            return JSONResponse({"error": "bad_request", "detail": str(error)}, 400)
        name = str(body.get("name", "item"))[:100] if isinstance(body, dict) else "item"
        await database.query(settings.write_latency)
        item = {"id": next(ids), "name": name}
        items.append(item)
        return JSONResponse(item, 201)

    async def auth(request: Request) -> JSONResponse:
        try:
            body = await _json_body(request)
        except _BadRequest as error:
            return JSONResponse({"error": "bad_request", "detail": str(error)}, 400)
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, str) or not user:
            user = user_of(request.scope) or "anonymous"
        await database.query(settings.auth_latency)  # look the user up, check the password
        return JSONResponse({"user": user[:64], "token": f"demo-token-{user[:64]}"})

    async def upload(request: Request) -> JSONResponse:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD:
                return JSONResponse({"error": "too_large", "limit": MAX_UPLOAD}, 413)
        await database.query(settings.write_latency)
        return JSONResponse({"stored": size}, 201)

    async def complete(request: Request) -> JSONResponse:
        if request.method == "POST":
            try:
                body = await _json_body(request)
            except _BadRequest as error:
                return JSONResponse({"error": "bad_request", "detail": str(error)}, 400)
            prompt = str(body.get("prompt", "")) if isinstance(body, dict) else ""
        else:
            prompt = request.query_params.get("prompt", "")
        try:
            answer = await ai.post("/v1/complete", json={"prompt": prompt[:2000]})
        except httpx.HTTPError as error:
            return JSONResponse({"error": "upstream_error", "detail": type(error).__name__}, 502)
        if answer.status_code != 200:
            return JSONResponse(
                {"error": "upstream_error", "detail": f"upstream answered {answer.status_code}"},
                502,
            )
        return JSONResponse(answer.json())

    return [
        Route("/api/items", list_items, methods=["GET"]),
        Route("/api/items", create_item, methods=["POST"]),
        Route("/api/auth", auth, methods=["POST"]),
        Route("/api/upload", upload, methods=["POST"]),
        Route("/api/ai", complete, methods=["GET", "POST"]),
    ]
