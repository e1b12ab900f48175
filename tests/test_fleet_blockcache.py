"""BlockCache: a refused key is refused locally until its retry_after, never wrongly.

Against a real redis-server, hits on a blocked key send no command (counted by the
server's ``INFO commandstats``). Against a memory store with a fake clock, the cache
admits exactly what the bare store admits, over random sequences of hits.
"""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import brace
from brace import MemoryStore, RateLimiter
from brace._core.gcra import GCRA
from brace._core.window import SlidingLog, SlidingWindowCounter
from brace._store import Policy
from brace.redis import BlockCache, RedisStore
from brace.testing import FakeClock
from redis_server import COREDIS_LEAK, open_client, read_bulk, run

pytestmark = [
    pytest.mark.filterwarnings(COREDIS_LEAK),
    pytest.mark.usefixtures("collect_coredis_garbage"),
]

pytest_plugins = ("redis_fixtures",)


def _script_calls(port: int) -> int:
    """EVALSHA and EVAL calls the server has answered since its last CONFIG RESETSTAT."""
    info = read_bulk(port, "INFO", "commandstats").decode()
    calls = 0
    for line in info.splitlines():
        if line.startswith(("cmdstat_evalsha:", "cmdstat_eval:")):
            calls += int(line.split("calls=")[1].split(",")[0])
    return calls


@pytest.mark.parametrize(
    ("library", "backend"), [("default", "asyncio"), ("coredis", "trio"), ("redis-py", "uvloop")]
)
def test_hits_on_a_blocked_key_cost_no_round_trip(
    redis_port: int, library: str, backend: str
) -> None:
    """200 hits on a key over its limit: no command reaches Redis until its retry_after."""

    async def main() -> None:
        async with open_client(library, redis_port) as client:
            store = RedisStore(client, timeout=2.0)
            cache = BlockCache(store)
            limiter = RateLimiter(brace.TokenBucket(rate=5, per=1.0, burst=5), store=cache)
            for _ in range(5):
                assert (await limiter.hit("scraper")).allowed
            refused = await limiter.hit("scraper")
            assert not refused.allowed
            before = _script_calls(redis_port)
            round_trips = store.statistics().round_trips
            for _ in range(200):
                decision = await limiter.hit("scraper")
                assert not decision.allowed
                assert 0 < decision.retry_after <= refused.retry_after
            assert _script_calls(redis_port) == before
            assert store.statistics().round_trips == round_trips
            assert cache.statistics().local_refusals == 200
            # another key still goes to Redis
            assert (await limiter.hit("someone-else")).allowed
            assert _script_calls(redis_port) == before + 1
            # after retry_after the key is asked again, and admitted
            await anyio.sleep(refused.retry_after + 0.01)
            assert (await limiter.hit("scraper")).allowed
            assert _script_calls(redis_port) == before + 2
            assert cache.statistics().blocked == 0

    run(backend, main)


POLICIES: list[Policy] = [
    GCRA(3.0, 1.0, burst=3),
    SlidingWindowCounter(4, 1.0),
    SlidingLog(4, 1.0),
]


@settings(max_examples=200, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    steps=st.lists(
        st.tuples(
            st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=0.6)),
            st.sampled_from(["a", "b"]),
            st.integers(min_value=1, max_value=3),
            st.sampled_from(["hit", "hit", "peek"]),
        ),
        min_size=1,
        max_size=50,
    ),
    max_keys=st.integers(min_value=1, max_value=3),
)
def test_the_cache_admits_exactly_what_the_store_admits(
    policy: Policy, steps: list[tuple[float, str, int, str]], max_keys: int
) -> None:
    """Same hits, same times: a cached store and a bare one admit the same requests."""

    async def main() -> None:
        clock = FakeClock()
        bare = MemoryStore(clock=clock)
        cache = BlockCache(MemoryStore(clock=clock), max_keys=max_keys, clock=clock)
        for dt, key, cost, mode in steps:
            clock.advance(dt)
            if mode == "hit":
                expected, got = (
                    await bare.hit(policy, key, cost),
                    await cache.hit(policy, key, cost),
                )
            else:
                expected = await bare.peek(policy, key, cost)
                got = await cache.peek(policy, key, cost)
            assert got.allowed == expected.allowed
            if not got.allowed:
                # a local refusal's wait is never longer than the store's own answer
                assert 0 < got.retry_after <= expected.retry_after + 1e-9
            else:
                assert got == expected
        assert cache.statistics().blocked <= max_keys

    anyio.run(main)


async def test_reset_forgets_the_block() -> None:
    """reset clears the local entry and the store's state: the key is admitted at once."""
    clock = FakeClock()
    cache = BlockCache(MemoryStore(clock=clock), clock=clock)
    policy = GCRA(1.0, 10.0, burst=1)
    assert (await cache.hit(policy, "k")).allowed
    assert not (await cache.hit(policy, "k")).allowed
    assert not (await cache.hit(policy, "k")).allowed
    assert cache.statistics().local_refusals == 1
    await cache.reset(policy, "k")
    assert (await cache.hit(policy, "k")).allowed
    await cache.aclose()


def test_bad_configuration_is_refused_at_construction() -> None:
    """A store that is not one, or a bad bound, raises naming it."""
    with pytest.raises(TypeError, match="store"):
        BlockCache(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_keys"):
        BlockCache(MemoryStore(), max_keys=0)
