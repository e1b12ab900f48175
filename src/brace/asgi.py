"""brace for any ASGI application: `BraceMiddleware` and `health_app`.

`BraceMiddleware` is a pure ASGI middleware (no framework import), so it wraps Starlette,
FastAPI, Litestar, Quart or a bare ASGI callable alike. For each HTTP request it finds the
route's `Rule`, then in order: rate limits (per user and/or per client address), load
shedding, the memory guard, a slot in the priority executor, the route's circuit breaker,
and the route's timeout; a refusal anywhere becomes a 429 or 503 answer with
``Retry-After`` and the IETF ``RateLimit`` fields. WebSocket and other scopes pass straight
through; the lifespan starts brace's background tasks and drains on shutdown.
"""

from __future__ import annotations

import inspect
import ipaddress
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import anyio.abc

from ._asgi_rules import (
    CompiledLimit,
    CompiledRule,
    Limit,
    Rule,
    RuleTable,
    default_priority,
)
from ._client_ip import ClientAddress, ForwardedHeader, TrustedProxies
from ._core._validate import check_positive
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
from ._headers import delay_seconds, ratelimit_item
from ._health import Health
from ._load import LoadMonitor
from ._memory import MemoryGuard
from ._priority import Priority
from ._probes import ProcessMemoryProbe
from ._registry import Registry
from ._shutdown import GracefulShutdown
from ._store import RateLimitStore

__all__ = (
    "BraceMiddleware",
    "BraceMiddlewareStatistics",
    "HealthApp",
    "Limit",
    "Rule",
    "TrustedProxies",
    "default_priority",
    "health_app",
)

logger = logging.getLogger("brace.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Any ASGI application: frameworks type their scopes as TypedDicts, so accept them all.
ASGIApp = Callable[..., Awaitable[None]]
UserFunction = Callable[[Any], str | Awaitable[str | None] | None]
HeaderStyle = Literal["ietf", "legacy", "both", "none"]

_JSON = (b"content-type", b"application/json")


@dataclass(frozen=True, slots=True)
class BraceMiddlewareStatistics:
    """A snapshot of a `BraceMiddleware`: HTTP ``requests`` seen (``active`` now), how many
    were refused and why (``rate_limited`` 429s; ``queue_full``, ``circuit_open``,
    ``memory_pressure``, ``overloaded``, ``shutting_down`` 503s), ``timed_out`` (the rule's
    timeout passed), ``slow`` (took longer than ``slow_request``), ``errors`` (the
    application raised)."""

    requests: int
    active: int
    rate_limited: int
    queue_full: int
    circuit_open: int
    memory_pressure: int
    overloaded: int
    shutting_down: int
    timed_out: int
    slow: int
    errors: int


class BraceMiddleware:
    """Every protection of brace in front of an ASGI application.

    Args:
        app: the ASGI application.
        rules: `Rule` objects tried in order (``brace.demo.rules.DEMO_RULES`` is the demo's table).
        default: the rule for requests no rule matches (default: no limits, no timeout).
        executor: a `brace.PriorityExecutor` every request takes a slot of (none: no queue).
        memory: a `brace.MemoryGuard` consulted before queueing (HIGH: low-priority work
            waits or is shed; CRITICAL: 503).
        load: a `brace.LoadMonitor`; requests less urgent than HIGH are shed with its
            probability (503).
        shutdown: a `brace.GracefulShutdown`: once it starts, new requests get 503 with
            ``Connection: close``; the lifespan starts its ``wait`` (use ``chain=True``
            under a server that handles signals) and waits for its drain on shutdown.
        user: ``(scope) -> str | None`` (sync or async): the authenticated user, for the
            limits counted per user; ``None`` (or no callable) counts per client address.
        trusted_proxies: CIDRs whose forwarding header is believed (none by default);
            ``"unix"`` among them trusts the peer of a Unix socket (``client`` is ``None``).
            Only the last 8 KB and 32 entries of that header are read.
        forwarded_header: which header those proxies set, ``"x-forwarded-for"`` or
            ``"forwarded"``.
        ipv6_prefix: IPv6 clients are counted per network of this prefix length.
        store: where every limit keeps its per-key state (default: one `brace.MemoryStore`
            per limit, of ``max_keys`` keys).
        rate_limit_headers: ``"ietf"`` (``RateLimit`` / ``RateLimit-Policy``), ``"legacy"``
            (``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset``), ``"both"`` or ``"none"``.
        headers_on_success: also send the rate-limit fields on admitted requests.
        slow_request: seconds after which a request is logged (``brace.asgi`` logger,
            WARNING) and counted as slow; ``None`` disables.
        default_retry_after: ``Retry-After`` seconds of a 503 whose cause gives no estimate.
        drain_timeout: seconds the lifespan shutdown gives the executor to drain.
        clock: zero-argument callable returning monotonic seconds.
    """

    __slots__ = (
        "_active",
        "_client",
        "_clock",
        "_counts",
        "_default_retry_after",
        "_drain_timeout",
        "_headers_on_success",
        "_ietf",
        "_legacy",
        "_requests",
        "_rules",
        "_slow",
        "_user",
        "_user_is_async",
        "app",
        "executor",
        "load",
        "memory",
        "shutdown",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        rules: Iterable[Rule] = (),
        default: Rule | None = None,
        executor: PriorityExecutor | None = None,
        memory: MemoryGuard | None = None,
        load: LoadMonitor | None = None,
        shutdown: GracefulShutdown | None = None,
        user: UserFunction | None = None,
        trusted_proxies: Iterable[str] | TrustedProxies = (),
        forwarded_header: ForwardedHeader = "x-forwarded-for",
        ipv6_prefix: int = 64,
        store: RateLimitStore | None = None,
        max_keys: int = 100_000,
        rate_limit_headers: HeaderStyle = "ietf",
        headers_on_success: bool = True,
        slow_request: float | None = 3.0,
        default_retry_after: float = 5.0,
        drain_timeout: float = 30.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {app!r}")
        self.app = app
        _check_type(executor, PriorityExecutor, "executor")
        _check_type(memory, MemoryGuard, "memory")
        _check_type(load, LoadMonitor, "load")
        _check_type(shutdown, GracefulShutdown, "shutdown")
        self.executor = executor
        self.memory = memory
        self.load = load
        self.shutdown = shutdown
        if user is not None and not callable(user):
            raise TypeError(f"user must be a callable (scope) -> str | None, got {user!r}")
        self._user = user
        self._user_is_async = user is not None and (
            inspect.iscoroutinefunction(user)
            or inspect.iscoroutinefunction(getattr(user, "__call__", None))  # noqa: B004
        )
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a zero-argument callable, got {clock!r}")
        self._clock: Callable[[], float] = time.monotonic if clock is None else clock
        self._client = ClientAddress(
            trusted_proxies, header=forwarded_header, ipv6_prefix=ipv6_prefix
        )
        self._rules = RuleTable(rules, default, store=store, max_keys=max_keys, clock=clock)
        if rate_limit_headers not in ("ietf", "legacy", "both", "none"):
            raise ValueError(
                "rate_limit_headers must be 'ietf', 'legacy', 'both' or 'none', "
                f"got {rate_limit_headers!r}"
            )
        self._ietf = rate_limit_headers in ("ietf", "both")
        self._legacy = rate_limit_headers in ("legacy", "both")
        if not isinstance(headers_on_success, bool):
            raise TypeError(f"headers_on_success must be a bool, got {headers_on_success!r}")
        self._headers_on_success = headers_on_success
        self._slow = None if slow_request is None else check_positive(slow_request, "slow_request")
        self._default_retry_after = check_positive(default_retry_after, "default_retry_after")
        self._drain_timeout = check_positive(drain_timeout, "drain_timeout")
        self._requests = 0
        self._active = 0
        # rate_limited, queue_full, circuit_open, memory_pressure, overloaded,
        # shutting_down, timed_out, slow, errors
        self._counts = [0] * 9

    # -- statistics ----------------------------------------------------------------------

    def statistics(self) -> BraceMiddlewareStatistics:
        """The counters since construction (register the middleware in a `brace.Registry`
        to serve them under ``/health/queue``)."""
        return BraceMiddlewareStatistics(self._requests, self._active, *self._counts)

    @property
    def limiters(self) -> dict[str, Any]:
        """Every limit's `brace.RateLimiter` by policy name, for a `brace.Registry`."""
        return {limit.name: limit.limiter for rule in self._rules.all() for limit in rule.limits}

    # -- the ASGI entry ------------------------------------------------------------------

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
        rule = self._rules.match(method, path)
        if rule.exempt:
            await self.app(scope, receive, send)
            return
        self._requests += 1
        shutdown = self.shutdown
        if shutdown is not None and shutdown.shutting_down:
            self._counts[5] += 1
            await self._unavailable(send, ShuttingDown("the server is shutting down"))
            return

        # 1. rate limits: each must admit the request
        fields: list[tuple[CompiledLimit, int, float]] | None = None
        if rule.limits:
            fields = []
            address: str | None = None
            user: str | None = None
            user_known = False
            cost = rule.cost
            for limit in rule.limits:
                kind = limit.kind
                if kind == "custom":
                    custom = self._custom_key(limit, scope)
                    if custom is None:
                        continue
                    key = "k:" + custom
                else:
                    if kind != "ip" and not user_known:
                        if self._user is not None:
                            user = await self._identify(scope)
                        user_known = True
                    if kind != "ip" and user is not None:
                        key = "u:" + user
                    elif kind == "user":
                        continue
                    else:
                        if address is None:
                            address = self._client(scope)
                        key = "ip:" + address
                limiter = limit.limiter
                if limit.local:
                    decision = limiter.try_hit(key, cost)
                else:
                    decision = await limiter.hit(key, cost)
                if not decision.allowed:
                    self._counts[0] += 1
                    fields.append((limit, 0, decision.retry_after))
                    await self._rate_limited(send, rule, limit, decision.retry_after, fields)
                    return
                fields.append((limit, decision.remaining, decision.reset_after))
        priority = rule.priority
        if priority is None:
            priority = default_priority(method, path)

        # 2. load, memory, executor slot, breaker, timeout, then the application
        started = False
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                if fields and self._headers_on_success and (self._ietf or self._legacy):
                    message = dict(message)
                    message["headers"] = [
                        *message.get("headers", ()),
                        *self._rate_limit_headers(rule, fields),
                    ]
            await send(message)

        slow = self._slow
        begin = 0.0 if slow is None else self._clock()  # timed only to report slow requests
        self._active += 1
        try:
            load = self.load
            if load is not None and priority > Priority.HIGH and load.should_shed():
                raise Overloaded(  # noqa: TRY301 (handled with every other refusal)
                    "the server is overloaded", retry_after=load.retry_after
                )
            memory = self.memory
            if memory is not None:
                await memory.wait_admitted(priority)
            executor = self.executor
            if executor is None:
                await self._guarded(rule, scope, receive, send_wrapper)
            else:
                async with executor.slot(priority):
                    await self._guarded(rule, scope, receive, send_wrapper)
        except Rejected as refusal:
            if started:
                raise
            await self._refused(send, rule, refusal, fields)
        except _TimedOut:
            self._counts[6] += 1
            if not started:
                await _respond(
                    send,
                    504,
                    {"error": "timeout", "detail": f"the request took over {rule.timeout} s"},
                    [],
                )
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
                        "slow request: %s %s took %.3f s (status %s, rule %s)",
                        method,
                        path,
                        elapsed,
                        status or "none",
                        rule.name,
                    )

    @staticmethod
    def _custom_key(limit: CompiledLimit, scope: Scope) -> str | None:
        assert limit.key is not None
        try:
            key = limit.key(scope)
        except Exception:
            logger.exception("the key function of limit %r raised; skipping it", limit.name)
            return None
        return None if key is None else str(key)

    async def _identify(self, scope: Scope) -> str | None:
        user = self._user
        if user is None:
            return None
        try:
            identity = user(scope)
            if self._user_is_async or inspect.isawaitable(identity):
                identity = await identity  # type: ignore[misc]
        except Exception:
            logger.exception("the user callable raised; counting the request per address")
            return None
        if identity is None:
            return None
        return str(identity)

    async def _guarded(
        self, rule: CompiledRule, scope: Scope, receive: Receive, send: Send
    ) -> None:
        breaker = rule.breaker
        ticket = None if breaker is None else breaker.try_enter()
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            timeout = rule.timeout
            if timeout is None:
                await self.app(scope, receive, send if ticket is None else watch)
            else:
                with anyio.move_on_after(timeout) as cancel_scope:
                    await self.app(scope, receive, send if ticket is None else watch)
                if cancel_scope.cancelled_caught:
                    raise _TimedOut  # noqa: TRY301 (the breaker counts it, then it goes up)
        except BaseException as error:
            if ticket is not None:
                if isinstance(error, _TimedOut):
                    ticket.failure()
                else:
                    ticket.record_exception(error)
            raise
        if ticket is not None:
            if status >= 500:
                ticket.failure()
            else:
                ticket.success()

    # -- answers -------------------------------------------------------------------------

    def _rate_limit_headers(
        self, rule: CompiledRule, fields: list[tuple[CompiledLimit, int, float]]
    ) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        if self._ietf:
            headers.append((b"ratelimit-policy", rule.policy_header))
            if len(fields) == 1:  # the common case, without a generator
                limit, left, reset = fields[0]
                value = ratelimit_item(limit.field, left, reset)
            else:
                value = ", ".join(
                    ratelimit_item(limit.field, left, reset) for limit, left, reset in fields
                )
            headers.append((b"ratelimit", value.encode()))
        if self._legacy:
            limit, left, reset = min(fields, key=lambda item: item[1])
            headers.append((b"x-ratelimit-limit", str(limit.field.quota).encode()))
            headers.append((b"x-ratelimit-remaining", str(max(left, 0)).encode()))
            headers.append((b"x-ratelimit-reset", str(delay_seconds(reset)).encode()))
        return headers

    async def _rate_limited(
        self,
        send: Send,
        rule: CompiledRule,
        limit: CompiledLimit,
        retry_after: float,
        fields: list[tuple[CompiledLimit, int, float]],
    ) -> None:
        seconds = delay_seconds(retry_after, minimum=1)
        body = {
            "error": "rate_limited",
            "detail": f"rate limit {limit.rate_text} exceeded ({limit.name})",
            "limit": limit.name,
            "policy": limit.rate_text,
            "retry_after": seconds,
        }
        headers = [(b"retry-after", str(seconds).encode()), *self._rate_limit_headers(rule, fields)]
        await _respond(send, 429, body, headers)

    async def _refused(
        self,
        send: Send,
        rule: CompiledRule,
        refusal: Rejected,
        fields: list[tuple[CompiledLimit, int, float]] | None,
    ) -> None:
        if isinstance(refusal, RateLimited):
            self._counts[0] += 1
            retry = refusal.retry_after if refusal.retry_after is not None else 1.0
            seconds = delay_seconds(retry, minimum=1)
            body = {
                "error": "rate_limited",
                "detail": str(refusal),
                "limit": refusal.key,
                "retry_after": seconds,
            }
            await _respond(send, 429, body, [(b"retry-after", str(seconds).encode())])
            return
        counts = self._counts
        if isinstance(refusal, (QueueFull, QueueTimeout)):
            counts[1] += 1
        elif isinstance(refusal, CircuitOpen):
            counts[2] += 1
        elif isinstance(refusal, MemoryPressure):
            counts[3] += 1
        elif isinstance(refusal, Overloaded):
            counts[4] += 1
        elif isinstance(refusal, ShuttingDown):
            counts[5] += 1
        await self._unavailable(send, refusal)

    async def _unavailable(self, send: Send, refusal: Rejected) -> None:
        retry = refusal.retry_after
        seconds = delay_seconds(self._default_retry_after if retry is None else retry, minimum=1)
        error = _ERROR_NAMES.get(type(refusal))
        if error is None:
            error = next(
                (name for kind, name in _ERROR_NAMES.items() if isinstance(refusal, kind)),
                "unavailable",
            )
        headers = [(b"retry-after", str(seconds).encode())]
        if isinstance(refusal, ShuttingDown):
            headers.append((b"connection", b"close"))
        body = {"error": error, "detail": str(refusal), "retry_after": seconds}
        await _respond(send, 503, body, headers)

    # -- lifespan ------------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tasks:
            begun = False

            async def lifespan_receive() -> Message:
                nonlocal begun
                message = await receive()
                kind = message.get("type")
                if kind == "lifespan.startup" and not begun:
                    begun = True
                    await self._start(tasks)
                elif kind == "lifespan.shutdown":
                    await self.drain()
                return message

            try:
                await self.app(scope, lifespan_receive, send)
            finally:
                tasks.cancel_scope.cancel()

    async def _start(self, tasks: anyio.abc.TaskGroup) -> None:
        if self.memory is not None:
            await tasks.start(self.memory.run)
        if self.load is not None:
            await tasks.start(self.load.run)
        if self.shutdown is not None:
            await tasks.start(self.shutdown.wait)

    async def drain(self) -> None:
        """Finish what runs: wait for a `brace.GracefulShutdown` under way, then drain the
        executor (``drain_timeout``). The lifespan shutdown calls it."""
        if self.shutdown is not None:
            await self.shutdown.wait_drained()
        executor = self.executor
        if executor is not None and not executor.draining:
            report = await executor.drain(self._drain_timeout)
            logger.info("drained the executor: %s", report)


class _TimedOut(Exception):
    """The rule's timeout passed while the application ran."""


_ERROR_NAMES: dict[type[Rejected], str] = {
    QueueFull: "queue_full",
    QueueTimeout: "queue_timeout",
    CircuitOpen: "circuit_open",
    MemoryPressure: "memory_pressure",
    Overloaded: "overloaded",
    ShuttingDown: "shutting_down",
}


async def _respond(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(payload)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _check_type(value: object, kind: type, name: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be a brace.{kind.__name__} or None, got {value!r}")


# -- health endpoints --------------------------------------------------------------------

Allow = Iterable[str] | Callable[[Any], bool] | None


class HealthApp:
    """The ASGI app made by `health_app`."""

    __slots__ = (
        "_allow_networks",
        "_allow_test",
        "_client",
        "_probe",
        "_started",
        "health",
        "registry",
    )

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        health: Health | None = None,
        allow: Allow = None,
        trusted_proxies: Iterable[str] | TrustedProxies = (),
        forwarded_header: ForwardedHeader = "x-forwarded-for",
    ) -> None:
        _check_type(registry, Registry, "registry")
        _check_type(health, Health, "health")
        self.registry = registry
        self.health = health
        self._client = ClientAddress(trusted_proxies, header=forwarded_header, ipv6_prefix=128)
        self._allow_test: Callable[[Scope], bool] | None = None
        self._allow_networks: TrustedProxies | None = None
        if callable(allow):
            self._allow_test = allow
        elif allow is not None:
            self._allow_networks = TrustedProxies(allow)
        self._probe = ProcessMemoryProbe()
        self._started = time.time()

    def allowed(self, scope: Scope) -> bool:
        """Whether the detailed endpoints may answer this request."""
        if self._allow_test is not None:
            try:
                return bool(self._allow_test(scope))
            except Exception:
                logger.exception("the health allow callable raised; refusing")
                return False
        networks = self._allow_networks
        if networks is None:
            return True
        try:
            address = ipaddress.ip_address(self._client(scope).split("/")[0])
        except ValueError:
            return False
        return address in networks

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message.get("type")
                if kind == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif kind == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        root = scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root) :]
        path = path.rstrip("/") or "/"
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, {"error": "method_not_allowed"}, [(b"allow", b"GET, HEAD")])
            return
        if path in ("/health", "/"):
            await self._basic(send)
            return
        detail = _DETAILED.get(path)
        if detail is None:
            await _respond(send, 404, {"error": "not_found"}, [])
            return
        if not self.allowed(scope):
            await _respond(send, 403, {"error": "forbidden"}, [])
            return
        if detail == "full":
            await self._full(send)
        elif detail == "queue":
            await _respond(send, 200, self._queue(), _NO_STORE)
        else:
            await _respond(send, 200, self._metrics(), _NO_STORE)

    async def _basic(self, send: Send) -> None:
        if self.health is None:
            await _respond(send, 200, {"status": "ok"}, _NO_STORE)
            return
        report = await self.health.liveness()
        await _respond(send, report.http_status, {"status": report.status.value}, _NO_STORE)

    async def _full(self, send: Send) -> None:
        if self.health is None:
            await _respond(send, 200, {"status": "ok", "checks": {}}, _NO_STORE)
            return
        report = await self.health.readiness()
        await _respond(send, report.http_status, report.to_dict(), _NO_STORE)

    def _queue(self) -> dict[str, Any]:
        return {} if self.registry is None else self.registry.snapshot()

    def _metrics(self) -> dict[str, Any]:
        times = os.times()
        try:
            memory: dict[str, Any] = {"rss": self._probe().usage}
        except Exception:
            memory = {"rss": None}
        try:
            load_average: list[float] | None = list(os.getloadavg())
        except OSError:
            load_average = None
        snapshot = self._queue()
        return {
            "process": {
                "pid": os.getpid(),
                "uptime": round(time.time() - self._started, 3),
                "cpu_user": times.user,
                "cpu_system": times.system,
                "threads": threading.active_count(),
                "python": sys.version.split()[0],
            },
            "memory": memory,
            "load_average": load_average,
            "cpu_count": os.cpu_count(),
            "brace": {key: snapshot[key] for key in ("memory", "load") if key in snapshot},
        }


_DETAILED = {"/health/full": "full", "/health/queue": "queue", "/health/metrics": "metrics"}
_NO_STORE = [(b"cache-control", b"no-store")]


def health_app(
    registry: Registry | None = None,
    *,
    health: Health | None = None,
    allow: Allow = None,
    trusted_proxies: Iterable[str] | TrustedProxies = (),
    forwarded_header: ForwardedHeader = "x-forwarded-for",
) -> HealthApp:
    """An ASGI app serving ``/health``, ``/health/full``, ``/health/queue`` and
    ``/health/metrics`` below wherever it is mounted (``Mount("/api", health_app(...))``
    serves ``/api/health/full``).

    ``/health``: liveness (``health.liveness()``, or plain ``ok``). ``/health/full``:
    readiness with every check (``health.readiness()``), 503 when failing.
    ``/health/queue``: ``registry.snapshot()``. ``/health/metrics``: process figures (CPU,
    memory, threads, load average) and the registry's memory and load sections. ``allow``
    restricts the three detailed ones: CIDRs (``["127.0.0.1/32", "10.0.0.0/8"]``) or a
    callable ``(scope) -> bool``; others get 403. Everyone may see them by default.
    """
    return HealthApp(
        registry,
        health=health,
        allow=allow,
        trusted_proxies=trusted_proxies,
        forwarded_header=forwarded_header,
    )
