"""FleetBreaker: replicas open together (one trip, or a quorum), probe one at a time.

The replica logic (`brace._core.fleet`) is tested on its own; then several replicas in
one process (each its own breaker and id) sync through a real redis-server, and 4
processes show the propagation time (``test_fleet_breaker_processes.py``).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import brace
from brace import CircuitOpen, CircuitState
from brace._core.fleet import ReplicaSync, quorum_needed
from brace.redis import FleetBreaker, RedisStore
from brace.testing import FakeClock
from redis_server import (
    COREDIS_LEAK,
    RedisCluster,
    RedisServer,
    SwitchableClient,
    open_client,
    run,
)

pytestmark = [
    pytest.mark.filterwarnings(COREDIS_LEAK),
    pytest.mark.usefixtures("collect_coredis_garbage"),
]

pytest_plugins = ("redis_fixtures",)


def test_the_quorum_is_a_share_of_the_live_replicas() -> None:
    """None: one replica; a share: its ceiling of the live replicas, at least one."""
    assert quorum_needed(None, 10) == 1
    assert quorum_needed(0.5, 4) == 2
    assert quorum_needed(0.5, 5) == 3
    assert quorum_needed(1.0, 3) == 3
    assert quorum_needed(0.01, 3) == 1
    assert quorum_needed(0.5, 0) == 1


def test_a_replica_reports_only_its_own_openings() -> None:
    """Opened by the fleet: not own; a later trip or failed probe: own."""
    sync = ReplicaSync(shared=False)
    assert sync.report(CircuitState.CLOSED, 0) == (False, False)
    assert sync.react(CircuitState.CLOSED, False, 0.0, 0) == "none"
    assert sync.react(CircuitState.CLOSED, False, 5.0, 0) == "open"
    sync.opened_by_fleet(1)
    assert sync.report(CircuitState.OPEN, 1) == (False, False)
    assert sync.report(CircuitState.HALF_OPEN, 1) == (False, False)
    # a probe failed here: open on its own account; half-open is not open
    assert sync.own_open(CircuitState.OPEN, 2)
    assert not sync.own_open(CircuitState.HALF_OPEN, 2)
    # the fleet's period is over and another replica's probe closed: close too
    assert sync.react(CircuitState.HALF_OPEN, False, 0.0, 1) == "close"
    assert sync.report(CircuitState.CLOSED, 1) == (False, True)
    # with a quorum, own trips are never overridden by the fleet
    assert sync.react(CircuitState.OPEN, True, 3.0, 1) == "none"
    assert sync.react(CircuitState.OPEN, True, 0.0, 5) == "none"
    # shared: a close anywhere closes every replica
    shared = ReplicaSync(shared=True)
    assert shared.react(CircuitState.OPEN, True, 0.0, 0) == "none"
    assert shared.react(CircuitState.OPEN, True, 0.0, 1) == "close"


async def _fail(fleet: FleetBreaker, times: int) -> None:
    async def broken() -> None:
        raise ConnectionError("upstream down")

    for _ in range(times):
        with pytest.raises((ConnectionError, CircuitOpen)):
            await fleet.call(broken)


def _replicas(store: RedisStore, name: str, count: int, **options: Any) -> list[FleetBreaker]:
    return [
        FleetBreaker(
            store,
            name,
            brace.CircuitBreaker(failure_threshold=2, recovery_time=0.5, half_open_max_calls=5),
            sync_interval=0.05,
            **options,
        )
        for _ in range(count)
    ]


async def _sync_all(replicas: list[FleetBreaker]) -> None:
    for replica in replicas:
        await replica.sync()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_one_trip_opens_every_replica_and_one_probe_closes_them(
    redis_port: int, backend: str
) -> None:
    """Shared mode: replica 0 trips; after a sync all are open; one good probe closes all."""

    async def main() -> None:
        url = f"redis://127.0.0.1:{redis_port}/0"
        async with RedisStore.from_url(url, timeout=2.0) as store:
            replicas = _replicas(store, f"shared-{backend}", 4)
            await _sync_all(replicas)
            await _fail(replicas[0], 2)
            assert replicas[0].breaker.state is CircuitState.OPEN
            await _sync_all(replicas)  # 0 reports, then the others read
            await _sync_all(replicas)
            assert [r.breaker.state for r in replicas] == [CircuitState.OPEN] * 4
            assert all(r.statistics().fleet_open > 0 for r in replicas)
            await anyio.sleep(0.6)  # the open period ends: half-open everywhere
            assert [r.breaker.state for r in replicas] == [CircuitState.HALF_OPEN] * 4

            async def ok() -> str:
                return "ok"

            assert await replicas[2].call(ok) == "ok"  # one probe, and it succeeds
            assert replicas[2].breaker.state is CircuitState.CLOSED
            await _sync_all(replicas)
            await _sync_all(replicas)
            assert [r.breaker.state for r in replicas] == [CircuitState.CLOSED] * 4
            assert replicas[1].statistics().fleet_closes == 1

    run(backend, main)


def test_quorum_mode_opens_only_when_the_quorum_reports_open(redis_port: int) -> None:
    """quorum=0.5 of 4: one replica open alone leaves the others closed; two open all."""

    async def main() -> None:
        url = f"redis://127.0.0.1:{redis_port}/0"
        async with RedisStore.from_url(url, timeout=2.0) as store:
            replicas = _replicas(store, "quorum", 4, quorum=0.5)
            await _sync_all(replicas)
            await _fail(replicas[0], 2)  # the replica with a bad network
            for _ in range(3):
                await _sync_all(replicas)
            states = [r.breaker.state for r in replicas]
            assert states == [CircuitState.OPEN] + [CircuitState.CLOSED] * 3
            assert replicas[1].statistics().opened == 1
            await _fail(replicas[1], 2)
            await _sync_all(replicas)
            await _sync_all(replicas)
            assert [r.breaker.state for r in replicas] == [CircuitState.OPEN] * 4
            statistics = replicas[3].statistics()
            assert (statistics.opened, statistics.live) == (2, 4)
            assert statistics.fleet_opens == 1

    run("asyncio", main)


def test_half_open_probes_are_limited_fleet_wide(redis_port: int) -> None:
    """Four half-open replicas (5 probes each locally): one probe at a time in the fleet."""

    async def main() -> tuple[int, int]:
        url = f"redis://127.0.0.1:{redis_port}/0"
        async with RedisStore.from_url(url, timeout=2.0) as store:
            replicas = _replicas(store, "probes", 4, half_open_max_calls=1)
            await _sync_all(replicas)
            await _fail(replicas[0], 2)
            await _sync_all(replicas)
            await _sync_all(replicas)
            await anyio.sleep(0.6)
            inside = most = refused = 0

            async def slow_probe() -> None:
                nonlocal inside, most
                inside += 1
                most = max(most, inside)
                await anyio.sleep(0.2)
                inside -= 1

            async def attempt(replica: FleetBreaker) -> None:
                nonlocal refused
                try:
                    await replica.call(slow_probe)
                except CircuitOpen:
                    refused += 1

            async with anyio.create_task_group() as group:
                for replica in replicas:
                    for _ in range(3):
                        group.start_soon(attempt, replica)
            return most, refused

    most, refused = run("asyncio", main)
    assert most == 1
    assert refused == 11


def test_on_a_cluster_replicas_open_together(redis_cluster: RedisCluster) -> None:
    """The sync script's keys share a slot: it runs on a Cluster as on a server."""

    async def main() -> None:
        url = f"redis://127.0.0.1:{redis_cluster.ports[0]}"
        async with RedisStore.from_url(url, cluster=True, timeout=2.0) as store:
            replicas = _replicas(store, "cluster", 3)
            await _sync_all(replicas)
            await _fail(replicas[1], 2)
            await _sync_all(replicas)
            await _sync_all(replicas)
            assert [r.breaker.state for r in replicas] == [CircuitState.OPEN] * 3

    run("asyncio", main)


def test_without_redis_each_replica_goes_on_alone(redis_port: int) -> None:
    """Redis unreachable: syncs fail (counted), the local breaker still trips and probes."""

    async def main() -> None:
        async with RedisStore.from_url("redis://127.0.0.1:1/0", timeout=0.2) as store:
            (replica,) = _replicas(store, "alone", 1)
            await replica.sync()
            await _fail(replica, 2)
            assert replica.breaker.state is CircuitState.OPEN
            await anyio.sleep(0.6)

            async def ok() -> str:
                return "ok"

            assert await replica.call(ok) == "ok"  # a local probe
            statistics = replica.statistics()
            assert statistics.state is CircuitState.CLOSED
            assert statistics.sync_errors == 1

    run("asyncio", main)


class _Prober:
    """A FleetBreaker over ``client`` with a fake clock, and a probe that counts calls."""

    def __init__(self, client: SwitchableClient, name: str) -> None:
        self.client = client
        self.clock = FakeClock()
        store = RedisStore(client, timeout=5.0, recovery_time=3600.0)
        self.breaker = brace.CircuitBreaker(
            failure_threshold=2, recovery_time=0.5, half_open_max_calls=5, clock=self.clock
        )
        self.fleet = FleetBreaker(store, name, self.breaker)

    async def probe(self) -> int:
        """Trip the breaker, let it half-open, probe: the calls made to Redis."""

        async def ok() -> str:
            return "ok"

        await _fail(self.fleet, 2)
        self.clock.advance(0.6)
        assert self.breaker.state is CircuitState.HALF_OPEN
        calls = self.client.calls
        assert await self.fleet.call(ok) == "ok"
        assert self.fleet.statistics().state is CircuitState.CLOSED
        return self.client.calls - calls


def test_a_failed_permit_call_leaves_redis_alone_until_a_sync_answers(redis_port: int) -> None:
    """The store's outage core, through FleetBreaker: a half-open probe whose permit call
    fails runs on the local breaker, and so do the next ones without asking Redis (for
    the store's ``recovery_time``), until a sync, which always tries, gets an answer."""

    async def main() -> None:
        async with open_client("default", redis_port) as inner:
            client = SwitchableClient(inner)
            prober = _Prober(client, "outage")
            await prober.fleet.sync()
            # a fleet permit taken and given back (a call more if the script is loaded)
            assert await prober.probe() in (2, 3)
            client.error = ConnectionError("Connection refused")
            assert await prober.probe() == 1  # the permit call fails: a local probe
            client.error = None
            assert await prober.probe() == 0  # Redis is left alone: a local probe
            assert await prober.probe() == 0
            await prober.fleet.sync()  # always tries; its answer ends the outage
            assert await prober.probe() == 2
            statistics = prober.fleet.statistics()
            assert (statistics.probes, statistics.syncs, statistics.sync_errors) == (2, 2, 0)

    run("asyncio", main)


@pytest.mark.parametrize(("library", "backend"), [("redis-py", "asyncio"), ("coredis", "trio")])
def test_a_read_only_redis_is_left_alone_by_the_probes(
    library: str, backend: str, own_redis_server: RedisServer
) -> None:
    """A primary turned replica answers the permit call ``READONLY`` (a ``ReadOnlyError``
    without that word, in both clients): Redis failing, so the next probes are local
    without asking it, until a sync answers."""
    server = own_redis_server

    async def main() -> None:
        async with open_client(library, server.port) as inner:
            prober = _Prober(SwitchableClient(inner), "read-only")
            await prober.fleet.sync()
            assert await prober.probe() in (2, 3)
            assert server.call("REPLICAOF", "127.0.0.1", "1").startswith(b"+OK")
            try:
                assert await prober.probe() == 1  # the permit call fails: a local probe
                assert await prober.probe() == 0  # Redis is left alone
            finally:
                assert server.call("REPLICAOF", "NO", "ONE").startswith(b"+OK")
            assert await prober.probe() == 0
            await prober.fleet.sync()  # always tries; its answer ends the outage
            assert await prober.probe() == 2

    run(backend, main)


def test_bad_configuration_is_refused_at_construction() -> None:
    """Each bad argument raises naming it."""
    store = RedisStore.from_url("redis://127.0.0.1:1/0")
    breaker = brace.CircuitBreaker()
    with pytest.raises(TypeError, match="store"):
        FleetBreaker(object(), "x", breaker)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        FleetBreaker(store, "", breaker)
    with pytest.raises(TypeError, match="breaker"):
        FleetBreaker(store, "x", object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quorum"):
        FleetBreaker(store, "x", breaker, quorum=1.5)
    with pytest.raises(ValueError, match="sync_interval"):
        FleetBreaker(store, "x", breaker, sync_interval=0)
    with pytest.raises(ValueError, match="half_open_max_calls"):
        FleetBreaker(store, "x", breaker, half_open_max_calls=0)
