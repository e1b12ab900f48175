"""A slow fake AI upstream: the service ``/api/ai`` calls.

A bare ASGI application (no framework): ``POST /v1/complete`` answers after ``latency``
seconds with a made-up completion (or stops early when the caller disconnects);
``failure_rate`` of the answers are 503s, so the circuit breaker and the retries in front
of it have something to do. ``GET /health``
answers at once. Run it with ``python -m brace_demo upstream --port 9000``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

__all__ = ("UpstreamApp",)

Message = MutableMapping[str, Any]


class UpstreamApp:
    """The fake AI service: ``latency`` seconds per completion, ``failure_rate`` of 503s."""

    def __init__(
        self, *, latency: float = 0.5, failure_rate: float = 0.0, seed: int | None = None
    ) -> None:
        if not latency >= 0:
            raise ValueError(f"latency must be a number of seconds >= 0, got {latency!r}")
        if not 0 <= failure_rate <= 1:
            raise ValueError(f"failure_rate must be in [0, 1], got {failure_rate!r}")
        self.latency = float(latency)
        self.failure_rate = float(failure_rate)
        self._random = random.Random(seed)
        self.completions = 0

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:  # read the whole request
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        path = scope["path"]
        if path == "/health":
            await _answer(send, 200, {"status": "ok"})
            return
        if path != "/v1/complete" or scope["method"] != "POST":
            await _answer(send, 404, {"error": "not_found"})
            return
        try:
            prompt = str(json.loads(body or b"{}").get("prompt", ""))
        except (ValueError, AttributeError):
            await _answer(send, 400, {"error": "bad_request"})
            return
        if not await self._think(receive):
            return  # the caller went away (a request cancelled by its timeout or a drain)
        if self._random.random() < self.failure_rate:
            await _answer(send, 503, {"error": "upstream_overloaded"}, retry_after=1)
            return
        self.completions += 1
        words = prompt.split()[:8]
        await _answer(
            send,
            200,
            {"completion": "A thoughtful answer about " + (" ".join(words) or "nothing") + "."},
        )

    async def _think(self, receive: Callable[[], Awaitable[Message]]) -> bool:
        """Wait ``latency`` seconds; False if the client disconnected meanwhile."""
        disconnected = False
        async with anyio.create_task_group() as tasks:

            async def watch() -> None:
                nonlocal disconnected
                while (await receive())["type"] != "http.disconnect":
                    pass
                disconnected = True
                tasks.cancel_scope.cancel()

            tasks.start_soon(watch)
            await anyio.sleep(self.latency)
            tasks.cancel_scope.cancel()
        return not disconnected


async def _answer(
    send: Callable[[Message], Awaitable[None]],
    status: int,
    body: dict[str, Any],
    *,
    retry_after: int | None = None,
) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    if retry_after is not None:
        headers.append((b"retry-after", b"%d" % retry_after))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
