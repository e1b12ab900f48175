"""A tiny ASGI app with a 5/minute limit shared through Redis, for real servers.

Usage: ``uvicorn redis_app:app`` (or hypercorn) with ``BRACE_REDIS_URL`` and
``BRACE_REDIS_PREFIX`` in the environment. The lifespan opens the store (in its own task,
as coredis on trio needs) and checks it, so a misconfiguration stops the server at
startup. ``GET /upload`` answers 200 while the shared limit admits, else 429; ``GET
/ready`` answers 200 with the event loop in ``x-loop`` (the test checks it is the one it
asked for).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import brace
from brace.redis import RedisStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

store = RedisStore.from_url(
    os.environ["BRACE_REDIS_URL"], prefix=os.environ.get("BRACE_REDIS_PREFIX", "brace")
)
limiter = brace.RateLimiter(brace.SlidingWindow(limit=5, window=60.0), store=store)


def _loop_name() -> str:
    if "trio" in sys.modules:
        import trio

        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    import asyncio

    return type(asyncio.get_running_loop()).__module__.split(".")[0]


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"x-loop", _loop_name().encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    message = await receive()
    assert message["type"] == "lifespan.startup"
    try:
        async with store:
            await store.check()
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
    except Exception as exc:
        await send({"type": "lifespan.startup.failed", "message": repr(exc)})
        return
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/upload":
        decision = await limiter.hit("upload")
        if decision.allowed:
            await _answer(send, 200, b"stored")
        else:
            await _answer(send, 429, b"slow down")
        return
    await _answer(send, 200, b"ready")
