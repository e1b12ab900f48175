"""A Starlette app for ``uvicorn --workers N``: each worker's brace metrics, added up.

Every worker imports this module and makes its own primitives and its own
`brace.prometheus.MultiProcessCollector` on the directory named by ``BRACE_METRICS_DIR``;
``GET /metrics`` (answered by any worker) serves the sum over the workers. ``GET /work``
goes through the middleware, a breaker that times its calls and an executor's ``run()``,
and answers with the worker's pid.
"""

from __future__ import annotations

import os

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import brace
from brace.asgi import BraceMiddleware, Rule
from brace.prometheus import MultiProcessCollector

registry = brace.Registry()
slots = registry.register("default", brace.PriorityExecutor(concurrency=8))
jobs = registry.register("jobs", brace.PriorityExecutor(concurrency=4))
breaker = registry.register("db", brace.CircuitBreaker(record_durations=True))

collector = MultiProcessCollector(registry, os.environ["BRACE_METRICS_DIR"], interval=0.2)
metrics = CollectorRegistry()
metrics.register(collector)


async def work(request: Request) -> PlainTextResponse:
    async with breaker:
        await jobs.run(anyio.sleep, 0.002)
    return PlainTextResponse(str(os.getpid()))


async def scrape(request: Request) -> Response:
    return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)


app = BraceMiddleware(
    Starlette(routes=[Route("/work", work), Route("/metrics", scrape)]),
    rules=[Rule("/metrics", exempt=True)],
    default=Rule(),
    executor=slots,
)
registry.register("http", app)
