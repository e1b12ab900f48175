"""Where a keyed rate limiter keeps its per-key state: the store protocol and MemoryStore.

Theory of operation (MemoryStore)
---------------------------------
A store keeps one *table* per policy (keyed by the policy's parameters, so two limiters
with equal policies over one store share their counts, as they would in Redis). A table
is a dict ``key -> state`` (a float ``tat`` for GCRA, a ``(window, current, previous)``
tuple for the counter, a `SlidingLogCore` for the log) plus a deque of its keys in
insertion order. The dict is split in shards of at most about 8,192 keys by
``hash(key)``, because a dict rebuilds its whole table at once now and then and a
100,000-key rebuild takes milliseconds. The decision arithmetic of the cores is inlined
on the admitted path (the hot one) and delegated to the core on the refused one.

Bounds, without ever sweeping every key:

- A key whose state is *at rest* (``tat <= now``; a counter with nothing left in its two
  windows; an empty log) carries no information a fresh key lacks, so dropping it loses
  nothing. Each time a key is inserted the table looks at its two oldest keys: an at-rest
  key is dropped, a live one goes to the back of the line (second chance) or, when the
  table holds ``max_keys`` keys, is evicted.
- An evicted live key is *spilled* into a fixed-size sketch of ``max(max_keys, 1024)``
  slots indexed by ``hash(key) % slots``. A slot keeps the most restrictive state of every key
  spilled into it: the largest ``tat``; the element-wise largest counts once aligned on
  the same window; for a log, the latest entry time and the largest total, replayed as
  one entry of that total at that time (a log's load never exceeds it while it lasts).
  A key that is not in the dict starts from its slot. Decisions are monotone in the state,
  so a key starting from a slot is admitted only if it would have been admitted from its
  own state: a colliding innocent key may be limited a little harder, no key is ever
  allowed above its limit. Slots decay by themselves as time passes (a past ``tat`` is at
  rest), so the sketch needs no sweeping either.

Memory is O(max_keys) per policy: the dict, the deque and the sketch. A key is
attacker-chosen text, so its size is bounded too (`brace._keys`): a key of
``MAX_KEY_LENGTH`` characters or more is held as a fixed-size digest, in dicts of its
own (``long_shards``), so that no key of any length can reach a digest's state but the
long key it stands for. The hot path pays nothing for this: a key found in the dicts of
short keys is short (equal strings have equal lengths); only a key not found there has
its length and type checked before it is looked up again where it belongs.
"""

from __future__ import annotations

import math
import time
from array import array
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from ._clock import check_clock
from ._core._inline import coroutine_twin, inline_steps
from ._core._validate import check_int
from ._core.decision import (
    Decision,
    Draft,  # noqa: F401 (read by the inlined `drafted`)
    drafted,
)
from ._core.gcra import GCRA, gcra_step
from ._core.window import EPSILON as WINDOW_EPSILON
from ._core.window import (
    CounterState,
    SlidingLog,
    SlidingLogCore,
    SlidingWindowCounter,
    window_admits,
    window_weight,
)
from ._keys import MAX_KEY_LENGTH, bound_key

__all__ = (
    "MemoryStore",
    "MemoryStoreStatistics",
    "Policy",
    "RateLimitStore",
    "check_key",
)

Policy = GCRA | SlidingWindowCounter | SlidingLog
"""A core policy: what a store needs to decide for one key."""

_S = TypeVar("_S")
_floor = math.floor
# A tiny store still gets a sketch of this many slots, so that collisions stay rare.
_MIN_SLOTS = 1024
# About this many keys per dict at most, so that a dict's rebuild takes well under 1 ms.
_SHARD_KEYS = 8192
# Below this many keys (and a quarter of max_keys), keys at rest are kept: they cost a few
# hundred bytes and spare a returning key the price of a new entry. Above it, each new
# key first looks at the two oldest and drops those at rest.
_LOW_WATER = 4096
# The most coroutine twins a table builds (one per clock: a limiter's; see hit_coroutine)
_TWINS = 8
# The largest max_keys: a table makes max_keys / _SHARD_KEYS dicts at once (about 2 MB at
# this bound) and, on its first eviction, a sketch of max_keys slots.
MAX_KEYS = 10**8


@runtime_checkable
class RateLimitStore(Protocol):
    """Where a `brace.RateLimiter` keeps per-key state; one call per decision.

    State is kept per ``(policy, key)``: a store must keep the states of different
    policies apart (by their parameters, so that every process agrees). Each method reads
    the time from the store's own clock: a Redis store uses the server's ``TIME`` so
    that every host shares one clock.

    ``hit`` is the whole decision in ONE atomic step: a Redis store sends the key, the
    cost and the policy's parameters to a Lua script that reads the state, decides with
    the same arithmetic as the Python core, writes the new state with an expiry of its
    ``reset_after`` and returns the decision's five fields.
    """

    async def hit(self, policy: Policy, key: str, cost: int) -> Decision:
        """Admit ``cost`` for ``key`` if ``policy`` allows, consuming it; a refusal is no error."""
        ...

    async def peek(self, policy: Policy, key: str, cost: int) -> Decision:
        """The decision ``hit`` would return now, without consuming anything."""
        ...

    async def reset(self, policy: Policy, key: str) -> None:
        """Forget ``key``: its next request is decided as a fresh key's."""
        ...

    async def aclose(self) -> None:
        """Release the store's resources (connections); the store is unusable after."""
        ...


@dataclass(frozen=True, slots=True)
class MemoryStoreStatistics:
    """A snapshot of a `MemoryStore` (all policies together).

    ``keys``: keys held now; ``max_keys``: the bound per policy; ``policies``: tables;
    ``allowed`` / ``rejected``: decisions made; ``evictions``: live keys spilled into the
    sketch to make room; ``drops``: at-rest keys forgotten (losing nothing).
    """

    keys: int
    max_keys: int
    policies: int
    allowed: int
    rejected: int
    evictions: int
    drops: int


def check_key(key: object) -> str:
    """A rate-limit key is a str (subclasses accepted); any text, any length."""
    if not isinstance(key, str):
        if isinstance(key, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"key must be a str, got {type(key).__name__}: decode it first (for "
                "instance key.decode('utf-8', 'surrogateescape'), which keeps every byte "
                "string distinct)"
            )
        raise TypeError(f"key must be a str, got {type(key).__name__}")
    return key


def _policy_identity(policy: object) -> tuple[object, ...]:
    if isinstance(policy, GCRA):
        return ("gcra", policy.rate, policy.per, policy.burst)
    if isinstance(policy, SlidingWindowCounter):
        return ("counter", policy.limit, policy.window)
    if isinstance(policy, SlidingLog):
        return ("log", policy.limit, policy.window)
    raise TypeError(
        "policy must be a brace._core GCRA, SlidingWindowCounter or SlidingLog, "
        f"got {type(policy).__name__}"
    )


_Hit = Callable[[str, int, float], Decision]
#: an admission's ``(remaining, reset_after)``, what `_Table.hit_fields` answers
HitFields = tuple[int, float]
#: ``(key, cost, now) -> (remaining, reset_after)`` on admission, the `Decision` on refusal
FieldsHit = Callable[[str, int, float], "HitFields | Decision"]
_Counts = Callable[[], tuple[int, int]]


class AsyncHit(Protocol):
    """``await hit(key, cost=1)``: a table's coroutine twin of ``hit_now`` (its clock read
    inside), what `RateLimiter.hit` is for a memory store (see `_Table.hit_coroutine`)."""

    def __call__(self, key: str, cost: int = 1) -> Coroutine[Any, Any, Decision]: ...


class _Table(Generic[_S]):
    """The keys of one policy: states in a dict, insertion order in a deque, a sketch.

    ``hit_now(key, cost, now)`` is a closure over the table's constants (built by
    ``_hit_function``): locals and cells are read faster than attributes, and this is
    the hot path. Its counts of allowed and rejected hits live in the closure too.
    ``hit_fields`` is the same function built a second time to answer an admission with
    ``(remaining, reset_after)`` instead of a `Decision` (a refusal is still one): what
    an HTTP middleware sends as the ``RateLimit`` field, without building a frozen
    object per request; `hit_coroutine` builds it once more as a coroutine. `counts` adds
    up the counts of every function built.
    """

    __slots__ = (
        "_counts",
        "_twins",
        "drops",
        "evictions",
        "hit_fields",
        "hit_now",
        "long_shards",
        "low_water",
        "mask",
        "max_keys",
        "order",
        "shards",
        "slots",
    )

    hit_now: _Hit
    hit_fields: FieldsHit

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self.low_water = min(max_keys // 4, _LOW_WATER)
        self.slots = max(max_keys, _MIN_SLOTS)  # of the sketch, allocated on first eviction
        # The states live in several dicts: a dict rebuilds itself in one go now and then
        # (to grow, or to shed deleted entries); small dicts keep that pause short.
        shards = 1
        while shards * _SHARD_KEYS < max_keys:
            shards *= 2
        self.mask = shards - 1
        self.shards: list[dict[str, _S]] = [{} for _ in range(shards)]
        # The states of long keys, under their digests (see the module's docstring).
        self.long_shards: list[dict[str, _S]] = [{} for _ in range(shards)]
        # Keys in insertion order, as stored: a short key itself, a long key's digest.
        self.order: deque[str] = deque()
        self.evictions = 0
        self.drops = 0
        # the counts of every hit function built (see counts) and the coroutine twins of
        # hit_now, by clock (see hit_coroutine)
        self._counts: list[_Counts] = []
        self._twins: dict[Callable[[], float], AsyncHit] = {}

    def counts(self) -> tuple[int, int]:
        """Hits allowed and rejected, by every hit function of the table."""
        allowed = rejected = 0
        for counts in self._counts:
            more, fewer = counts()
            allowed += more
            rejected += fewer
        return allowed, rejected

    def _build(self) -> None:
        self.hit_now = self._hit(False, None)
        self.hit_fields = self._hit(True, None)

    def _hit(self, fields: bool, clock: Callable[[], float] | None) -> Any:
        """`_hit_function`'s function, its counts added to the table's."""
        hit, counts = self._hit_function(fields, clock)
        self._counts.append(counts)
        return hit

    def _hit_function(
        self, fields: bool, clock: Callable[[], float] | None = None
    ) -> tuple[Any, _Counts]:
        """The hit function and its counts: ``hit_now``, or with ``fields`` the
        ``hit_fields`` form, or with a ``clock`` the coroutine twin of ``hit_now``."""
        raise NotImplementedError

    def hit_coroutine(self, clock: Callable[[], float]) -> AsyncHit | None:
        """``hit_now`` as an ``async def (key, cost=1)`` reading ``clock``: the same source
        built once more as a coroutine (`brace._core._inline.coroutine_twin`), so that
        ``await limiter.hit(key)`` runs one frame, not a coroutine calling ``hit_now``. Its
        counts join the table's. One per clock, for at most `_TWINS` clocks (None after,
        or for a clock that cannot be a dict key: the caller keeps its own coroutine)."""
        twins = self._twins
        try:
            twin = twins.get(clock)
        except TypeError:  # an unhashable clock (a callable with __hash__ = None)
            return None
        if twin is None:
            if len(twins) >= _TWINS:
                return None
            twin = twins[clock] = self._hit(False, clock)
        return twin

    @property
    def allowed(self) -> int:
        return self.counts()[0]

    @property
    def rejected(self) -> int:
        return self.counts()[1]

    def peek_now(self, key: str, cost: int, now: float) -> Decision:
        raise NotImplementedError

    def reset_now(self, key: str, now: float) -> None:
        raise NotImplementedError

    def _at_rest(self, state: _S, now: float) -> bool:
        raise NotImplementedError

    def _spill(self, key: str, state: _S) -> None:
        raise NotImplementedError

    def locate(self, key: object) -> tuple[str, dict[str, _S]]:
        """``key`` as stored (a plain str: itself, or a long key's digest) and the dict
        that holds its state, if it has one; a ``TypeError`` for a key that is no str."""
        if key.__class__ is not str:
            key = str.__str__(check_key(key))  # a str subclass, as a plain str
        assert isinstance(key, str)
        if len(key) < MAX_KEY_LENGTH:
            return key, self.shards[hash(key) & self.mask]
        key = bound_key(key)
        return key, self.long_shards[hash(key) & self.mask]

    def states_of(self, stored: str) -> dict[str, _S]:
        """The dict holding the state of a key as stored (see `locate`)."""
        shards = self.shards if len(stored) < MAX_KEY_LENGTH else self.long_shards
        return shards[hash(stored) & self.mask]

    def __len__(self) -> int:
        return len(self.order)  # one entry per key held

    def _insert(self, states: dict[str, _S], key: str, state: _S, now: float) -> None:
        """Add a new key; above the low-water mark, first look at the two oldest: drop
        them if at rest, evict them (into the sketch) if the table is full, else requeue."""
        order = self.order
        if len(order) < self.low_water:
            states[key] = state
            order.append(key)
            return
        states_of = self.states_of
        for _ in (0, 1):
            if not order:
                break
            oldest = order[0]
            old_states = states_of(oldest)
            old_state = old_states[oldest]
            if self._at_rest(old_state, now):
                order.popleft()
                del old_states[oldest]
                self.drops += 1
            elif len(order) >= self.max_keys:
                order.popleft()
                del old_states[oldest]
                self._spill(oldest, old_state)
                self.evictions += 1
            else:
                order.rotate(-1)  # second chance: live, and there is room
        states[key] = state
        order.append(key)


class _GCRATable(_Table[float]):
    __slots__ = ("policy", "sketch")

    def __init__(self, policy: GCRA, max_keys: int) -> None:
        super().__init__(max_keys)
        self.policy = policy
        self.sketch: array[float] | None = None
        self._build()

    def _seed(self, key: str) -> float:
        sketch = self.sketch
        if sketch is None:
            return -math.inf
        return sketch[hash(key) % self.slots]

    @inline_steps
    def _hit_function(
        self, fields: bool, clock: Callable[[], float] | None = None
    ) -> tuple[Any, _Counts]:
        shards = self.shards
        mask = self.mask
        policy = self.policy
        burst = policy.burst
        interval = policy.interval
        within = policy.reach
        seed = self._seed
        insert = self._insert
        locate = self.locate
        allowed = rejected = 0

        table = self
        no_seed = -math.inf
        long = MAX_KEY_LENGTH
        floor = _floor
        one = 1  # the usual cost: a limit or burst is at least 1, so it always passes

        def hit_now(key: str, cost: int, now: float) -> HitFields | Decision:
            nonlocal allowed, rejected
            if cost is not one and (cost.__class__ is not int or cost < 0 or cost > burst):
                policy.check_cost(cost)
            try:
                states = shards[hash(key) & mask]
            except TypeError:
                check_key(key)
                raise
            tat = states.get(key)
            fresh = tat is None
            if tat is None:  # only short plain str keys are here: a key found is one
                if key.__class__ is not str or len(key) >= long:
                    key, states = locate(key)
                    tat = states.get(key)
                    fresh = tat is None
                if tat is None:
                    tat = no_seed if table.sketch is None else seed(key)
            new_tat = gcra_step(tat, now, cost, interval, within)
            if new_tat is not None:
                allowed += 1
                if not fresh:
                    states[key] = new_tat
                elif new_tat > now:  # else at rest: nothing worth storing
                    insert(states, key, new_tat, now)
                ahead = new_tat - now
                # GCRA.admitted, with floor, not int: the same for a non-negative number
                # (ahead <= within), and faster
                remaining = floor((within - ahead) / interval)
                if fields:
                    return remaining, ahead
                decision = drafted(True, burst, remaining, 0.0, ahead)
                return decision
            rejected += 1
            return policy.decide(tat, now, cost)[0]

        def counts() -> tuple[int, int]:
            return allowed, rejected

        if clock is not None:
            hit = coroutine_twin(hit_now, clock, cost=1)
            return hit, counts
        return hit_now, counts

    def peek_now(self, key: str, cost: int, now: float) -> Decision:
        key, states = self.locate(key)
        self.policy.check_cost(cost)
        tat = states.get(key)
        if tat is None:
            tat = self._seed(key)
        return self.policy.decide(tat, now, cost)[0]

    def reset_now(self, key: str, now: float) -> None:
        key, states = self.locate(key)
        if key in states:
            states[key] = -math.inf  # at rest: dropped at its turn

    def _at_rest(self, state: float, now: float) -> bool:
        return state <= now

    def _spill(self, key: str, state: float) -> None:
        sketch = self.sketch
        if sketch is None:
            sketch = self.sketch = array("d", [-math.inf]) * self.slots
        slot = hash(key) % self.slots
        if state > sketch[slot]:
            sketch[slot] = state


class _CounterTable(_Table[CounterState]):
    __slots__ = ("policy", "sketch")

    def __init__(self, policy: SlidingWindowCounter, max_keys: int) -> None:
        super().__init__(max_keys)
        self.policy = policy
        self.sketch: list[CounterState | None] | None = None
        self._build()

    def _seed(self, key: str) -> CounterState | None:
        sketch = self.sketch
        if sketch is None:
            return None
        return sketch[hash(key) % self.slots]

    @inline_steps
    def _hit_function(
        self, fields: bool, clock: Callable[[], float] | None = None
    ) -> tuple[Any, _Counts]:
        shards = self.shards
        mask = self.mask
        policy = self.policy
        limit = policy.limit
        within = policy.reach
        window = policy.window
        double = 2 * window
        seed = self._seed
        insert = self._insert
        locate = self.locate
        long = MAX_KEY_LENGTH
        floor = _floor
        one = 1  # the usual cost: a limit is at least 1, so it always passes
        allowed = rejected = 0
        # The window of the last call: every ``now`` in ``[low, high]`` has
        # ``floor(now / window) == cached``, because that floor is non-decreasing in
        # ``now`` and holds at both ends (see `_window_end`). Two float comparisons then
        # stand for a division, a ``floor`` and a product; the empty range misses at once.
        low, high, cached, start = math.inf, -math.inf, 0, 0.0

        def hit_now(key: str, cost: int, now: float) -> HitFields | Decision:
            nonlocal allowed, rejected, low, high, cached, start
            if cost is not one and (cost.__class__ is not int or cost < 0 or cost > limit):
                policy.check_cost(cost)
            try:
                states = shards[hash(key) & mask]
            except TypeError:
                check_key(key)
                raise
            state = states.get(key)
            if state is None:  # only short plain str keys are here: a key found is one
                return hit_fresh(states, key, cost, now)
            # SlidingWindowCounter.roll, inlined (same operations, same floats).
            if low <= now <= high:
                index = cached
                offset = now - start
            else:
                index = floor(now / window)
                offset = now - index * window
                low, high, cached, start = now, _window_end(index, window), index, index * window
            old_index, current, previous = state
            if index != old_index:
                if index == old_index + 1:
                    previous = current
                    current = 0
                elif index < old_index:
                    index = old_index
                    offset = 0.0
                else:
                    current = previous = 0
            weight = window_weight(previous, offset, window)
            admitted = window_admits(weight, current, cost, within)
            if admitted:
                allowed += 1
                current += cost
                states[key] = (index, current, previous)
                # floor, not int: the same once clamped at 0, and faster
                remaining = floor(limit - weight - current + WINDOW_EPSILON)
                if remaining < 0:
                    remaining = 0
                if current > 0:
                    reset = double - offset
                elif previous > 0:
                    reset = window - offset
                else:
                    reset = 0.0
                if fields:
                    return remaining, reset
                decision = drafted(True, limit, remaining, 0.0, reset)
                return decision
            rejected += 1
            return policy.decide(state, now, cost)[0]

        def hit_fresh(
            states: dict[str, CounterState], key: str, cost: int, now: float
        ) -> HitFields | Decision:
            nonlocal allowed, rejected
            held: CounterState | None = None
            if key.__class__ is not str or len(key) >= long:
                key, states = locate(key)
                held = states.get(key)
            if held is None:
                decision, state = policy.decide(seed(key), now, cost)
                if decision.allowed and (state[1] or state[2]):  # else at rest: not stored
                    insert(states, key, state, now)
            else:  # a long key held under its digest: the core decides (the slow path)
                decision, state = policy.decide(held, now, cost)
                if decision.allowed:
                    states[key] = state
            if decision.allowed:
                allowed += 1
                if fields:
                    return decision.remaining, decision.reset_after
            else:
                rejected += 1
            return decision

        def counts() -> tuple[int, int]:
            return allowed, rejected

        if clock is not None:
            hit = coroutine_twin(hit_now, clock, cost=1)
            return hit, counts
        return hit_now, counts

    def peek_now(self, key: str, cost: int, now: float) -> Decision:
        key, states = self.locate(key)
        self.policy.check_cost(cost)
        state = states.get(key)
        if state is None:
            state = self._seed(key)
        return self.policy.decide(state, now, cost)[0]

    def reset_now(self, key: str, now: float) -> None:
        key, states = self.locate(key)
        if key in states:
            # Two windows back: at rest now and later, dropped at its turn.
            states[key] = (_floor(now / self.policy.window) - 2, 0, 0)

    def _at_rest(self, state: CounterState, now: float) -> bool:
        return self.policy.at_rest(state, now)

    def _spill(self, key: str, state: CounterState) -> None:
        sketch = self.sketch
        if sketch is None:
            empty: list[CounterState | None] = [None] * self.slots
            sketch = self.sketch = empty
        slot = hash(key) % self.slots
        held = sketch[slot]
        sketch[slot] = state if held is None else merge_counters(held, state)


def _window_end(index: int, window: float) -> float:
    """A float ``end`` with ``floor(t / window) <= index`` for every ``t <= end``.

    Starts at ``(index + 1) * window`` and steps down while rounding puts it in the next
    window (a step or two at most). With a ``t0`` in window ``index``, every ``t`` in
    ``[t0, end]`` is then in window ``index``: the floor is non-decreasing in ``t``.
    """
    end = (index + 1) * window
    while _floor(end / window) > index:
        end = math.nextafter(end, -math.inf)
    return end


def merge_counters(a: CounterState, b: CounterState) -> CounterState:
    """The element-wise largest of two counter states, aligned on the later window."""
    if a[0] < b[0]:
        a, b = b, a
    index, current, previous = a
    if index == b[0]:
        return (index, max(current, b[1]), max(previous, b[2]))
    if index == b[0] + 1:
        return (index, current, max(previous, b[1]))
    return a


class _LogTable(_Table[SlidingLogCore]):
    __slots__ = ("policy", "sketch")

    def __init__(self, policy: SlidingLog, max_keys: int) -> None:
        super().__init__(max_keys)
        self.policy = policy
        # Per slot: (time of the latest entry, largest total) of the logs spilled into it.
        self.sketch: list[tuple[float, int] | None] | None = None
        self._build()

    def _seed(self, key: str) -> SlidingLogCore:
        core = self.policy.core()
        sketch = self.sketch
        if sketch is not None:
            held = sketch[hash(key) % self.slots]
            if held is not None:
                core.entries.append(held)  # expired by the core itself if it is old
                core.total = held[1]
        return core

    @inline_steps
    def _hit_function(
        self, fields: bool, clock: Callable[[], float] | None = None
    ) -> tuple[Any, _Counts]:
        shards = self.shards
        mask = self.mask
        policy = self.policy
        limit = policy.limit
        seed = self._seed
        insert = self._insert
        locate = self.locate
        long = MAX_KEY_LENGTH
        allowed = rejected = 0

        def hit_now(key: str, cost: int, now: float) -> HitFields | Decision:
            nonlocal allowed, rejected
            if key.__class__ is not str:
                check_key(key)
            if cost.__class__ is not int or cost < 0 or cost > limit:
                policy.check_cost(cost)
            states = shards[hash(key) & mask]
            core = states.get(key)
            if core is None and (key.__class__ is not str or len(key) >= long):
                key, states = locate(key)
                core = states.get(key)
            if core is None:
                core = seed(key)
                decision = core.try_acquire(now, cost)
                if core.entries:
                    insert(states, key, core, now)
            else:
                decision = core.try_acquire(now, cost)
            if decision.allowed:
                allowed += 1
                if fields:
                    return decision.remaining, decision.reset_after
            else:
                rejected += 1
            return decision

        def counts() -> tuple[int, int]:
            return allowed, rejected

        if clock is not None:
            hit = coroutine_twin(hit_now, clock, cost=1)
            return hit, counts
        return hit_now, counts

    def peek_now(self, key: str, cost: int, now: float) -> Decision:
        key, states = self.locate(key)
        self.policy.check_cost(cost)
        core = states.get(key)
        if core is None:
            probe = self._seed(key)
        else:
            probe = self.policy.core()
            probe.entries = deque(core.entries)
            probe.total = core.total
        return probe.try_acquire(now, cost)

    def reset_now(self, key: str, now: float) -> None:
        key, states = self.locate(key)
        if key in states:
            states[key] = self.policy.core()  # empty: dropped at its turn

    def _at_rest(self, state: SlidingLogCore, now: float) -> bool:
        return state.at_rest(now)

    def _spill(self, key: str, state: SlidingLogCore) -> None:
        sketch = self.sketch
        if sketch is None:
            empty: list[tuple[float, int] | None] = [None] * self.slots
            sketch = self.sketch = empty
        slot = hash(key) % self.slots
        latest = (state.entries[-1][0], state.total)
        held = sketch[slot]
        if held is not None:
            latest = (max(held[0], latest[0]), max(held[1], latest[1]))
        sketch[slot] = latest


_AnyTable = _GCRATable | _CounterTable | _LogTable


class MemoryStore:
    """The default, in-process `RateLimitStore`: bounded, and safe when full.

    It holds at most ``max_keys`` keys per policy. Keys at rest (a full bucket, an empty
    window) are dropped without loss as new keys arrive; when the store is full of live
    keys, the oldest is evicted into a fixed-size conservative sketch from which it (and
    any key sharing its slot) restarts: an evicted key may be limited a little harder than
    it should be, never allowed more than its limit. No call ever sweeps all the keys.

    Besides the async protocol methods (which read ``clock``), it offers a synchronous
    path taking ``now``, `hit_now`, that a `brace.RateLimiter` uses
    directly so that ``await limiter.hit(key)`` never yields to the event loop.

    Args:
        max_keys: the most keys held per policy (an int from 1 to 10**8).
        clock: zero-argument callable returning monotonic seconds, read by the async
            methods; default `time.monotonic`.
    """

    __slots__ = ("__weakref__", "_clock", "_max_keys", "_tables")

    def __init__(
        self, max_keys: int = 100_000, *, clock: Callable[[], float] | None = None
    ) -> None:
        self._max_keys = check_int(max_keys, "max_keys", minimum=1, maximum=MAX_KEYS)
        clock = check_clock(clock)
        self._clock: Callable[[], float] = time.monotonic if clock is None else clock
        self._tables: dict[tuple[object, ...], _AnyTable] = {}

    @property
    def max_keys(self) -> int:
        """The most keys held per policy."""
        return self._max_keys

    def table_for(self, policy: Policy) -> _AnyTable:
        """The table holding ``policy``'s keys (a limiter over this store binds to it)."""
        identity = _policy_identity(policy)
        table = self._tables.get(identity)
        if table is None:
            if isinstance(policy, GCRA):
                table = _GCRATable(policy, self._max_keys)
            elif isinstance(policy, SlidingWindowCounter):
                table = _CounterTable(policy, self._max_keys)
            else:
                table = _LogTable(policy, self._max_keys)
            self._tables[identity] = table
        return table

    def hit_now(self, policy: Policy, key: str, cost: int, now: float) -> Decision:
        """`hit` at the time ``now``, synchronously."""
        return self.table_for(policy).hit_now(key, cost, now)

    def peek_now(self, policy: Policy, key: str, cost: int, now: float) -> Decision:
        """`peek` at the time ``now``, synchronously."""
        return self.table_for(policy).peek_now(key, cost, now)

    def reset_now(self, policy: Policy, key: str, now: float) -> None:
        """`reset` at the time ``now``, synchronously."""
        self.table_for(policy).reset_now(key, now)

    async def hit(self, policy: Policy, key: str, cost: int = 1) -> Decision:
        """Admit ``cost`` for ``key`` if ``policy`` allows, consuming it."""
        return self.table_for(policy).hit_now(key, cost, self._clock())

    async def peek(self, policy: Policy, key: str, cost: int = 1) -> Decision:
        """The decision `hit` would return now, without consuming anything."""
        return self.table_for(policy).peek_now(key, cost, self._clock())

    async def reset(self, policy: Policy, key: str) -> None:
        """Forget ``key`` under ``policy`` (a key spilled to the sketch may stay limited)."""
        self.reset_now(policy, key, self._clock())

    async def aclose(self) -> None:
        """Nothing to release; kept for the protocol."""

    def __len__(self) -> int:
        return sum(len(table) for table in self._tables.values())

    def statistics(self) -> MemoryStoreStatistics:
        """A snapshot of the store's counters (O(policies))."""
        tables = self._tables.values()
        return MemoryStoreStatistics(
            keys=len(self),
            max_keys=self._max_keys,
            policies=len(self._tables),
            allowed=sum(table.allowed for table in tables),
            rejected=sum(table.rejected for table in tables),
            evictions=sum(table.evictions for table in tables),
            drops=sum(table.drops for table in tables),
        )

    def __repr__(self) -> str:
        return f"MemoryStore(max_keys={self._max_keys!r}, keys={len(self)})"
