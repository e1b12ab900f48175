"""brace for FastAPI routes: a rate-limit dependency and a concurrency dependency.

`BraceMiddleware` (``brace.asgi``) protects a whole app from a table of rules; these two
dependencies put the same protections on single routes, next to the code they protect::

    ai_limit = RateLimit("10/minute")
    ai_slot = Concurrency(executor, priority=Priority.MEDIUM)

    @app.post("/api/ai", dependencies=[Depends(ai_limit), Depends(ai_slot)])
    async def ai() -> dict[str, str]: ...

A refusal raises FastAPI's ``HTTPException``: 429 with ``Retry-After`` and the IETF
``RateLimit`` fields, or 503 with ``Retry-After`` when the executor refuses.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Literal

from ._extras import missing_extra

try:
    from fastapi import HTTPException, Request, Response
except ImportError as error:  # the extra is not installed
    raise missing_extra("fastapi", "fastapi", error) from error

from ._asgi_rules import Limit
from ._client_ip import ClientAddress, ForwardedHeader, TrustedProxies
from ._decision import Decision
from ._exceptions import Rejected
from ._executor import PriorityExecutor
from ._headers import PolicyField, check_policy_name, delay_seconds, ratelimit_item
from ._limiter import RateLimiter
from ._rate import Rate, parse_rate
from ._store import MemoryStore, RateLimitStore

__all__ = ("Concurrency", "RateLimit", "unavailable")

RequestKey = Callable[[Request], "str | Awaitable[str | None] | None"]

_ERRORS = {
    "QueueFull": "queue_full",
    "Dropped": "queue_full",
    "QueueTimeout": "queue_timeout",
    "ShuttingDown": "shutting_down",
    "MemoryPressure": "memory_pressure",
    "CircuitOpen": "circuit_open",
    "Overloaded": "overloaded",
}


class RateLimit:
    """A FastAPI dependency limiting a route: ``Depends(RateLimit("10/minute"))``.

    ``rate``: a rate string, `brace.Rate`, `brace.TokenBucket` or `brace.SlidingWindow`.
    ``per``: ``"client"`` (the ``user`` when it returns one, else the client address),
    ``"ip"``, ``"user"`` (anonymous requests pass), or a callable ``(request) -> key``.
    ``user``: ``(request) -> str | None`` (sync or async), the authenticated user.
    ``name``: the policy's name in the headers and the 429 body. ``cost``: charged per
    request. ``trusted_proxies`` / ``forwarded_header``: as for `BraceMiddleware`. The
    dependency's value is the `brace.Decision` (``None`` when skipped). The ``RateLimit``
    fields are added to successful responses too unless ``headers_on_success=False``.
    """

    def __init__(
        self,
        rate: Any,
        *,
        per: Literal["client", "ip", "user"] | RequestKey = "client",
        user: RequestKey | None = None,
        name: str = "default",
        cost: int = 1,
        store: RateLimitStore | None = None,
        trusted_proxies: Iterable[str] | TrustedProxies = (),
        forwarded_header: ForwardedHeader = "x-forwarded-for",
        headers_on_success: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(rate, Limit):
            raise TypeError("rate must be a rate (such as '10/minute'), not a brace.asgi.Limit")
        if not (callable(per) or per in ("client", "ip", "user")):
            raise ValueError(f"per must be 'client', 'ip', 'user' or a callable, got {per!r}")
        if user is not None and not callable(user):
            raise TypeError(f"user must be a callable (request) -> str | None, got {user!r}")
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ValueError(f"cost must be an int >= 1, got {cost!r}")
        check_policy_name(name, "name")
        rate = parse_rate(rate) if isinstance(rate, str) else rate
        self.limiter = (
            RateLimiter(rate, clock=clock)
            if store is None
            else RateLimiter(rate, store=store, clock=clock)
        )
        self._local = isinstance(self.limiter.store, MemoryStore)
        self._per = per
        self._user = user
        self._cost = cost
        self._client = ClientAddress(trusted_proxies, header=forwarded_header)
        self._headers_on_success = bool(headers_on_success)
        policy: Any = self.limiter.policy
        if hasattr(policy, "window"):
            quota, window = int(policy.limit), float(policy.window)
        else:
            quota, window = int(policy.burst), policy.burst * float(policy.interval)
        if cost > quota:
            raise ValueError(
                f"cost must be <= the quota {quota} of {rate!r} (a larger cost could never be "
                f"admitted), got {cost!r}"
            )
        self._field = PolicyField(name, quota, window)
        self.name = name
        self.rate_text = str(rate) if isinstance(rate, Rate) else f"{quota}/{window:g} seconds"

    async def key(self, request: Request) -> str | None:
        """The key this request is counted under (``None``: not counted)."""
        per = self._per
        if callable(per):
            key = await _maybe_await(per(request))
            return None if key is None else "k:" + key
        if per != "ip" and self._user is not None:
            try:
                user = await _maybe_await(self._user(request))
            except Exception:
                user = None
            if user is not None:
                return "u:" + str(user)
        if per == "user":
            return None
        return "ip:" + self._client(request.scope)

    async def __call__(self, request: Request, response: Response) -> Decision | None:
        key = await self.key(request)
        if key is None:
            return None
        if self._local:
            decision = self.limiter.try_hit(key, self._cost)
        else:
            decision = await self.limiter.hit(key, self._cost)
        if decision.allowed:
            if self._headers_on_success:
                response.headers["ratelimit-policy"] = self._field.member
                response.headers["ratelimit"] = ratelimit_item(
                    self._field, decision.remaining, decision.reset_after
                )
            return decision
        seconds = delay_seconds(decision.retry_after, minimum=1)
        raise HTTPException(
            status_code=429,
            detail={
                "error": "rate_limited",
                "detail": f"rate limit {self.rate_text} exceeded ({self.name})",
                "limit": self.name,
                "policy": self.rate_text,
                "retry_after": seconds,
            },
            headers={
                "retry-after": str(seconds),
                "ratelimit-policy": self._field.member,
                "ratelimit": ratelimit_item(self._field, 0, decision.retry_after),
            },
        )


class Concurrency:
    """A FastAPI dependency running the route in a slot of ``executor`` at ``priority``:
    ``Depends(Concurrency(executor, priority=Priority.LOW))``. A refusal (queue full,
    draining) is a 503 with ``Retry-After`` (``default_retry_after`` when it has none)."""

    def __init__(
        self,
        executor: PriorityExecutor,
        *,
        priority: int | None = None,
        default_retry_after: float = 5.0,
    ) -> None:
        if not isinstance(executor, PriorityExecutor):
            raise TypeError(f"executor must be a brace.PriorityExecutor, got {executor!r}")
        self.executor = executor
        self.priority = priority
        self.default_retry_after = default_retry_after

    async def __call__(self) -> AsyncIterator[None]:
        slot = self.executor.slot(self.priority)
        try:
            await slot.__aenter__()
        except Rejected as refusal:
            raise unavailable(refusal, self.default_retry_after) from None
        try:
            yield
        except BaseException as error:
            await slot.__aexit__(type(error), error, error.__traceback__)
            raise
        await slot.__aexit__(None, None, None)


def unavailable(refusal: Rejected, default_retry_after: float = 5.0) -> HTTPException:
    """The 503 ``HTTPException`` for a brace refusal (``Retry-After`` from its estimate)."""
    retry = refusal.retry_after if refusal.retry_after is not None else default_retry_after
    seconds = delay_seconds(retry, minimum=1)
    error = _ERRORS.get(type(refusal).__name__, "unavailable")
    return HTTPException(
        status_code=503,
        detail={"error": error, "detail": str(refusal), "retry_after": seconds},
        headers={"retry-after": str(seconds)},
    )


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
