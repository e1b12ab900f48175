"""brace for FastAPI routes: a rate-limit dependency and a concurrency dependency.

`BraceMiddleware` (``brace.asgi``) protects a whole app from a table of rules; these two
dependencies put the same protections on single routes, next to the code they protect::

    ai_limit = RateLimit("10/minute")
    ai_slot = Concurrency(executor, priority=Priority.MEDIUM)

    @app.post("/api/ai", dependencies=[Depends(ai_limit), Depends(ai_slot)])
    async def ai() -> dict[str, str]: ...

A refusal raises FastAPI's ``HTTPException``: 429 with ``Retry-After`` and the IETF
``RateLimit`` fields, or 503 with ``Retry-After`` when the executor refuses. The fields of
every ``RateLimit`` of a route are merged (a 429 carries those of the limits checked
before the one refusing); add `RateLimitHeaders` to the app to put them on
every response, including the ``JSONResponse`` or ``StreamingResponse`` a route returns
itself (FastAPI drops a dependency's headers from those).

A request holding a ``Concurrency`` slot is under the executor's drain, as under
`BraceMiddleware`: when a drain's timeout passes, a request still waiting or running is
cancelled and answered 503 ``shutting_down``. A response already started (a stream) is
cut short; a dependency cannot end it quietly, so the request ends with
`brace.ShuttingDown` (the server logs it and closes the connection).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from contextlib import AsyncExitStack
from typing import Any, Literal

import anyio

from ._extras import missing_extra

try:
    from fastapi import HTTPException, Request, Response
    from starlette.datastructures import MutableHeaders
except ImportError as error:  # the extra is not installed
    raise missing_extra("fastapi", "fastapi", error) from error

from ._asgi_rules import CompiledRule, Limit, Rule
from ._client_ip import ClientAddress, ForwardedHeader, TrustedProxies
from ._core.decision import Decision
from ._exceptions import Rejected, ShuttingDown
from ._executor import PriorityExecutor
from ._pipeline import Answer, Exchange, Pipeline
from ._pipeline import unavailable as _unavailable
from ._store import RateLimitStore

__all__ = ("Concurrency", "RateLimit", "RateLimitHeaders", "unavailable")

RequestKey = Callable[[Request], "str | Awaitable[str | None] | None"]
ASGIApp = Callable[..., Awaitable[None]]

# the scope key where RateLimitHeaders collects the fields of a request's limits
_FIELDS = "brace.ratelimit"
_FIELD_NAMES = ("ratelimit-policy", "ratelimit")


class RateLimit:
    """A FastAPI dependency limiting a route: ``Depends(RateLimit("10/minute"))``.

    ``rate``: a rate string, `brace.Rate`, `brace.TokenBucket` or `brace.SlidingWindow`.
    ``per``: ``"client"`` (the ``user`` when it returns one, else the client address),
    ``"ip"``, ``"user"`` (anonymous requests pass), or a callable ``(request) -> key``
    (`brace.asgi.by_api_key` and its siblings work here too). ``user``: ``(request) ->
    str | None`` (sync or async), the authenticated user. ``name``: the policy's name in
    the headers and the 429 body. ``cost``: charged per request. ``trusted_proxies`` /
    ``forwarded_header``: as for `BraceMiddleware`. The dependency's value is the
    `brace.Decision` (``None`` when skipped). The ``RateLimit`` fields are added to
    successful responses too unless ``headers_on_success=False``.
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
        rule = Rule(limits=[Limit(rate, per=per, name=name)], cost=cost, name=name)
        self._pipeline = Pipeline(user=user, headers_on_success=bool(headers_on_success))
        self._rule = CompiledRule(rule, store, 100_000, clock)
        (limit,) = self._rule.limits
        self.limiter = limit.limiter
        self.name = name
        self.rate_text = limit.rate_text
        self._client = ClientAddress(trusted_proxies, header=forwarded_header)

    async def __call__(self, request: Request, response: Response) -> Decision | None:
        exchange = Exchange(self._rule)
        pipeline = self._pipeline
        answer = await pipeline.check_limits(exchange, request, self._client, request.scope)
        if answer is not None:
            raise _exception(answer, _earlier(request, response))
        if not exchange.fields:
            return None  # skipped: no key
        if pipeline.headers_on_success:
            fields = pipeline.success_headers(exchange)
            collected = request.scope.get(_FIELDS)
            if isinstance(collected, list):
                collected.append(fields)  # RateLimitHeaders sends them on every response
            else:
                _merge(response.headers, fields)
        # the admission, as a Decision (the pipeline keeps only what the fields need)
        limit, remaining, reset = exchange.fields[-1]
        return Decision(True, limit.field.quota, remaining, 0.0, reset)


def _merge(
    headers: MutableMapping[str, str] | MutableHeaders, fields: list[tuple[str, str]]
) -> None:
    # a second RateLimit of the route adds its member to the fields of the first
    for name, value in fields:
        present = headers.get(name)
        headers[name] = value if not present else f"{present}, {value}"


def _earlier(request: Request, response: Response) -> list[tuple[str, str]]:
    # the fields of the route's earlier RateLimits, for a refusal to carry them too
    merged: dict[str, str] = {}
    collected = request.scope.get(_FIELDS)
    if isinstance(collected, list):
        for fields in collected:
            _merge(merged, fields)
        collected.clear()  # the refusal sends them: RateLimitHeaders must not add them again
    else:
        _merge(
            merged,
            [(name, response.headers[name]) for name in _FIELD_NAMES if name in response.headers],
        )
    return list(merged.items())


class RateLimitHeaders:
    """ASGI middleware sending the ``RateLimit`` fields of a request's `RateLimit`
    dependencies (merged) on every response, whatever the route returns:
    ``app.add_middleware(RateLimitHeaders)``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        collected: list[list[tuple[str, str]]] = []
        scope[_FIELDS] = collected

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and collected:
                merged: dict[str, str] = {}
                for fields in collected:
                    _merge(merged, fields)
                message = dict(message)
                message["headers"] = [
                    *message.get("headers", ()),
                    *((name.encode(), value.encode()) for name, value in merged.items()),
                ]
            await send(message)

        await self.app(scope, receive, send_wrapper)


class Concurrency:
    """A FastAPI dependency running the route in a slot of ``executor`` at ``priority``:
    ``Depends(Concurrency(executor, priority=Priority.LOW))``. A refusal (queue full,
    draining) is a 503 with ``Retry-After`` (``default_retry_after`` when it has none).

    The request runs in one cancel scope under the executor's drain, from the moment it
    asks for a slot to the end of its response: at the drain's timeout it is cancelled
    and answered 503 ``shutting_down``, or, when its response had started, it ends with
    `brace.ShuttingDown` (the response is cut short).
    """

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

    async def __call__(self, request: Request) -> AsyncIterator[None]:
        executor = self.executor
        scope = anyio.CancelScope()
        executor.track(scope)
        started = _endpoint_returned(request)
        try:
            with scope:
                slot = executor.slot(self.priority)
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
        finally:
            executor.untrack(scope)
        if scope.cancelled_caught:  # only the drain cancels it
            if started():
                raise ShuttingDown(
                    "cancelled: the server drained and its timeout passed; the response, "
                    "already started, is cut short"
                )
            raise unavailable(
                ShuttingDown("cancelled: the server drained and its timeout passed"),
                self.default_retry_after,
            )


def _endpoint_returned(request: Request) -> Callable[[], bool]:
    """Whether the route's function has returned (its response is then being sent): FastAPI
    closes the stack of its ``scope="function"`` dependencies right after the function,
    before the response. Always False where that stack is not found."""
    returned = False

    def exit_function(exc_type: object, exc: object, traceback: object) -> None:
        nonlocal returned
        returned = exc_type is None

    stack = request.scope.get("fastapi_function_astack")
    if isinstance(stack, AsyncExitStack):
        stack.push(exit_function)
    return lambda: returned


def unavailable(refusal: Rejected, default_retry_after: float = 5.0) -> HTTPException:
    """The 503 ``HTTPException`` for a brace refusal (``Retry-After`` from its estimate)."""
    return _exception(_unavailable(refusal, default_retry_after))


def _exception(answer: Answer, earlier: Iterable[tuple[str, str]] = ()) -> HTTPException:
    headers: dict[str, str] = {}
    _merge(headers, [*earlier, *answer.headers])  # earlier limits' members first
    return HTTPException(status_code=answer.status, detail=answer.body, headers=headers)
