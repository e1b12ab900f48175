"""BlockCache: a key the store refused is refused here, locally, until its retry_after.

Theory of operation
-------------------
When a shared store (a `RedisStore`) refuses ``cost`` for a key with ``retry_after =
r``, no request of that cost or more can be admitted for that key before ``now + r``:
time only brings the key closer to admission, and other processes' hits only push it
further away. So a cache that remembers ``(policy, key) -> (until, cost)`` can refuse
those requests itself, without a round trip, and never refuses one the store would
have admitted (the local clock measures the wait, so hosts' clocks need not agree). A
request of smaller cost, or one after ``until``, goes to the store as before; an
admission clears the entry.

This is rate-limiter-flexible's ``inMemoryBlockOnConsumed``: a key hammered far over its
limit (a scraper, a retry storm) costs Redis one call per ``retry_after`` per process
instead of one per request. The cache holds at most ``max_keys`` entries (the oldest
blocked first out); an entry ends at its ``until``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from typing_extensions import Self

from .._core._validate import check_int
from .._core.decision import Decision
from .._store import Policy, RateLimitStore

__all__ = ("BlockCache", "BlockCacheStatistics")


@dataclass(frozen=True, slots=True)
class BlockCacheStatistics:
    """A snapshot of a `BlockCache`.

    ``blocked``: keys refused locally now (expired entries included until next looked
    at); ``max_keys``: the bound; ``local_refusals``: requests refused without asking the
    store; ``forwarded``: requests passed to the store; ``evictions``: entries dropped to
    make room before their time.
    """

    blocked: int
    max_keys: int
    local_refusals: int
    forwarded: int
    evictions: int


class BlockCache:
    """A `brace.RateLimitStore` in front of another: refusals are remembered locally.

    Args:
        store: the store deciding (a `RedisStore`, or any `brace.RateLimitStore`).
        max_keys: the most keys remembered at once (an int >= 1).
        clock: zero-argument callable returning monotonic seconds; default
            `time.monotonic`.
    """

    __slots__ = ("_blocked", "_clock", "_evictions", "_forwarded", "_local", "max_keys", "store")

    def __init__(
        self,
        store: RateLimitStore,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(store, RateLimitStore):
            raise TypeError(f"store must be a brace.RateLimitStore, got {type(store).__name__}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        self.store = store
        self.max_keys = check_int(max_keys, "max_keys", minimum=1)
        self._clock: Callable[[], float] = time.monotonic if clock is None else clock
        # (policy, key) -> (until, smallest refused cost, limit, reset at)
        self._blocked: OrderedDict[tuple[Policy, str], tuple[float, int, int, float]] = (
            OrderedDict()
        )
        self._local = self._forwarded = self._evictions = 0

    def _refusal(self, policy: Policy, key: str, cost: int) -> Decision | None:
        blocked = self._blocked
        if not blocked:
            return None
        entry = blocked.get((policy, key))
        if entry is None:
            return None
        until, refused_cost, limit, reset_at = entry
        now = self._clock()
        if now >= until:
            del blocked[policy, key]
            return None
        if cost < refused_cost:
            return None
        self._local += 1
        return Decision(False, limit, 0, until - now, max(reset_at, until) - now)

    def _learn(self, policy: Policy, key: str, cost: int, decision: Decision) -> None:
        blocked = self._blocked
        if decision.allowed:
            if blocked:
                blocked.pop((policy, key), None)
            return
        if decision.retry_after <= 0.0:
            return
        now = self._clock()
        slot = (policy, key)
        old = blocked.pop(slot, None)
        if old is not None and old[0] > now:
            cost = min(cost, old[1])
        elif len(blocked) >= self.max_keys:
            # the oldest entry makes room (an eviction only if its time was not up)
            _, (until, *_) = blocked.popitem(last=False)
            if until > now:
                self._evictions += 1
        blocked[slot] = (
            now + decision.retry_after,
            cost,
            decision.limit,
            now + decision.reset_after,
        )

    async def hit(self, policy: Policy, key: str, cost: int = 1) -> Decision:
        """The store's `hit`, unless ``key`` is known refused for ``cost`` right now."""
        refusal = self._refusal(policy, key, cost)
        if refusal is not None:
            return refusal
        self._forwarded += 1
        decision = await self.store.hit(policy, key, cost)
        self._learn(policy, key, cost, decision)
        return decision

    async def peek(self, policy: Policy, key: str, cost: int = 1) -> Decision:
        """The store's `peek`, unless ``key`` is known refused for ``cost`` right now."""
        refusal = self._refusal(policy, key, cost)
        if refusal is not None:
            return refusal
        self._forwarded += 1
        decision = await self.store.peek(policy, key, cost)
        self._learn(policy, key, cost, decision)
        return decision

    async def reset(self, policy: Policy, key: str) -> None:
        """Forget ``key`` here and in the store."""
        self._blocked.pop((policy, key), None)
        await self.store.reset(policy, key)

    async def aclose(self) -> None:
        """Close the store."""
        self._blocked.clear()
        await self.store.aclose()

    async def __aenter__(self) -> Self:
        opener = getattr(self.store, "open", None)
        if opener is not None:
            await opener()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def statistics(self) -> BlockCacheStatistics:
        """A snapshot of the cache's counters."""
        return BlockCacheStatistics(
            blocked=len(self._blocked),
            max_keys=self.max_keys,
            local_refusals=self._local,
            forwarded=self._forwarded,
            evictions=self._evictions,
        )

    def __repr__(self) -> str:
        return f"BlockCache({self.store!r}, max_keys={self.max_keys})"
