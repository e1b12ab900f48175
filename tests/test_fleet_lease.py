"""LeasedStore: exact at lease size 1, within its over-admission bound always, fewer round trips.

Pure tests run leased stores over a shared `MemoryStore` with a fake clock; the Redis
tests run against the session's redis-server in real time.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brace import MemoryStore
from brace._core.gcra import EPSILON as GCRA_EPSILON
from brace._core.gcra import GCRA
from brace._core.quota import give_back, next_lease_size
from brace._core.window import SlidingLog, SlidingWindowCounter
from brace._store import Policy
from brace.redis import LeasedStore, RedisStore
from brace.redis._lease import GIVE_BACK
from brace.testing import FakeClock
from redis_server import COREDIS_LEAK, RedisCluster, RedisServer, run

pytestmark = [
    pytest.mark.filterwarnings(COREDIS_LEAK),
    pytest.mark.usefixtures("collect_coredis_garbage"),
]

pytest_plugins = ("redis_fixtures",)

POLICIES: list[Policy] = [
    GCRA(3.0, 1.0, burst=3),
    GCRA(50.0, 1.0, burst=10),
    SlidingWindowCounter(4, 1.0),
    SlidingLog(6, 1.0),
]
STEPS = st.lists(
    st.tuples(
        st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=0.4)),
        st.sampled_from(["a", "b"]),
        st.integers(min_value=1, max_value=3),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(policy=st.sampled_from(POLICIES), steps=STEPS)
def test_lease_size_one_decides_exactly_as_the_store(
    policy: Policy, steps: list[tuple[float, str, int]]
) -> None:
    """max_lease=1: every decision equals the bare store's, field for field."""

    async def main() -> None:
        clock = FakeClock()
        bare = MemoryStore(clock=clock)
        leased = LeasedStore(MemoryStore(clock=clock), max_lease=1, clock=clock)
        for dt, key, cost in steps:
            clock.advance(dt)
            assert await leased.hit(policy, key, cost) == await bare.hit(policy, key, cost)
            assert await leased.peek(policy, key, 1) == await bare.peek(policy, key, 1)
        assert leased.statistics().local == 0

    anyio.run(main)


@settings(max_examples=200, deadline=None)
@given(
    policy=st.sampled_from([POLICIES[0], POLICIES[1], POLICIES[3]]),
    processes=st.integers(min_value=1, max_value=4),
    max_lease=st.integers(min_value=1, max_value=8),
    lease_time=st.sampled_from([0.1, 0.5, 2.0]),
    steps=st.lists(
        st.tuples(
            st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=0.2)),
            st.integers(min_value=0, max_value=3),
            st.integers(min_value=1, max_value=2),
        ),
        min_size=1,
        max_size=120,
    ),
)
def test_admissions_stay_within_the_stated_bound(
    policy: Policy,
    processes: int,
    max_lease: int,
    lease_time: float,
    steps: list[tuple[float, int, int]],
) -> None:
    """P leased stores over one shared store admit at most the exact bound + P * max_lease."""

    async def main() -> list[tuple[float, int]]:
        clock = FakeClock()
        shared = MemoryStore(clock=clock)
        stores = [
            LeasedStore(shared, max_lease=max_lease, lease_time=lease_time, clock=clock)
            for _ in range(processes)
        ]
        admitted: list[tuple[float, int]] = []
        for dt, which, cost in steps:
            clock.advance(dt)
            if (await stores[which % processes].hit(policy, "k", cost)).allowed:
                admitted.append((clock(), cost))
        for store in stores:
            assert store.statistics().keys <= 1
        return admitted

    admitted = anyio.run(main)
    slack = processes * max_lease
    for i, (start, _) in enumerate(admitted):
        total = 0
        for end, cost in admitted[i:]:
            total += cost
            if isinstance(policy, GCRA):
                exact = policy.burst + (end - start + GCRA_EPSILON) / policy.interval
            else:
                assert isinstance(policy, SlidingLog)
                if end - start >= policy.window:
                    break
                exact = policy.limit
            assert total <= exact + slack + 1e-9, (start, end, total)


def test_a_lease_grows_with_the_rate_and_shrinks_when_it_lapses() -> None:
    """Spent fast: doubled up to max_lease; lapsed half unspent: halved, never below 1."""

    def grow(size: int, granted: int) -> int:
        return next_lease_size(size, granted=granted, left=0, age=0.1, lease_time=1.0, max_lease=16)

    assert grow(1, 1) == 2
    assert grow(8, 8) == 16
    assert grow(16, 16) == 16
    assert next_lease_size(16, granted=16, left=8, age=1.0, lease_time=1.0, max_lease=16) == 8
    assert next_lease_size(1, granted=1, left=1, age=1.0, lease_time=1.0, max_lease=16) == 1
    assert next_lease_size(8, granted=8, left=1, age=0.9, lease_time=1.0, max_lease=16) == 8


async def test_sizes_adapt_in_a_store() -> None:
    """A busy key's leases grow to max_lease; after a quiet spell, lapsed ones shrink."""
    clock = FakeClock()
    policy = GCRA(1000.0, 1.0, burst=1000)
    leased = LeasedStore(MemoryStore(clock=clock), max_lease=32, lease_time=1.0, clock=clock)
    for _ in range(200):
        assert (await leased.hit(policy, "busy")).allowed
        clock.advance(0.001)
    statistics = leased.statistics()
    assert statistics.local > 150
    assert statistics.forwarded < 15
    lease = leased._leases[policy, "busy"]
    assert lease.size == 32
    clock.advance(5.0)  # the lease lapses with tokens left
    await leased.hit(policy, "busy")
    assert leased._leases[policy, "busy"].size < 32


@settings(max_examples=100, deadline=None)
@given(
    tat_ahead=st.floats(min_value=-5.0, max_value=5.0),
    tokens=st.integers(min_value=1, max_value=50),
    interval=st.sampled_from([0.001, 0.1, 1.0 / 3.0, 2.5]),
)
def test_the_give_back_script_answers_as_the_core(
    sync_client: Any, tat_ahead: float, tokens: int, interval: float
) -> None:
    """GIVE_BACK moves a stored tat exactly as `give_back` does (or clears it at rest)."""
    now = 1_000_000.0
    tat = now + tat_ahead
    sync_client.set("gb", repr(tat))
    reply = sync_client.eval(GIVE_BACK.text, 1, "gb", str(tokens), repr(interval), repr(now))
    expected = give_back(tat, now, tokens, interval)
    if expected == -math.inf:
        assert reply == b""
        assert sync_client.get("gb") is None
    else:
        assert float(reply) == expected
        assert float(sync_client.get("gb")) == expected


@pytest.fixture(scope="module")
def sync_client(redis_server: RedisServer) -> Any:
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    yield client
    client.close()


@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_on_redis_most_hits_cost_no_round_trip_and_unspent_tokens_come_back(
    redis_port: int, backend: str
) -> None:
    """2,000 hits of one task: a few dozen round trips; aclose gives the rest back."""
    policy = GCRA(100_000.0, 1.0, burst=100_000)

    async def main() -> tuple[int, int, Any]:
        url = f"redis://127.0.0.1:{redis_port}/0"
        async with RedisStore.from_url(url, timeout=2.0) as store:
            leased = LeasedStore(store, max_lease=64, lease_time=5.0)
            for _ in range(2000):
                assert await leased.hit(policy, "user")
            trips = store.statistics().round_trips
            statistics = leased.statistics()
            await leased.give_back()
            after = await store.peek(policy, "user")
            return trips, after.remaining, (statistics, leased.statistics())

    trips, remaining, (during, after) = run(backend, main)
    assert during.local + during.forwarded == 2000
    assert trips < 100
    assert after.returned_tokens == during.leased_tokens - 2000
    assert after.lapsed_tokens == 0
    # every token not spent is back in the bucket (to within what refilled meanwhile)
    assert remaining >= 100_000 - 2000 - 1


def test_on_redis_the_bound_holds_for_three_processes(redis_port: int) -> None:
    """3 leased stores x 3 tasks hammering a tight bucket for 1.5 s: within the bound."""
    policy = GCRA(200.0, 1.0, burst=20)
    max_lease, processes = 8, 3

    async def main() -> tuple[list[float], float]:
        url = f"redis://127.0.0.1:{redis_port}/0"
        async with RedisStore.from_url(url, timeout=2.0) as store:
            stores = [LeasedStore(store, max_lease=max_lease) for _ in range(processes)]
            admitted: list[float] = []
            started = anyio.current_time()
            stop = started + 1.5

            async def hammer(leased: LeasedStore) -> None:
                while anyio.current_time() < stop:
                    if (await leased.hit(policy, "tight")).allowed:
                        admitted.append(anyio.current_time())
                    await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as group:
                for leased in stores:
                    for _ in range(3):
                        group.start_soon(hammer, leased)
            return admitted, anyio.current_time() - started

    admitted, elapsed = run("asyncio", main)
    bound = policy.burst + elapsed * policy.rate + processes * max_lease
    print(f"{len(admitted)} admitted in {elapsed:.2f} s; bound {bound:.0f}")
    assert len(admitted) <= bound
    assert len(admitted) >= 0.7 * (policy.burst + 1.5 * policy.rate)  # and it did admit


def test_on_a_cluster_leases_work_and_come_back(redis_cluster: RedisCluster) -> None:
    """On a Cluster the lease and the give-back reach the key's node."""
    policy = GCRA(10_000.0, 1.0, burst=10_000)

    async def main() -> tuple[int, int]:
        url = f"redis://127.0.0.1:{redis_cluster.ports[0]}"
        async with RedisStore.from_url(url, cluster=True, timeout=2.0) as store:
            leased = LeasedStore(store, max_lease=32, lease_time=5.0)
            for index in range(300):
                assert await leased.hit(policy, f"user:{index % 3}")
            await leased.aclose()
            left = [await store.peek(policy, f"user:{index}") for index in range(3)]
            return sum(d.remaining for d in left), leased.statistics().lapsed_tokens

    remaining, lapsed = run("asyncio", main)
    assert lapsed == 0
    assert remaining >= 3 * 10_000 - 300 - 3


def test_bad_configuration_is_refused_at_construction() -> None:
    """Each bad argument raises naming it."""
    with pytest.raises(TypeError, match="store"):
        LeasedStore(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_lease"):
        LeasedStore(MemoryStore(), max_lease=0)
    with pytest.raises(ValueError, match="lease_time"):
        LeasedStore(MemoryStore(), lease_time=0)
    with pytest.raises(ValueError, match="max_keys"):
        LeasedStore(MemoryStore(), max_keys=0)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_cancelled_hits_leave_no_key_stuck_and_admit_no_more(redis_port: int, backend: str) -> None:
    """Hits cancelled at random points (leaders taking a lease included): later hits still
    run, and the admissions never exceed what the bucket granted."""
    import random

    policy = GCRA(10.0, 60.0, burst=300)  # 300 tokens, next to no refill in the test

    async def main() -> tuple[int, int]:
        url = f"redis://127.0.0.1:{redis_port}/0"
        async with RedisStore.from_url(url, timeout=2.0) as store:
            leased = LeasedStore(store, max_lease=16)
            admitted = 0

            async def hit() -> None:
                nonlocal admitted
                with anyio.move_on_after(random.uniform(0.0, 0.02)):
                    if (await leased.hit(policy, "k")).allowed:
                        admitted += 1

            for _ in range(10):
                async with anyio.create_task_group() as group:
                    for _ in range(30):
                        group.start_soon(hit)
            with anyio.fail_after(5):  # no lease left pending forever
                assert (await leased.hit(policy, "k")) is not None
            left = (await store.peek(policy, "k")).remaining
            return admitted, left

    admitted, left = run(backend, main)
    assert admitted > 0
    assert admitted + left <= 300 + 1  # what was admitted came out of the bucket
