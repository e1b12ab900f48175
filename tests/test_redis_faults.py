"""RedisStore when Redis dies, hangs and comes back: on_error decides, nothing else leaks.

Each test runs its own redis-server, kills (SIGKILL) or freezes (SIGSTOP) it while tasks
keep deciding, checks that every call still returned a Decision following ``on_error``,
then starts the server again on the same port and checks that decisions go back to Redis
in the same store, without restarting anything.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import anyio
import pytest

import brace
from brace._core.window import SlidingWindowCounter
from brace.redis import OnError, RedisStore
from redis_server import BACKENDS, CLIENT_KINDS, COREDIS_LEAK, RedisServer, open_client, run

pytestmark = [
    pytest.mark.filterwarnings(COREDIS_LEAK),
    pytest.mark.usefixtures("collect_coredis_garbage"),
]

POLICY = SlidingWindowCounter(10, 600.0)
NODES = 2

pytest_plugins = ("redis_fixtures",)


async def _hammer(
    store: RedisStore, seconds: float, tasks: int = 10
) -> list[brace.Decision | BaseException]:
    """``tasks`` tasks hitting one key for ``seconds``; every outcome, exceptions included."""
    outcomes: list[brace.Decision | BaseException] = []

    async def worker() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                outcomes.append(await store.hit(POLICY, "key"))
            except Exception as exc:
                outcomes.append(exc)
            await anyio.sleep(0.002)

    async with anyio.create_task_group() as group:
        for _ in range(tasks):
            group.start_soon(worker)
    return outcomes


def _decisions(outcomes: list[brace.Decision | BaseException]) -> list[brace.Decision]:
    leaked = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert not leaked, leaked[:3]
    return [outcome for outcome in outcomes if isinstance(outcome, brace.Decision)]


async def _until_redis_answers(store: RedisStore, seconds: float = 5.0) -> None:
    """Keep deciding until one decision comes from Redis again."""
    before = store.statistics().decisions
    with anyio.fail_after(seconds):
        while store.statistics().decisions == before:
            await store.hit(POLICY, "probe")
            await anyio.sleep(0.01)


def _check_outage(on_error: str, decisions: list[brace.Decision]) -> None:
    """What every decision made while Redis was away must look like."""
    assert decisions
    if on_error == "fail_closed":
        assert all(not d.allowed and d.retry_after == 0.5 for d in decisions)
    elif on_error == "fail_open":
        assert all(d.allowed for d in decisions)
    else:  # the local store: the limit divided by the nodes, and no more
        assert sum(d.allowed for d in decisions) == POLICY.limit // NODES
        assert all(d.limit == POLICY.limit // NODES for d in decisions)


# Every client kind once, each with one of the policies in turn (every policy meets
# several kinds): the policies do not depend on the client, and each case restarts a
# server, so the full cross product would only add minutes.
_ON_ERRORS: list[OnError] = ["fail_closed", "fail_open", "fallback"]
_KILLED = [
    pytest.param(kind.values[0], _ON_ERRORS[i % 3], id=f"{kind.id}-{_ON_ERRORS[i % 3]}")
    for i, kind in enumerate(CLIENT_KINDS)
]


@pytest.mark.parametrize(("client_kind", "on_error"), _KILLED)
def test_redis_killed_then_restarted(
    client_kind: tuple[str, str], on_error: OnError, own_redis_server: RedisServer
) -> None:
    """Killed mid-run: on_error decides, no exception escapes; restarted: Redis decides again."""
    library, backend = client_kind
    server = own_redis_server

    async def main() -> None:
        async with open_client(library, server.port) as client:
            store = RedisStore(
                client,
                on_error=on_error,
                nodes=NODES,
                timeout=0.2,
                recovery_time=0.05,
                fail_closed_retry_after=0.5,
            )
            # Up: Redis admits the limit and refuses the rest.
            up = _decisions(await _hammer(store, 0.15))
            assert sum(d.allowed for d in up) == POLICY.limit
            assert store.statistics().decisions == len(up)

            # Killed while the tasks run.
            async with anyio.create_task_group() as group:
                during: list[brace.Decision | BaseException] = []

                async def collect() -> None:
                    during.extend(await _hammer(store, 0.4))

                group.start_soon(collect)
                await anyio.sleep(0.1)
                server.kill()
            _decisions(during)  # whatever was in flight: answers, never exceptions
            stats = store.statistics()
            assert stats.errors + stats.timeouts > 0
            assert stats.fallbacks > 0
            assert stats.last_error is not None

            # Down: every decision follows on_error.
            before = store.statistics().decisions
            down = _decisions(await _hammer(store, 0.2))
            assert store.statistics().decisions == before
            if on_error == "fallback":
                # the local store has counted since the outage began: all refused now
                assert not any(d.allowed for d in down)
            else:
                _check_outage(on_error, down)

            # Restarted on the same port (empty: no persistence): back to Redis by itself.
            server.start()
            await _until_redis_answers(store)
            back = _decisions(await _hammer(store, 0.2))
            stats = store.statistics()
            assert stats.available
            assert stats.script_loads >= 2  # the new server needed the script again
            assert server.call("EXISTS", store.key(POLICY, "key")) == b":1\r\n"
            refused = [d for d in back if not d.allowed]
            assert refused
            assert all(d.limit == POLICY.limit for d in back[-5:])

    run(backend, main)


@pytest.mark.parametrize("on_error", ["fail_closed", "fail_open", "fallback"])
def test_outage_from_the_start(on_error: OnError, own_redis_server: RedisServer) -> None:
    """With Redis down from the first call, each on_error policy answers as documented."""
    server = own_redis_server

    async def main() -> None:
        async with open_client("coredis", server.port) as client:
            server.kill()
            store = RedisStore(
                client,
                on_error=on_error,
                nodes=NODES,
                timeout=0.2,
                recovery_time=0.05,
                fail_closed_retry_after=0.5,
            )
            _check_outage(on_error, _decisions(await _hammer(store, 0.3)))
            peeked = await store.peek(POLICY, "key")
            assert peeked.allowed is (on_error == "fail_open")
            await store.reset(POLICY, "key")  # best effort: no exception
            if on_error == "fallback":
                assert (await store.hit(POLICY, "key")).allowed  # the local count was reset

    run("trio", main)


def test_a_hung_redis_times_out(
    client_kind: tuple[str, str], own_redis_server: RedisServer
) -> None:
    """A frozen server costs each call at most ``timeout``, counts timeouts, then recovers."""
    library, backend = client_kind
    server = own_redis_server

    async def main() -> None:
        options: dict[str, Any] = {}
        async with open_client(library, server.port, **options) as client:
            store = RedisStore(client, on_error="fail_open", timeout=0.1, recovery_time=0.2)
            assert (await store.hit(POLICY, "key")).allowed
            server.pause()
            try:
                started = time.monotonic()
                decision = await store.hit(POLICY, "key")
                elapsed = time.monotonic() - started
                assert decision.allowed
                assert 0.09 <= elapsed < 0.5
                stats = store.statistics()
                assert stats.timeouts == 1
                assert not stats.available
                # Within recovery_time Redis is not asked: answered at once.
                started = time.monotonic()
                assert (await store.hit(POLICY, "key")).allowed
                assert time.monotonic() - started < 0.05
                assert store.statistics().timeouts == 1
            finally:
                server.resume()
            await _until_redis_answers(store)
            assert store.statistics().available

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancellation_reaches_the_caller(backend: str, own_redis_server: RedisServer) -> None:
    """A caller cancelled while Redis hangs gets its cancellation, not a decision; an outer
    deadline shorter than the store's is the caller's, and the store's own is the store's."""
    server = own_redis_server

    async def main() -> None:
        async with RedisStore.from_url(f"redis://127.0.0.1:{server.port}/0", timeout=5.0) as store:
            await store.hit(POLICY, "key")
            server.pause()
            try:
                with anyio.move_on_after(0.1) as scope:
                    await store.hit(POLICY, "key")
                assert scope.cancelled_caught
                if backend != "trio" and sys.version_info >= (3, 11):  # asyncio's own deadline
                    with pytest.raises(TimeoutError):
                        async with asyncio.timeout(0.1):
                            await store.hit(POLICY, "key")
                assert store.statistics().timeouts == 0
            finally:
                server.resume()
        async with RedisStore.from_url(f"redis://127.0.0.1:{server.port}/0", timeout=0.1) as store:
            await store.hit(POLICY, "key")
            server.pause()
            try:
                with anyio.fail_after(5.0):  # an outer scope that does not fire
                    decision = await store.hit(POLICY, "key")
                assert not decision.allowed  # fail_closed: the store's own deadline
                assert store.statistics().timeouts == 1
            finally:
                server.resume()

    run(backend, main)


# What a server in trouble answers a script that writes, how to cause it, how to undo it.
_STATES = {
    "OOM": (("CONFIG", "SET", "maxmemory", "1"), ("CONFIG", "SET", "maxmemory", "0")),
    "READONLY": (("REPLICAOF", "127.0.0.1", "1"), ("REPLICAOF", "NO", "ONE")),
}


@pytest.mark.parametrize("state", sorted(_STATES))
def test_a_full_or_read_only_redis_is_down_for_every_key(
    client_kind: tuple[str, str], state: str, own_redis_server: RedisServer
) -> None:
    """A server out of memory or turned into a replica refuses every write: that is Redis
    down (``on_error`` and ``recovery_time`` for every key), not one call's error, whatever
    the client calls its exception (redis-py's ``OutOfMemoryError``, coredis'
    ``ReadOnlyError``, both without the reply's first word); the store's last error names
    the reply. Once the server is back to normal, the store is too."""
    library, backend = client_kind
    server = own_redis_server
    cause, cure = _STATES[state]

    async def main() -> None:
        async with open_client(library, server.port) as client:
            store = RedisStore(client, on_error="fail_closed", recovery_time=0.05)
            assert (await store.hit(POLICY, "key")).allowed
            assert server.call(*cause).startswith(b"+OK")
            try:
                refused = await store.hit(POLICY, "key")
                assert not refused.allowed  # fail_closed
                stats = store.statistics()
                assert (stats.errors, stats.call_errors) == (1, 0), stats
                assert not stats.available
                assert f"{state} " in (stats.last_error or ""), stats.last_error
                # Within recovery_time another key is not sent to Redis either.
                assert not (await store.hit(POLICY, "other")).allowed
                assert store.statistics().errors == 1
            finally:
                assert server.call(*cure).startswith(b"+OK")
            await _until_redis_answers(store)
            assert (await store.hit(POLICY, "key")).allowed
            assert store.statistics().available

    run(backend, main)
