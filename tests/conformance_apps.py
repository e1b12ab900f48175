"""The same protected app on Starlette, FastAPI, Litestar, Quart and aiohttp, for
tests/test_conformance.py.

Every app has the same routes: ``/items`` (limited per client: 3 a minute), ``/slow``
(sleeps ``seconds``), ``/fail`` (a 500, behind a breaker), ``/events`` (five Server-Sent
Events 0.1 s apart, under a 0.3 s timeout), ``/ws`` (a WebSocket echo) and ``/lifespan``
(whether the app's own startup hook ran). brace runs one executor slot and a queue of one.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

import brace
from brace.asgi import BraceMiddleware, Limit, Rule, by_header

TICKS = 5
TICK = 0.1
TIMEOUT = 0.3
SLOW_TIMEOUT = 0.6


@dataclass
class Protected:
    """One app, ready to serve: the ASGI (or aiohttp) app and what the checks look at."""

    app: Any
    executor: brace.PriorityExecutor
    state: dict[str, bool] = field(default_factory=dict)
    statistics: Callable[[], Any] | None = None


def brace_options() -> dict[str, Any]:
    breaker = brace.CircuitBreaker(failure_threshold=2, recovery_time=60.0)
    return {
        "rules": [
            Rule("/items", limits=[Limit("3/minute")]),
            Rule("/slow", timeout=SLOW_TIMEOUT),
            Rule("/fail", breaker=breaker),
            Rule("/events", timeout=TIMEOUT),
        ],
        "executor": brace.PriorityExecutor(concurrency=1, max_queue=1),
        "user": by_header("x-user"),
        "trusted_proxies": ["127.0.0.1", "unix"],
        "drain_timeout": 2.0,
    }


async def _events(sleep: Callable[[float], Any]) -> AsyncIterator[bytes]:
    for n in range(TICKS):
        await sleep(TICK)
        yield f"data: {n}\n\n".encode()


def _wrap(app: Any, state: dict[str, bool]) -> Protected:
    options = brace_options()
    protected = BraceMiddleware(app, **options)
    return Protected(protected, options["executor"], state, protected.statistics)


def starlette_app() -> Protected:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    state: dict[str, bool] = {}

    async def items(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def slow(request: Request) -> PlainTextResponse:
        await anyio.sleep(float(request.query_params["seconds"]))
        return PlainTextResponse("done")

    async def fail(request: Request) -> PlainTextResponse:
        return PlainTextResponse("broken", status_code=500)

    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(_events(anyio.sleep), media_type="text/event-stream")

    async def lifespan_state(request: Request) -> JSONResponse:
        return JSONResponse(state)

    async def echo(socket: WebSocket) -> None:
        await socket.accept()
        try:
            while True:
                await socket.send_text("echo " + await socket.receive_text())
        except WebSocketDisconnect:
            pass

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        state["started"] = True
        yield

    app = Starlette(
        routes=[
            Route("/items", items),
            Route("/slow", slow),
            Route("/fail", fail),
            Route("/events", events),
            Route("/lifespan", lifespan_state),
            WebSocketRoute("/ws", echo),
        ],
        lifespan=lifespan,
    )
    return _wrap(app, state)


def fastapi_app() -> Protected:
    from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
    from fastapi.responses import PlainTextResponse, StreamingResponse

    state: dict[str, bool] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        state["started"] = True
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/items", response_class=PlainTextResponse)
    async def items() -> str:
        return "ok"

    @app.get("/slow", response_class=PlainTextResponse)
    async def slow(seconds: float) -> str:
        await anyio.sleep(seconds)
        return "done"

    @app.get("/fail")
    async def fail() -> PlainTextResponse:
        return PlainTextResponse("broken", status_code=500)

    @app.get("/events")
    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(_events(anyio.sleep), media_type="text/event-stream")

    @app.get("/lifespan")
    async def lifespan_state() -> dict[str, bool]:
        return state

    @app.websocket("/ws")
    async def echo(socket: WebSocket) -> None:
        await socket.accept()
        try:
            while True:
                await socket.send_text("echo " + await socket.receive_text())
        except WebSocketDisconnect:
            pass

    return _wrap(app, state)


def litestar_app() -> Protected:
    from litestar import Litestar, Request, Response, WebSocket, get, websocket
    from litestar.exceptions import WebSocketDisconnect
    from litestar.response import Stream

    state: dict[str, bool] = {}

    @get("/items")
    async def items() -> str:
        return "ok"

    @get("/slow")
    async def slow(request: Request[Any, Any, Any]) -> str:
        await anyio.sleep(float(request.query_params["seconds"]))
        return "done"

    @get("/fail")
    async def fail() -> Response[str]:
        return Response("broken", status_code=500)

    @get("/events")
    async def events() -> Stream:
        return Stream(_events(anyio.sleep), media_type="text/event-stream")

    @get("/lifespan")
    async def lifespan_state() -> dict[str, bool]:
        return state

    @websocket("/ws")
    async def echo(socket: WebSocket[Any, Any, Any]) -> None:
        await socket.accept()
        try:
            while True:
                await socket.send_text("echo " + await socket.receive_text())
        except WebSocketDisconnect:
            pass

    def started() -> None:
        state["started"] = True

    app = Litestar(
        route_handlers=[items, slow, fail, events, lifespan_state, echo], on_startup=[started]
    )
    return _wrap(app, state)


def quart_app() -> Protected:
    from quart import Quart, request, websocket

    state: dict[str, bool] = {}
    app = Quart(__name__)

    @app.before_serving
    async def started() -> None:
        state["started"] = True

    @app.get("/items")
    async def items() -> str:
        return "ok"

    @app.get("/slow")
    async def slow() -> str:
        await asyncio.sleep(float(request.args["seconds"]))
        return "done"

    @app.get("/fail")
    async def fail() -> tuple[str, int]:
        return "broken", 500

    @app.get("/events")
    async def events() -> Any:
        return _events(asyncio.sleep), 200, {"Content-Type": "text/event-stream"}

    @app.get("/lifespan")
    async def lifespan_state() -> dict[str, bool]:
        return state

    @app.websocket("/ws")
    async def echo() -> None:
        while True:
            await websocket.send(f"echo {await websocket.receive()!s}")

    options = brace_options()
    app.asgi_app = BraceMiddleware(app.asgi_app, **options)  # type: ignore[method-assign]
    return Protected(app, options["executor"], state, app.asgi_app.statistics)


def aiohttp_app() -> Protected:
    from aiohttp import WSMsgType, web

    from brace.aiohttp import BraceMiddleware as AiohttpMiddleware

    state: dict[str, bool] = {}

    async def items(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query["seconds"]))
        return web.Response(text="done")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(text="broken", status=500)

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        async for chunk in _events(asyncio.sleep):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def lifespan_state(request: web.Request) -> web.Response:
        return web.json_response(state)

    async def echo(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                await socket.send_str("echo " + message.data)
        return socket

    async def started(app: web.Application) -> None:
        state["started"] = True

    options = brace_options()
    middleware = AiohttpMiddleware(**options)
    app = web.Application(middlewares=[middleware])
    for path, handler in (
        ("/items", items),
        ("/slow", slow),
        ("/fail", fail),
        ("/events", events),
        ("/lifespan", lifespan_state),
        ("/ws", echo),
    ):
        app.router.add_get(path, handler)
    app.on_startup.append(started)
    middleware.setup(app)
    return Protected(app, options["executor"], state, middleware.statistics)


FRAMEWORKS: dict[str, Callable[[], Protected]] = {
    "starlette": starlette_app,
    "fastapi": fastapi_app,
    "litestar": litestar_app,
    "quart": quart_app,
    "aiohttp": aiohttp_app,
}
