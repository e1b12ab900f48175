"""brace for aiohttp: a server middleware and a client middleware (aiohttp runs on asyncio).

Server: ``web.Application(middlewares=[brace_mw])`` with ``brace_mw = BraceMiddleware(...)``
applies the same route rules as `brace.asgi.BraceMiddleware` (rate limits per user and per
address, load shedding, memory guard, executor slot, breaker, timeout) and answers 429 / 503
with ``Retry-After`` and the IETF ``RateLimit`` fields. ``app.cleanup_ctx.append(brace_mw.context)``
runs the memory guard's and load monitor's samplers while the app runs and drains the
executor when it stops.

Client: ``aiohttp.ClientSession(middlewares=(ResilientMiddleware(...),))`` retries idempotent
requests on 429 / 502 / 503 / 504 and connection errors (honouring ``Retry-After``), asks a
circuit breaker and a client-side rate limit before each attempt, and releases every
response it does not return.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from ._extras import missing_extra

try:
    from aiohttp import ClientError, ClientRequest, ClientResponse, payload, web
except ImportError as error:  # the extra is not installed
    raise missing_extra("aiohttp", "aiohttp", error) from error

from ._asgi_rules import CompiledLimit, CompiledRule, Rule, RuleTable, default_priority
from ._breaker import CircuitBreaker
from ._client_ip import ClientAddress, ForwardedHeader, TrustedProxies
from ._exceptions import (
    CircuitOpen,
    MemoryPressure,
    Overloaded,
    QueueFull,
    QueueTimeout,
    RateLimited,
    Rejected,
    ShuttingDown,
)
from ._executor import PriorityExecutor
from ._headers import IDEMPOTENT_METHODS, delay_seconds, parse_retry_after, ratelimit_item
from ._limiter import RateLimiter
from ._load import LoadMonitor
from ._memory import MemoryGuard
from ._priority import Priority
from ._retry import Backoff, Retry
from .asgi import BraceMiddlewareStatistics, _check_type

__all__ = ("BraceMiddleware", "ResilientMiddleware")

logger = logging.getLogger("brace.aiohttp")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UserFunction = Callable[[web.Request], "str | Awaitable[str | None] | None"]

# each refusal: its name in the 503 body and its counter in the statistics
_ERRORS: tuple[tuple[type[Rejected], str, int], ...] = (
    (QueueFull, "queue_full", 1),
    (QueueTimeout, "queue_timeout", 1),
    (CircuitOpen, "circuit_open", 2),
    (MemoryPressure, "memory_pressure", 3),
    (Overloaded, "overloaded", 4),
    (ShuttingDown, "shutting_down", 5),
)


class BraceMiddleware:
    """An aiohttp server middleware: the rules and protections of
    `brace.asgi.BraceMiddleware`, with the same arguments (``user`` receives the
    ``web.Request``)."""

    __middleware_version__ = 1  # a new-style middleware: (request, handler)

    def __init__(
        self,
        *,
        rules: Iterable[Rule] = (),
        default: Rule | None = None,
        executor: PriorityExecutor | None = None,
        memory: MemoryGuard | None = None,
        load: LoadMonitor | None = None,
        user: UserFunction | None = None,
        trusted_proxies: Iterable[str] | TrustedProxies = (),
        forwarded_header: ForwardedHeader = "x-forwarded-for",
        ipv6_prefix: int = 64,
        max_keys: int = 100_000,
        headers_on_success: bool = True,
        slow_request: float | None = 3.0,
        default_retry_after: float = 5.0,
        drain_timeout: float = 30.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        _check_type(executor, PriorityExecutor, "executor")
        _check_type(memory, MemoryGuard, "memory")
        _check_type(load, LoadMonitor, "load")
        if user is not None and not callable(user):
            raise TypeError(f"user must be a callable (request) -> str | None, got {user!r}")
        self.executor = executor
        self.memory = memory
        self.load = load
        self._user = user
        self._clock: Callable[[], float] = time.monotonic if clock is None else clock
        self._client = ClientAddress(
            trusted_proxies, header=forwarded_header, ipv6_prefix=ipv6_prefix
        )
        self._rules = RuleTable(rules, default, store=None, max_keys=max_keys, clock=clock)
        self._headers_on_success = bool(headers_on_success)
        self._slow = slow_request
        self._default_retry_after = default_retry_after
        self._drain_timeout = drain_timeout
        self._requests = 0
        self._active = 0
        self._counts = [0] * 9

    def statistics(self) -> BraceMiddlewareStatistics:
        """The counters since construction."""
        return BraceMiddlewareStatistics(self._requests, self._active, *self._counts)

    async def context(self, app: web.Application) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx``: run the samplers while the app runs; drain at the end."""
        tasks = [
            asyncio.ensure_future(primitive.run())
            for primitive in (self.memory, self.load)
            if primitive is not None
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.executor is not None and not self.executor.draining:
                await self.executor.drain(self._drain_timeout)

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        rule = self._rules.match(request.method, request.path)
        if rule.exempt:
            return await handler(request)
        self._requests += 1
        fields: list[tuple[CompiledLimit, int, float]] = []
        if rule.limits:
            refused = await self._check_limits(request, rule, fields)
            if refused is not None:
                return refused
        priority = rule.priority
        if priority is None:
            priority = default_priority(request.method, request.path)
        slow = self._slow
        begin = 0.0 if slow is None else self._clock()  # timed only to report slow requests
        self._active += 1
        try:
            load = self.load
            if load is not None and priority > Priority.HIGH and load.should_shed():
                raise Overloaded(  # noqa: TRY301 (answered with every other refusal)
                    "the server is overloaded", retry_after=load.retry_after
                )
            if self.memory is not None:
                await self.memory.wait_admitted(priority)
            if self.executor is None:
                response = await self._guarded(rule, request, handler)
            else:
                async with self.executor.slot(priority):
                    response = await self._guarded(rule, request, handler)
        except Rejected as refusal:
            return self._refused(refusal)
        except asyncio.TimeoutError:
            self._counts[6] += 1
            return web.json_response(
                {"error": "timeout", "detail": f"the request took over {rule.timeout} s"},
                status=504,
            )
        except web.HTTPException:
            raise
        except Exception:
            self._counts[8] += 1
            raise
        finally:
            self._active -= 1
            if slow is not None:
                elapsed = self._clock() - begin
                if elapsed > slow:
                    self._counts[7] += 1
                    logger.warning(
                        "slow request: %s %s took %.3f s (rule %s)",
                        request.method,
                        request.path,
                        elapsed,
                        rule.name,
                    )
        if fields and self._headers_on_success and not response.prepared:
            response.headers.update(self._fields(rule, fields))
        return response

    async def _check_limits(
        self,
        request: web.Request,
        rule: CompiledRule,
        fields: list[tuple[CompiledLimit, int, float]],
    ) -> web.Response | None:
        user: str | None = None
        if self._user is not None:
            try:
                found = self._user(request)
                if isinstance(found, Awaitable):
                    found = await found
                user = None if found is None else str(found)
            except Exception:
                logger.exception("the user callable raised; counting the request per address")
        address: str | None = None
        for limit in rule.limits:
            kind = limit.kind
            if kind == "custom":
                assert limit.key is not None
                try:
                    custom = limit.key(request)
                except Exception:
                    logger.exception("the key function of limit %r raised; skipping it", limit.name)
                    continue
                if custom is None:
                    continue
                key = "k:" + str(custom)
            elif kind != "ip" and user is not None:
                key = "u:" + user
            elif kind == "user":
                continue
            else:
                if address is None:
                    address = self._client(
                        {"client": (request.remote, 0), "headers": request.raw_headers}
                    )
                key = "ip:" + address
            decision = await limit.limiter.hit(key, rule.cost)
            if not decision.allowed:
                self._counts[0] += 1
                fields.append((limit, 0, decision.retry_after))
                seconds = delay_seconds(decision.retry_after, minimum=1)
                return web.json_response(
                    {
                        "error": "rate_limited",
                        "detail": f"rate limit {limit.rate_text} exceeded ({limit.name})",
                        "limit": limit.name,
                        "policy": limit.rate_text,
                        "retry_after": seconds,
                    },
                    status=429,
                    headers={"Retry-After": str(seconds), **self._fields(rule, fields)},
                )
            fields.append((limit, decision.remaining, decision.reset_after))
        return None

    async def _guarded(
        self, rule: CompiledRule, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        breaker = rule.breaker
        ticket = None if breaker is None else breaker.try_enter()
        try:
            if rule.timeout is None:
                response = await handler(request)
            else:
                response = await asyncio.wait_for(handler(request), rule.timeout)
        except web.HTTPException as answer:
            if ticket is not None:
                if answer.status >= 500:
                    ticket.failure()
                else:
                    ticket.success()
            raise
        except BaseException as error:
            if ticket is not None:
                ticket.record_exception(error)
            raise
        if ticket is not None:
            if response.status >= 500:
                ticket.failure()
            else:
                ticket.success()
        return response

    @staticmethod
    def _fields(
        rule: CompiledRule, fields: list[tuple[CompiledLimit, int, float]]
    ) -> dict[str, str]:
        return {
            "RateLimit-Policy": rule.policy_header.decode(),
            "RateLimit": ", ".join(
                ratelimit_item(limit.field, left, reset) for limit, left, reset in fields
            ),
        }

    def _refused(self, refusal: Rejected) -> web.Response:
        if isinstance(refusal, RateLimited):
            self._counts[0] += 1
            status, error = 429, "rate_limited"
        else:
            status, error = 503, "unavailable"
            for kind, name, counter in _ERRORS:
                if isinstance(refusal, kind):
                    error = name
                    self._counts[counter] += 1
                    break
        retry = refusal.retry_after
        seconds = delay_seconds(self._default_retry_after if retry is None else retry, minimum=1)
        headers = {"Retry-After": str(seconds)}
        if isinstance(refusal, ShuttingDown):
            headers["Connection"] = "close"
        return web.json_response(
            {"error": error, "detail": str(refusal), "retry_after": seconds},
            status=status,
            headers=headers,
        )


ClientHandler = Callable[[ClientRequest], Awaitable[ClientResponse]]


class _RetryableStatus(Rejected):
    def __init__(self, response: ClientResponse, retry_after: float | None) -> None:
        super().__init__(f"HTTP {response.status}", retry_after=retry_after)
        self.response = response


class _Stop(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class ResilientMiddleware:
    """An aiohttp client middleware: ``ClientSession(middlewares=(ResilientMiddleware(),))``.

    The arguments are those of `brace.httpx.ResilientTransport`. A retried answer is read
    (so it can be handed back should retrying stop) and released before the next attempt.
    Only requests whose body can be sent again (none, or bytes) are retried.
    """

    def __init__(
        self,
        *,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        limiter: Any = None,
        retry_statuses: Iterable[int] = (429, 502, 503, 504),
        respect_retry_after: bool = True,
        max_retry_after: float = 60.0,
        retry_methods: Iterable[str] = IDEMPOTENT_METHODS,
    ) -> None:
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be a brace.Retry or None, got {retry!r}")
        self.retry = (
            Retry(
                3,
                backoff=Backoff.exponential(base=0.1, cap=10.0),
                retry_on=(ClientError, asyncio.TimeoutError, _RetryableStatus),
                name="aiohttp",
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
        self.retry_statuses = frozenset(retry_statuses)
        self.respect_retry_after = bool(respect_retry_after)
        self.max_retry_after = float(max_retry_after)
        self.retry_methods = frozenset(method.upper() for method in retry_methods)

    async def __call__(self, request: ClientRequest, handler: ClientHandler) -> ClientResponse:
        body = request.body
        replayable = isinstance(body, (bytes, bytearray, payload.BytesPayload))
        if request.method not in self.retry_methods or not replayable:
            return await self._attempt(request, handler, retrying=False)
        stop: BaseException | None = None
        response: ClientResponse | None = None
        try:
            async for attempt in self.retry:
                with attempt:
                    try:
                        response = await self._attempt(request, handler, retrying=True)
                    except _Stop as wrapped:
                        stop = wrapped.error
        except _RetryableStatus as last:
            return last.response  # read and released, still readable
        if stop is not None:
            raise stop
        assert response is not None
        return response

    async def _attempt(
        self, request: ClientRequest, handler: ClientHandler, *, retrying: bool
    ) -> ClientResponse:
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
                    raise _Stop(refused) from None
                raise
        try:
            response = await handler(request)
        except BaseException as error:
            if ticket is not None:
                ticket.record_exception(error)
            raise
        if ticket is not None:
            if response.status >= 500:
                ticket.failure()
            else:
                ticket.success()
        if not retrying or response.status not in self.retry_statuses:
            return response
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is not None and retry_after > self.max_retry_after:
            return response
        try:
            await response.read()
        finally:
            response.release()
        raise _RetryableStatus(response, retry_after if self.respect_retry_after else None)
