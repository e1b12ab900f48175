"""RedisStore against a real redis-server: decisions, keys, expiry, scripts, validation."""

from __future__ import annotations

import math
import random
import time
from typing import Any

import anyio
import pytest

import brace
from brace._core.gcra import GCRA
from brace._core.window import SlidingLog, SlidingWindowCounter
from brace.redis import RedisStore, RedisStoreStatistics
from brace.redis._clients import RedisPyClient
from brace.redis._scripts import BATCH, COUNTER, GCRA_SCRIPT, LOG
from redis_server import COREDIS_LEAK, RedisServer, command, open_client, run

POLICIES = [
    pytest.param(GCRA(5, 60.0, burst=5), id="gcra"),
    pytest.param(SlidingWindowCounter(5, 60.0), id="counter"),
    pytest.param(SlidingLog(5, 60.0), id="log"),
]

pytest_plugins = ("redis_fixtures",)
pytestmark = [
    pytest.mark.filterwarnings(COREDIS_LEAK),
    pytest.mark.usefixtures("collect_coredis_garbage"),
]


def test_limiter_over_redis_admits_the_limit_then_refuses(
    client_kind: tuple[str, str], redis_port: int
) -> None:
    """A RateLimiter over RedisStore admits exactly the limit, then raises RateLimited."""
    library, backend = client_kind

    async def main() -> None:
        async with open_client(library, redis_port) as client:
            store = RedisStore(client)
            limiter = brace.RateLimiter(brace.SlidingWindow(limit=3, window=60.0), store=store)
            decisions = [await limiter.hit("user:1") for _ in range(4)]
            assert [d.allowed for d in decisions] == [True, True, True, False]
            assert [d.remaining for d in decisions] == [2, 1, 0, 0]
            assert decisions[-1].retry_after > 0
            with pytest.raises(brace.RateLimited) as caught:
                async with limiter.limit("user:1"):
                    pass
            assert caught.value.retry_after is not None
            assert caught.value.retry_after > 0
            assert (await limiter.hit("user:2")).allowed  # keys are apart
            stats = store.statistics()
            assert stats.decisions == 6
            assert stats.errors == stats.fallbacks == 0
            assert stats.script_loads == 1  # loaded on the first NOSCRIPT
            assert stats.latency > 0
            await store.aclose()

    run(backend, main)


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_admits_its_limit_and_peek_consumes_nothing(
    policy: GCRA | SlidingWindowCounter | SlidingLog, redis_port: int, asyncio_loop: str
) -> None:
    """Every policy admits 5 then refuses; peek answers without consuming; reset forgets."""

    async def main() -> None:
        async with open_client("redis-py", redis_port) as client:
            store = RedisStore(client)
            assert (await store.peek(policy, "k", 5)).allowed
            assert (await store.peek(policy, "k", 5)).allowed  # nothing consumed
            allowed = [(await store.hit(policy, "k", 1)).allowed for _ in range(6)]
            assert allowed == [True] * 5 + [False]
            refused = await store.peek(policy, "k", 1)
            assert not refused.allowed
            assert refused.retry_after > 0
            assert refused.limit == 5
            await store.reset(policy, "k")
            assert (await store.hit(policy, "k", 5)).allowed

    run(asyncio_loop, main)


@pytest.mark.parametrize("policy", POLICIES)
def test_keys_carry_the_ttl_of_reset_after(
    policy: GCRA | SlidingWindowCounter | SlidingLog,
    redis_port: int,
    redis_server: RedisServer,
    asyncio_loop: str,
) -> None:
    """After a hit the one key written expires in reset_after (ms, rounded up)."""

    async def main() -> None:
        async with open_client("redis-py", redis_port) as client:
            store = RedisStore(client)
            decision = await store.hit(policy, "ttl", 2)
            assert redis_server.call("DBSIZE") == b":1\r\n"  # one key per decision
            pttl = int(redis_server.call("PTTL", store.key(policy, "ttl"))[1:])
            assert 0 < pttl <= decision.reset_after * 1000 + 1
            assert pttl >= decision.reset_after * 1000 - 200  # set just now

    run(asyncio_loop, main)


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(GCRA(50, 1.0, burst=1), id="gcra"),
        pytest.param(SlidingWindowCounter(1, 0.02), id="counter"),
        pytest.param(SlidingLog(1, 0.02), id="log"),
    ],
)
def test_idle_keys_vanish(
    policy: GCRA | SlidingWindowCounter | SlidingLog,
    redis_port: int,
    redis_server: RedisServer,
    asyncio_loop: str,
) -> None:
    """A key left alone for longer than its reset_after is gone from Redis."""

    async def main() -> None:
        async with open_client("redis-py", redis_port) as client:
            store = RedisStore(client)
            decision = await store.hit(policy, "idle")
            assert decision.allowed
            assert redis_server.call("EXISTS", store.key(policy, "idle")) == b":1\r\n"
            await anyio.sleep(decision.reset_after + 0.05)
            assert redis_server.call("EXISTS", store.key(policy, "idle")) == b":0\r\n"
            assert (await store.hit(policy, "idle")).allowed

    run(asyncio_loop, main)


def test_key_layout_and_user_keys_are_data(
    redis_port: int, redis_server: RedisServer, asyncio_loop: str
) -> None:
    """Keys read prefix:policy:key; a key full of Lua and braces is stored verbatim."""
    policy = SlidingWindowCounter(2, 60.0)
    nasty = "') redis.call('FLUSHALL') --{x}\n\x00é"

    async def main() -> None:
        async with open_client("redis-py", redis_port) as client:
            store = RedisStore(client, prefix="app")
            assert store.key(policy, "u") == "app:counter/2/60.0:u"
            assert store.key(GCRA(1.5, 2.0, burst=3), "u") == "app:gcra/1.5/2.0/3:u"
            await store.hit(SlidingWindowCounter(9, 1.0), "other")
            assert (await store.hit(policy, nasty)).allowed
            assert (await store.hit(policy, nasty)).allowed
            assert not (await store.hit(policy, nasty)).allowed
            assert redis_server.call("DBSIZE") == b":2\r\n"  # nothing flushed
            exists = await client.exists(store.key(policy, nasty))
            assert exists == 1

    run(asyncio_loop, main)


def test_stores_sharing_a_prefix_share_counts(redis_port: int, asyncio_loop: str) -> None:
    """Two stores on two clients (redis-py and coredis) count one key together."""
    policy = GCRA(3, 60.0, burst=3)

    async def main() -> None:
        async with (
            open_client("redis-py", redis_port) as one,
            open_client("coredis", redis_port) as two,
        ):
            first, second = RedisStore(one), RedisStore(two)
            results = [
                (await store.hit(policy, "shared")).allowed
                for store in (first, second, first, second)
            ]
            assert results == [True, True, True, False]
            assert (await RedisStore(one, prefix="other").hit(policy, "shared")).allowed

    run(asyncio_loop, main)


def test_script_flushed_is_reloaded(client_kind: tuple[str, str], redis_port: int) -> None:
    """After SCRIPT FLUSH the next decision reloads the script and still answers."""
    library, backend = client_kind
    policy = GCRA(10, 1.0)

    async def main() -> None:
        async with open_client(library, redis_port) as client:
            store = RedisStore(client)
            assert (await store.hit(policy, "s")).allowed
            assert command(redis_port, "SCRIPT", "FLUSH").startswith(b"+OK")
            assert (await store.hit(policy, "s")).allowed
            stats = store.statistics()
            assert stats.script_loads == 2
            assert stats.errors == 0
            assert stats.decisions == 2

    run(backend, main)


def test_decisions_use_the_server_clock(redis_port: int, asyncio_loop: str) -> None:
    """Without an explicit time the script decides at the server's TIME."""
    policy = SlidingWindowCounter(5, 1.0)

    async def main() -> None:
        async with open_client("redis-py", redis_port) as client:
            store = RedisStore(client)
            before = time.time()
            _, now = await store._decide_at(policy, "clock", 1, None)
            after = time.time()
            assert before - 0.01 <= now <= after + 0.01

    run(asyncio_loop, main)


def test_decode_responses_clients_work(redis_port: int, asyncio_loop: str) -> None:
    """A client answering str instead of bytes gives the same decisions."""

    async def main() -> None:
        async with open_client("redis-py", redis_port, decode_responses=True) as client:
            store = RedisStore(client)
            policy = SlidingLog(1, 60.0)
            assert (await store.hit(policy, "d")).allowed
            assert not (await store.hit(policy, "d")).allowed

    run(asyncio_loop, main)


def test_scripts_touch_one_key_and_differ() -> None:
    """Each script reads KEYS[1] only (cluster safe), has its own SHA1, and the batch
    script runs each decision on its own key."""
    for script in (GCRA_SCRIPT, COUNTER, LOG):
        assert "KEYS[2]" not in script.text
        assert len(script.sha) == 40
    assert len({GCRA_SCRIPT.sha, COUNTER.sha, LOG.sha}) == 3
    # The batch runs the three bodies as they are, each given one key of the batch.
    for script in (GCRA_SCRIPT, COUNTER, LOG):
        assert script.text in BATCH.text
    assert BATCH.text.count("KEYS[i]") == 1
    assert "KEYS[2]" not in BATCH.text


def test_only_cluster_clients_split_batches_by_slot() -> None:
    """Plain clients send a batch as one call; cluster clients split it by hash slot."""
    import coredis
    import redis.asyncio

    def cluster(client: object) -> bool:
        adapter = RedisStore(client).client
        return bool(getattr(adapter, "cluster", None))

    assert not cluster(redis.asyncio.Redis())
    assert not cluster(coredis.Redis())
    assert cluster(redis.asyncio.RedisCluster(host="127.0.0.1", port=7000))
    assert cluster(coredis.RedisCluster(host="127.0.0.1", port=7000))


class _Fake:
    """A ScriptClient that never answers (only construction is tested with it)."""

    def evalsha(self, sha: str, keys: Any, args: Any) -> Any:
        raise AssertionError("not called")

    def script_load(self, script: str) -> Any:
        raise AssertionError("not called")


def test_bad_configuration_raises_at_construction() -> None:
    """Wrong types raise TypeError, out-of-range values ValueError, naming the parameter."""
    import redis

    fake = _Fake()
    assert RedisStore(fake).client is fake  # a ScriptClient is used as it is, not wrapped
    with pytest.raises(TypeError, match="client"):
        RedisStore(object())
    with pytest.raises(TypeError, match="asyncio"):
        RedisStore(redis.Redis())
    with pytest.raises(ValueError, match="on_error"):
        RedisStore(fake, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nodes"):
        RedisStore(fake, nodes=0)
    with pytest.raises(TypeError, match="nodes"):
        RedisStore(fake, nodes=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        RedisStore(fake, timeout=0)
    with pytest.raises(ValueError, match="recovery_time"):
        RedisStore(fake, recovery_time=-1)
    with pytest.raises(ValueError, match="fail_closed_retry_after"):
        RedisStore(fake, fail_closed_retry_after=float("inf"))
    with pytest.raises(TypeError, match="prefix"):
        RedisStore(fake, prefix=b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fallback"):
        RedisStore(fake, fallback=brace.MemoryStore())
    with pytest.raises(TypeError, match="fallback"):
        RedisStore(fake, on_error="fallback", fallback=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock"):
        RedisStore(fake, clock=1.0)  # type: ignore[arg-type]
    store = RedisStore(fake, timeout=None, recovery_time=0)
    assert isinstance(store, brace.RateLimitStore)
    assert isinstance(store.statistics(), RedisStoreStatistics)
    assert "RedisStore" in repr(store)


def test_bad_keys_and_costs_raise_before_any_call() -> None:
    """A non-str key is a TypeError and an out-of-range cost a ValueError, without I/O."""
    store = RedisStore(_Fake())
    policy = SlidingWindowCounter(3, 1.0)

    async def main() -> None:
        with pytest.raises(TypeError, match="key"):
            await store.hit(policy, 42, 1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="cost"):
            await store.hit(policy, "k", 4)
        with pytest.raises(ValueError, match="cost"):
            await store.peek(policy, "k", -1)

    run("asyncio", main)


def test_concurrent_decisions_share_round_trips(
    client_kind: tuple[str, str], redis_port: int
) -> None:
    """100 concurrent tasks on one key: exactly the limit admitted, in fewer round trips."""
    library, backend = client_kind
    policy = SlidingWindowCounter(150, 60.0)

    async def main() -> None:
        async with open_client(library, redis_port) as client:
            store = RedisStore(client)
            decisions: list[brace.Decision] = []

            async def task() -> None:
                decisions.extend([await store.hit(policy, "hot") for _ in range(3)])

            async with anyio.create_task_group() as group:
                for _ in range(100):
                    group.start_soon(task)
            assert sum(d.allowed for d in decisions) == 150
            remaining = sorted(d.remaining for d in decisions if d.allowed)
            assert remaining == list(range(150))  # each admission saw its own count
            stats = store.statistics()
            assert stats.decisions == 300
            assert stats.round_trips < 300 / 4  # coalesced into pipelines
            assert store._queue == []
            assert not store._in_flight

            plain = RedisStore(client, coalesce=False, prefix="plain")
            async with anyio.create_task_group() as group:
                for _ in range(20):
                    group.start_soon(plain.hit, policy, "hot")
            assert plain.statistics().round_trips == 20

    run(backend, main)


def test_cancelled_callers_never_stall_or_double_count(
    client_kind: tuple[str, str], redis_port: int
) -> None:
    """Tasks cancelled at random moments while coalesced: the rest get answers, books balance."""
    library, backend = client_kind
    policy = SlidingWindowCounter(100_000, 600.0)
    rng = random.Random(7)

    async def main() -> None:
        async with open_client(library, redis_port) as client:
            store = RedisStore(client, timeout=2.0)
            # Connected, and the time of a call measured: the tasks below are cancelled
            # at random moments within about three calls (the machine may be slow).
            started = time.monotonic()
            for _ in range(5):
                await store.hit(policy, "warm-up")
            spread = max(0.004, 3 * (time.monotonic() - started) / 5)
            answered = 0
            cancelled = 0

            async def task(delay: float) -> None:
                nonlocal answered, cancelled
                with anyio.move_on_after(delay) as scope:
                    for _ in range(5):
                        decision = await store.hit(policy, "books")
                        assert decision.allowed
                        answered += 1
                if scope.cancelled_caught:
                    cancelled += 1

            with anyio.fail_after(20):
                for _ in range(10):
                    async with anyio.create_task_group() as group:
                        for index in range(50):
                            # every fifth task is never cancelled, so that some answers
                            # come however slow the machine is
                            delay = math.inf if index % 5 == 0 else rng.uniform(0.0, spread)
                            group.start_soon(task, delay)
            assert cancelled > 0
            assert answered > 0
            assert store._queue == []
            assert not store._in_flight
            stats = store.statistics()
            assert stats.errors == stats.timeouts == stats.fallbacks == 0
            # Redis counted every answered hit, and at most one more per cancelled task.
            key = store.key(policy, "books")
            raw = command(redis_port, "GET", key)  # b"$n\r\n<index> <count> <previous>\r\n"
            count = int(raw.split(b"\r\n")[1].split()[1])
            assert answered <= count <= answered + cancelled

    run(backend, main)


def test_a_pipeline_meeting_noscript_reloads_and_answers(
    redis_port: int, asyncio_loop: str
) -> None:
    """Scripts flushed just before a coalesced pipeline: reloaded, every call answered."""
    policy = GCRA(1000, 1.0, burst=1000)

    async def main() -> None:
        async with open_client("redis-py", redis_port) as client:
            adapter = RedisPyClient(client, cluster=False)
            flushed = 0

            class FlushingClient:
                """Flushes the server's scripts before its first pipeline."""

                def evalsha(self, sha: str, keys: Any, args: Any) -> Any:
                    return adapter.evalsha(sha, keys, args)

                def script_load(self, script: str) -> Any:
                    return adapter.script_load(script)

                async def evalsha_batch(self, calls: Any) -> Any:
                    nonlocal flushed
                    if not flushed:
                        flushed += 1
                        await client.script_flush()
                    return await adapter.evalsha_batch(calls)

            store = RedisStore(FlushingClient())
            decisions: list[brace.Decision] = []

            async def task() -> None:
                decisions.append(await store.hit(policy, "k"))

            async with anyio.create_task_group() as group:
                for _ in range(40):
                    group.start_soon(task)
            assert flushed >= 1
            assert len(decisions) == 40
            assert all(d.allowed for d in decisions)
            stats = store.statistics()
            assert stats.errors == stats.fallbacks == 0
            # the first call's script; the batch script is reloaded by the client's adapter
            assert stats.script_loads >= 1

    run(asyncio_loop, main)
