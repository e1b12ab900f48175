"""brace for aiohttp: a server middleware and a client middleware (aiohttp runs on asyncio).

Server: ``web.Application(middlewares=[brace_mw])`` with ``brace_mw = BraceMiddleware(...)``
applies the same route rules as `brace.asgi.BraceMiddleware` (rate limits per user and per
address, load shedding, memory guard, executor slot, breaker, timeout) and answers 429 / 503
with ``Retry-After`` and the IETF ``RateLimit`` fields, through the same pipeline
(``brace._pipeline``). ``brace_mw.setup(app)`` checks the stores at startup, runs the
memory guard's and load monitor's samplers while the app runs, drains the executor when it
stops, and ends a rule's ``timeout`` when the response starts.

Client: ``aiohttp.ClientSession(middlewares=(ResilientMiddleware(...),))`` retries idempotent
requests on 429 / 502 / 503 / 504 and connection errors (honouring ``Retry-After``), asks a
circuit breaker and a client-side rate limit before each attempt, and releases every
response it does not return.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from typing_extensions import Unpack

from ._extras import missing_extra

try:
    from aiohttp import web
except ImportError as error:  # the extra is not installed
    raise missing_extra("aiohttp", "aiohttp", error) from error

from ._aiohttp_client import ResilientMiddleware as ResilientMiddleware
from ._pipeline import (
    Answer,
    BraceMiddlewareStatistics,
    Exchange,
    Pipeline,
    PipelineOptions,
    is_preflight,
)

__all__ = ("BraceMiddleware", "ResilientMiddleware")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# where a request keeps its exchange, for the on_response_prepare signal
_EXCHANGE: Any = (
    web.RequestKey("brace.exchange", Exchange) if hasattr(web, "RequestKey") else "brace.exchange"
)


class BraceMiddleware:
    """An aiohttp server middleware: the rules and protections of
    `brace.asgi.BraceMiddleware`, with the same arguments (``user`` and key functions
    receive the ``web.Request``). ``brace_mw.setup(app)`` adds `context` to
    ``app.cleanup_ctx`` and lets a rule's ``timeout`` end when the response starts (as in
    ASGI; without it the timeout bounds the whole handler, streaming included). WebSocket
    upgrades pass straight through: no slot, no timeout, no HTTP answer after the upgrade.
    """

    __middleware_version__ = 1  # a new-style middleware: (request, handler)

    def __init__(self, **options: Unpack[PipelineOptions]) -> None:
        self._pipeline = pipeline = Pipeline(logger_name="brace.aiohttp", **options)
        self.executor = pipeline.executor
        self.memory = pipeline.memory
        self.load = pipeline.load
        self.shutdown = pipeline.shutdown
        client = pipeline.client

        def address(request: web.Request) -> str:
            """The client's address of an aiohttp request."""
            return client(_scope(request))

        self._address = address

    def statistics(self) -> BraceMiddlewareStatistics:
        """The counters since construction."""
        return self._pipeline.counters.snapshot()

    def setup(self, app: web.Application) -> None:
        """Add `context` to ``app.cleanup_ctx`` and the response-start hook to
        ``app.on_response_prepare`` (call before the app starts)."""
        app.cleanup_ctx.append(self.context)
        app.on_response_prepare.append(self._prepared)

    async def context(self, app: web.Application) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx``: check the stores, run the background tasks while the
        app runs, drain at the end."""
        pipeline = self._pipeline
        await pipeline.check_stores()
        tasks = [asyncio.ensure_future(run()) for run in pipeline.background()]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await pipeline.drain()
            await pipeline.close_stores()

    @staticmethod
    async def _prepared(request: web.Request, response: web.StreamResponse) -> None:
        exchange = request.get(_EXCHANGE)
        if exchange is not None and not exchange.started:
            exchange.response = response
            exchange.response_started(response.status)

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        method = request.method
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await handler(request)  # an upgrade is no request to queue or time
        pipeline = self._pipeline
        preflight = method == "OPTIONS" and is_preflight(method, request.raw_headers)
        exchange = pipeline.begin(method, request.path, preflight=preflight)
        if exchange is None:
            return await handler(request)
        answer = await pipeline.check_limits(exchange, request, self._address, request)
        if answer is not None:
            return _response(answer)
        response: web.StreamResponse | None = None
        raised: web.HTTPException | None = None

        async def call() -> int:
            nonlocal response, raised
            request[_EXCHANGE] = exchange
            try:
                response = await handler(request)
            except web.HTTPException as error:  # an answer, not a failure of the handler
                raised = error
                return error.status
            return response.status

        answer = await pipeline.run(exchange, method, request.path, call)
        if answer is not None:
            return _response(answer)
        if raised is not None:
            raise raised
        if response is None:  # a stream timeout cut the handler after the response started
            if request.transport is not None:
                request.transport.close()  # the client must see the stream end early
            prepared: web.StreamResponse = exchange.response
            return prepared
        if not response.prepared:
            for name, value in pipeline.success_headers(exchange):
                response.headers[name] = value
        return response


def _scope(request: web.Request) -> dict[str, Any]:
    peer = request.remote
    return {"client": None if not peer else (peer, 0), "headers": request.raw_headers}


def _response(answer: Answer) -> web.Response:
    payload = answer.payload()
    response = web.Response(body=payload, status=answer.status, content_type="application/json")
    for name, value in answer.headers:
        response.headers[name] = value
    return response
