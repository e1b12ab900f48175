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
every response, and for queueing, wrap the app in `brace.asgi.BraceMiddleware`. The guard
takes no executor slot: an executor's drain does not bound the requests it admits, while
the middleware (given ``executor=`` and ``shutdown=``) puts every request under it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ._extras import missing_extra

try:
    from litestar.connection import ASGIConnection
    from litestar.exceptions import TooManyRequestsException
    from litestar.handlers.base import BaseRouteHandler
except ImportError as error:  # the extra is not installed
    raise missing_extra("litestar", "litestar", error) from error

from ._asgi_rules import CompiledRule, Limit, Rule
from ._client_ip import ClientAddress, ForwardedHeader, TrustedProxies
from ._headers import check_policy_name
from ._pipeline import Exchange, Pipeline
from ._rate import Rate
from ._store import RateLimitStore

__all__ = ("RateLimitGuard",)

UserFunction = Callable[[ASGIConnection[Any, Any, Any, Any]], "str | Awaitable[str | None] | None"]


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
        self._pipeline = Pipeline(user=user)
        self._store = store
        self._clock = clock
        self._client = ClientAddress(trusted_proxies, header=forwarded_header)
        # by the handler's identity: Litestar hands guards a fresh copy of the handler
        self._routes: dict[object, CompiledRule | None] = {}

    def _rule_for(self, handler: BaseRouteHandler) -> CompiledRule | None:
        # (Litestar's handler_id is not it: it sums the ids of the copy's ownership layers)
        identity = (
            getattr(handler, "fn", None) or handler.handler_name,
            tuple(sorted(handler.paths)),
            tuple(sorted(getattr(handler, "http_methods", None) or ())),
        )
        if identity in self._routes:
            return self._routes[identity]
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
            if not isinstance(rate, (str, Rate)):
                raise TypeError(f"opt['rate_limit'] must hold rate strings, got {rate!r}")
            name = base if index == 0 else f"{base}-{index + 1}"
            limits.append(Limit(rate, per=per, name=name))
        try:
            rule = Rule(limits=limits, cost=cost, name=base)
        except ValueError as error:
            raise ValueError(f"opt of handler {handler.handler_name!r}: {error}") from None
        compiled = CompiledRule(rule, self._store, 100_000, self._clock) if limits else None
        self._routes[identity] = compiled
        return compiled

    async def __call__(
        self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        rule = self._rule_for(handler)
        if rule is None:
            return
        exchange = Exchange(rule)
        answer = await self._pipeline.check_limits(
            exchange, connection, self._client, connection.scope
        )
        if answer is None:
            return
        body = answer.body
        raise TooManyRequestsException(
            detail=body["detail"],
            headers=dict(answer.headers),
            extra={key: body[key] for key in ("error", "limit", "retry_after")},
        )
