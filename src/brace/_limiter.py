"""RateLimiter: one policy applied per key (user, client IP, API token) over a store."""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
from typing_extensions import ParamSpec

from ._clock import check_clock
from ._core._validate import shown
from ._core.decision import Decision
from ._core.gcra import GCRA
from ._core.window import SlidingLog, SlidingWindowCounter
from ._events import EventHook, Refused, event_hook, refusals
from ._exceptions import RateLimited
from ._rate import Rate, parse_rate
from ._store import (
    FieldsHit,
    HitFields,
    MemoryStore,
    Policy,
    RateLimitStore,
    _AnyTable,
    check_key,
)

__all__ = ("RateLimiter", "RateLimiterStatistics")

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("brace.limiter")

_DEFAULT_MAX_KEYS = 100_000
# Sleep at least this long before asking again, should rounding make a refusal say "0 s".
_MIN_WAIT = 1e-3


class _HasPolicy(Protocol):
    """A single-bucket shell (``TokenBucket``, ``SlidingWindow``): its ``policy`` is used."""

    @property
    def policy(self) -> Policy: ...


PolicyLike = Policy | Rate | str | _HasPolicy


def _as_policy(policy: object) -> Policy:
    if isinstance(policy, (GCRA, SlidingWindowCounter, SlidingLog)):
        return policy
    if isinstance(policy, str):
        policy = parse_rate(policy)
    if isinstance(policy, Rate):
        return SlidingWindowCounter(policy.limit, policy.period)
    inner = getattr(policy, "policy", None)
    if isinstance(inner, (GCRA, SlidingWindowCounter, SlidingLog)):
        return inner
    raise TypeError(
        "policy must be a brace.TokenBucket, brace.SlidingWindow, brace.Rate, a rate string "
        f"such as '10/minute', or a core policy, got {type(policy).__name__}"
    )


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    """A snapshot of a `RateLimiter`.

    ``keys``: keys held by the store for this policy (``None`` for a remote store);
    ``hits`` = ``allowed`` + ``rejected``: decisions made by ``hit`` / ``try_hit`` /
    ``limit`` / ``acquire``; ``evictions``: live keys spilled to the memory store's
    sketch; ``drops``: at-rest keys forgotten without loss; ``waiters``: tasks waiting in
    `RateLimiter.acquire`; ``waiting_keys``: keys those tasks wait on; ``refusals``:
    refusals by reason, ``{"rate_limited": rejected}``.
    """

    keys: int | None
    hits: int
    allowed: int
    rejected: int
    evictions: int
    drops: int
    waiters: int
    waiting_keys: int
    refusals: Mapping[str, int]


class _Waiter:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = anyio.Event()


class RateLimiter:
    """One rate-limit policy applied separately to every key, over a store.

    ``policy`` is a `brace.TokenBucket` or `brace.SlidingWindow` (its
    parameters are used, each key gets its own state), a `brace.Rate` or a rate
    string such as ``"10/minute"`` (a sliding-window counter of that limit and period),
    or a core policy (``brace._core`` ``GCRA``, ``SlidingWindowCounter``, ``SlidingLog``).

    ``store`` defaults to a fresh `brace.MemoryStore` of ``max_keys`` keys (so
    ``max_keys`` may only be given without ``store``). With a memory store every
    decision is synchronous: ``await limiter.hit(key)`` never yields to the event loop
    and `try_hit` is available. A remote store (Redis) reads its own clock.

    - ``await hit(key, cost=1)``: the `brace.Decision`; consumes if allowed.
    - ``try_hit(key, cost=1)``: the same, synchronously (memory store only).
    - ``async with limit(key): ...`` / ``await limit(key).call(fn, ...)``: raises
      `brace.RateLimited` when refused.
    - ``await acquire(key, cost=1)``: waits until admitted, first come first served per
      key; a cancelled waiter consumes nothing.
    - ``@limited(key=lambda request: request.user)``: a decorator over ``limit``.

    Args:
        policy: what each key is limited to (see above).
        store: where the per-key state lives; default: a new `brace.MemoryStore`.
        max_keys: the bound of the default memory store (an int from 1 to 10**8).
        clock: zero-argument callable returning monotonic seconds; default
            `time.monotonic` (pass `anyio.current_time` under a virtual-time loop).
        name: a name for events and log records.
        on_event: a hook, or hooks, called with a `brace.events.Refused` (reason
            ``"rate_limited"``, ``key``) for each refused decision of ``hit``,
            ``try_hit``, ``limit`` and ``acquire``'s first try; see ``docs/events.md``.
            Refusals are logged at DEBUG on ``brace.limiter`` by a limiter built with a
            hook, or while that logger was enabled for DEBUG when it was built (a limiter
            without either pays nothing on its hot path), and always with a remote store.
    """

    __slots__ = (
        "__dict__",  # only ``hit``, for a memory store: see __init__
        "__weakref__",
        "_allowed",
        "_clock",
        "_hit_fields",
        "_hit_now",
        "_name",
        "_on_event",
        "_policy",
        "_rejected",
        "_store",
        "_table",
        "_waiters",
    )

    def __init__(
        self,
        policy: PolicyLike,
        *,
        store: RateLimitStore | None = None,
        max_keys: int = 100_000,  # keep equal to _DEFAULT_MAX_KEYS
        clock: Callable[[], float] | None = None,
        name: str | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
    ) -> None:
        self._policy: Policy = _as_policy(policy)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        self._name = name
        self._on_event = event_hook(on_event)
        if clock is not None:
            clock = check_clock(clock)
        self._clock: Callable[[], float] = time.monotonic if clock is None else clock
        if store is None:
            store = MemoryStore(max_keys, clock=self._clock)
        elif max_keys != _DEFAULT_MAX_KEYS:
            raise ValueError(
                "max_keys configures the default MemoryStore only; with store=, set the "
                "bound on the store (MemoryStore(max_keys=...))"
            )
        elif not isinstance(store, RateLimitStore):
            raise TypeError(
                "store must implement brace.RateLimitStore (hit, peek, reset, aclose), "
                f"got {type(store).__name__}"
            )
        self._store = store
        self._table: _AnyTable | None
        if isinstance(store, MemoryStore):
            table = store.table_for(self._policy)
            self._table = table
            self._hit_now: Callable[[str, int, float], Decision] | None = table.hit_now
            self._hit_fields: FieldsHit | None = table.hit_fields
            if self._on_event is not None or logger.isEnabledFor(logging.DEBUG):
                self._hit_now = self._observed_hit
                self._hit_fields = self._observed_fields
            elif type(self).hit is RateLimiter.hit:
                # ``hit`` is then the table's coroutine twin of ``hit_now`` (reading this
                # limiter's clock): what the method does, in one frame instead of two
                twin = table.hit_coroutine(self._clock)
                if twin is not None:
                    self.__dict__["hit"] = twin
        else:
            self._table = None
            self._hit_now = None
            self._hit_fields = None
        self._allowed = 0  # counted here for remote stores only; the table counts its own
        self._rejected = 0
        self._waiters: dict[str, deque[_Waiter]] = {}

    @property
    def policy(self) -> Policy:
        """The core policy applied to every key."""
        return self._policy

    @property
    def store(self) -> RateLimitStore:
        """Where the per-key state lives."""
        return self._store

    async def hit(self, key: str, cost: int = 1) -> Decision:
        """Admit ``cost`` for ``key`` if the policy allows, consuming it; never raises."""
        hit_now = self._hit_now
        if hit_now is not None:
            return hit_now(key, cost, self._clock())
        return await self._remote_hit(key, cost)

    async def _remote_hit(self, key: str, cost: int) -> Decision:
        check_key(key)
        self._policy.check_cost(cost)
        decision = await self._store.hit(self._policy, key, cost)
        if decision.allowed:
            self._allowed += 1
        else:
            self._rejected += 1
            self._refused(key, decision, self._clock())
        return decision

    def _observed_hit(self, key: str, cost: int, now: float) -> Decision:
        """The memory table's ``hit_now``, reporting refusals (used only with a hook)."""
        assert self._table is not None
        decision = self._table.hit_now(key, cost, now)
        if not decision.allowed:
            self._refused(key, decision, now)
        return decision

    def _observed_fields(self, key: str, cost: int, now: float) -> HitFields | Decision:
        """`_observed_hit`, answering an admission with its fields (see `local_hit`)."""
        decision = self._observed_hit(key, cost, now)
        return (decision.remaining, decision.reset_after) if decision.allowed else decision

    def _refused(self, key: str, decision: Decision, now: float) -> None:
        logger.debug(
            "rate limiter %r refused key %s: retry after %.3f s",
            self._name,
            shown(key),
            decision.retry_after,
        )
        if self._on_event is not None:
            self._on_event(
                Refused(
                    self._name,
                    now,
                    "rate_limited",
                    "rate_limiter",
                    retry_after=decision.retry_after,
                    key=key,
                )
            )

    @property
    def name(self) -> str | None:
        """The name given at construction (carried by events and log records)."""
        return self._name

    def try_hit(self, key: str, cost: int = 1) -> Decision:
        """`hit`, synchronously; a ``TypeError`` with a remote store (``await hit`` it)."""
        hit_now = self._hit_now
        if hit_now is None:
            raise TypeError(
                f"try_hit needs a local store (MemoryStore), not {type(self._store).__name__}; "
                "use await limiter.hit(key)"
            )
        return hit_now(key, cost, self._clock())

    async def peek(self, key: str, cost: int = 1) -> Decision:
        """The decision `hit` would return now, consuming nothing."""
        if self._table is not None:
            return self._table.peek_now(key, cost, self._clock())
        check_key(key)
        self._policy.check_cost(cost)
        return await self._store.peek(self._policy, key, cost)

    async def reset(self, key: str) -> None:
        """Forget ``key``: its next request is decided as a fresh key's."""
        check_key(key)
        if self._table is not None:
            self._table.reset_now(key, self._clock())
        else:
            await self._store.reset(self._policy, key)

    def limit(self, key: str, cost: int = 1) -> RateLimit:
        """An async context manager (reusable) admitting ``cost`` for ``key`` on each entry.

        Entering raises `brace.RateLimited` (with ``retry_after``, ``decision``
        and ``key``) when refused; ``await limiter.limit(key).call(fn, *args)`` runs ``fn``
        after admission.
        """
        check_key(key)
        self._policy.check_cost(cost)
        return RateLimit(self, key, cost)

    async def acquire(self, key: str, cost: int = 1) -> Decision:
        """Wait until ``cost`` is admitted for ``key``; the admitting decision.

        Waiters on one key are served in arrival order (a queue per key that exists only
        while someone waits). A waiter cancelled at any point consumes nothing.
        Direct `hit` calls are not queued and may take capacity first.
        """
        check_key(key)
        self._policy.check_cost(cost)
        waiters = self._waiters
        queue = waiters.get(key)
        decision: Decision | None
        if queue is None:
            decision = await self._hit_shielded(key, cost)
            if decision.allowed:
                return decision
            queue = waiters.get(key)  # a remote hit awaited: someone may have queued
            if queue is None:
                queue = waiters[key] = deque()
            else:
                decision = None  # stale by the time this waiter reaches the head
        else:
            decision = None
        me = _Waiter()
        queue.append(me)
        try:
            while True:
                if queue[0] is not me:
                    await me.event.wait()
                    continue
                if decision is None:
                    decision = await self._hit_shielded(key, cost)
                    if decision.allowed:
                        return decision
                wait = decision.retry_after
                decision = None
                await anyio.sleep(wait if wait > 0 else _MIN_WAIT)
        finally:
            if queue[0] is me:
                queue.popleft()
                if queue:
                    queue[0].event.set()
            else:
                queue.remove(me)
            if not queue and waiters.get(key) is queue:
                del waiters[key]

    async def _hit_shielded(self, key: str, cost: int) -> Decision:
        hit_now = self._hit_now
        if hit_now is not None:
            return hit_now(key, cost, self._clock())
        # A remote hit may consume on the server even if we are cancelled on the way
        # back: let it finish so that the caller gets what was consumed.
        with anyio.CancelScope(shield=True):
            decision = await self._remote_hit(key, cost)
        return decision  # pyright: ignore[reportPossiblyUnboundVariable]

    def limited(self, *, key: Callable[..., str], cost: int = 1, wait: bool = False) -> _Limited:
        """Decorate an async function: each call is admitted for ``key(*args, **kwargs)``.

        Refused calls raise `brace.RateLimited`, or with ``wait=True`` wait their
        turn (`acquire`). The wrapped function keeps its signature.
        """
        if not callable(key):
            raise TypeError(f"key must be a callable returning the key, got {key!r}")
        self._policy.check_cost(cost)
        if not isinstance(wait, bool):
            raise TypeError(f"wait must be a bool, got {type(wait).__name__}")
        return _Limited(self, key, cost, wait)

    def statistics(self) -> RateLimiterStatistics:
        """A snapshot of this limiter's counters (O(1) with a memory store)."""
        table = self._table
        waiters = sum(len(queue) for queue in self._waiters.values())
        if table is not None:
            allowed, rejected = table.counts()
            return RateLimiterStatistics(
                keys=len(table),
                hits=allowed + rejected,
                allowed=allowed,
                rejected=rejected,
                evictions=table.evictions,
                drops=table.drops,
                waiters=waiters,
                waiting_keys=len(self._waiters),
                refusals=refusals(rate_limited=rejected),
            )
        return RateLimiterStatistics(
            keys=None,
            hits=self._allowed + self._rejected,
            allowed=self._allowed,
            rejected=self._rejected,
            evictions=0,
            drops=0,
            waiters=waiters,
            waiting_keys=len(self._waiters),
            refusals=refusals(rate_limited=self._rejected),
        )

    def __repr__(self) -> str:
        return f"RateLimiter({self._policy!r}, store={self._store!r})"


class RateLimit:
    """``limiter.limit(key, cost)``: admits ``cost`` for ``key`` each time it is entered."""

    __slots__ = ("_cost", "_key", "_limiter")

    def __init__(self, limiter: RateLimiter, key: str, cost: int) -> None:
        self._limiter = limiter
        self._key = key
        self._cost = cost

    async def __aenter__(self) -> Decision:
        decision = await self._limiter.hit(self._key, self._cost)
        if not decision.allowed:
            raise _refusal(self._key, decision)
        return decision

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Admit, then ``await fn(*args, **kwargs)``; raises RateLimited when refused."""
        decision = await self._limiter.hit(self._key, self._cost)
        if not decision.allowed:
            raise _refusal(self._key, decision)
        return await fn(*args, **kwargs)


def local_hit(limiter: RateLimiter) -> tuple[FieldsHit, Callable[[], float]] | None:
    """What an HTTP middleware asks a limiter with a memory store instead of ``try_hit``:
    the same hit (counted and reported alike) answering an admission with
    ``(remaining, reset_after)`` rather than a `Decision`, with the limiter's clock for
    its ``now``; ``None`` with a remote store."""
    hit = limiter._hit_fields
    return None if hit is None else (hit, limiter._clock)


def _refusal(key: str, decision: Decision) -> RateLimited:
    # shown(): a key is attacker-chosen text of any length; the message quotes its start.
    return RateLimited(
        f"rate limit exceeded for key {shown(key)}; retry after {decision.retry_after:.3f} s",
        retry_after=decision.retry_after,
        decision=decision,
        key=key,
    )


class _Limited:
    __slots__ = ("_cost", "_key", "_limiter", "_wait")

    def __init__(
        self, limiter: RateLimiter, key: Callable[..., str], cost: int, wait: bool
    ) -> None:
        self._limiter = limiter
        self._key = key
        self._cost = cost
        self._wait = wait

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        limiter = self._limiter
        key_of = self._key
        cost = self._cost
        wait = self._wait

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            key = key_of(*args, **kwargs)
            if wait:
                await limiter.acquire(key, cost)
            else:
                decision = await limiter.hit(key, cost)
                if not decision.allowed:
                    raise _refusal(key, decision)
            return await fn(*args, **kwargs)

        return wrapper
