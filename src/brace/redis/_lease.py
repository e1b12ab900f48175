"""LeasedStore: a shared limit spent locally, from leases of tokens taken from the store.

Theory of operation
-------------------
Each decision of a `RedisStore` is a round trip. A ``LeasedStore`` in front of it takes,
for a key, a *lease*: one decision of cost ``n`` (``n`` tokens consumed in Redis at
once), then admits that key's requests from the ``n`` tokens locally, with no round
trip, until they run out; then it takes the next lease. The lease size follows the
key's recent rate (`brace._core.quota.next_lease_size`: doubled when a lease is spent
within half of ``lease_time``, halved when one lapses half unspent), from 1 up to
``max_lease`` (and never above the policy's limit).

Bounds. Tokens are consumed in Redis when leased, so the shared limit holds for the
tokens granted; a process holds at most one lease per key (concurrent tasks wait for
the one lease being taken) of at most ``max_lease`` tokens. Over any interval, the
requests admitted for a key by ``P`` processes are at most what the exact store would
admit over that interval plus ``P * max_lease``. With ``max_lease=1`` every request is
its own decision of the store: the decisions are the store's, exactly.

Unspent tokens. A lease lapses ``lease_time`` seconds after it was taken: its tokens are
no longer spent, and are given back to Redis (GCRA policies, `brace.TokenBucket`: the
bucket's arrival time moves back, `brace._core.quota.give_back`) on the process's next
round trip or at `aclose`; for window policies they lapse (unused: fewer admissions,
never more). A lease the store granted while Redis was failing (its ``on_error``) is
never given back to Redis.

Decisions admitted from a lease report ``remaining`` as the local tokens left (plus what
Redis said was left, when the lease was taken) and ``retry_after`` 0; refusals are the
store's own.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import anyio
from typing_extensions import Self

from .._core._validate import check_int, check_seconds
from .._core.decision import Decision
from .._core.gcra import GCRA
from .._core.quota import next_lease_size
from .._keys import encode_key
from .._store import Policy, RateLimitStore
from ._clients import eval_script
from ._scripts import NOW, Script
from ._store import RedisStore

__all__ = ("GIVE_BACK", "LeasedStore", "LeasedStoreStatistics")

_GIVE_BACK = (
    """
local key = KEYS[1]
local stored = redis.call('GET', key)
if not stored then return '' end
"""
    + NOW
    + """local tat = tonumber(stored) - tonumber(ARGV[1]) * tonumber(ARGV[2])
if tat <= now then
  redis.call('DEL', key)
  return ''
end
local ms = math.ceil((tat - now) * 1000)
redis.call('SET', key, string.format('%.17g', tat), 'PX', string.format('%d', ms + extra_ms))
return string.format('%.17g', tat)
"""
)

GIVE_BACK = Script("give_back", _GIVE_BACK)
"""Return unspent tokens to a GCRA bucket: ``KEYS[1]`` the bucket's key; ``ARGV``: tokens,
interval, time (``""``: the server's ``TIME``). Answers the new ``tat``, ``""`` at rest."""

# Give-backs sent per round trip for a lease (the rest wait for the next one or aclose).
_RETURNS_PER_TRIP = 4


@dataclass(frozen=True, slots=True)
class LeasedStoreStatistics:
    """A snapshot of a `LeasedStore`.

    ``keys``: keys with a lease now; ``local``: requests admitted from a lease, with no
    round trip; ``forwarded``: requests that went to the store; ``leases``: leases taken;
    ``leased_tokens``: tokens taken in leases; ``returned_tokens``: unspent tokens given
    back to Redis; ``lapsed_tokens``: unspent tokens that could not be given back;
    ``returns_waiting``: leases whose tokens wait to be given back.
    """

    keys: int
    local: int
    forwarded: int
    leases: int
    leased_tokens: int
    returned_tokens: int
    lapsed_tokens: int
    returns_waiting: int


class _Lease:
    __slots__ = (
        "expires",
        "granted",
        "limit",
        "pending",
        "remote",
        "reset_at",
        "shared_remaining",
        "size",
        "taken_at",
        "tokens",
    )

    def __init__(self) -> None:
        self.tokens = 0  # unspent
        self.granted = 0  # size of the last lease (0: none yet)
        self.taken_at = -math.inf
        self.expires = -math.inf
        self.size = 1
        self.limit = 0
        self.reset_at = 0.0
        self.shared_remaining = 0
        self.remote = False  # granted by Redis (not by on_error): may be given back
        self.pending: anyio.Event | None = None  # a lease being taken for this key


def _limit_of(policy: Policy) -> int:
    return policy.burst if isinstance(policy, GCRA) else policy.limit


class LeasedStore:
    """A `brace.RateLimitStore` spending leases of tokens taken from another store.

    Args:
        store: the shared store (a `RedisStore`; any `brace.RateLimitStore` works, but
            only a `RedisStore` gets unspent GCRA tokens back).
        max_lease: the most tokens in one lease (an int >= 1); 1 makes every decision
            the store's own. The over-admission bound is ``processes * max_lease`` per
            key over any interval.
        lease_time: seconds after which an unspent lease lapses (> 0).
        max_keys: the most keys holding a lease at once (an int >= 1); the oldest key's
            lease is given back to make room.
        clock: zero-argument callable returning monotonic seconds; default
            `time.monotonic`.
    """

    __slots__ = (
        "_clock",
        "_forwarded",
        "_lapsed",
        "_leased",
        "_leases",
        "_local",
        "_returned",
        "_returns",
        "_taken",
        "lease_time",
        "max_keys",
        "max_lease",
        "store",
    )

    def __init__(
        self,
        store: RateLimitStore,
        *,
        max_lease: int = 64,
        lease_time: float = 1.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(store, RateLimitStore):
            raise TypeError(f"store must be a brace.RateLimitStore, got {type(store).__name__}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        self.store = store
        self.max_lease = check_int(max_lease, "max_lease", minimum=1)
        self.lease_time = check_seconds(lease_time, "lease_time")
        self.max_keys = check_int(max_keys, "max_keys", minimum=1)
        self._clock: Callable[[], float] = time.monotonic if clock is None else clock
        self._leases: OrderedDict[tuple[Policy, str], _Lease] = OrderedDict()
        # (policy, key, tokens) to give back, oldest first; bounded by max_keys
        self._returns: list[tuple[Policy, str, int]] = []
        self._local = self._forwarded = self._taken = self._leased = 0
        self._returned = self._lapsed = 0

    async def hit(self, policy: Policy, key: str, cost: int = 1) -> Decision:
        """Admit ``cost`` from the key's lease, or take a new lease (one round trip)."""
        lease = self._leases.get((policy, key))
        if lease is not None and lease.tokens >= cost and cost.__class__ is int and cost > 0:
            now = self._clock()
            if now < lease.expires:
                lease.tokens -= cost
                self._local += 1
                return Decision(
                    True, lease.limit, lease.tokens, 0.0, max(0.0, lease.reset_at - now)
                )
        return await self._take(policy, key, cost)

    async def _take(self, policy: Policy, key: str, cost: int) -> Decision:
        policy.check_cost(cost)
        slot = (policy, key)
        leases = self._leases
        while True:
            lease = leases.get(slot)
            if lease is None:
                lease = self._new_lease(slot)
            pending = lease.pending
            if pending is None:
                break
            await pending.wait()  # another task is taking this key's lease: then spend
            now = self._clock()
            if lease.tokens >= cost and now < lease.expires:
                lease.tokens -= cost
                self._local += 1
                return Decision(
                    True, lease.limit, lease.tokens, 0.0, max(0.0, lease.reset_at - now)
                )
        lease.pending = anyio.Event()
        try:
            return await self._lease(policy, key, cost, lease)
        finally:
            event, lease.pending = lease.pending, None
            event.set()

    def _new_lease(self, slot: tuple[Policy, str]) -> _Lease:
        leases = self._leases
        if len(leases) >= self.max_keys:
            (policy, key), old = leases.popitem(last=False)
            self._lapse(policy, key, old)
        lease = leases[slot] = _Lease()
        return lease

    def _lapse(self, policy: Policy, key: str, lease: _Lease) -> None:
        """``lease``'s tokens are no longer spent: queue them to be given back."""
        tokens, lease.tokens = lease.tokens, 0
        if tokens <= 0:
            return
        if (
            lease.remote
            and isinstance(self.store, RedisStore)
            and isinstance(policy, GCRA)
            and len(self._returns) < self.max_keys
        ):
            self._returns.append((policy, key, tokens))
        else:
            self._lapsed += tokens

    async def _lease(self, policy: Policy, key: str, cost: int, lease: _Lease) -> Decision:
        now = self._clock()
        if lease.granted:
            expired = now >= lease.expires
            left = lease.tokens
            lease.size = next_lease_size(
                lease.size,
                granted=lease.granted,
                left=left,
                age=now - lease.taken_at,
                lease_time=self.lease_time,
                max_lease=self.max_lease,
            )
            if expired:
                self._lapse(policy, key, lease)
        limit = _limit_of(policy)
        size = max(cost, min(lease.size, limit))
        decision = await self._ask(policy, key, size, cost, lease, now)
        if decision.allowed or size == cost:
            return decision
        # Refused a whole lease: take what is left, if that covers the request.
        lease.size = max(1, decision.remaining)
        if decision.remaining > cost:
            decision = await self._ask(policy, key, decision.remaining, cost, lease, now)
            if decision.allowed:
                return decision
        return await self._ask(policy, key, cost, cost, lease, now)

    async def _ask(
        self, policy: Policy, key: str, tokens: int, cost: int, lease: _Lease, now: float
    ) -> Decision:
        """One decision of the store for ``tokens``; if granted, all but ``cost`` are leased."""
        store = self.store
        fallbacks = store.statistics().fallbacks if isinstance(store, RedisStore) else 0
        self._forwarded += 1
        decision = await store.hit(policy, key, tokens)
        if not decision.allowed:
            return decision
        carried = lease.tokens
        lease.tokens += tokens - cost
        lease.granted = tokens
        lease.taken_at = now
        lease.expires = now + self.lease_time
        lease.limit = decision.limit
        lease.reset_at = now + decision.reset_after
        if isinstance(store, RedisStore):
            # given back to Redis only if every token of it came from Redis
            granted = store.statistics().fallbacks == fallbacks
            lease.remote = granted and (lease.remote or carried == 0)
            if self._returns:
                await self._give_back_some(_RETURNS_PER_TRIP)
        self._taken += 1
        self._leased += tokens
        if tokens == cost:
            return decision  # nothing leased: the store's own decision
        return Decision(
            True, decision.limit, decision.remaining + lease.tokens, 0.0, decision.reset_after
        )

    async def _give_back_some(self, count: int) -> None:
        """Give back the oldest ``count`` waiting returns (all with ``count < 0``)."""
        returns = self._returns
        batch = returns[:] if count < 0 else returns[:count]
        del returns[: len(batch)]
        for policy, key, tokens in batch:
            if await self._give_back(policy, key, tokens):
                self._returned += tokens
            else:
                self._lapsed += tokens

    async def _give_back(self, policy: Policy, key: str, tokens: int) -> bool:
        """One `GIVE_BACK` call; False (tokens lapse) when Redis fails."""
        store = self.store
        assert isinstance(store, RedisStore)
        assert isinstance(policy, GCRA)
        client = store.client
        keys = (encode_key(store.key(policy, key)),)
        args = (str(tokens), repr(policy.interval), "")
        try:
            with anyio.fail_after(getattr(store, "_timeout", None) or 1.0):
                await eval_script(client, GIVE_BACK, keys, args)
        except Exception:  # the tokens lapse: fewer admissions, never more
            return False
        return True

    async def give_back(self) -> None:
        """Give every unspent token back now (before a deploy or a scale-down); the
        leases end (the next request of each key takes a new one)."""
        for (policy, key), lease in list(self._leases.items()):
            if lease.pending is None:
                self._lapse(policy, key, lease)
        with anyio.CancelScope(shield=True):
            await self._give_back_some(-1)

    async def peek(self, policy: Policy, key: str, cost: int = 1) -> Decision:
        """Admitted from the key's lease if it covers ``cost``, else the store's `peek`."""
        lease = self._leases.get((policy, key))
        if lease is not None and lease.tokens >= cost > 0:
            now = self._clock()
            if now < lease.expires:
                return Decision(
                    True, lease.limit, lease.tokens - cost, 0.0, max(0.0, lease.reset_at - now)
                )
        return await self.store.peek(policy, key, cost)

    async def reset(self, policy: Policy, key: str) -> None:
        """Forget the key's lease (not given back) and the key in the store."""
        self._leases.pop((policy, key), None)
        await self.store.reset(policy, key)

    async def aclose(self) -> None:
        """Give back the unspent tokens, then close the store."""
        await self.give_back()
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

    def statistics(self) -> LeasedStoreStatistics:
        """A snapshot of the counters."""
        return LeasedStoreStatistics(
            keys=len(self._leases),
            local=self._local,
            forwarded=self._forwarded,
            leases=self._taken,
            leased_tokens=self._leased,
            returned_tokens=self._returned,
            lapsed_tokens=self._lapsed,
            returns_waiting=len(self._returns),
        )

    def __repr__(self) -> str:
        return (
            f"LeasedStore({self.store!r}, max_lease={self.max_lease}, lease_time={self.lease_time})"
        )
