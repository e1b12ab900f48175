"""RedisStore on the stacks people deploy: Cluster, TLS, Sentinel, ACL users, and check().

Every test runs on asyncio, uvloop and trio with the client ``RedisStore.from_url`` picks
(redis-py on asyncio and uvloop, coredis on trio), against real servers the fixtures
start on free 127.0.0.1 ports (see ``redis_fixtures``).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import anyio
import pytest

import brace
from brace._core.gcra import GCRA
from brace._core.window import SlidingWindowCounter
from brace._metrics import collect
from brace.redis import (
    RedisAuthenticationError,
    RedisBackendError,
    RedisConnectionError,
    RedisError,
    RedisStore,
)
from brace.redis._clients import key_slot, parse_url
from redis_server import (
    ACL_PASSWORD,
    ACL_USER,
    BACKENDS,
    COREDIS_LEAK,
    PASSWORD,
    Certificates,
    RedisCluster,
    RedisServer,
    command,
    free_port,
    node_port,
    read_bulk,
    run,
    sentinel_server,
    wait_for_sentinel,
)

pytest_plugins = ("redis_fixtures",)
pytestmark = [
    pytest.mark.filterwarnings(COREDIS_LEAK),
    pytest.mark.usefixtures("collect_coredis_garbage"),
]


async def _three_then_refused(store: RedisStore) -> None:
    """A 3/minute limit through ``store`` admits three of four hits on a fresh key."""
    limiter = brace.RateLimiter(brace.SlidingWindow(limit=3, window=60.0), store=store)
    key = f"user:{uuid.uuid4()}"
    before = store.statistics()
    assert [(await limiter.hit(key)).allowed for _ in range(4)] == [True, True, True, False]
    stats = store.statistics()
    assert (stats.errors, stats.fallbacks) == (before.errors, before.fallbacks), stats


# -- check() and failing loudly ------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_names_a_wrong_password(backend: str, auth_redis: RedisServer) -> None:
    """A wrong password raises RedisAuthenticationError at check(), naming the refusal."""

    async def main() -> None:
        url = f"redis://:wrong@127.0.0.1:{auth_redis.port}/0"
        async with RedisStore.from_url(url) as store:
            with pytest.raises(RedisAuthenticationError, match=r"(?i)pass|auth"):
                await store.check()
            assert store.statistics().last_error is not None
        async with RedisStore.from_url(f"redis://127.0.0.1:{auth_redis.port}/0") as store:
            with pytest.raises(RedisAuthenticationError, match=r"(?i)auth"):
                await store.check()  # no password at all: NOAUTH

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_passwords_and_acl_users_decide(backend: str, auth_redis: RedisServer) -> None:
    """The right password, or an ACL user and its password, pass check() and decide."""

    async def main() -> None:
        port = auth_redis.port
        for url, username, password in (
            (f"redis://:{PASSWORD}@127.0.0.1:{port}/0", None, None),
            (f"redis://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{port}/0", None, None),
            (f"redis://127.0.0.1:{port}/0", ACL_USER, ACL_PASSWORD),
        ):
            async with RedisStore.from_url(url, username=username, password=password) as store:
                await store.check()
                await _three_then_refused(store)
        wrong_user = f"redis://{ACL_USER}:{PASSWORD}@127.0.0.1:{port}/0"
        async with RedisStore.from_url(wrong_user) as store:
            with pytest.raises(RedisAuthenticationError):
                await store.check()

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_names_an_unreachable_server(backend: str) -> None:
    """Nothing listening: check() raises RedisConnectionError (a ConnectionError)."""

    async def main() -> None:
        async with RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0") as store:
            with pytest.raises(RedisConnectionError, match="cannot be reached") as caught:
                await store.check(timeout=3.0)
            assert isinstance(caught.value, ConnectionError)
            assert isinstance(caught.value, RedisError)

    run(backend, main)


def test_check_names_redis_py_on_trio(redis_port: int) -> None:
    """redis-py's asyncio client under trio: check() raises RedisBackendError naming trio."""
    import redis.asyncio

    async def main() -> None:
        store = RedisStore(redis.asyncio.Redis(host="127.0.0.1", port=redis_port))
        with pytest.raises(RedisBackendError, match="trio"):
            await store.check()

    run("trio", main)


def test_from_url_on_trio_must_be_opened(redis_port: int) -> None:
    """On trio a from_url store not opened says so (check and decisions), then works opened."""

    async def main() -> None:
        store = RedisStore.from_url(f"redis://127.0.0.1:{redis_port}/0")
        with pytest.raises(RedisBackendError, match="async with store"):
            await store.check()
        decision = await store.hit(GCRA(5, 60.0, burst=5), "k")  # follows on_error
        assert not decision.allowed
        assert "async with store" in (store.statistics().last_error or "")
        async with store:
            await store.check()
            await _three_then_refused(store)

    run("trio", main)


def test_the_first_error_of_each_kind_is_logged_once(
    auth_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Repeated failures log one record with the cause; statistics and registry show it."""
    registry = brace.Registry()

    async def main() -> None:
        url = f"redis://:wrong@127.0.0.1:{auth_redis.port}/0"
        async with RedisStore.from_url(url, recovery_time=0.0) as store:
            registry.register("shared", store)
            limiter = brace.RateLimiter(brace.SlidingWindow(limit=3, window=60.0), store=store)
            for _ in range(5):
                assert not (await limiter.hit("bob")).allowed  # fail_closed
            stats = store.statistics()
            assert stats.errors == 5
            snapshot = registry.snapshot()["stores"]["shared"]
            assert snapshot["last_error"] == stats.last_error
            assert "WRONGPASS" in snapshot["last_error"] or "invalid" in snapshot["last_error"]

    with caplog.at_level(logging.ERROR, logger="brace.redis"):
        run("asyncio", main)
    records = [r for r in caplog.records if r.name == "brace.redis"]
    assert len(records) == 1
    assert "on_error='fail_closed'" in records[0].getMessage()
    assert records[0].exc_info is not None  # the cause, with its traceback


def test_the_registry_shows_a_store_degraded_then_ok(own_redis_server: RedisServer) -> None:
    """While Redis is down the store's status is degraded with its last error; then ok."""
    registry = brace.Registry()
    policy = SlidingWindowCounter(5, 60.0)

    async def main() -> None:
        async with RedisStore.from_url(
            f"redis://127.0.0.1:{own_redis_server.port}/0", recovery_time=0.2
        ) as store:
            registry.register("shared", store)
            assert (await store.hit(policy, "k")).allowed
            assert registry.snapshot()["stores"]["shared"]["status"] == "ok"
            own_redis_server.kill()
            assert not (await store.hit(policy, "k")).allowed
            figures = registry.snapshot()["stores"]["shared"]
            assert figures["status"] == "degraded"
            assert figures["last_error"]
            own_redis_server.start()
            await anyio.sleep(0.3)
            assert (await store.hit(policy, "k")).allowed
            assert registry.snapshot()["stores"]["shared"]["status"] == "ok"
        families = {family.spec.prometheus_name() for family in collect(registry.items())}
        assert "brace_redis_store_decisions" in families
        assert not any("last_error" in name for name in families)

    run("asyncio", main)


# -- URLs ----------------------------------------------------------------------------------


def test_urls_are_read_at_construction() -> None:
    """Bad URLs and options raise at from_url, naming what is wrong; Sentinel URLs parse."""
    with pytest.raises(ValueError, match="redis://"):
        RedisStore.from_url("http://127.0.0.1:6379")
    with pytest.raises(TypeError, match="url"):
        RedisStore.from_url(b"redis://x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="service name"):
        RedisStore.from_url("redis+sentinel://127.0.0.1:26379")
    with pytest.raises(ValueError, match="port"):
        RedisStore.from_url("redis+sentinel://127.0.0.1:x/mymaster")
    with pytest.raises(ValueError, match="database"):
        RedisStore.from_url("redis+sentinel://127.0.0.1/mymaster/zero")
    with pytest.raises(ValueError, match="cluster"):
        RedisStore.from_url("unix:///tmp/redis.sock", cluster=True)
    with pytest.raises(ValueError, match="db"):
        RedisStore.from_url("redis://127.0.0.1", cluster=True, db=2)
    with pytest.raises(ValueError, match="db"):
        RedisStore.from_url("redis://127.0.0.1", db=-1)
    with pytest.raises(TypeError, match="cluster"):
        RedisStore.from_url("redis://127.0.0.1", cluster=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="client_options"):
        RedisStore.from_url("redis://127.0.0.1", client_options=[])  # type: ignore[arg-type]
    target = parse_url("redis+sentinel://u:p%40ss@10.0.0.1,10.0.0.2:26380,[::1]:1/main/3")
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 1))
    assert (target.service, target.db, target.username, target.password) == (
        "main",
        3,
        "u",
        "p@ss",
    )
    store = RedisStore.from_url("redis://user:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in repr(store)


def test_a_redis_py_clients_repr_is_its_address_without_the_password() -> None:
    """A store's repr (in each log line it writes) names a redis-py client by its address,
    not by redis-py's own repr of every connection option, and never shows the password."""
    import redis.asyncio
    from redis.asyncio.sentinel import Sentinel

    plain = redis.asyncio.Redis(host="10.1.2.3", port=6380, db=2, password="hunter2")
    assert len(repr(plain)) > 500  # what would otherwise be logged
    text = repr(RedisStore(plain))
    assert "RedisPyClient(Redis<10.1.2.3:6380/2>)" in text, text
    assert "hunter2" not in text
    assert len(text) < 200, text
    socket = redis.asyncio.Redis(unix_socket_path="/run/redis.sock", password="hunter2")
    assert "RedisPyClient(Redis<unix:/run/redis.sock/0>)" in repr(RedisStore(socket))
    cluster = redis.asyncio.RedisCluster(host="10.1.2.3", port=7000, password="hunter2")
    text = repr(RedisStore(cluster))
    assert "RedisPyClient(RedisCluster<10.1.2.3:7000>)" in text, text
    assert "hunter2" not in text
    sentinel = Sentinel([("10.1.2.3", 26379)], password="hunter2")
    text = repr(RedisStore(sentinel.master_for("main", password="hunter2")))
    assert "RedisPyClient(Redis<sentinel:main>)" in text, text
    assert "hunter2" not in text


def test_key_slot_matches_redis_py() -> None:
    """The slot brace groups by is redis-py's (CRC16 with hash tags) for any key."""
    from redis.crc import key_slot as redis_py_slot

    for key in (
        b"",
        b"a",
        b"user:1",
        b"{tag}x",
        b"x{tag}y",
        b"{}x",
        b"{x",
        b"\xff\x00",
        b"k" * 300,
    ):
        assert key_slot(key) == redis_py_slot(key), key
    assert key_slot("\ud800") == key_slot("\ud800".encode("utf-8", "surrogatepass"))


# -- TLS and Sentinel ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_decisions_through_rediss(
    backend: str, tls_redis: tuple[RedisServer, int, Certificates]
) -> None:
    """Through rediss:// (a CA made by the test), check() passes and decisions are right."""
    _, tls_port, certificates = tls_redis

    async def main() -> None:
        url = f"rediss://127.0.0.1:{tls_port}/0"
        async with RedisStore.from_url(url, ssl_ca_certs=certificates.ca) as store:
            await store.check()
            await _three_then_refused(store)
        # Without the CA the server's certificate is not trusted: a connection error.
        async with RedisStore.from_url(url) as store:
            with pytest.raises(RedisConnectionError):
                await store.check()

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_decisions_through_sentinel(
    backend: str, sentinel_redis: tuple[RedisServer, RedisServer]
) -> None:
    """Through redis+sentinel://, the store finds the primary and decides right."""
    primary, sentinel = sentinel_redis

    async def main() -> None:
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
        async with RedisStore.from_url(url) as store:
            await store.check()
            await _three_then_refused(store)
        assert b"brace:counter" in read_bulk(primary.port, "KEYS", "brace:*")

    run(backend, main)


def _count(port: int, key: str) -> int:
    """The count a window counter's key holds on the server at ``port`` (0 if none)."""
    reply = command(port, "GET", key)  # "$13\r\n2994031 537 0\r\n" or "$-1\r\n"
    return 0 if reply.startswith(b"$-1") else int(reply.split(b"\r\n")[1].split()[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_sentinel_failover_moves_the_decisions_to_the_new_primary(backend: str) -> None:
    """``SENTINEL FAILOVER`` while tasks decide: no call raises, and the decisions move to
    the promoted replica by themselves (its scripts loaded on ``NOSCRIPT``), counting on
    from what it had replicated."""
    policy = SlidingWindowCounter(1_000_000, 3600.0)
    primary = RedisServer()
    primary.start()
    replica = RedisServer(args=["--replicaof", "127.0.0.1", str(primary.port)])
    sentinel = sentinel_server(primary.port)
    try:
        replica.start()
        sentinel.start()
        wait_for_sentinel(sentinel, "mymaster", primary.port)

        async def main() -> None:
            url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
            async with RedisStore.from_url(url, on_error="fail_open", timeout=1.0) as store:
                key = store.key(policy, "k")
                for _ in range(10):
                    assert (await store.hit(policy, "k")).allowed
                # The replica has the count, and the sentinel has it as a good replica
                # (not "disconnected"): else FAILOVER answers NOGOODSLAVE. Polled: the
                # state of other processes.
                with anyio.fail_after(20):
                    while _count(replica.port, key) < 10 or not read_bulk(  # noqa: ASYNC110
                        sentinel.port, "SENTINEL", "FAILOVER", "mymaster"
                    ).startswith(b"+OK"):
                        await anyio.sleep(0.1)
                promoted = None
                with anyio.fail_after(40):  # Sentinel demotes the old primary within ~10 s
                    while True:
                        await store.hit(policy, "k")
                        if promoted is None and b"master" in read_bulk(replica.port, "ROLE")[:20]:
                            promoted = _count(replica.port, key)
                        if promoted is not None and _count(replica.port, key) > promoted:
                            break
                        await anyio.sleep(0.02)
                stats = store.statistics()
                assert stats.script_loads >= 2, stats  # loaded again on the new primary
                assert stats.available, stats
                before = _count(replica.port, key)
                for _ in range(5):
                    assert (await store.hit(policy, "k")).allowed
                assert _count(replica.port, key) == before + 5

        run(backend, main)
    finally:
        sentinel.kill()
        replica.kill()
        primary.kill()


# -- Cluster -------------------------------------------------------------------------------


async def _cluster_client(library: str, port: int) -> tuple[Any, Any]:
    """A cluster client and how to close it."""
    if library == "redis-py":
        import redis.asyncio

        client: Any = redis.asyncio.RedisCluster(host="127.0.0.1", port=port)
        await client.initialize()
        return client, client.aclose
    import coredis

    core: Any = coredis.RedisCluster(host="127.0.0.1", port=port)
    await core.__aenter__()

    async def close() -> None:
        await core.__aexit__(None, None, None)

    return core, close


CLUSTER_KINDS = [
    pytest.param(("default", "asyncio"), id="default-asyncio"),
    pytest.param(("default", "uvloop"), id="default-uvloop"),
    pytest.param(("default", "trio"), id="default-trio"),
    pytest.param(("redis-py", "asyncio"), id="redis-py-asyncio"),
    pytest.param(("coredis", "asyncio"), id="coredis-asyncio"),
    pytest.param(("coredis", "trio"), id="coredis-trio"),
]


@pytest.mark.parametrize("kind", CLUSTER_KINDS)
def test_cluster_admits_fifty_concurrent_fresh_keys(
    kind: tuple[str, str], redis_cluster: RedisCluster
) -> None:
    """50 concurrent decisions on 50 fresh keys, coalescing on: 50 admitted, over every node."""
    library, backend = kind
    policy = GCRA(1, 60.0, burst=1)
    run_id = uuid.uuid4().hex

    async def main() -> None:
        port = redis_cluster.ports[0]
        store: RedisStore
        close: Any = None
        if library == "default":
            # a generous timeout: the suite shares a small machine, and the 50 keys' slots
            # open new connections to each node at once
            store = RedisStore.from_url(f"redis://127.0.0.1:{port}", cluster=True, timeout=2.0)
            await store.open()
        else:
            client, close = await _cluster_client(library, port)
            store = RedisStore(client, timeout=2.0)
        try:
            await store.check()
            decisions: dict[str, brace.Decision] = {}

            async def decide(key: str) -> None:
                decisions[key] = await store.hit(policy, key)

            async with anyio.create_task_group() as group:
                for i in range(50):
                    group.start_soon(decide, f"{run_id}:{i}")
            assert sum(d.allowed for d in decisions.values()) == 50, store.statistics()
            stats = store.statistics()
            assert stats.errors == stats.fallbacks == 0, stats
            assert stats.round_trips < 50  # coalesced: batches by slot, not one call each
            again = await store.hit(policy, f"{run_id}:0")  # each key has its state
            assert not again.allowed
        finally:
            await store.aclose()
            if close is not None:
                await close()
        per_node = [
            int(read_bulk(p, "EVAL", f"return #redis.call('KEYS', '*{run_id}*')", "0")[1:-2])
            for p in redis_cluster.ports
        ]
        assert sum(per_node) == 50
        assert all(count > 0 for count in per_node), per_node  # spread over the nodes

    run(backend, main)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_opening_a_cluster_store_finds_its_nodes(loop: str, redis_cluster: RedisCluster) -> None:
    """``open()`` on asyncio learns the cluster's nodes before the first command (a burst
    into a cold redis-py cluster client can close connections in use); a cluster that
    cannot be reached at open is found on first use instead, not an error."""

    async def main() -> None:
        port = redis_cluster.ports[0]
        async with RedisStore.from_url(
            f"redis://127.0.0.1:{port}", cluster=True, timeout=2.0
        ) as store:
            client = store.client._client.client  # type: ignore[attr-defined]
            assert client._initialize is False  # the topology is known: no command yet
            assert len(client.get_primaries()) == len(redis_cluster.ports)
            assert (await store.hit(GCRA(5, 60.0), uuid.uuid4().hex)).allowed
        async with RedisStore.from_url(
            f"redis://127.0.0.1:{free_port()}", cluster=True, timeout=0.5
        ) as down:
            assert down.client._client.client._initialize is True  # type: ignore[attr-defined]

    run(loop, main)


def test_a_cluster_call_error_is_that_calls_alone(redis_cluster: RedisCluster) -> None:
    """A key holding the wrong type fails its own decision; the batch's others are right."""
    policy = GCRA(1, 60.0, burst=1)
    run_id = uuid.uuid4().hex

    async def main() -> None:
        port = redis_cluster.ports[0]
        async with RedisStore.from_url(
            f"redis://127.0.0.1:{port}", cluster=True, on_error="fail_open", timeout=2.0
        ) as store:
            bad = store.key(policy, f"{{{run_id}}}bad")
            # a list where the script expects a string: WRONGTYPE, on that key alone
            import redis.asyncio

            plain = redis.asyncio.RedisCluster(host="127.0.0.1", port=port)
            await plain.rpush(bad, "x")
            await plain.aclose()
            decisions: dict[str, brace.Decision] = {}

            async def decide(key: str) -> None:
                decisions[key] = await store.hit(policy, key)

            async with anyio.create_task_group() as group:
                group.start_soon(decide, f"{{{run_id}}}bad")
                for i in range(20):
                    group.start_soon(decide, f"{{{run_id}}}{i}")  # one slot: one batch
            stats = store.statistics()
            assert stats.call_errors == 1, stats
            assert stats.available
            assert all(decisions[f"{{{run_id}}}{i}"].allowed for i in range(20))
            again = [(await store.hit(policy, f"{{{run_id}}}{i}")).allowed for i in range(20)]
            assert not any(again)

    run("asyncio", main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cluster_failover_moves_the_decisions_to_the_promoted_replica(backend: str) -> None:
    """``CLUSTER FAILOVER`` on a replica while tasks decide on keys of every primary: no
    call raises and no error (``MOVED`` included) reaches the store; the decisions on the
    failed-over slot go to the promoted replica, which loads the scripts, and count on
    from what it had replicated."""
    policy = SlidingWindowCounter(1_000_000, 3600.0)
    cluster = RedisCluster(6, replicas=1)
    try:
        cluster.start()

        async def main() -> None:
            url = f"redis://127.0.0.1:{cluster.ports[0]}"
            async with RedisStore.from_url(url, cluster=True, on_error="fail_closed") as store:
                keys = [f"user-{i}" for i in range(12)]  # on every primary, by their slots
                for key in keys:
                    assert (await store.hit(policy, key)).allowed
                name = store.key(policy, keys[0])
                replica = cluster.replica_of_slot(key_slot(name))
                stop = anyio.Event()
                refused: list[str] = []

                async def decide(key: str) -> None:
                    while not stop.is_set():
                        if not (await store.hit(policy, key)).allowed:
                            refused.append(key)
                        await anyio.sleep(0.01)

                async with anyio.create_task_group() as group:
                    for key in keys:
                        group.start_soon(decide, key)
                    assert command(replica, "CLUSTER", "FAILOVER").startswith(b"+OK")
                    with anyio.fail_after(30):
                        while not command(replica, "ROLE").startswith(b"*3\r\n$6\r\nmaster"):  # noqa: ASYNC110
                            await anyio.sleep(0.05)
                        counted = _count(replica, name)
                        assert counted >= 1  # what it had replicated
                        while _count(replica, name) <= counted:  # noqa: ASYNC110
                            await anyio.sleep(0.05)
                    stop.set()
                stats = store.statistics()
                assert (stats.errors, stats.timeouts) == (0, 0), stats
                assert not refused
                assert stats.script_loads >= 2, stats  # loaded on the promoted replica too

        run(backend, main)
    finally:
        cluster.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_slot_migrating_under_hash_tagged_load_is_not_an_outage(backend: str) -> None:
    """A slot migrates key by key (``SETSLOT IMPORTING/MIGRATING``, ``MIGRATE``, as
    ``redis-cli --cluster reshard`` does) while 20 tasks decide on 200 keys sharing its
    hash tag. A batch over several of its keys then gets ``TRYAGAIN`` (some moved, some
    not), which the clients retry, then raise: the store sends that slot's calls one by
    one (each follows ``ASK``). redis-py's cluster client fails some lone calls too (its
    retries run out: ``ClusterError``): those decisions alone follow on_error. Before,
    each such error made the store treat all of Redis as down, and most decisions were
    refused. Every count survives the move."""
    policy = SlidingWindowCounter(1_000_000, 3600.0)
    cluster = RedisCluster()
    try:
        cluster.start()

        async def main() -> None:
            url = f"redis://127.0.0.1:{cluster.ports[0]}"
            async with RedisStore.from_url(
                url, cluster=True, on_error="fail_closed", timeout=2.0, recovery_time=0.5
            ) as store:
                keys = [f"{{tenant}}user-{i}" for i in range(200)]
                for key in keys:
                    assert (await store.hit(policy, key)).allowed
                slot = key_slot(store.key(policy, keys[0]))
                source = cluster.primary_of_slot(slot)
                target = next(f for f in cluster.nodes() if f[0] != source[0] and "master" in f[2])
                source_port, target_port = node_port(source), node_port(target)
                hits = dict.fromkeys(keys, 1)
                decisions: list[bool] = []
                stop = anyio.Event()

                async def decide(first: int) -> None:
                    while not stop.is_set():
                        for key in keys[first::20]:
                            decisions.append((await store.hit(policy, key)).allowed)
                            hits[key] += 1
                        await anyio.sleep(0.005)

                async with anyio.create_task_group() as group:
                    for first in range(20):
                        group.start_soon(decide, first)
                    await anyio.sleep(0.3)
                    command(target_port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source[0])
                    command(source_port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target[0])
                    while True:
                        reply = read_bulk(source_port, "CLUSTER", "GETKEYSINSLOT", str(slot), "1")
                        if reply.startswith(b"*0"):
                            break
                        key = reply.split(b"\r\n")[2].decode()
                        command(
                            source_port, "MIGRATE", "127.0.0.1", str(target_port), key, "0", "5000"
                        )
                        await anyio.sleep(0.01)
                    for port in cluster.ports:
                        command(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target[0])
                    await anyio.sleep(0.3)
                    stop.set()
                refused = decisions.count(False)
                assert refused < len(decisions) / 10, (refused, len(decisions), store.statistics())
                # every key on the target now, and no count lost (those refused counted none)
                counted = sum(_count(target_port, store.key(policy, key)) for key in keys)
                assert counted == sum(hits.values()) - refused

        run(backend, main)
    finally:
        cluster.stop()
