"""DistributedLimit on real servers: every client and loop, a Cluster, cancellation, outages.

Each test runs its own loop in real time against the session's redis-server (see
``redis_fixtures``), or against a server of its own that it kills.
"""

from __future__ import annotations

import random
import time
from typing import Any

import anyio
import pytest

import brace
from brace import QueueFull, QueueTimeout
from brace.redis import DistributedLimit, OnError, RedisStore
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


async def _crowd(fleet: DistributedLimit, tasks: int, hold: float = 0.003) -> int:
    """``tasks`` tasks through ``fleet`` at once; the most inside together."""
    inside = most = 0

    async def work() -> None:
        nonlocal inside, most
        async with fleet:
            inside += 1
            most = max(most, inside)
            await anyio.sleep(hold)
            inside -= 1

    async with anyio.create_task_group() as group:
        for _ in range(tasks):
            group.start_soon(work)
    return most


async def _refused_in_crowd(fleet: DistributedLimit, tasks: int) -> int:
    """``tasks`` tasks through ``fleet`` at once; how many were refused (or ran over the
    limit: a permit not from Redis counts as refused when more than ``limit`` ran)."""
    refused = inside = 0

    async def work() -> None:
        nonlocal refused, inside
        try:
            async with fleet:
                inside += 1
                if inside > fleet.limit:
                    refused += 1
                await anyio.sleep(0.003)
                inside -= 1
        except (QueueFull, QueueTimeout):
            refused += 1

    async with anyio.create_task_group() as group:
        for _ in range(tasks):
            group.start_soon(work)
    return refused


def _redis_state(server: RedisServer | int, name: str) -> tuple[int, int]:
    """(holders, waiters) in Redis for the limit ``name`` (prefix ``brace``)."""
    from redis_server import command

    port = server if isinstance(server, int) else server.port
    holders = command(port, "ZCARD", f"{{brace:limit:{name}}}:h")
    waiters = command(port, "ZCARD", f"{{brace:limit:{name}}}:q")
    return int(holders[1:-2]), int(waiters[1:-2])


def test_the_limit_holds_on_every_client_and_loop(
    redis_port: int, client_kind: tuple[str, str]
) -> None:
    """40 tasks through 3 permits: never more than 3 inside, all 3 used, books balanced."""
    library, backend = client_kind

    async def main() -> brace.redis.DistributedLimitStatistics:
        async with open_client(library, redis_port) as client:
            fleet = DistributedLimit(RedisStore(client, timeout=2.0), "every", 3)
            assert await _crowd(fleet, 40) == 3
            return fleet.statistics()

    statistics = run(backend, main)
    assert statistics.acquired == statistics.released == 40
    assert statistics.holding == statistics.waiting == 0
    assert statistics.errors == statistics.fallbacks == 0
    assert _redis_state(redis_port, "every") == (0, 0)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_limit_holds_on_a_cluster(redis_cluster: RedisCluster, backend: str) -> None:
    """On a 3-node Cluster (redis-py on asyncio, coredis on trio) the same holds."""
    url = f"redis://127.0.0.1:{redis_cluster.ports[0]}"

    async def main() -> int:
        async with RedisStore.from_url(url, cluster=True, timeout=2.0) as store:
            fleet = DistributedLimit(store, f"cluster-{backend}", 4)
            most = await _crowd(fleet, 30)
            assert fleet.statistics().released == 30
            return most

    assert run(backend, main) == 4


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_cancelled_waiters_and_holders_leak_nothing(redis_port: int, backend: str) -> None:
    """Tasks cancelled at random points while waiting or holding leave no permit or place."""

    async def main() -> brace.redis.DistributedLimitStatistics:
        async with RedisStore.from_url(f"redis://127.0.0.1:{redis_port}/0", timeout=2.0) as store:
            fleet = DistributedLimit(store, "cancel", 2, max_poll_interval=0.05)
            inside = most = 0

            async def work() -> None:
                nonlocal inside, most
                with anyio.move_on_after(random.uniform(0.0, 0.05)):
                    async with fleet:
                        inside += 1
                        most = max(most, inside)
                        try:
                            await anyio.sleep(random.uniform(0.0, 0.02))
                        finally:
                            inside -= 1

            async with anyio.create_task_group() as group:
                for _ in range(60):
                    group.start_soon(work)
            assert most <= 2
            # and the permits still work afterwards
            assert await _crowd(fleet, 5) == 2
            return fleet.statistics()

    statistics = run(backend, main)
    assert statistics.holding == statistics.waiting == 0
    assert statistics.acquired == statistics.released
    assert _redis_state(redis_port, "cancel") == (0, 0)


def test_max_wait_and_max_waiters_bound_the_wait(redis_port: int) -> None:
    """A full limit: a waiter gives up after max_wait (leaving the queue); a full queue refuses."""

    async def main() -> None:
        url = f"redis://127.0.0.1:{redis_port}/0"
        async with RedisStore.from_url(url, timeout=2.0) as store:
            fleet = DistributedLimit(store, "bounded", 1, max_wait=0.2, max_waiters=1)
            permit = await fleet.acquire()
            started = time.monotonic()
            with pytest.raises(QueueTimeout) as timed_out:
                await fleet.acquire()
            assert 0.2 <= time.monotonic() - started < 1.0
            assert timed_out.value.retry_after is not None
            assert _redis_state(redis_port, "bounded") == (1, 0)  # it left the queue

            async def wait_once() -> None:
                with pytest.raises(QueueTimeout):
                    await fleet.acquire()

            async with anyio.create_task_group() as group:
                group.start_soon(wait_once)
                await anyio.sleep(0.05)  # that one is queued: the queue is full
                other = DistributedLimit(store, "bounded", 1, max_wait=0.2, max_waiters=1)
                with pytest.raises(QueueFull, match="queue is full"):
                    await other.acquire()
            now = DistributedLimit(store, "bounded", 1, max_wait=0)
            with pytest.raises(QueueFull, match="every permit is taken"):
                await now.acquire()
            await fleet.release(permit)
            await fleet.release(permit)  # once only
            assert fleet.statistics().released == 1
            permit = await now.acquire()
            await now.release(permit)

    run("asyncio", main)


def test_waiters_are_served_first_come_first_served(redis_port: int) -> None:
    """Waiters of two processes' worth of limits are admitted in the order they queued."""

    async def main() -> list[int]:
        url = f"redis://127.0.0.1:{redis_port}/0"
        async with RedisStore.from_url(url, timeout=2.0) as store:
            # two limits on one name: two "processes", each with its own local queue
            first = DistributedLimit(store, "fifo", 1, max_poll_interval=0.02)
            second = DistributedLimit(store, "fifo", 1, max_poll_interval=0.02)
            order: list[int] = []
            permit = await first.acquire()

            async def wait(index: int, fleet: DistributedLimit) -> None:
                async with fleet.slot():
                    order.append(index)
                    await anyio.sleep(0.01)

            async with anyio.create_task_group() as group:
                for index in range(6):
                    group.start_soon(wait, index, (first, second)[index % 2])
                    await anyio.sleep(0.05)  # each queued before the next arrives
                await first.release(permit)
            return order

    assert run("asyncio", main) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_long_call_keeps_its_permit_by_renewal(redis_port: int, backend: str) -> None:
    """A call lasting 4 leases keeps its permit when renewed, and loses it when not."""

    async def main() -> tuple[Any, ...]:
        url = f"redis://127.0.0.1:{redis_port}/0"
        async with RedisStore.from_url(url, timeout=2.0) as store:
            renewed = DistributedLimit(store, f"renewed-{backend}", 1, lease=0.3)
            other = DistributedLimit(store, f"renewed-{backend}", 1, lease=0.3, max_wait=0)
            async with renewed.slot() as permit:
                await anyio.sleep(1.2)
                with pytest.raises(QueueFull):
                    await other.acquire()
            kept = (permit.lost, renewed.statistics().renewals)

            lapsed = DistributedLimit(store, f"lapsed-{backend}", 1, lease=0.3, renew=False)
            other = DistributedLimit(store, f"lapsed-{backend}", 1, lease=0.3, max_wait=0)
            async with lapsed.slot() as permit:
                await anyio.sleep(0.5)
                stolen = await other.acquire()  # the lease ran out: another may take it
                assert not await lapsed.renew(permit)
                await other.release(stolen)
            return (*kept, permit.lost, lapsed.statistics().lost)

    lost, renewals, lapsed_lost, lost_count = run(backend, main)
    assert not lost
    assert renewals >= 3
    assert lapsed_lost
    assert lost_count == 1


@pytest.mark.parametrize("on_error", ["fail_closed", "fail_open", "fallback"])
def test_when_redis_is_down_acquisitions_follow_on_error(
    own_redis_server: RedisServer, on_error: OnError
) -> None:
    """Redis killed: fail_closed refuses, fail_open admits all, fallback admits limit // nodes."""

    async def main() -> tuple[int, list[str], bool]:
        url = f"redis://127.0.0.1:{own_redis_server.port}/0"
        store = RedisStore.from_url(url, on_error=on_error, nodes=2, timeout=0.5, recovery_time=0.2)
        async with store:
            fleet = DistributedLimit(store, "down", 4, max_wait=2.0)
            # held 50 ms: four enter together even when a round trip takes longer than 3 ms
            assert await _crowd(fleet, 8, hold=0.05) == 4
            own_redis_server.kill()
            sources: list[str] = []
            inside = most = 0

            async def work() -> None:
                nonlocal inside, most
                try:
                    async with fleet.slot() as permit:
                        sources.append(permit.source)
                        inside += 1
                        most = max(most, inside)
                        await anyio.sleep(0.1)
                        inside -= 1
                except QueueFull:
                    sources.append("refused")
                except QueueTimeout:
                    sources.append("timed out")

            async with anyio.create_task_group() as group:
                for _ in range(8):
                    group.start_soon(work)
            own_redis_server.start()  # back: the limit recovers by itself
            # (each pooled connection of the client fails once, on its first use after
            # the restart: those acquisitions follow on_error; then all go to Redis)
            for _ in range(60):
                before = fleet.statistics()
                refused = await _refused_in_crowd(fleet, 8)
                after = fleet.statistics()
                if not refused and after.fallbacks == before.fallbacks:
                    assert after.acquired - before.acquired == 8  # from Redis, every one
                    break
                await anyio.sleep(0.3)
            else:
                pytest.fail(f"the limit did not recover: {fleet.statistics()}")
            return most, sources, after.available

    most, sources, available = run("asyncio", main)
    assert available
    if on_error == "fail_closed":
        assert sources == ["refused"] * 8
    elif on_error == "fail_open":
        assert sources == ["open"] * 8
        assert most == 8
    else:
        assert set(sources) == {"fallback"}
        assert most == 4 // 2


async def _refused(fleet: DistributedLimit) -> bool:
    """Whether one acquisition is refused (``fail_closed``); a permit is given back."""
    try:
        async with fleet:
            pass
    except QueueFull:
        return True
    return False


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_after_a_failure_redis_is_left_alone_until_one_probe(redis_port: int, backend: str) -> None:
    """The store's outage core, through DistributedLimit: one failure of the server and
    no acquisition calls Redis for ``recovery_time`` (each follows on_error at once); then
    one acquisition probes it, the others keeping away, and its answer ends the outage."""

    async def main() -> None:
        clock = FakeClock()
        async with open_client("default", redis_port) as inner:
            client = SwitchableClient(inner)
            store = RedisStore(client, on_error="fail_closed", timeout=5.0, recovery_time=10.0)
            fleet = DistributedLimit(store, f"outage-{backend}", 2, clock=clock)
            assert not await _refused(fleet)
            calls = client.calls
            client.error = ConnectionError("Connection refused")
            assert await _refused(fleet)
            assert client.calls == calls + 1  # it failed: Redis is left alone
            for _ in range(20):
                assert await _refused(fleet)
            clock.advance(9.999)
            assert await _refused(fleet)
            assert client.calls == calls + 1
            statistics = fleet.statistics()
            assert (statistics.errors, statistics.fallbacks) == (1, 22)
            assert not statistics.available
            clock.advance(0.001)  # the cool-down is over: the next one probes, and fails
            assert fleet.statistics().available
            assert await _refused(fleet)
            assert client.calls == calls + 2
            assert await _refused(fleet)  # left alone again, for recovery_time
            assert client.calls == calls + 2
            clock.advance(10.0)
            client.error = None
            hold = client.hold = anyio.Event()
            sources: list[str] = []

            async def probe() -> None:
                async with fleet.slot() as permit:
                    sources.append(permit.source)

            async with anyio.create_task_group() as group:
                group.start_soon(probe)
                await client.held.wait()  # the probe is in flight
                assert await _refused(fleet)  # the others keep away meanwhile
                assert client.calls == calls + 3
                client.hold = None
                hold.set()
            assert sources == ["redis"]  # the probe's answer ends the outage
            async with fleet.slot() as permit:
                assert permit.source == "redis"
            statistics = fleet.statistics()
            assert statistics.available
            assert (statistics.errors, statistics.acquired) == (2, 3)

    run(backend, main)


def test_an_error_of_one_call_does_not_leave_redis_alone(redis_port: int) -> None:
    """An error of the call (a ValueError, WRONGTYPE) follows on_error for that call
    only: the next acquisition asks Redis again, as the store's decisions do."""

    async def main() -> None:
        async with open_client("default", redis_port) as inner:
            client = SwitchableClient(inner)
            store = RedisStore(client, on_error="fail_closed", timeout=5.0, recovery_time=10.0)
            fleet = DistributedLimit(store, "call-error", 2)
            calls = client.calls
            client.error = ValueError("bad argument")
            assert await _refused(fleet)
            assert await _refused(fleet)
            assert client.calls == calls + 2
            assert fleet.statistics().available
            client.error = None
            assert not await _refused(fleet)

    run("asyncio", main)


@pytest.mark.parametrize(
    ("library", "backend"), [("redis-py", "asyncio"), ("coredis", "asyncio"), ("coredis", "trio")]
)
def test_a_read_only_redis_is_left_alone(
    library: str,
    backend: str,
    own_redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A primary turned replica (``READONLY``, which both clients raise as their own
    ``ReadOnlyError`` without that word) is Redis failing, not one call's error: the
    acquisitions follow on_error without asking Redis for ``recovery_time``, and the log
    names the reply. Back to a primary, the next acquisition after the cool-down is
    Redis's again."""
    server = own_redis_server

    async def main() -> None:
        async with open_client(library, server.port) as client:
            store = RedisStore(client, on_error="fail_closed", timeout=5.0, recovery_time=0.2)
            fleet = DistributedLimit(store, "read-only", 2)
            assert not await _refused(fleet)
            assert server.call("REPLICAOF", "127.0.0.1", "1").startswith(b"+OK")
            try:
                assert await _refused(fleet)
                assert await _refused(fleet)
                statistics = fleet.statistics()
                assert (statistics.errors, statistics.fallbacks) == (1, 2), statistics
                assert not statistics.available
            finally:
                assert server.call("REPLICAOF", "NO", "ONE").startswith(b"+OK")
            await anyio.sleep(0.25)
            assert not await _refused(fleet)
            assert fleet.statistics().available

    with caplog.at_level("ERROR", logger="brace.redis"):
        run(backend, main)
    assert any("ReadOnlyError: READONLY " in record.getMessage() for record in caplog.records)


def test_it_is_a_decorator_a_call_and_a_compose_policy(redis_port: int) -> None:
    """@limit, limit.call and brace.compose(limit) each run the call holding a permit."""

    async def main() -> None:
        url = f"redis://127.0.0.1:{redis_port}/0"
        async with RedisStore.from_url(url, timeout=2.0) as store:
            fleet = DistributedLimit(store, "forms", 1)

            @fleet
            async def double(x: int) -> int:
                assert fleet.statistics().holding == 1
                return 2 * x

            assert await double(2) == 4
            assert await fleet.call(double.__wrapped__, 3) == 6  # type: ignore[attr-defined]
            policy = brace.compose(fleet, brace.Timeout(5.0))
            assert await policy.run(double.__wrapped__, 4) == 8  # type: ignore[attr-defined]
            assert fleet.statistics().acquired == fleet.statistics().released == 3

    run("asyncio", main)


def test_bad_configuration_is_refused_at_construction() -> None:
    """Each bad argument raises naming it."""
    store = RedisStore.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(TypeError, match="store"):
        DistributedLimit(object(), "x", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        DistributedLimit(store, "a{b}", 1)
    with pytest.raises(ValueError, match="limit"):
        DistributedLimit(store, "x", 0)
    with pytest.raises(ValueError, match="lease"):
        DistributedLimit(store, "x", 1, lease=0)
    with pytest.raises(ValueError, match="max_wait"):
        DistributedLimit(store, "x", 1, max_wait=-1)
    with pytest.raises(ValueError, match="max_waiters"):
        DistributedLimit(store, "x", 1, max_waiters=0)
    with pytest.raises(ValueError, match="max_poll_interval"):
        DistributedLimit(store, "x", 1, poll_interval=1.0, max_poll_interval=0.5)
    with pytest.raises(TypeError, match="renew"):
        DistributedLimit(store, "x", 1, renew=1)  # type: ignore[arg-type]
