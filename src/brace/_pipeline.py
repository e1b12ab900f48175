"""One HTTP request through brace's server-side protections, for every adapter.

Theory of operation: an adapter (the ASGI middleware, the aiohttp middleware, the FastAPI
dependencies, the Litestar guard) translates its framework's request into a few calls on a
`Pipeline`, and the pipeline's answers back into its framework's response. For one request:

1. `Pipeline.begin` finds the route's rule (``None``: exempt, or an uncounted CORS
   preflight, so the request goes straight to the application);
2. `Pipeline.check_limits` keys the request (user, client address or a key function) and
   asks each of the rule's limits; a refusal is an `Answer` (429);
3. `Pipeline.run` sheds on load, enters the rule's breaker (an open circuit refuses before
   the request queues), passes the memory guard, takes an executor slot and runs the
   application under the rule's timeouts, in one cancel scope that the executor's drain
   cancels when its timeout passes; a refusal or a timeout is an `Answer` (503 / 504);
4. the adapter sends the answer, or the application's own response with the rate-limit
   fields of `Pipeline.success_headers`.

The ASGI middleware serves a plain rule (no breaker, bound or timeout, and nothing
server-wide to shed, guard or queue by) on a short path of its own: `route`, then
`hit_local` or `hit_limits` (what `check_local` and `check_limits` call), then the
application with the pipeline's counters and `timed`, without an `Exchange` or `run`.

Nothing here imports a framework; header values are ``str`` pairs that each adapter encodes
as its framework wants. The counters have names (`Counters`), not positions in a list.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, TypedDict, cast

import anyio
import anyio.abc

from ._asgi_rules import CompiledLimit, CompiledRule, Rule, RuleTable, default_priority
from ._breaker import CircuitTicket
from ._cancel import move_after, request_scope
from ._client_ip import ClientAddress, ForwardedHeader, TrustedProxies
from ._clock import check_clock
from ._core._validate import check_positive
from ._core.decision import Decision
from ._events import REASONS, EventHook, Reason, Refused, SlowRequest, event_hook
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
from ._executor import Dropped, PriorityExecutor
from ._headers import delay_seconds, ratelimit_member
from ._load import LoadMonitor
from ._memory import MemoryGuard
from ._metrics import Histogram
from ._priority import Priority
from ._shutdown import GracefulShutdown
from ._store import RateLimitStore

__all__ = (
    "Answer",
    "BraceMiddlewareStatistics",
    "Counters",
    "Exchange",
    "Fields",
    "HeaderStyle",
    "Pipeline",
    "PipelineOptions",
    "check_type",
)

logger = logging.getLogger("brace.asgi")

HeaderStyle = Literal["ietf", "legacy", "both", "none"]
#: ``(request) -> user or None`` (sync or async): the authenticated user of a request
UserFunction = Callable[[Any], Any]
#: per admitted limit: the limit, what it has left and the seconds until it resets
Fields = list[tuple[CompiledLimit, int, float]]


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
    refusals: Mapping[str, int]
    refusals_by_rule: Mapping[str, Mapping[str, int]]


_COUNTS = cast("tuple[str, ...]", BraceMiddlewareStatistics.__slots__)[:-2]


class Counters:
    """The pipeline's counters, by name, and its refusals by reason (overall and per
    rule: the rules are the configured ones, so the map is bounded)."""

    __slots__ = (*_COUNTS, "reasons", "by_rule")

    def __init__(self) -> None:
        for name in _COUNTS:
            setattr(self, name, 0)
        self.reasons: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.by_rule: dict[str, dict[str, int]] = {}

    def snapshot(self) -> BraceMiddlewareStatistics:
        return BraceMiddlewareStatistics(
            self.requests,
            self.active,
            self.rate_limited,
            self.queue_full,
            self.circuit_open,
            self.memory_pressure,
            self.overloaded,
            self.shutting_down,
            self.timed_out,
            self.slow,
            self.errors,
            MappingProxyType(dict(self.reasons)),
            MappingProxyType(
                {rule: MappingProxyType(dict(counts)) for rule, counts in self.by_rule.items()}
            ),
        )

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


@dataclass(slots=True)
class Answer:
    """A response brace gives itself: ``status``, a JSON ``body`` and extra ``headers``."""

    status: int
    body: dict[str, Any]
    headers: list[tuple[str, str]]

    def payload(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()

    def raw_headers(self, payload: bytes) -> list[tuple[bytes, bytes]]:
        """Every header as ASGI sends them, with ``content-type`` and ``content-length``."""
        return [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *((name.encode("latin-1"), value.encode("latin-1")) for name, value in self.headers),
        ]


# each refusal: its name in the 503 body, its counter and its reason (events, refusals)
_REFUSALS: tuple[tuple[type[Rejected], str, str, Reason], ...] = (
    (Dropped, "dropped", "queue_full", "dropped"),
    (QueueFull, "queue_full", "queue_full", "queue_full"),
    (QueueTimeout, "queue_timeout", "queue_full", "queue_timeout"),
    (CircuitOpen, "circuit_open", "circuit_open", "circuit_open"),
    (MemoryPressure, "memory_pressure", "memory_pressure", "memory"),
    (Overloaded, "overloaded", "overloaded", "load"),
    (ShuttingDown, "shutting_down", "shutting_down", "shutting_down"),
)


class TimedOut(Exception):
    """The rule's timeout passed while the application ran."""


class Exchange:
    """One request on its way through the pipeline: its rule, the rate-limit fields, the
    response status once started, and the cancel scope its timeouts move."""

    __slots__ = (
        "begin",
        "deadline",
        "fields",
        "idle",
        "priority",
        "response",
        "rule",
        "scope",
        "started",
        "status",
    )

    def __init__(self, rule: CompiledRule) -> None:
        self.rule = rule
        self.fields: Fields | None = None
        self.started = False
        self.status = 0
        #: the request's cancel scope (`brace._cancel.request_scope`), while it has one
        self.scope: Any = None
        self.idle: float | None = None
        #: the adapter's response object once started, where it needs it to finish
        self.response: Any = None

    # Set where they start to matter, not for every request: ``begin`` by `Pipeline.run`,
    # ``priority`` once it has it, ``deadline`` (the stream's total deadline once the
    # response started, inf: none) with ``idle``.
    begin: float
    priority: int
    deadline: float

    def response_started(self, status: int) -> None:
        """The application started its response: the time-to-start timeout is over; the
        stream's own timeouts (if the rule has any) take over."""
        self.started = True
        self.status = status
        scope = self.scope
        if scope is not None:
            rule = self.rule
            total = rule.stream_timeout
            idle = rule.idle_timeout
            if total is None and idle is None:
                scope.deadline = math.inf  # the common case: no clock read
                return
            now = anyio.current_time()
            self.deadline = math.inf if total is None else now + total
            self.idle = idle
            scope.deadline = self.deadline if idle is None else min(self.deadline, now + idle)

    def body_sent(self) -> None:
        """A piece of the body went out: the idle timeout starts again."""
        idle = self.idle
        if idle is not None and self.scope is not None:
            self.scope.deadline = min(self.deadline, anyio.current_time() + idle)


class PipelineOptions(TypedDict, total=False):
    """The arguments every server adapter passes on to its `Pipeline` (documented on
    `brace.asgi.BraceMiddleware`)."""

    rules: Iterable[Rule]
    default: Rule | None
    executor: PriorityExecutor | None
    memory: MemoryGuard | None
    load: LoadMonitor | None
    shutdown: GracefulShutdown | None
    user: UserFunction | None
    trusted_proxies: Iterable[str] | TrustedProxies
    forwarded_header: ForwardedHeader
    ipv6_prefix: int
    store: RateLimitStore | None
    max_keys: int
    rate_limit_headers: HeaderStyle
    headers_on_success: bool
    count_preflight: bool
    slow_request: float | None
    default_retry_after: float
    drain_timeout: float
    clock: Callable[[], float] | None
    on_event: EventHook | Iterable[EventHook] | None


class Pipeline:
    """brace's server-side protections for one kind of adapter (see the module's text)."""

    def __init__(
        self,
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
        count_preflight: bool = False,
        slow_request: float | None = 3.0,
        default_retry_after: float = 5.0,
        drain_timeout: float = 30.0,
        clock: Callable[[], float] | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
        logger_name: str = "brace.asgi",
    ) -> None:
        #: the client's address from an ASGI-like ``{"client": ..., "headers": ...}``
        self.client = ClientAddress(
            trusted_proxies, header=forwarded_header, ipv6_prefix=ipv6_prefix
        )
        check_type(executor, PriorityExecutor, "executor")
        check_type(memory, MemoryGuard, "memory")
        check_type(load, LoadMonitor, "load")
        check_type(shutdown, GracefulShutdown, "shutdown")
        self.executor = executor
        self.memory = memory
        self.load = load
        self.shutdown = shutdown
        if user is not None and not callable(user):
            raise TypeError(f"user must be a callable (request) -> str | None, got {user!r}")
        self.user = user
        clock = check_clock(clock)
        self.clock: Callable[[], float] = time.monotonic if clock is None else clock
        self.rules = RuleTable(rules, default, store=store, max_keys=max_keys, clock=clock)
        self._opened: list[Any] = []  # stores opened by check_stores, for close_stores
        if rate_limit_headers not in ("ietf", "legacy", "both", "none"):
            raise ValueError(
                "rate_limit_headers must be 'ietf', 'legacy', 'both' or 'none', "
                f"got {rate_limit_headers!r}"
            )
        self.ietf = rate_limit_headers in ("ietf", "both")
        self.legacy = rate_limit_headers in ("legacy", "both")
        for name, flag in (
            ("headers_on_success", headers_on_success),
            ("count_preflight", count_preflight),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        self.headers_on_success = headers_on_success and (self.ietf or self.legacy)
        self.count_preflight = count_preflight
        self.slow = None if slow_request is None else check_positive(slow_request, "slow_request")
        self.default_retry_after = check_positive(default_retry_after, "default_retry_after")
        self.drain_timeout = check_positive(drain_timeout, "drain_timeout")
        self.counters = Counters()
        #: nothing server-wide to shed, guard or queue by: the ASGI middleware serves a
        #: plain rule on its short path, without `run`
        self.plain = executor is None and memory is None and load is None
        # for the metric exporters (brace._metrics): request durations (timed while
        # slow_request is set; None until an exporter reads them, so that a request pays
        # one attribute test while nobody exports)
        self.durations: Histogram | None = None
        self.logger = logging.getLogger(logger_name)
        #: the ``on_event`` hooks as one callable (``None``: none)
        self.on_event = event_hook(on_event)

    # -- 1. the rule ---------------------------------------------------------------------

    def begin(self, method: str, path: str, *, preflight: bool = False) -> Exchange | None:
        """The request's exchange, or ``None`` when nothing applies (an exempt rule, or a
        CORS preflight while ``count_preflight`` is off)."""
        rule = self.route(method, path, preflight=preflight)
        if rule is None:
            return None
        self.counters.requests += 1
        return Exchange(rule)

    def route(self, method: str, path: str, *, preflight: bool = False) -> CompiledRule | None:
        """The request's rule, or ``None`` when nothing applies (see `begin`, which also
        counts the request and makes its exchange)."""
        rule = self.rules.match(method, path)
        if rule.exempt or (preflight and not self.count_preflight):
            return None
        return rule

    # -- 2. the limits -------------------------------------------------------------------

    async def check_limits(
        self, exchange: Exchange, request: Any, address: Callable[[Any], str], source: Any
    ) -> Answer | None:
        """Refuse while shutting down (503), then ask each limit of the rule: the 429
        `Answer` of the first that refuses, ``None`` when all admit the request.

        ``request`` goes to the ``user`` callable and to key functions;
        ``address(source)`` gives the client's address, asked only when a limit needs it
        (an ASGI adapter passes `ClientAddress` and the scope: no closure per request)."""
        rule = exchange.rule
        if rule.local and self.user is None:
            return self.check_local(exchange, address, source)
        closing = self.closing(rule)
        if closing is not None:
            return closing
        fields: Fields = []
        exchange.fields = fields
        return await self.hit_limits(rule, fields, request, address, source)

    async def hit_limits(
        self,
        rule: CompiledRule,
        fields: Fields,
        request: Any,
        address: Callable[[Any], str],
        source: Any,
    ) -> Answer | None:
        """Ask each limit of the rule, adding each one's fields to ``fields``: the 429
        `Answer` of the first that refuses, else ``None``. `hit_local` is the same without
        waiting, for a ``local`` rule while the pipeline has no ``user`` callable; the
        shutdown is the caller's to check."""
        client: str | None = None
        user: str | None = None
        user_known = False
        cost = rule.cost
        for limit in rule.limits:
            kind = limit.kind
            if kind == "custom":
                custom = await self._custom_key(limit, request)
                if custom is None:
                    continue
                key = "k:" + custom
            else:
                if kind != "ip" and not user_known:
                    if self.user is not None:
                        user = await self._identify(request)
                    user_known = True
                if kind != "ip" and user is not None:
                    key = "u:" + user
                elif kind == "user":
                    continue
                else:
                    if client is None:
                        client = address(source)
                    key = "ip:" + client
            if limit.local:
                hit = limit.hit(key, cost, limit.clock())
                if isinstance(hit, Decision):
                    return self._limited(rule, limit, key, hit, fields)
                remaining, reset = hit
            else:
                decision = await limit.limiter.hit(key, cost)
                if not decision.allowed:
                    return self._limited(rule, limit, key, decision, fields)
                remaining, reset = decision.remaining, decision.reset_after
            fields.append((limit, remaining, reset))
        return None

    def check_local(
        self, exchange: Exchange, address: Callable[[Any], str], source: Any
    ) -> Answer | None:
        """`check_limits` without waiting, for a ``local`` rule while the pipeline has no
        ``user`` callable (`hit_local`)."""
        rule = exchange.rule
        closing = self.closing(rule)
        if closing is not None:
            return closing
        fields: Fields = []
        exchange.fields = fields
        return self.hit_local(rule, fields, address, source)

    def hit_local(
        self, rule: CompiledRule, fields: Fields, address: Callable[[Any], str], source: Any
    ) -> Answer | None:
        """Ask each limit of a ``local`` rule, keyed by the client's address
        (``address(source)``; a ``per="user"`` limit skips the request, there being no
        ``user`` callable), adding each one's fields to ``fields``: the 429 `Answer` of
        the first that refuses, else ``None``. Nothing here waits; the shutdown is the
        caller's to check."""
        client: str | None = None
        cost = rule.cost
        for limit in rule.limits:
            if limit.kind == "user":
                continue
            if client is None:
                client = "ip:" + address(source)
            hit = limit.hit(client, cost, limit.clock())
            if isinstance(hit, Decision):
                return self._limited(rule, limit, client, hit, fields)
            remaining, reset = hit
            fields.append((limit, remaining, reset))
        return None

    def closing(self, rule: CompiledRule) -> Answer | None:
        """The 503 (counted) for a request that comes once the shutdown started; ``None``
        before, or with no `brace.GracefulShutdown`."""
        shutdown = self.shutdown
        if shutdown is None or not shutdown.shutting_down:
            return None
        return self.refusal(ShuttingDown("the server is shutting down"), rule)

    def _limited(
        self,
        rule: CompiledRule,
        limit: CompiledLimit,
        key: str,
        decision: Decision,
        fields: Fields,
    ) -> Answer:
        """``limit`` refused ``key``: count and report it, and answer 429 with the fields
        of every limit asked."""
        self.counters.rate_limited += 1
        self.refused("rate_limited", rule, decision.retry_after, key=key)
        fields.append((limit, 0, decision.retry_after))
        return self.rate_limited(rule, limit, decision.retry_after, fields)

    async def _custom_key(self, limit: CompiledLimit, request: Any) -> str | None:
        assert limit.key is not None
        try:
            key: Any = limit.key(request)
            if inspect.isawaitable(key):
                key = await key
        except Exception:
            self.logger.exception("the key function of limit %r raised; skipping it", limit.name)
            return None
        return None if key is None else str(key)

    async def _identify(self, request: Any) -> str | None:
        assert self.user is not None
        try:
            identity = self.user(request)
            if inspect.isawaitable(identity):
                identity = await identity
        except Exception:
            self.logger.exception("the user callable raised; counting the request per address")
            return None
        return None if identity is None else str(identity)

    # -- 3. shedding, slot, breaker, timeout ---------------------------------------------

    async def run(
        self,
        exchange: Exchange,
        method: str,
        path: str,
        call: Callable[..., Awaitable[int | None]],
        args: tuple[Any, ...] = (),
    ) -> Answer | None:
        """Run ``call(*args)`` (the application; it returns the response's status, or
        ``None`` when the adapter reports it through `Exchange.response_started`) behind the
        shedding, the breaker, the executor slot and the timeouts. A refusal, or a timeout
        before the response started, is the `Answer` to send; ``None``: the application
        answered (a timeout after it started leaves the response cut short).

        With an executor, the request's cancel scope (the one its timeouts move) is put
        under the executor's drain from the moment it asks for a slot: when a drain's
        timeout passes, a request still waiting or running is cancelled and answered 503
        ``shutting_down`` (a response already started is cut short). A request has a
        cancel scope when its rule has a timeout, or when the pipeline has both an
        executor and a `brace.GracefulShutdown`; without either, nothing would move or
        cancel it, and it is spared the scope's cost. The scope is the running loop's own
        (`brace._cancel.request_scope`: a native deadline on asyncio 3.11+, a bare trio
        scope on trio)."""
        rule = exchange.rule
        counters = self.counters
        slow = self.slow
        exchange.begin = 0.0 if slow is None else self.clock()
        priority = rule.priority
        if priority is None:
            priority = default_priority(method, path)
        counters.active += 1
        ticket = None
        try:
            load = self.load
            if load is not None and priority > Priority.HIGH and load.should_shed():
                raise Overloaded(  # noqa: TRY301 (answered with every other refusal)
                    "the server is overloaded", retry_after=load.retry_after
                )
            breaker = rule.breaker
            if breaker is not None:
                # asked before the queue: an open circuit refuses at once, taking no place
                ticket = breaker.try_enter()
            executor = self.executor
            memory = self.memory
            # an executor given the same guard asks it itself (and counts what it holds)
            if memory is not None and executor is not None and executor.guard is memory:
                memory = None
            exchange.priority = priority
            guarded = self._called if rule.concurrency is None else self._guarded
            if not rule.timed and (executor is None or self.shutdown is None):
                # no timeout to keep and no shutdown to bound it: no cancel scope
                if memory is not None:
                    await memory.wait_admitted(priority)
                if executor is None:
                    await guarded(exchange, call, args, ticket, None)
                else:
                    async with executor.slot(priority):
                        await guarded(exchange, call, args, ticket, None)
            else:
                scope = request_scope()
                exchange.scope = scope
                if executor is not None:
                    executor.track(scope)
                try:
                    with scope:  # (the same steps as above, under the scope)
                        if memory is not None:
                            await memory.wait_admitted(priority)
                        if executor is None:
                            await guarded(exchange, call, args, ticket, scope)
                        else:
                            async with executor.slot(priority):
                                await guarded(exchange, call, args, ticket, scope)
                finally:
                    exchange.scope = None
                    if executor is not None:
                        executor.untrack(scope)
                if scope.cancelled_caught:
                    if executor is not None and executor.cancelling:
                        if exchange.started:  # the response is cut short
                            counters.shutting_down += 1
                            return None
                        raise ShuttingDown(  # noqa: TRY301
                            "cancelled: the server drained and its timeout passed"
                        )
                    raise TimedOut  # noqa: TRY301
        except Rejected as refusal:
            if ticket is not None and ticket.pending:
                ticket.cancel()  # refused before it ran: nothing learnt about the service
            if exchange.started:
                raise
            return self.refusal(refusal, rule, priority)
        except TimedOut:
            counters.timed_out += 1
            self.refused("timeout", rule, None, priority=priority)
            if exchange.started:
                return None
            return Answer(
                504,
                {"error": "timeout", "detail": f"the request took over {rule.timeout} s"},
                [],
            )
        except BaseException as error:
            failed = isinstance(error, Exception)
            if ticket is not None and ticket.pending:  # not reported yet
                if failed:
                    ticket.record_exception(error)
                else:
                    ticket.cancel()  # cancelled before it ran
            if failed:
                counters.errors += 1
            raise
        finally:
            counters.active -= 1
            if slow is not None:
                self.timed(rule, exchange.begin, exchange.status, method, path)
        return None

    async def _guarded(
        self,
        exchange: Exchange,
        call: Callable[..., Awaitable[int | None]],
        args: tuple[Any, ...],
        ticket: CircuitTicket | None,
        scope: Any,
    ) -> None:
        # the rule's own bound (a fleet-wide DistributedLimit...), after the server's
        # slot; a refusal here comes before the call and says nothing about the service
        assert exchange.rule.concurrency is not None
        async with exchange.rule.concurrency.slot(exchange.priority):
            await self._called(exchange, call, args, ticket, scope)

    async def _called(
        self,
        exchange: Exchange,
        call: Callable[..., Awaitable[int | None]],
        args: tuple[Any, ...],
        ticket: CircuitTicket | None,
        scope: Any,
    ) -> None:
        rule = exchange.rule
        if scope is not None and rule.timeout is not None:
            # the time to start a response counts from here, once the request has a slot
            move_after(scope, rule.timeout)
        try:
            status = await call(*args)
        except BaseException as error:
            if ticket is not None:
                if scope is not None and scope.cancel_called:
                    executor = self.executor
                    if executor is not None and executor.cancelling:
                        ticket.cancel()  # the drain, not the service, ended it
                    else:
                        ticket.failure()  # the rule's timeout
                else:
                    ticket.record_exception(error)
            raise
        if status is None:
            status = exchange.status
        else:
            exchange.status = status
        if ticket is not None:
            if status >= 500:
                ticket.failure()
            else:
                ticket.success()

    def timed(self, rule: CompiledRule, begin: float, status: int, method: str, path: str) -> None:
        """Time a request that began at ``begin`` (on the pipeline's clock) into the
        durations an exporter reads, and report it if slow (only while ``slow_request``
        is set)."""
        slow = self.slow
        assert slow is not None
        now = self.clock()
        elapsed = now - begin
        durations = self.durations
        if durations is not None:
            durations.observe(elapsed)
        if elapsed > slow:
            self.counters.slow += 1
            self.logger.warning(
                "slow request: %s %s took %.3f s (status %s, rule %s)",
                method,
                path,
                elapsed,
                status or "none",
                rule.name,
            )
            if self.on_event is not None:
                self.on_event(SlowRequest(rule.name, now, method, path, elapsed, status))

    def app_refusal(self, refusal: Rejected, rule: CompiledRule, method: str, path: str) -> Answer:
        """The answer to a brace refusal the application raised before it responded,
        answered as the pipeline's own (a rule with no priority: the request's default)."""
        priority = rule.priority
        if priority is None:
            priority = default_priority(method, path)
        return self.refusal(refusal, rule, priority)

    # -- 4. answers ----------------------------------------------------------------------

    def success_headers(self, exchange: Exchange) -> list[tuple[str, str]]:
        """The rate-limit fields for an admitted response (none when turned off)."""
        fields = exchange.fields
        if not fields or not self.headers_on_success:
            return []
        return self.rate_limit_headers(exchange.rule, fields)

    def raw_rate_limit_headers(
        self, rule: CompiledRule, fields: Fields
    ) -> list[tuple[bytes, bytes]]:
        """`rate_limit_headers` encoded, as ASGI sends them (the policy's field is encoded
        once, with the rule)."""
        headers: list[tuple[bytes, bytes]]
        if self.ietf:
            # (ASCII: policy names are printable ASCII, the rest digits)
            headers = [rule.raw_policy, (b"ratelimit", raw_ratelimit_value(fields))]
        else:
            headers = []
        if self.legacy:
            headers += [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in legacy_headers(fields)
            ]
        return headers

    def rate_limit_headers(self, rule: CompiledRule, fields: Fields) -> list[tuple[str, str]]:
        """``RateLimit-Policy`` / ``RateLimit`` and/or the legacy ``X-RateLimit-*`` trio."""
        headers: list[tuple[str, str]] = []
        if self.ietf:
            headers.append(("ratelimit-policy", rule.policy_header))
            headers.append(("ratelimit", ratelimit_value(fields)))
        if self.legacy:
            headers += legacy_headers(fields)
        return headers

    def rate_limited(
        self, rule: CompiledRule, limit: CompiledLimit, retry_after: float, fields: Fields
    ) -> Answer:
        """The 429 of ``limit`` (already counted), with the fields of every limit asked."""
        seconds = delay_seconds(retry_after, minimum=1)
        body = {
            "error": "rate_limited",
            "detail": f"rate limit {limit.rate_text} exceeded ({limit.name})",
            "limit": limit.name,
            "policy": limit.rate_text,
            "retry_after": seconds,
        }
        headers = [("retry-after", str(seconds)), *self.rate_limit_headers(rule, fields)]
        return Answer(429, body, headers)

    def refused(
        self,
        reason: Reason,
        rule: CompiledRule | None,
        retry_after: float | None,
        *,
        key: str | None = None,
        priority: int | None = None,
    ) -> None:
        """Count one refusal by reason (overall and for ``rule``), log it at DEBUG and
        tell the ``on_event`` hooks: called once per refused request."""
        counters = self.counters
        counters.reasons[reason] += 1
        name = None if rule is None else rule.name
        if name is not None:
            by_rule = counters.by_rule.get(name)
            if by_rule is None:
                by_rule = counters.by_rule[name] = dict.fromkeys(REASONS, 0)
            by_rule[reason] += 1
        self.logger.debug("refused (%s) by rule %s", reason, name)
        if self.on_event is not None:
            self.on_event(
                Refused(
                    name,
                    self.clock(),
                    reason,
                    "pipeline",
                    retry_after=retry_after,
                    key=key,
                    priority=priority,
                    rule=name,
                )
            )

    def refusal(
        self, refusal: Rejected, rule: CompiledRule | None = None, priority: int | None = None
    ) -> Answer:
        """The answer (and the count) for a brace refusal raised while serving: 429 for
        `brace.RateLimited`, 503 for the others, with ``Retry-After``."""
        counters = self.counters
        if isinstance(refusal, RateLimited):
            counters.rate_limited += 1
            self.refused(
                "rate_limited", rule, refusal.retry_after, key=refusal.key, priority=priority
            )
            retry = refusal.retry_after if refusal.retry_after is not None else 1.0
            seconds = delay_seconds(retry, minimum=1)
            body = {
                "error": "rate_limited",
                "detail": str(refusal),
                "limit": refusal.key,
                "retry_after": seconds,
            }
            return Answer(429, body, [("retry-after", str(seconds))])
        error = "unavailable"
        for kind, name, counter, reason in _REFUSALS:
            if isinstance(refusal, kind):
                error = name
                setattr(counters, counter, getattr(counters, counter) + 1)
                self.refused(reason, rule, refusal.retry_after, priority=priority)
                break
        return unavailable(refusal, self.default_retry_after, error)

    # -- lifespan ------------------------------------------------------------------------

    async def start(self, tasks: anyio.abc.TaskGroup) -> None:
        """`check_stores`, then start the `background` tasks in ``tasks``."""
        await self.check_stores()
        for run in self.background():
            await tasks.start(run)

    def stores(self) -> list[Any]:
        """Every distinct store the rules use."""
        stores: dict[int, Any] = {}
        for rule in self.rules.all():
            for limit in rule.limits:
                stores.setdefault(id(limit.limiter.store), limit.limiter.store)
        return list(stores.values())

    async def check_stores(self) -> None:
        """``await store.open()`` then ``await store.check()`` on every distinct store the
        rules use (where it has them): a store that cannot serve fails the startup with
        its error. Opening here, in the lifespan's task, is what a `brace.redis.RedisStore`
        made by ``from_url`` needs on trio (coredis keeps its connections in a task group
        that must be entered and left in one task); `close_stores` closes them."""
        for store in self.stores():
            open_: Callable[[], Awaitable[object]] | None = getattr(store, "open", None)
            if callable(open_):
                await open_()
                self._opened.append(store)
            check: Callable[[], Awaitable[object]] | None = getattr(store, "check", None)
            if callable(check):
                await check()

    async def close_stores(self) -> None:
        """``await store.aclose()`` on the stores `check_stores` opened."""
        opened, self._opened = self._opened, []
        for store in reversed(opened):
            await store.aclose()

    def background(self) -> list[Callable[..., Coroutine[Any, Any, Any]]]:
        """The tasks to run while the application serves: the memory guard's and load
        monitor's samplers, the shutdown's signal watcher."""
        runs: list[Callable[..., Coroutine[Any, Any, Any]]] = [
            primitive.run for primitive in (self.memory, self.load) if primitive is not None
        ]
        if self.shutdown is not None:
            runs.append(self.shutdown.wait)
        return runs

    async def drain(self) -> None:
        """Wait for a `brace.GracefulShutdown` under way, then drain the executor."""
        if self.shutdown is not None:
            await self.shutdown.wait_drained()
        executor = self.executor
        if executor is not None and not executor.draining:
            report = await executor.drain(self.drain_timeout)
            self.logger.info("drained the executor: %s", report)


def raw_ratelimit_value(fields: Fields) -> bytes:
    """The ``RateLimit`` field of every admitted (or refusing) limit, encoded."""
    if len(fields) == 1:  # the common case, without a generator
        limit, left, reset = fields[0]
        return ratelimit_member(limit.field, left, reset)
    return b", ".join([ratelimit_member(limit.field, left, reset) for limit, left, reset in fields])


def ratelimit_value(fields: Fields) -> str:
    """The ``RateLimit`` field of every admitted (or refusing) limit."""
    return raw_ratelimit_value(fields).decode("ascii")


def legacy_headers(fields: Fields) -> list[tuple[str, str]]:
    """The legacy ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` trio of the limit
    with the least left."""
    limit, left, reset = min(fields, key=lambda item: item[1])
    return [
        ("x-ratelimit-limit", str(limit.field.quota)),
        ("x-ratelimit-remaining", str(max(left, 0))),
        ("x-ratelimit-reset", str(delay_seconds(reset))),
    ]


def unavailable(refusal: Rejected, default_retry_after: float, error: str | None = None) -> Answer:
    """The 503 for a refusal: ``Retry-After`` from its estimate (``default_retry_after``
    when it has none), and ``Connection: close`` while shutting down."""
    if error is None:
        error = next(
            (name for kind, name, _, _ in _REFUSALS if isinstance(refusal, kind)), "unavailable"
        )
    retry = refusal.retry_after
    seconds = delay_seconds(default_retry_after if retry is None else retry, minimum=1)
    headers = [("retry-after", str(seconds))]
    if isinstance(refusal, ShuttingDown):
        headers.append(("connection", "close"))
    body = {"error": error, "detail": str(refusal), "retry_after": seconds}
    return Answer(503, body, headers)


def is_preflight(method: str, headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """A CORS preflight: ``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``."""
    if method != "OPTIONS":
        return False
    found = 0
    for name, _ in headers:
        lowered = name.lower()
        if lowered == b"origin" or lowered == b"access-control-request-method":
            found += 1
    return found >= 2


def check_type(value: object, kind: type, name: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be a brace.{kind.__name__} or None, got {value!r}")
