"""brace for httpx clients: `ResilientTransport`, polite and resilient outgoing calls.

Wraps any ``httpx.AsyncBaseTransport`` (by default a fresh ``httpx.AsyncHTTPTransport``).
Each attempt waits for the client-side rate limit, asks the circuit breaker, then sends;
answers with a retryable status (429, 502, 503, 504 by default) and transport errors are
retried by a `brace.Retry`, sleeping at least what ``Retry-After`` asks. Only idempotent
methods with a body that can be sent again are retried; a response is always closed before
the next attempt. Sleeping is anyio's, so it runs on asyncio and trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

import httpx

from ._breaker import CircuitBreaker
from ._exceptions import Rejected
from ._headers import IDEMPOTENT_METHODS, parse_retry_after
from ._limiter import RateLimiter
from ._retry import Backoff, Retry

__all__ = ("IDEMPOTENT_METHODS", "ResilientTransport", "parse_retry_after")

# A retryable answer's body is kept (to hand back should retrying stop) up to this size.
_MAX_BUFFER = 1 << 20


class _Acquirable(Protocol):
    async def acquire(self, cost: int = 1) -> Any: ...


class _RetryableStatus(Rejected):
    """An answer with a retryable status, kept in memory while the next attempt is made."""

    def __init__(self, response: httpx.Response, body: bytes, retry_after: float | None) -> None:
        super().__init__(f"HTTP {response.status_code}", retry_after=retry_after)
        self.status_code = response.status_code
        self.headers = response.headers
        self.body = body
        self.extensions = {
            key: value
            for key, value in response.extensions.items()
            if key in ("http_version", "reason_phrase")
        }

    def rebuild(self) -> httpx.Response:
        return httpx.Response(
            self.status_code,
            headers=self.headers,
            stream=httpx.ByteStream(self.body),
            extensions=self.extensions,
        )


class _Stop(Exception):
    """Carries an error that must not be retried out of the retry loop."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Prefixed(httpx.AsyncByteStream):
    """A response stream whose first chunks were already read."""

    def __init__(self, chunks: list[bytes], rest: httpx.AsyncByteStream | Any) -> None:
        self._chunks = chunks
        self._rest = rest

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
        async for chunk in self._rest:
            yield chunk

    async def aclose(self) -> None:
        await self._rest.aclose()


class ResilientTransport(httpx.AsyncBaseTransport):
    """An httpx transport that retries, rate-limits itself and opens a circuit.

    Args:
        inner: the transport that sends (default: ``httpx.AsyncHTTPTransport()``).
        retry: a `brace.Retry` (default: 3 attempts, exponential backoff 0.1 s .. 10 s).
            Its ``retry_on`` decides which errors are retried; answers with a
            ``retry_statuses`` status are retried too.
        breaker: a `brace.CircuitBreaker` consulted before each attempt; 5xx answers and
            transport errors count as failures. When it is open the request raises
            `brace.CircuitOpen` without being sent.
        limiter: client-side rate limit before each attempt: a `brace.TokenBucket` /
            `brace.SlidingWindow` (waits its turn) or a `brace.RateLimiter` (waits, keyed
            by the request's host).
        retry_statuses: statuses retried like errors.
        respect_retry_after: sleep at least the answer's ``Retry-After`` before retrying.
        max_retry_after: an answer asking to wait longer than this is returned, not retried.
        retry_methods: methods retried (default: the idempotent ones). A request whose body
            is a stream is never retried: it could not be sent again.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        limiter: RateLimiter | _Acquirable | None = None,
        retry_statuses: Iterable[int] = (429, 502, 503, 504),
        respect_retry_after: bool = True,
        max_retry_after: float = 60.0,
        retry_methods: Iterable[str] = IDEMPOTENT_METHODS,
    ) -> None:
        if inner is not None and not isinstance(inner, httpx.AsyncBaseTransport):
            raise TypeError(f"inner must be an httpx.AsyncBaseTransport, got {inner!r}")
        self.inner = httpx.AsyncHTTPTransport() if inner is None else inner
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be a brace.Retry or None, got {retry!r}")
        self.retry = (
            Retry(
                3,
                backoff=Backoff.exponential(base=0.1, cap=10.0),
                retry_on=(httpx.TransportError, _RetryableStatus),
                name="httpx",
            )
            if retry is None
            else retry
        )
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a brace.CircuitBreaker or None, got {breaker!r}")
        self.breaker = breaker
        if limiter is not None and not callable(getattr(limiter, "acquire", None)):
            raise TypeError(
                "limiter must be a brace.TokenBucket, brace.SlidingWindow or brace.RateLimiter, "
                f"got {limiter!r}"
            )
        self.limiter = limiter
        statuses = frozenset(retry_statuses)
        for status in statuses:
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                raise ValueError(f"retry_statuses must be HTTP statuses (100-599), got {status!r}")
        self.retry_statuses = statuses
        if not isinstance(respect_retry_after, bool):
            raise TypeError(f"respect_retry_after must be a bool, got {respect_retry_after!r}")
        self.respect_retry_after = respect_retry_after
        if isinstance(max_retry_after, bool) or not isinstance(max_retry_after, (int, float)):
            raise TypeError(f"max_retry_after must be a number, got {max_retry_after!r}")
        if not max_retry_after >= 0:
            raise ValueError(
                f"max_retry_after must be a number of seconds >= 0, got {max_retry_after!r}"
            )
        self.max_retry_after = float(max_retry_after)
        if isinstance(retry_methods, str):
            raise TypeError("retry_methods must be a list of method names, not one str")
        self.retry_methods = frozenset(method.upper() for method in retry_methods)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        replayable = isinstance(request.stream, httpx.ByteStream)
        if request.method not in self.retry_methods or not replayable:
            return await self._attempt(request, retrying=False)
        stop: BaseException | None = None
        response: httpx.Response | None = None
        try:
            async for attempt in self.retry:
                with attempt:
                    try:
                        response = await self._attempt(request, retrying=True)
                    except _Stop as wrapped:
                        stop = wrapped.error
        except _RetryableStatus as last:
            return last.rebuild()  # retrying stopped: hand back the last answer
        if stop is not None:
            raise stop
        assert response is not None
        return response

    async def _attempt(self, request: httpx.Request, *, retrying: bool) -> httpx.Response:
        limiter = self.limiter
        if limiter is not None:
            if isinstance(limiter, RateLimiter):
                await limiter.acquire(request.url.host or "-")
            else:
                await limiter.acquire()
        ticket = None
        if self.breaker is not None:
            try:
                ticket = self.breaker.try_enter()
            except Rejected as refused:
                if retrying:
                    raise _Stop(refused) from None  # an open circuit is not retried
                raise
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as error:
            if ticket is not None:
                ticket.record_exception(error)
            raise
        status = response.status_code
        if ticket is not None:
            if status >= 500:
                ticket.failure()
            else:
                ticket.success()
        if not retrying or status not in self.retry_statuses:
            return response
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is not None and retry_after > self.max_retry_after:
            return response
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.stream:  # type: ignore[union-attr]
                chunks.append(chunk)
                size += len(chunk)
                if size > _MAX_BUFFER:  # too big to keep: hand this one back
                    response.stream = _Prefixed(chunks, response.stream)
                    return response
        finally:
            if size <= _MAX_BUFFER:
                await response.aclose()
        raise _RetryableStatus(
            response, b"".join(chunks), retry_after if self.respect_retry_after else None
        )

    async def aclose(self) -> None:
        await self.inner.aclose()
