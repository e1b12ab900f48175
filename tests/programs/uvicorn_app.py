"""A Starlette app under a real uvicorn server, with brace draining beside it on SIGTERM.

Usage: ``python uvicorn_app.py PORT``. ``GET /slow`` runs one second of work in a brace
executor; ``GET /ready`` reports readiness. GracefulShutdown chains onto uvicorn's
signal handlers (``chain=True``) so uvicorn still shuts down; the lifespan's shutdown
step waits for brace's drain and prints its report.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import brace

shutdown = brace.GracefulShutdown(timeout=5.0, chain=True)
executor = shutdown.register(brace.PriorityExecutor(concurrency=4))


async def slow(request: Request) -> PlainTextResponse:
    """One second of work in the executor; 503 once draining."""
    try:
        await executor.run(anyio.sleep, 1.0)
    except brace.ShuttingDown:
        return PlainTextResponse("draining", status_code=503)
    return PlainTextResponse("done")


async def ready(request: Request) -> PlainTextResponse:
    """200 while ready, 503 once the shutdown started."""
    if shutdown.ready:
        return PlainTextResponse("ready")
    return PlainTextResponse("draining", status_code=503)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Watch for the signal while serving; on the way out, wait for brace's drain."""
    async with anyio.create_task_group() as tg:
        await tg.start(shutdown.wait)
        print("serving", flush=True)
        yield
        report = await shutdown.wait_drained()
        if report is not None:
            (drain,) = report.drained
            print("drained", drain.finished, "timed_out", report.timed_out, flush=True)  # type: ignore[attr-defined]
        print("executor running", executor.statistics().running, flush=True)
        tg.cancel_scope.cancel()


app = Starlette(routes=[Route("/slow", slow), Route("/ready", ready)], lifespan=lifespan)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
