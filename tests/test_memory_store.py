"""MemoryStore: exact while it has room, never generous when it is full, always bounded.

The reference model of a keyed limiter is an unbounded dict of independent single cores.
While the store has room for every key it must agree with that model decision for
decision (dropping at-rest keys loses nothing). When it is tiny and keys are evicted
live, it may refuse more than the model but must never admit a key above its limit,
which is checked by exact accounting of what each key was actually admitted.
"""

from __future__ import annotations

import gc
import math
from collections import defaultdict

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import brace
from brace._core.decision import Decision
from brace._core.gcra import GCRA, TokenBucketCore
from brace._core.window import CounterState, SlidingLog, SlidingLogCore, SlidingWindowCounter
from brace._limiter import local_hit
from brace._store import Policy, _window_end, merge_counters
from brace.testing import FakeClock

policies = st.one_of(
    st.builds(
        GCRA,
        rate=st.sampled_from([1, 2.5, 10]),
        per=st.sampled_from([1.0, 7.0]),
        burst=st.sampled_from([1, 3, 5]),
    ),
    st.builds(
        SlidingWindowCounter, limit=st.sampled_from([1, 3, 5]), window=st.sampled_from([1.0, 5.0])
    ),
    st.builds(SlidingLog, limit=st.sampled_from([1, 3, 5]), window=st.sampled_from([1.0, 5.0])),
)
steps = st.sampled_from([0.0, 0.001, 0.05, 0.3, 0.5, 1.0, 1.7, 2.5, 5.0, 12.0])


def limit_of(policy: Policy) -> int:
    return policy.burst if isinstance(policy, GCRA) else policy.limit


class _Model:
    """One independent core per key, never forgotten."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.buckets: dict[str, TokenBucketCore] = {}
        self.counters: dict[str, CounterState | None] = {}
        self.logs: dict[str, SlidingLogCore] = {}

    def hit(self, key: str, cost: int, now: float, *, consume: bool = True) -> Decision:
        policy = self.policy
        if isinstance(policy, GCRA):
            bucket = self.buckets.setdefault(key, TokenBucketCore(policy))
            decision, tat = policy.decide(bucket.tat, now, cost)
            if consume:
                bucket.tat = tat
            return decision
        if isinstance(policy, SlidingWindowCounter):
            decision, state = policy.decide(self.counters.get(key), now, cost)
            if consume:
                self.counters[key] = state
            return decision
        log = self.logs.setdefault(key, policy.core())
        if consume:
            return log.try_acquire(now, cost)
        probe = policy.core()
        probe.entries.extend(log.entries)
        probe.total = log.total
        return probe.try_acquire(now, cost)


class RoomyStore(RuleBasedStateMachine):
    """A store with room for every key decides exactly like independent cores."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(1000.0)

    @initialize(policy=policies, keys=st.integers(min_value=1, max_value=6))
    def setup(self, policy: Policy, keys: int) -> None:
        self.policy = policy
        self.keys = [f"k{index}" for index in range(keys)]
        # Exactly as many slots as keys: at-rest keys get dropped, nothing is ever evicted.
        self.limiter = brace.RateLimiter(policy, max_keys=keys, clock=self.clock)
        self.model = _Model(policy)
        self.hits = self.admissions = 0

    def draw_hit(self, data: st.DataObject) -> tuple[str, int, Decision]:
        """A key and a cost, and the model's decision for them (counted as a hit)."""
        key = data.draw(st.sampled_from(self.keys))
        cost = data.draw(st.integers(min_value=0, max_value=limit_of(self.policy)))
        expected = self.model.hit(key, cost, self.clock())
        self.hits += 1
        self.admissions += expected.allowed
        return key, cost, expected

    @rule(data=st.data())
    def hit(self, data: st.DataObject) -> None:
        key, cost, expected = self.draw_hit(data)
        assert self.limiter.try_hit(key, cost) == expected

    @rule(data=st.data())
    def hit_fields(self, data: st.DataObject) -> None:
        # The middleware's hit: the same decision, an admission answered by its fields.
        key, cost, expected = self.draw_hit(data)
        found = local_hit(self.limiter)
        assert found is not None
        hit, clock = found
        answer = hit(key, cost, clock())
        if expected.allowed:
            assert answer == (expected.remaining, expected.reset_after)
        else:
            assert answer == expected

    @rule(data=st.data())
    def peek(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.keys))
        cost = data.draw(st.integers(min_value=0, max_value=limit_of(self.policy)))
        expected = self.model.hit(key, cost, self.clock(), consume=False)
        assert anyio.run(self.limiter.peek, key, cost) == expected

    @rule(dt=steps)
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @invariant()
    def nothing_evicted(self) -> None:
        if hasattr(self, "limiter"):
            statistics = self.limiter.statistics()
            assert (statistics.hits, statistics.allowed) == (self.hits, self.admissions)
            assert statistics.evictions == 0
            assert statistics.keys is not None
            assert statistics.keys <= len(self.keys)


TestRoomyStore = RoomyStore.TestCase
TestRoomyStore.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class CrowdedStore(RuleBasedStateMachine):
    """A tiny store under many keys never admits any key above its limit."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(0.0)
        # key -> admitted (time, cost) pairs, for exact accounting.
        self.admitted: dict[str, list[tuple[float, int]]] = defaultdict(list)

    @initialize(
        policy=policies,
        keys=st.integers(min_value=3, max_value=12),
        max_keys=st.integers(min_value=1, max_value=3),
        slots=st.integers(min_value=1, max_value=4),
    )
    def setup(self, policy: Policy, keys: int, max_keys: int, slots: int) -> None:
        self.policy = policy
        self.keys = [f"key-{index}" for index in range(keys)]
        self.limiter = brace.RateLimiter(policy, max_keys=max_keys, clock=self.clock)
        # A sketch of a few slots, so that evicted keys collide and share slots.
        table = self.limiter._table
        assert table is not None
        table.slots = slots
        self.max_keys = max_keys

    @rule(data=st.data())
    def hit(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.keys))
        cost = data.draw(st.integers(min_value=1, max_value=limit_of(self.policy)))
        now = self.clock()
        if data.draw(st.booleans()):
            admitted = self.limiter.try_hit(key, cost).allowed
        else:  # the middleware's hit: a refusal is a Decision, an admission its fields
            found = local_hit(self.limiter)
            assert found is not None
            admitted = not isinstance(found[0](key, cost, now), Decision)
        if admitted:
            self.admitted[key].append((now, cost))
            self.check_key(key, now)

    @rule(dt=steps)
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    def check_key(self, key: str, now: float) -> None:
        history = self.admitted[key]
        policy = self.policy
        if isinstance(policy, GCRA):
            # A token bucket admits at most burst + (t - t0) / interval tokens in [t0, t].
            for start, _ in history:
                total = sum(cost for stamp, cost in history if stamp >= start)
                allowed = policy.burst + (now - start) / policy.interval
                assert total <= allowed + 1e-6, (key, history)
        elif isinstance(policy, SlidingWindowCounter):
            # The counter admits at most `limit` in each aligned window.
            index = math.floor(now / policy.window)
            total = sum(
                cost for stamp, cost in history if math.floor(stamp / policy.window) == index
            )
            assert total <= policy.limit, (key, history)
        else:
            # The exact log admits at most `limit` in any window of `window` seconds.
            total = sum(cost for stamp, cost in history if stamp > now - policy.window + 1e-6)
            assert total <= policy.limit, (key, history)

    @invariant()
    def bounded(self) -> None:
        if hasattr(self, "limiter"):
            keys = self.limiter.statistics().keys
            assert keys is not None
            assert keys <= self.max_keys


TestCrowdedStore = CrowdedStore.TestCase
TestCrowdedStore.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    "policy",
    [GCRA(1, 60.0, burst=2), SlidingWindowCounter(2, 60.0), SlidingLog(2, 60.0)],
    ids=["gcra", "counter", "log"],
)
def test_evicted_live_key_stays_limited(policy: Policy) -> None:
    """A key pushed out of a full store while live is refused on its return, as it should be."""
    clock = FakeClock(5.0)
    limiter = brace.RateLimiter(policy, max_keys=1, clock=clock)
    assert limiter.try_hit("a", 2).allowed
    assert not limiter.try_hit("a").allowed
    clock.advance(0.1)
    for other in ("b", "c", "d"):
        limiter.try_hit(other)  # allowed unless its sketch slot is "a"'s: harsher, not laxer
    statistics = limiter.statistics()
    assert statistics.keys == 1
    assert statistics.evictions >= 1
    assert not limiter.try_hit("a").allowed


def test_at_rest_keys_are_dropped_not_evicted() -> None:
    """Keys at rest are dropped as new keys arrive; the store stays at its low-water mark."""
    clock = FakeClock()
    limiter = brace.RateLimiter(GCRA(10, 1.0), max_keys=100, clock=clock)
    for index in range(1000):
        assert limiter.try_hit(f"user:{index}").allowed
        clock.advance(1.0)  # every earlier key is back at rest
    statistics = limiter.statistics()
    assert statistics.evictions == 0
    assert statistics.drops >= 1000 - 100 // 4 - 2
    assert statistics.keys is not None
    assert statistics.keys <= 100 // 4 + 2  # the low-water mark: a quarter of max_keys


def test_cost_zero_on_a_fresh_key_stores_nothing() -> None:
    """A zero-cost hit on an unknown key is answered without storing the key."""
    limiter = brace.RateLimiter(GCRA(1, 1.0), clock=FakeClock())
    assert limiter.try_hit("ghost", 0).allowed
    assert limiter.statistics().keys == 0


def test_store_validates_arguments() -> None:
    """max_keys must be an int >= 1, clock a callable, policy a core policy, key a str."""
    with pytest.raises(ValueError, match="max_keys must be an int >= 1"):
        brace.MemoryStore(0)
    with pytest.raises(TypeError, match="max_keys must be an int"):
        brace.MemoryStore(10.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock must be a zero-argument callable"):
        brace.MemoryStore(clock=1.0)  # type: ignore[arg-type]
    store = brace.MemoryStore()
    with pytest.raises(TypeError, match="policy must be"):
        store.hit_now("10/minute", "k", 1, 0.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be a str"):
        store.hit_now(GCRA(1), 42, 1, 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cost must be <= the limit 1"):
        store.hit_now(GCRA(1), "k", 2, 0.0)


def test_tables_are_per_policy_parameters() -> None:
    """Equal policies share a key's state in one store; different policies do not."""
    store = brace.MemoryStore(clock=FakeClock())
    first = brace.RateLimiter(GCRA(1, 60.0), store=store, clock=FakeClock())
    twin = brace.RateLimiter(GCRA(1, 60.0), store=store, clock=FakeClock())
    other = brace.RateLimiter(SlidingWindowCounter(1, 60.0), store=store, clock=FakeClock())
    assert first.try_hit("k").allowed
    assert not twin.try_hit("k").allowed
    assert other.try_hit("k").allowed
    statistics = store.statistics()
    assert (statistics.policies, statistics.keys) == (2, 2)
    assert (statistics.allowed, statistics.rejected) == (2, 1)
    assert len(store) == 2


async def test_async_protocol_methods() -> None:
    """MemoryStore's async hit/peek/reset read its own clock and implement RateLimitStore."""
    store = brace.MemoryStore(clock=anyio.current_time)
    assert isinstance(store, brace.RateLimitStore)
    policy = SlidingWindowCounter(2, 10.0)
    assert (await store.hit(policy, "k", 2)).allowed
    peeked = await store.peek(policy, "k", 1)
    assert not peeked.allowed
    assert not (await store.hit(policy, "k", 1)).allowed
    await store.reset(policy, "k")
    assert (await store.hit(policy, "k", 2)).allowed
    await anyio.sleep(25.0)
    assert (await store.peek(policy, "k", 2)).allowed
    await store.aclose()


@pytest.mark.parametrize(
    "policy",
    [GCRA(1, 60.0, burst=2), SlidingWindowCounter(2, 60.0), SlidingLog(2, 60.0)],
    ids=["gcra", "counter", "log"],
)
def test_reset_forgets_a_key(policy: Policy) -> None:
    """After reset a key is decided as a fresh one, and it is later dropped as at rest."""
    clock = FakeClock(3.0)
    store = brace.MemoryStore(max_keys=4)
    assert store.hit_now(policy, "k", 2, clock()).allowed
    assert not store.hit_now(policy, "k", 1, clock()).allowed
    store.reset_now(policy, "k", clock())
    store.reset_now(policy, "unknown", clock())
    assert store.peek_now(policy, "k", 2, clock()).allowed
    for other in ("a", "b", "c"):
        store.hit_now(policy, other, 1, clock())
    assert store.statistics().drops >= 1  # "k" was at rest: dropped, not evicted
    assert store.statistics().evictions == 0


def test_log_spill_is_conservative() -> None:
    """An evicted log key restarts as one entry of its total at its latest time."""
    clock = FakeClock(0.0)
    policy = SlidingLog(3, 10.0)
    limiter = brace.RateLimiter(policy, max_keys=1, clock=clock)
    assert limiter.try_hit("a").allowed
    clock.advance(4.0)
    assert limiter.try_hit("a").allowed  # a: total 2, latest entry at t=4
    assert limiter.try_hit("b").allowed  # evicts a
    assert limiter.try_hit("a").allowed  # 2 + 1 <= 3
    assert not limiter.try_hit("a").allowed
    assert limiter.try_hit("c").allowed  # evicts a again: total 3 at t=4
    clock.set(13.9)
    assert not limiter.try_hit("a").allowed  # real log: t=0 expired, but the spill is older
    clock.set(14.0)
    assert limiter.try_hit("a", 3).allowed


def test_merge_counters_is_elementwise_max_aligned() -> None:
    """Merging counter states keeps the largest counts once aligned on the later window."""
    assert merge_counters((5, 1, 4), (5, 3, 2)) == (5, 3, 4)
    assert merge_counters((5, 1, 4), (6, 0, 2)) == (6, 0, 2)
    assert merge_counters((6, 0, 0), (5, 3, 2)) == (6, 0, 3)
    assert merge_counters((9, 1, 1), (5, 3, 2)) == (9, 1, 1)
    assert merge_counters((5, 3, 2), (9, 1, 1)) == (9, 1, 1)


def test_memory_store_statistics_is_frozen() -> None:
    """statistics() is a frozen, slotted snapshot."""
    statistics = brace.MemoryStore(max_keys=7).statistics()
    assert statistics == brace.MemoryStoreStatistics(0, 7, 0, 0, 0, 0, 0)
    assert not hasattr(statistics, "__dict__")
    with pytest.raises(AttributeError):
        statistics.keys = 1  # type: ignore[misc]
    assert "max_keys=7" in repr(brace.MemoryStore(max_keys=7))


awkward_windows = st.sampled_from([0.1, 0.3, 1 / 3, 0.7, 1.1, 7.7, 1e-3, 86_400.0 / 7])


@st.composite
def boundary_times(draw: st.DrawFn, window: float) -> list[float]:
    """Times at, just before and just after window boundaries, mostly rising, sometimes not."""
    times: list[float] = []
    index = draw(st.integers(min_value=0, max_value=10**6))
    for _ in range(draw(st.integers(min_value=1, max_value=30))):
        index += draw(st.sampled_from([0, 0, 1, 1, 2, 5, -1]))
        edge = index * window
        times.append(
            draw(
                st.sampled_from(
                    [
                        edge,
                        math.nextafter(edge, -math.inf),
                        math.nextafter(edge, math.inf),
                        edge + window / 2,
                        edge + window * 0.999,
                    ]
                )
            )
        )
    return times


@settings(max_examples=300, deadline=None)
@given(data=st.data(), window=awkward_windows, limit=st.sampled_from([1, 2, 7]))
def test_counter_fast_path_agrees_with_the_core_at_window_edges(
    data: st.DataObject, window: float, limit: int
) -> None:
    # The store remembers the last call's window instead of dividing each time: at the
    # float boundaries of awkward windows, and with a clock that steps back, it must still
    # find the window the core finds, decision for decision. The reference keeps states
    # exactly as a store with room does (a fresh key is stored only if left live), since
    # with a clock stepping back a remembered at-rest state and a fresh key can differ.
    policy = SlidingWindowCounter(limit=limit, window=window)
    store = brace.MemoryStore(max_keys=16)
    states: dict[str, CounterState] = {}
    for now in data.draw(boundary_times(window)):
        key = data.draw(st.sampled_from(["a", "b"]))
        cost = data.draw(st.integers(min_value=0, max_value=limit))
        expected, state = policy.decide(states.get(key), now, cost)
        if expected.allowed and (key in states or state[1] or state[2]):
            states[key] = state
        if data.draw(st.booleans()):
            assert store.hit_now(policy, key, cost, now) == expected
        else:  # the fields hit keeps its own window cache: driven across the edges too
            answer = store.table_for(policy).hit_fields(key, cost, now)
            fields = (expected.remaining, expected.reset_after)
            assert answer == (fields if expected.allowed else expected)


@given(window=awkward_windows, index=st.integers(min_value=-(10**9), max_value=10**12))
def test_window_end_stays_in_its_window(window: float, index: int) -> None:
    end = _window_end(index, window)
    assert math.floor(end / window) <= index  # never reaches into the next window
    start = index * window
    if math.floor(start / window) == index:  # the window has floats: end is one of them
        assert math.floor(end / window) == index
        assert end >= start


@pytest.mark.parametrize(
    "policy", [GCRA(1.0, 3600.0, burst=5), SlidingWindowCounter(5, 3600.0)], ids=repr
)
def test_key_states_cost_the_garbage_collector_nothing(policy: Policy) -> None:
    # A full collection visits every tracked container: 100,000 keys held as lists would
    # add about 6 ms to each one. GCRA states are floats and counter states tuples of
    # ints, which the collector stops tracking, so held keys add nothing to its pauses.
    limiter = brace.RateLimiter(policy, max_keys=1000, clock=FakeClock(0.0))
    for index in range(500):
        assert limiter.try_hit(f"k{index}").allowed
    gc.collect()
    table = limiter._table
    assert table is not None
    states = [state for shard in table.shards for state in shard.values()]
    assert len(states) == 500
    assert not any(gc.is_tracked(state) for state in states)


def test_counter_fast_path_uses_the_window_slack_not_gcras() -> None:
    # Found by the edge test above: the store's counter path once used GCRA's slack
    # (1e-6) instead of the window core's (1e-9), and said remaining=5 where the core
    # says 4 (a weight of 1.2e-9 just after a window edge).
    policy = SlidingWindowCounter(limit=7, window=1 / 3)
    store = brace.MemoryStore(max_keys=16)
    state: CounterState | None = None
    for now, cost in ((333339.0, 5), (333339.66666666657, 2)):
        expected, state = policy.decide(state, now, cost)
        assert store.hit_now(policy, "k", cost, now) == expected
    assert expected.remaining == 4
