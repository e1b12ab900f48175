"""The demo server protected by brace: SEED.md's server, every protection at its defaults.

`create_app` wraps the service (`brace_demo.service`) in `brace.asgi.BraceMiddleware`:

- rate limits per user (``X-User``) or, for anonymous requests, per client address
  (sliding windows): ``/api/ai`` 10 per minute, ``/api/auth`` 20 per 15 minutes,
  ``/api/upload`` 5 per minute, everything else 60 per minute plus a token bucket that
  allows bursts of 10 (refilled at 60 per minute); health checks unlimited;
- a `brace.PriorityExecutor`: 10 requests at a time, 1000 waiting, served HIGH (health,
  auth) before MEDIUM (reads, AI) before LOW (writes, uploads); when the queue is full a
  new request is refused with 503 unless it outranks a waiter, which is then dropped;
- a `brace.MemoryGuard` given to the executor: above 350 MB of RSS low-priority work is
  held at the door (counted against the queue's 1000 places: 503 ``queue_full`` beyond),
  above 1024 MB (the ceiling) every new request is refused (503 ``memory_pressure``), and
  the garbage collector runs every 5 minutes;
- a `brace.LoadMonitor`: when the event loop runs over 100 ms late, less urgent work is
  shed;
- timeouts: 30 s, 60 s for AI, 120 s for uploads (504 when passed);
- the AI upstream: 3 retries with exponential backoff (`brace.httpx.ResilientTransport`),
  and a breaker on the ``/api/ai`` route that opens after 15 failed requests; while it is
  open, AI requests are refused at once (503 ``circuit_open`` with ``Retry-After``) before
  they take a queue place;
- `brace.GracefulShutdown` on SIGTERM / SIGINT / SIGUSR2: the server keeps listening while
  it drains (new requests and ``/health`` get 503), every in-flight request has 30 s to
  finish and is cancelled then (503 ``shutting_down``), then uvicorn closes and exits;
- requests slower than 3 s are logged (logger ``brace.asgi``);
- ``/health``, ``/api/health``, ``/api/health/full``, ``/api/health/queue``,
  ``/api/health/metrics`` from `brace.asgi.health_app` and a `brace.Registry` in which
  every limiter, breaker, queue and guard is registered.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

import brace
from brace.asgi import BraceMiddleware, Limit, Rule, health_app
from brace.httpx import ResilientTransport

from .service import DemoSettings, FakeDatabase, routes, user_of
from .upstream import UpstreamApp

__all__ = ("create_app",)


def create_app(settings: DemoSettings | None = None) -> BraceMiddleware:
    """The protected demo server, an ASGI app (``uvicorn --factory brace_demo.app:create_app``).

    The Starlette app inside is ``middleware.app``; its ``state`` holds the ``registry``,
    the ``database`` and the AI ``breaker``.
    """
    settings = DemoSettings() if settings is None else settings
    registry = brace.Registry()
    clock = settings.clock
    memory = registry.register(
        "process",
        brace.MemoryGuard(
            high=settings.memory_high,
            critical=settings.memory_critical,
            collect_interval=settings.collect_interval,
            probe=settings.memory_probe,
            clock=clock,
        ),
    )
    executor = registry.register(
        "default",
        brace.PriorityExecutor(
            concurrency=settings.concurrency,
            max_queue=settings.max_queue,
            queue_timeout=settings.queue_timeout,
            on_full="drop_less_important",
            reserved=settings.reserved,  # HIGH starts at once, not after a 40 ms read
            guard=memory,  # memory-held work counts against the queue's bound
            clock=clock,
        ),
    )
    load = registry.register("event_loop", brace.LoadMonitor(max_lag=settings.max_lag, clock=clock))
    shutdown = registry.register(
        "server",
        brace.GracefulShutdown(
            timeout=settings.drain_timeout, chain=True, serve_while_draining=True, clock=clock
        ),
    )
    shutdown.register(executor)
    breaker = registry.register(
        "ai_upstream",
        brace.CircuitBreaker(
            failure_threshold=settings.failure_threshold,
            recovery_time=settings.recovery_time,
            name="ai_upstream",
            clock=clock,
        ),
    )
    retry = registry.register(
        "ai_upstream_retry",
        brace.Retry(
            settings.retries + 1,  # the first attempt and three retries
            backoff=brace.Backoff.exponential(base=0.1, cap=10.0),
            # the transport raises a brace.Rejected for a retryable status (503, ...)
            retry_on=(httpx.TransportError, brace.Rejected),
            name="ai_upstream",
        ),
    )
    inner: httpx.AsyncBaseTransport
    if settings.upstream_url is None:
        inner = httpx.ASGITransport(
            app=UpstreamApp(
                latency=settings.upstream_latency, failure_rate=settings.upstream_failure_rate
            )
        )
        base_url = "http://upstream"
    else:
        inner = httpx.AsyncHTTPTransport()
        base_url = settings.upstream_url
    ai = httpx.AsyncClient(
        transport=ResilientTransport(
            inner,
            retry=retry,
            retry_methods=["GET", "POST"],  # a completion has no side effect: POST may retry
            # the breaker is the /api/ai rule's: it counts requests (after their retries),
            # as SEED's queue does, and refuses before a request queues while open
        ),
        base_url=base_url,
        timeout=settings.ai_timeout,
    )
    database = FakeDatabase(settings.db_connections)

    health = brace.Health(timeout=1.0, shutdown=shutdown, memory=memory)
    health.add("database", database.ping)

    async def upstream_closed() -> bool:
        return breaker.state is not brace.CircuitState.OPEN

    health.add("ai_upstream", upstream_closed, critical=False)
    # the specification's single queue and breaker fields: this executor, this breaker
    monitoring = health_app(registry, health=health, executor="default", breaker="ai_upstream")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await ai.aclose()

    service: list[BaseRoute] = [
        *routes(settings, database, ai),
        Route("/health", monitoring, methods=["GET", "HEAD"]),
        Mount("/api", monitoring),  # /api/health, /api/health/full, /queue, /metrics
    ]
    starlette = Starlette(
        routes=service,
        lifespan=lifespan,
        exception_handlers={brace.Rejected: _refused},
    )
    starlette.state.registry = registry
    starlette.state.database = database
    starlette.state.breaker = breaker
    registry.register("database", database)

    per_user: Literal["client"] = (
        "client"  # the user (X-User) when there is one, else the client address
    )
    rules = [
        Rule("/health", priority=brace.Priority.HIGH, timeout=settings.timeout, name="health"),
        Rule("/api/health", priority=brace.Priority.HIGH, timeout=settings.timeout, name="health"),
        Rule(
            "/api/ai",
            limits=[Limit(settings.ai_limit, per=per_user)],
            priority=brace.Priority.MEDIUM,
            timeout=settings.ai_timeout,
            breaker=breaker,  # open: 503 circuit_open at once, no queue place taken
            name="ai",
        ),
        Rule(
            "/api/auth",
            limits=[Limit(settings.auth_limit, per=per_user)],
            priority=brace.Priority.HIGH,
            timeout=settings.timeout,
            name="auth",
        ),
        Rule(
            "/api/upload",
            limits=[Limit(settings.upload_limit, per=per_user)],
            priority=brace.Priority.LOW,
            timeout=settings.upload_timeout,
            name="upload",
        ),
    ]
    middleware = BraceMiddleware(
        starlette,
        rules=rules,
        default=Rule(
            limits=[
                Limit(settings.default_limit, per=per_user, name="api"),
                Limit(
                    brace.TokenBucket.from_rate(settings.default_limit, burst=settings.burst),
                    per=per_user,
                    name="burst",
                ),
            ],
            timeout=settings.timeout,
            name="default",
        ),
        executor=executor,
        memory=memory,
        load=load,
        shutdown=shutdown,
        user=user_of,
        slow_request=settings.slow_request,
        drain_timeout=settings.drain_timeout,
        clock=clock,
    )
    registry.register("http", middleware)
    for name, limiter in middleware.limiters.items():
        registry.register(name, limiter)  # the health JSON's rate_limit section
    return middleware


async def _refused(request: Request, error: Exception) -> Response:
    """A refusal raised inside a handler (the AI upstream's open circuit): 503."""
    assert isinstance(error, brace.Rejected)
    retry = 5.0 if error.retry_after is None else error.retry_after
    seconds = max(1, math.ceil(retry))
    reason = "circuit_open" if isinstance(error, brace.CircuitOpen) else "unavailable"
    body: dict[str, Any] = {"error": reason, "detail": str(error), "retry_after": seconds}
    return JSONResponse(body, 503, headers={"retry-after": str(seconds)})
