"""brace for httpx clients: `ResilientTransport`, polite and resilient outgoing calls.

Wraps any ``httpx.AsyncBaseTransport`` (by default a fresh ``httpx.AsyncHTTPTransport``).
Each attempt waits for the host's client-side rate limit, asks the host's circuit breaker,
then sends; answers with a retryable status (429, 502, 503, 504 by default) and transport
errors are retried by a `brace.Retry`, sleeping at least what ``Retry-After`` asks. Only
idempotent methods with a body that can be sent again are retried; a response is always
closed before the next attempt. Sleeping is anyio's, so it runs on asyncio and trio. The
loop itself is shared with `brace.aiohttp.ResilientMiddleware` (``brace._client``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

try:
    import httpx
except ModuleNotFoundError as missing:  # pragma: no cover (tested by hiding httpx)
    raise ModuleNotFoundError(
        f"brace.httpx needs httpx ({missing}): pip install 'brace[httpx]'", name=missing.name
    ) from missing

from typing_extensions import Unpack

from ._client import (
    IDEMPOTENT_METHODS,
    MAX_RETRY_AFTER,
    ClientOptions,
    ResilientClient,
    parse_retry_after,
)

__all__ = ("IDEMPOTENT_METHODS", "MAX_RETRY_AFTER", "ResilientTransport", "parse_retry_after")

# parse_retry_after reads at most 64 characters: a longer value is not even decoded.
_RETRY_AFTER_MAX_BYTES = 64


class _Prefixed(httpx.AsyncByteStream):
    """A response stream whose first chunks were already read from ``rest``."""

    def __init__(
        self, chunks: list[bytes], rest: AsyncIterator[bytes], stream: httpx.AsyncByteStream
    ) -> None:
        self._chunks = chunks
        self._rest = rest
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
        async for chunk in self._rest:
            yield chunk

    async def aclose(self) -> None:
        await _close(self._rest)
        await self._stream.aclose()


async def _close(chunks: AsyncIterator[bytes]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


class ResilientTransport(ResilientClient[httpx.Request, httpx.Response], httpx.AsyncBaseTransport):
    """An httpx transport that retries, rate-limits itself and opens a circuit, per host.

    ``httpx.AsyncClient(transport=ResilientTransport(breaker=brace.CircuitBreaker(...)))``

    Args:
        inner: the transport that sends (default: ``httpx.AsyncHTTPTransport()``).
        **options: ``retry``, ``breaker``, ``limiter``, ``retry_statuses``,
            ``respect_retry_after``, ``max_retry_after``, ``retry_methods``, ``key``,
            ``max_keys``, ``max_body``, ``chaos``: see `brace._client.ResilientClient`
            (the docs' httpx page lists them). By default each ``host:port`` has its own
            breaker and limit.
    """

    transport_errors = (httpx.TransportError,)
    retry_name = "httpx"

    def __init__(
        self, inner: httpx.AsyncBaseTransport | None = None, **options: Unpack[ClientOptions]
    ) -> None:
        if inner is not None and not isinstance(inner, httpx.AsyncBaseTransport):
            raise TypeError(f"inner must be an httpx.AsyncBaseTransport, got {inner!r}")
        super().__init__(**options)
        self.inner = httpx.AsyncHTTPTransport() if inner is None else inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._handle(
            request,
            lambda: self.inner.handle_async_request(request),
            method=request.method,
            replayable=isinstance(request.stream, httpx.ByteStream),
        )

    def _status(self, response: httpx.Response) -> int:
        return response.status_code

    def _retry_after(self, response: httpx.Response) -> str | None:
        # From the raw bytes: httpx would decode every header to find this one.
        found = [value for name, value in response.headers.raw if name.lower() == b"retry-after"]
        if len(found) != 1 or len(found[0]) > _RETRY_AFTER_MAX_BYTES:
            return None  # absent, repeated (unreadable joined) or too long to be read
        return found[0].decode("latin-1")

    async def _keep(self, response: httpx.Response, limit: int) -> httpx.Response | None:
        stream = response.stream
        if not isinstance(stream, httpx.AsyncByteStream):
            return None  # not a stream this transport knows how to read: hand it back
        rest = aiter(stream)  # one iterator: a _Prefixed goes on where this loop stops
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in rest:
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:  # too long to keep: hand this one back
                    response.stream = _Prefixed(chunks, rest, stream)
                    return None
        finally:
            if size <= limit:
                await _close(rest)
                await stream.aclose()
        # The same response, its body now in memory (a new one would copy and decode
        # every header again): read by no one yet, so still readable.
        response.stream = httpx.ByteStream(b"".join(chunks))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
