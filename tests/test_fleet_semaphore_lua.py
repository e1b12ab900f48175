"""The semaphore's Lua script answers exactly as its Python core, fed the same operations.

Each example draws a limit, a lease, a waiter TTL, a queue bound and a sequence of
(time step, operation, holder); the script runs them at those explicit times on a real
redis-server and `LeaseSemaphoreCore` runs them in Python: every answer must be the
same (acquired or held, holders, position), and so must the state left in Redis.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brace._core.semaphore import LeaseSemaphoreCore
from brace.redis._semaphore import SEMAPHORE
from redis_server import RedisCluster, RedisServer

pytest_plugins = ("redis_fixtures",)

OPERATIONS = st.lists(
    st.tuples(
        st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1.5)),
        st.sampled_from(["acquire", "acquire", "try", "renew", "release"]),
        st.sampled_from(["a", "b", "c", "d", "e"]),
    ),
    min_size=1,
    max_size=40,
)


@pytest.fixture(scope="module")
def sync_client(redis_server: RedisServer) -> Iterator[Any]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        yield client
    finally:
        client.close()


_names = itertools.count()


def _run(
    client: Any, keys: list[str], operation: str, who: str, now: float, args: list[str]
) -> tuple[int, int, int]:
    reply = client.evalsha(SEMAPHORE.sha, 4, *keys, operation, who, repr(now), *args)
    acquired, holders, position = reply.split(b" ")
    return int(acquired), int(holders), int(position)


def _check(
    client: Any,
    tag: str,
    limit: int,
    lease: float,
    wait_ttl: float,
    max_waiters: int,
    operations: list[tuple[float, str, str]],
) -> None:
    client.script_load(SEMAPHORE.text)
    keys = [f"{{{tag}}}:{part}" for part in ("h", "q", "a", "t")]
    args = [str(limit), repr(lease), repr(wait_ttl), str(max_waiters)]
    core = LeaseSemaphoreCore(limit, max_waiters)
    now = 1000.0
    for step, operation, who in operations:
        now += step
        got = _run(client, keys, operation, who, now, args)
        if operation == "acquire":
            acquired, holders, position = core.acquire(who, now, lease, wait_ttl)
            expected = (int(acquired), holders, position)
        elif operation == "try":
            acquired, holders, position = core.try_acquire(who, now, lease)
            expected = (int(acquired), holders, position)
        elif operation == "renew":
            expected = (int(core.renew(who, now, lease)), len(core.holders), 0)
        else:
            expected = (int(core.release(who, now)), len(core.holders), 0)
        assert got == expected, (operation, who, now)
        # the state too: the same holders and expiries, the same queue in the same order
        in_redis = {m.decode(): s for m, s in client.zrange(keys[0], 0, -1, withscores=True)}
        assert in_redis == core.holders
        queue = [m.decode() for m in client.zrange(keys[1], 0, -1)]
        assert queue == list(core.waiters)
        alive = {m.decode(): s for m, s in client.zrange(keys[2], 0, -1, withscores=True)}
        assert alive == {w: deadline for w, (_, deadline) in core.waiters.items()}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    limit=st.integers(min_value=1, max_value=3),
    lease=st.sampled_from([0.5, 1.0, 2.5]),
    wait_ttl=st.sampled_from([0.3, 1.0]),
    max_waiters=st.integers(min_value=1, max_value=4),
    operations=OPERATIONS,
)
def test_the_script_answers_as_the_core(
    sync_client: Any,
    limit: int,
    lease: float,
    wait_ttl: float,
    max_waiters: int,
    operations: list[tuple[float, str, str]],
) -> None:
    """Every answer and the state left in Redis match the core's, operation by operation."""
    _check(sync_client, f"diff:{next(_names)}", limit, lease, wait_ttl, max_waiters, operations)


def test_the_script_answers_as_the_core_on_a_cluster(redis_cluster: RedisCluster) -> None:
    """The four keys share a slot: the script runs on a Cluster node as on a server."""
    import redis

    client = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    try:
        operations = [(0.0, "acquire", w) for w in "abcde"]
        operations += [(0.5, "release", "a"), (0.1, "acquire", "c"), (0.2, "acquire", "d")]
        operations += [(2.0, "acquire", "e"), (0.0, "renew", "b"), (0.0, "try", "a")]
        _check(client, "cluster-diff", 2, 1.0, 1.0, 3, operations)
    finally:
        client.close()


def test_idle_keys_expire(sync_client: Any) -> None:
    """Every key expires: the holders at their last lease, the queue at its last deadline."""
    sync_client.script_load(SEMAPHORE.text)
    keys = ["{ttl}:h", "{ttl}:q", "{ttl}:a", "{ttl}:t"]
    args = ["1", "2.0", "0.5", "10"]
    for who in ("a", "b"):
        sync_client.evalsha(SEMAPHORE.sha, 4, *keys, "acquire", who, "", *args)
    assert 0 < sync_client.pttl(keys[0]) <= 2000
    for key in keys[1:]:
        assert 0 < sync_client.pttl(key) <= 500
