"""brace for any ASGI application: `BraceMiddleware` and `health_app`.

`BraceMiddleware` is a pure ASGI middleware (no framework import), so it wraps Starlette,
FastAPI, Litestar, Quart or a bare ASGI callable alike. For each HTTP request it finds the
route's `Rule`, then in order: rate limits (per user and/or per client address), load
shedding, the route's circuit breaker (an open circuit refuses before the request queues),
the memory guard, a slot in the priority executor, and the route's timeouts; a refusal
anywhere becomes a 429 or 503 answer with ``Retry-After`` and the IETF ``RateLimit``
fields. WebSocket and other scopes pass straight
through; the lifespan checks the stores, starts brace's background tasks and drains on
shutdown. The work itself is done by the framework-neutral pipeline (``brace._pipeline``),
shared with the aiohttp, FastAPI and Litestar adapters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import anyio
from typing_extensions import Unpack

from ._asgi_rules import Limit, Rule, default_priority
from ._client_ip import TrustedProxies
from ._done import DONE
from ._exceptions import Rejected
from ._executor import PriorityExecutor
from ._health_app import HealthApp, health_app, send_answer
from ._keys_http import by_api_key, by_bearer_subject, by_cookie, by_header
from ._load import LoadMonitor
from ._memory import MemoryGuard
from ._pipeline import (
    BraceMiddlewareStatistics,
    Exchange,
    Fields,
    Pipeline,
    PipelineOptions,
    is_preflight,
)
from ._shutdown import GracefulShutdown

__all__ = (
    "BraceMiddleware",
    "BraceMiddlewareStatistics",
    "HealthApp",
    "Limit",
    "Rule",
    "TrustedProxies",
    "by_api_key",
    "by_bearer_subject",
    "by_cookie",
    "by_header",
    "default_priority",
    "health_app",
)

Message = MutableMapping[str, Any]
# Any ASGI application: frameworks type their scopes as TypedDicts, so accept them all.
ASGIApp = Callable[..., Awaitable[None]]
UserFunction = Callable[[Any], str | Awaitable[str | None] | None]


class BraceMiddleware:
    """Every protection of brace in front of an ASGI application.

    Every argument but ``app`` is keyword-only, and the aiohttp middleware takes the same.

    Args:
        app: the ASGI application.
        **options: the keyword-only options below (``PipelineOptions``).

    The options:

    - ``rules``: `Rule` objects tried in order (``brace_demo.rules.DEMO_RULES`` is the demo's
      table).
    - ``default``: the rule for requests no rule matches (default: no limits, no timeout).
    - ``executor``: a `brace.PriorityExecutor` every request takes a slot of (none: no queue).
    - ``memory``: a `brace.MemoryGuard` consulted before queueing (HIGH: low-priority work
      waits or is shed; CRITICAL: 503).
    - ``load``: a `brace.LoadMonitor`; requests less urgent than HIGH are shed with its
      probability (503).
    - ``shutdown``: a `brace.GracefulShutdown`: once it starts, new requests get 503 with
      ``Connection: close``; the lifespan starts its ``wait`` (use ``chain=True``
      under a server that handles signals) and waits for its drain on shutdown.
    - ``user``: ``(scope) -> str | None`` (sync or async): the authenticated user, for the
      limits counted per user; ``None`` (or no callable) counts per client address.
      `by_bearer_subject`, `by_api_key`, `by_header` and `by_cookie` make the usual ones.
    - ``trusted_proxies``: CIDRs whose forwarding header is believed (none by default);
      ``"unix"`` among them trusts the peer of a Unix socket (``client`` is ``None``).
      Only the last 8 KB and 32 entries of that header are read.
    - ``forwarded_header``: which header those proxies set, ``"x-forwarded-for"`` or
      ``"forwarded"``.
    - ``ipv6_prefix``: IPv6 clients are counted per network of this prefix length.
    - ``store``: where every limit keeps its per-key state (default: one `brace.MemoryStore`
      per limit, of ``max_keys`` keys). The lifespan startup calls its ``check()``
      (when it has one), so a store that cannot serve fails the startup.
    - ``rate_limit_headers``: ``"ietf"`` (``RateLimit`` / ``RateLimit-Policy``), ``"legacy"``
      (``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset``), ``"both"`` or ``"none"``.
    - ``headers_on_success``: also send the rate-limit fields on admitted requests.
    - ``count_preflight``: count CORS preflights (``OPTIONS`` with ``Origin`` and
      ``Access-Control-Request-Method``) like other requests; by default they go
      straight to the application.
    - ``slow_request``: seconds after which a request is logged (``brace.asgi`` logger,
      WARNING) and counted as slow; ``None`` disables.
    - ``default_retry_after``: ``Retry-After`` seconds of a 503 whose cause gives no estimate.
    - ``drain_timeout``: seconds the lifespan shutdown gives the executor to drain.
    - ``clock``: zero-argument callable returning monotonic seconds.
    """

    __slots__ = ("_client", "_pipeline", "app")

    def __init__(self, app: ASGIApp, **options: Unpack[PipelineOptions]) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {app!r}")
        self.app = app
        self._pipeline = Pipeline(**options)
        self._client = self._pipeline.client

    @property
    def executor(self) -> PriorityExecutor | None:
        return self._pipeline.executor

    @property
    def memory(self) -> MemoryGuard | None:
        return self._pipeline.memory

    @property
    def load(self) -> LoadMonitor | None:
        return self._pipeline.load

    @property
    def shutdown(self) -> GracefulShutdown | None:
        return self._pipeline.shutdown

    def statistics(self) -> BraceMiddlewareStatistics:
        """The counters since construction (register the middleware in a `brace.Registry`:
        ``/health/queue`` shows its ``activeRequests``, ``/health/metrics`` every counter)."""
        return self._pipeline.counters.snapshot()

    @property
    def limiters(self) -> dict[str, Any]:
        """Every limit's `brace.RateLimiter` by policy name, for a `brace.Registry`."""
        rules = self._pipeline.rules.all()
        return {limit.name: limit.limiter for rule in rules for limit in rule.limits}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        pipeline = self._pipeline
        preflight = method == "OPTIONS" and is_preflight(method, scope.get("headers") or ())
        rule = pipeline.route(method, path, preflight=preflight)
        if rule is None:
            await self.app(scope, receive, send)
            return
        counters = pipeline.counters
        counters.requests += 1
        # (One function for both paths, each with its own ``send`` wrapper: a call of a
        # coroutine more would cost either path more than the other's few lines.)
        if rule.plain and pipeline.plain:
            # The short path of most routes: a plain rule (no breaker, bound or timeout)
            # while the pipeline has nothing server-wide to shed, guard or queue by: the
            # limits (`Pipeline.check_limits` without an `Exchange`), then the application
            # with its counters and timing, without `Pipeline.run`.
            if pipeline.shutdown is not None:
                closing = pipeline.closing(rule)
                if closing is not None:
                    await send_answer(send, closing)
                    return
            fields: Fields | None = None
            if rule.limits:
                fields = []
                if rule.local and pipeline.user is None:  # nothing to wait for
                    refused = pipeline.hit_local(rule, fields, self._client, scope)
                else:
                    refused = await pipeline.hit_limits(rule, fields, scope, self._client, scope)
                if refused is not None:
                    await send_answer(send, refused)
                    return
                if not (fields and pipeline.headers_on_success):
                    fields = None
            status = 0

            def send_short(message: Message) -> Awaitable[None]:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    if fields is not None:
                        extra = pipeline.raw_rate_limit_headers(rule, fields)
                        message = {**message, "headers": [*message.get("headers", ()), *extra]}
                return send(message)  # type: ignore[no-any-return]

            slow = pipeline.slow
            begin = 0.0 if slow is None else pipeline.clock()
            counters.active += 1
            try:
                await self.app(scope, receive, send_short)
            except Rejected as refusal:  # raised by the application: answered as ours
                if status:
                    raise
                await send_answer(send, pipeline.app_refusal(refusal, rule, method, path))
            except Exception:
                counters.errors += 1
                raise
            finally:
                counters.active -= 1
                if slow is not None:
                    pipeline.timed(rule, begin, status, method, path)
            return
        # Any other rule: `Pipeline.check_limits` and `Pipeline.run`.
        exchange = Exchange(rule)
        if rule.limits or pipeline.shutdown is not None:
            if rule.local and pipeline.user is None:
                answer = pipeline.check_local(exchange, self._client, scope)
            else:
                answer = await pipeline.check_limits(exchange, scope, self._client, scope)
            if answer is not None:
                await send_answer(send, answer)
                return
        answered = False
        headers = pipeline.headers_on_success

        # A plain function returning ``send``'s awaitable: the application awaits it as
        # it would ``send`` itself, without a coroutine of ours per message.
        def send_wrapper(message: Message) -> Awaitable[None]:
            if answered:
                return DONE  # brace answered (a timeout): nothing more from the app goes out
            if message["type"] == "http.response.start":
                exchange.response_started(message["status"])
                asked = exchange.fields
                if headers and asked:
                    extra = pipeline.raw_rate_limit_headers(exchange.rule, asked)
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
            elif exchange.idle is not None:
                exchange.body_sent()
            return send(message)  # type: ignore[no-any-return]

        answer = await pipeline.run(
            exchange, method, path, self.app, (scope, receive, send_wrapper)
        )
        if answer is not None:
            answered = True
            await send_answer(send, answer)

    async def _lifespan(self, scope: Message, receive: Any, send: Any) -> None:
        # The application's answer to the shutdown goes out last, once brace's background
        # tasks are over and nothing is left to wait for: a server may cancel the lifespan
        # as soon as it reads it (hypercorn's asyncio worker does, then awaits the task).
        answer: Message | None = None
        begun = False

        async def lifespan_send(message: Message) -> None:
            nonlocal answer
            if message["type"] in _SHUTDOWN_ANSWERS:
                answer = message
            else:
                await send(message)

        try:
            async with anyio.create_task_group() as tasks:

                async def lifespan_receive() -> Message:
                    nonlocal begun
                    message: Message = await receive()
                    kind = message.get("type")
                    if kind == "lifespan.startup" and not begun:
                        begun = True
                        try:
                            await self._pipeline.start(tasks)
                        except Exception as error:  # a store that cannot serve: do not start
                            text = f"brace: {type(error).__name__}: {error}"
                            await send({"type": "lifespan.startup.failed", "message": text})
                            raise _StartupFailed from error
                    elif kind == "lifespan.shutdown":
                        await self.drain()
                        await self._pipeline.close_stores()
                    return message

                try:
                    await self.app(scope, lifespan_receive, lifespan_send)
                except _StartupFailed:
                    pass  # reported to the server, which exits
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            if answer is not None:
                await send(answer)

    async def drain(self) -> None:
        """Finish what runs: wait for a `brace.GracefulShutdown` under way, then drain the
        executor (``drain_timeout``). The lifespan shutdown calls it."""
        await self._pipeline.drain()


_SHUTDOWN_ANSWERS: Final = frozenset({"lifespan.shutdown.complete", "lifespan.shutdown.failed"})


class _StartupFailed(Exception):
    """Raised from the lifespan's ``receive`` to end the application's lifespan once
    brace reported ``lifespan.startup.failed``."""
