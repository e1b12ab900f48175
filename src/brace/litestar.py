"""brace for Litestar routes: a guard that reads each route's rate limit from its ``opt``.

Litestar builds its middleware per route, so state kept in a middleware instance would be
split between routes; the guard keeps its limiters in itself, one per route handler::

    limits = RateLimitGuard(user=lambda connection: connection.headers.get("x-user"))

    @post("/api/ai", guards=[limits], opt={"rate_limit": "10/minute"})
    async def ai() -> dict[str, str]: ...

``opt`` keys read: ``rate_limit`` (a rate string or `brace.Rate`, or a list of them: all
must admit), ``rate_limit_per`` (``"client"``, ``"ip"`` or ``"user"``; default
``"client"``), ``rate_limit_name`` (default: the handler's name) and ``rate_limit_cost``.
Routes without ``rate_limit`` pass. A refusal raises Litestar's ``TooManyRequestsException``
(429 with ``Retry-After`` and the IETF ``RateLimit`` fields). Guards run before the handler
and cannot touch a successful response, so only refusals carry the fields; for headers on
every response, and for queueing, wrap the app in `brace.asgi.BraceMiddleware`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ._extras import missing_extra

try:
    from litestar.connection import ASGIConnection
    from litestar.exceptions import TooManyRequestsException
    from litestar.handlers.base import BaseRouteHandler
except ImportError as error:  # the extra is not installed
    raise missing_extra("litestar", "litestar", error) from error

from ._client_ip import ClientAddress, ForwardedHeader, TrustedProxies
from ._headers import PolicyField, check_policy_name, delay_seconds, ratelimit_item
from ._limiter import RateLimiter
from ._rate import Rate, parse_rate
from ._store import MemoryStore, RateLimitStore

__all__ = ("RateLimitGuard",)

UserFunction = Callable[[ASGIConnection[Any, Any, Any, Any]], "str | Awaitable[str | None] | None"]


class _RouteLimit:
    __slots__ = ("field", "limiter", "local", "name", "rate_text")

    def __init__(self, rate: Rate, name: str, store: RateLimitStore | None, clock: Any) -> None:
        self.limiter = (
            RateLimiter(rate, clock=clock)
            if store is None
            else RateLimiter(rate, store=store, clock=clock)
        )
        self.local = isinstance(self.limiter.store, MemoryStore)
        self.name = name
        self.rate_text = str(rate)
        self.field = PolicyField(name, rate.limit, rate.period)


class RateLimitGuard:
    """A Litestar guard applying the ``rate_limit`` of each route's ``opt``.

    ``user``: ``(connection) -> str | None`` (sync or async), the authenticated user;
    ``trusted_proxies`` / ``forwarded_header``: as for `brace.asgi.BraceMiddleware`;
    ``store``: where the per-key state lives (default: a memory store per route).
    """

    def __init__(
        self,
        *,
        user: UserFunction | None = None,
        store: RateLimitStore | None = None,
        trusted_proxies: Iterable[str] | TrustedProxies = (),
        forwarded_header: ForwardedHeader = "x-forwarded-for",
        clock: Callable[[], float] | None = None,
    ) -> None:
        if user is not None and not callable(user):
            raise TypeError(f"user must be a callable (connection) -> str | None, got {user!r}")
        self._user = user
        self._store = store
        self._clock = clock
        self._client = ClientAddress(trusted_proxies, header=forwarded_header)
        # by the handler's identity: Litestar hands guards a fresh copy of the handler
        self._routes: dict[object, tuple[tuple[_RouteLimit, ...], str, int]] = {}

    def _limits_for(self, handler: BaseRouteHandler) -> tuple[tuple[_RouteLimit, ...], str, int]:
        # (Litestar's handler_id is not it: it sums the ids of the copy's ownership layers)
        identity = (
            getattr(handler, "fn", None) or handler.handler_name,
            tuple(sorted(handler.paths)),
            tuple(sorted(getattr(handler, "http_methods", None) or ())),
        )
        found = self._routes.get(identity)
        if found is not None:
            return found
        opt = handler.opt or {}
        rates = opt.get("rate_limit")
        if rates is None:
            rates = ()
        elif isinstance(rates, (str, Rate)):
            rates = (rates,)
        per = opt.get("rate_limit_per", "client")
        if per not in ("client", "ip", "user"):
            raise ValueError(f"opt['rate_limit_per'] must be 'client', 'ip' or 'user', got {per!r}")
        cost = opt.get("rate_limit_cost", 1)
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ValueError(f"opt['rate_limit_cost'] must be an int >= 1, got {cost!r}")
        base = str(opt.get("rate_limit_name") or handler.handler_name)
        check_policy_name(base, "opt['rate_limit_name']")
        limits = []
        for index, rate in enumerate(rates):
            parsed = parse_rate(rate) if isinstance(rate, str) else rate
            if not isinstance(parsed, Rate):
                raise TypeError(f"opt['rate_limit'] must hold rate strings, got {rate!r}")
            if cost > parsed.limit:
                raise ValueError(
                    f"opt['rate_limit_cost'] must be <= every rate's limit, got {cost!r} "
                    f"for {rate!r}"
                )
            name = base if index == 0 else f"{base}-{index + 1}"
            limits.append(_RouteLimit(parsed, name, self._store, self._clock))
        found = (tuple(limits), per, cost)
        self._routes[identity] = found
        return found

    async def __call__(
        self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        limits, per, cost = self._limits_for(handler)
        if not limits:
            return
        key: str | None = None
        if per != "ip" and self._user is not None:
            try:
                user = self._user(connection)
                if inspect.isawaitable(user):
                    user = await user
            except Exception:
                user = None
            if user is not None:
                key = "u:" + str(user)
        if key is None:
            if per == "user":
                return
            key = "ip:" + self._client(connection.scope)
        for limit in limits:
            limiter = limit.limiter
            decision = limiter.try_hit(key, cost) if limit.local else await limiter.hit(key, cost)
            if decision.allowed:
                continue
            seconds = delay_seconds(decision.retry_after, minimum=1)
            raise TooManyRequestsException(
                detail=f"rate limit {limit.rate_text} exceeded ({limit.name})",
                headers={
                    "retry-after": str(seconds),
                    "ratelimit-policy": limit.field.member,
                    "ratelimit": ratelimit_item(limit.field, 0, decision.retry_after),
                },
                extra={"error": "rate_limited", "limit": limit.name, "retry_after": seconds},
            )
