"""The same demo server without brace: the twin the overload demo compares against.

Same routes, same fake database (10 connections, FIFO wait without bound), same AI
upstream called with a plain ``httpx.AsyncClient``; no rate limits, no queue bound, no
priorities, no timeouts, no breaker, no memory guard, no drain. Its health endpoints
answer the same paths with what such a server usually has: ``{"status": "ok"}`` and a
few process figures.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from .service import DemoSettings, FakeDatabase, routes
from .upstream import UpstreamApp

__all__ = ("create_twin",)


def create_twin(settings: DemoSettings | None = None) -> Starlette:
    """The unprotected demo server (``uvicorn --factory brace_demo.twin:create_twin``)."""
    settings = DemoSettings() if settings is None else settings
    if settings.upstream_url is None:
        ai = httpx.AsyncClient(
            transport=httpx.ASGITransport(
                app=UpstreamApp(
                    latency=settings.upstream_latency, failure_rate=settings.upstream_failure_rate
                )
            ),
            base_url="http://upstream",
            timeout=None,
        )
    else:
        ai = httpx.AsyncClient(base_url=settings.upstream_url, timeout=None)
    database = FakeDatabase(settings.db_connections)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def full(request: Request) -> JSONResponse:
        await database.ping()
        return JSONResponse({"status": "ok", "checks": {"database": {"status": "ok"}}})

    async def queue(request: Request) -> JSONResponse:
        stats = database.statistics()
        return JSONResponse({"database": {"in_use": stats.in_use, "waiting": stats.waiting}})

    async def metrics(request: Request) -> JSONResponse:
        times = os.times()
        return JSONResponse(
            {"process": {"pid": os.getpid(), "cpu_user": times.user, "cpu_system": times.system}}
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await ai.aclose()

    service: list[BaseRoute] = [
        *routes(settings, database, ai),
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/api/health", health, methods=["GET", "HEAD"]),
        Route("/api/health/full", full, methods=["GET", "HEAD"]),
        Route("/api/health/queue", queue, methods=["GET", "HEAD"]),
        Route("/api/health/metrics", metrics, methods=["GET", "HEAD"]),
    ]
    app = Starlette(routes=service, lifespan=lifespan)
    app.state.database = database
    return app
