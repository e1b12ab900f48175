"""brace for aiohttp clients: `ResilientMiddleware`, re-exported by `brace.aiohttp`.

``aiohttp.ClientSession(middlewares=(ResilientMiddleware(...),))`` retries idempotent
requests on 429 / 502 / 503 / 504 and connection errors (honouring ``Retry-After``), asks the
host's circuit breaker and client-side rate limit before each attempt, and releases every
response it does not return. The loop itself is shared with `brace.httpx` (``brace._client``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

try:
    from aiohttp import ClientError, ClientRequest, ClientResponse, payload
except ModuleNotFoundError as missing:  # pragma: no cover (tested by hiding aiohttp)
    raise ModuleNotFoundError(
        f"brace.aiohttp needs aiohttp ({missing}): pip install 'brace[aiohttp]'",
        name=missing.name,
    ) from missing

from ._client import ResilientClient

__all__ = ("ClientHandler", "ResilientMiddleware")

ClientHandler = Callable[[ClientRequest], Awaitable[ClientResponse]]

# Answers that have no body whatever their headers say.
_BODILESS_STATUSES = frozenset({204, 304})


class ResilientMiddleware(ResilientClient[ClientRequest, ClientResponse]):
    """An aiohttp client middleware: ``ClientSession(middlewares=(ResilientMiddleware(),))``.

    Takes the keyword arguments of `brace.httpx.ResilientTransport` (but ``inner``): by
    default each ``host:port`` has its own breaker and limit. A retried answer is read (so
    that it can be handed back should retrying stop) and released before the next attempt;
    only an answer whose ``Content-Length`` is known and at most ``max_body`` is retried (a
    chunked or longer one is handed back unread). Only requests whose body can be sent
    again (none, or bytes) are retried.
    """

    transport_errors = (ClientError, asyncio.TimeoutError)
    retry_name = "aiohttp"

    async def __call__(self, request: ClientRequest, handler: ClientHandler) -> ClientResponse:
        body = request.body
        return await self._handle(
            request,
            lambda: handler(request),
            method=request.method,
            replayable=isinstance(body, (bytes, bytearray, payload.BytesPayload)),
        )

    def _status(self, response: ClientResponse) -> int:
        return response.status

    def _retry_after(self, response: ClientResponse) -> str | None:
        found = response.headers.getall("Retry-After", ())
        return found[0] if len(found) == 1 else None  # repeated: unreadable, as with httpx

    async def _keep(self, response: ClientResponse, limit: int) -> ClientResponse | None:
        if response.method != "HEAD" and response.status not in _BODILESS_STATUSES:
            length = response.headers.get("Content-Length", "")
            # (aiohttp's parser has checked it; read it without trusting that)
            if not (len(length) < 20 and length.isascii() and length.isdigit()) or (
                int(length) > limit
            ):
                return None  # reading could take more than the limit: hand it back unread
        # Reading to the end gives the connection back to the pool (and closes it on an
        # error); an explicit release() would make read() refuse the kept body.
        await response.read()
        return response
