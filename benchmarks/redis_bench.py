"""Redis rate limiting: brace.redis.RedisStore against limits and pyrate-limiter.

Run it directly (it starts its own redis-server on a free 127.0.0.1 port)::

    python benchmarks/redis_bench.py                 # a few minutes
    python benchmarks/redis_bench.py --seconds 0.5 --repeat 1  # quicker, noisier

For each case, the best of ``--repeat`` rounds (the rounds run every case in turn, so a
burst of load on a shared machine hits all cases alike): decisions per second with 1 task
and with 100 concurrent tasks (each task deciding in a loop for ``--seconds``; keys drawn
from ``--keys`` keys, limits high enough that every request is admitted, so every library
does its full admitted path), and the
commands each decision sends to Redis, counted with ``MONITOR`` over 200 decisions:
commands from clients are counted, the commands a Lua script runs inside the server
(``[0 lua]``) are not. The peers send each command on its own (a command is a round
trip); brace coalesces the decisions asked while one is in flight into one pipeline, so
its round trips (counted by the store) are fewer than its commands under concurrency.

The two "floor" rows are what no client with one round trip per decision can beat: a raw
asyncio protocol writing a fixed command and counting fixed-size replies (a ``PING``,
and an ``EVALSHA`` of ``return 1``), no parsing, no decision. At 1 task a decision is a
round trip through the kernel, both event loops and Redis, so the floor bounds every
ratio: brace over a peer is at most floor over that peer.

All cases run on asyncio (limits' and pyrate-limiter's async Redis support is asyncio).
"default client" is what ``RedisStore.from_url`` builds there: redis-py's asyncio client
(coredis on trio). The rows naming a library give the store that library's client.
pyrate-limiter keeps one sorted set per bucket, so its case uses one bucket (one key).

The "leased" row is not one round trip per decision: a `brace.redis.LeasedStore` takes
leases of up to 64 tokens per key and admits from them locally (over-admission at most
64 per process and key, over any interval); it is compared with limits' moving window
at 1 task, and a last line measures its admissions on a tight bucket against that bound.
Its setup first takes every key through the ramp of lease sizes (1, 2, 4 ... 64 tokens),
as a long-running service would be: the row is the steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal


def encode(args: tuple[str, ...]) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    payload = b"*%d\r\n" % len(args)
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    return payload


Decide = Callable[[int], Awaitable[object]]
# A case's setup yields its decide(i) and, for brace, a count of the round trips so far.
Setup = Callable[[int, int], AbstractAsyncContextManager[tuple[Decide, Callable[[], int] | None]]]

LIMIT = 1_000_000  # per minute and key: nothing is refused during a run


@dataclass
class Result:
    name: str
    single: float = 0.0
    concurrent: float = 0.0
    commands: float = 0.0
    round_trips: float | None = None  # per decision, with 100 tasks
    error: str | None = None


# --- the server --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _command(port: int, *args: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
        connection.sendall(encode(args))
        return connection.recv(65536)


def start_server() -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found (apt-get install redis-server)")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if _command(port, "PING").startswith(b"+PONG"):
                return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("redis-server did not start")


class Monitor:
    """Counts the commands clients send (MONITOR lines not issued by a script)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.count = 0
        self._marker = f"bench-marker-{time.monotonic_ns()}"
        self._seen = threading.Event()
        self._connection = socket.create_connection(("127.0.0.1", port))
        self._connection.sendall(b"MONITOR\r\n")
        assert self._connection.recv(100).startswith(b"+OK")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = self._connection.recv(1 << 16)
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\r\n")
            for line in lines:
                if self._marker.encode() in line:
                    self._seen.set()
                    return
                if line.startswith(b"+") and b" lua]" not in line:
                    self.count += 1

    def stop(self) -> int:
        _command(self.port, "ECHO", self._marker)
        self._seen.wait(10)
        self._connection.close()
        return self.count


# --- the cases ---------------------------------------------------------------------------


def _brace(library: str, kind: str) -> Setup:
    @asynccontextmanager
    async def setup(port: int, keys: int) -> AsyncIterator[tuple[Decide, Callable[[], int] | None]]:
        from brace import RateLimiter
        from brace._core.gcra import GCRA
        from brace._core.window import SlidingLog, SlidingWindowCounter
        from brace.redis import RedisStore

        policy: GCRA | SlidingWindowCounter | SlidingLog
        if kind == "gcra":
            policy = GCRA(LIMIT, 60.0, burst=LIMIT)
        elif kind == "counter":
            policy = SlidingWindowCounter(LIMIT, 60.0)
        else:
            policy = SlidingLog(LIMIT, 60.0)
        names = [f"user:{i}" for i in range(keys)]
        if library == "default":
            async with RedisStore.from_url(f"redis://127.0.0.1:{port}/0") as store:
                hit_default = RateLimiter(policy, store=store).hit

                async def decide_default(i: int) -> object:
                    return await hit_default(names[i % keys])

                yield decide_default, lambda: _round_trips(store)
            return
        async with _client(library, port) as client:
            store = RedisStore(client)
            limiter = RateLimiter(policy, store=store)
            hit = limiter.hit

            async def decide(i: int) -> object:
                return await hit(names[i % keys])

            yield decide, lambda: _round_trips(store)

    return setup


def _leased(max_lease: int) -> Setup:
    """brace's GCRA behind a `LeasedStore`: leases of up to ``max_lease`` tokens per key,
    spent locally (the decisions between two leases make no round trip)."""

    @asynccontextmanager
    async def setup(port: int, keys: int) -> AsyncIterator[tuple[Decide, Callable[[], int] | None]]:
        from brace import RateLimiter
        from brace._core.gcra import GCRA
        from brace.redis import LeasedStore, RedisStore

        names = [f"user:{i}" for i in range(keys)]
        async with RedisStore.from_url(f"redis://127.0.0.1:{port}/0") as store:
            leased = LeasedStore(store, max_lease=max_lease, lease_time=60.0)
            hit = RateLimiter(GCRA(LIMIT, 60.0, burst=LIMIT), store=leased).hit

            async def decide(i: int) -> object:
                return await hit(names[i % keys])

            # Steady state: a key's leases double from 1 token up to max_lease while they
            # are spent quickly; with 1000 keys and one task, the harness's 300 warm-up
            # decisions would leave every key at its first lease. A long-running service
            # is past that ramp: take each key through it first (7 leases per key).
            for i in range(keys * 2 * max_lease):
                await decide(i)

            yield decide, lambda: _round_trips(store)

    return setup


async def leased_over_admission(port: int, seconds: float, max_lease: int) -> str:
    """One task hammering one key of a tight bucket through a `LeasedStore`: what it
    admitted against the stated bound (exact bound + processes * max_lease, 1 process)."""
    from brace._core.gcra import GCRA
    from brace.redis import LeasedStore, RedisStore

    _command(port, "FLUSHALL")
    policy = GCRA(2000.0, 1.0, burst=100)
    async with RedisStore.from_url(f"redis://127.0.0.1:{port}/0") as store:
        leased = LeasedStore(store, max_lease=max_lease)
        admitted = decisions = 0
        started = time.perf_counter()
        stop = started + seconds
        while time.perf_counter() < stop:
            decisions += 1
            if (await leased.hit(policy, "tight")).allowed:
                admitted += 1
        elapsed = time.perf_counter() - started
    bound = policy.burst + policy.rate * elapsed + max_lease
    return (
        f"leased over-admission (GCRA 2000/s, burst 100, max_lease {max_lease}, 1 task, "
        f"{elapsed:.2f} s): {admitted:,} admitted of {decisions:,} asked; bound "
        f"burst + rate * t + 1 * max_lease = {bound:,.0f} ({admitted / bound:.1%} of it)"
    )


def _round_trips(store: Any) -> int:
    """The store's round trips so far; an error if any decision did not come from Redis."""
    stats = store.statistics()
    if stats.fallbacks:
        raise RuntimeError(f"{stats.fallbacks} decisions not made by Redis: {stats.last_error}")
    return int(stats.round_trips)


@asynccontextmanager
async def _client(library: str, port: int) -> AsyncIterator[Any]:
    if library == "redis-py":
        import redis.asyncio

        client = redis.asyncio.Redis(host="127.0.0.1", port=port, max_connections=200)
        try:
            yield client
        finally:
            await client.aclose()
    else:
        import coredis

        async with coredis.Redis(host="127.0.0.1", port=port) as core:
            yield core


def _limits(strategy: str, implementation: Literal["redispy", "coredis"]) -> Setup:
    @asynccontextmanager
    async def setup(port: int, keys: int) -> AsyncIterator[tuple[Decide, Callable[[], int] | None]]:
        from limits import RateLimitItemPerMinute
        from limits.aio import storage, strategies

        store = storage.RedisStorage(
            f"async+redis://127.0.0.1:{port}", implementation=implementation
        )
        limiter_class = {
            "moving": strategies.MovingWindowRateLimiter,
            "counter": strategies.SlidingWindowCounterRateLimiter,
        }[strategy]
        limiter = limiter_class(store)
        item = RateLimitItemPerMinute(LIMIT)
        names = [f"user:{i}" for i in range(keys)]
        hit = limiter.hit

        async def decide(i: int) -> object:
            return await hit(item, names[i % keys])

        if implementation == "coredis":
            # coredis 5+ serves requests only inside ``async with client``, which limits
            # does not do for its own client (it fails with "Connection pool is not
            # initialized"): enter the client limits made, as its user would have to.
            bridge: Any = store.bridge
            async with bridge.storage:
                yield decide, None
        else:
            yield decide, None

    return setup


@asynccontextmanager
async def _pyrate(port: int, keys: int) -> AsyncIterator[tuple[Decide, Callable[[], int] | None]]:
    import redis.asyncio
    from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

    client = redis.asyncio.Redis(host="127.0.0.1", port=port, max_connections=200)
    try:
        bucket = await RedisBucket.init([Rate(LIMIT, Duration.MINUTE)], client, "pyrate-bench")
        limiter = Limiter(bucket)

        async def decide(i: int) -> object:
            return await limiter.try_acquire_async("user", blocking=False)

        yield decide, None
    finally:
        await client.aclose()


class _RawProtocol(asyncio.Protocol):
    """The least a client can do: write a fixed command, count fixed-size replies."""

    def __init__(self, reply_size: int) -> None:
        self.reply_size = reply_size
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.pending = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        while self.pending >= self.reply_size:
            self.pending -= self.reply_size
            self.waiting.popleft().set_result(None)


def _floor(command: tuple[str, ...], reply: bytes) -> Setup:
    """One round trip per decision and no client code: no one-round-trip client is faster.

    ``command`` is written as is; a ``"{sha}"`` in it is replaced by the SHA1 of the
    script ``return 1``, loaded first."""

    @asynccontextmanager
    async def setup(port: int, keys: int) -> AsyncIterator[tuple[Decide, Callable[[], int] | None]]:
        loop = asyncio.get_running_loop()
        args = command
        if "{sha}" in args:
            sha = _command(port, "SCRIPT", "LOAD", "return 1").split(b"\r\n")[1].decode()
            args = tuple(arg.replace("{sha}", sha) for arg in args)
        payload = encode(args)
        transport, protocol = await loop.create_connection(
            lambda: _RawProtocol(len(reply)), "127.0.0.1", port
        )
        write = transport.write
        waiting = protocol.waiting

        async def decide(i: int) -> object:
            future = loop.create_future()
            waiting.append(future)
            write(payload)
            return await future

        try:
            yield decide, None
        finally:
            transport.close()

    return setup


FLOOR = "floor: "
CASES: list[tuple[str, Setup]] = [
    (FLOOR + "PING, raw asyncio protocol", _floor(("PING",), b"+PONG\r\n")),
    (
        FLOOR + "EVALSHA of 'return 1', raw asyncio protocol",
        _floor(("EVALSHA", "{sha}", "0"), b":1\r\n"),
    ),
    ("brace GCRA (default client)", _brace("default", "gcra")),
    ("brace sliding window counter (default client)", _brace("default", "counter")),
    ("brace sliding log (default client)", _brace("default", "log")),
    ("brace GCRA, leased (default client, max_lease 64)", _leased(64)),
    ("brace sliding window counter (redis-py, given)", _brace("redis-py", "counter")),
    ("brace sliding window counter (coredis)", _brace("coredis", "counter")),
    ("limits moving window (coredis)", _limits("moving", "coredis")),
    ("limits sliding window counter (coredis)", _limits("counter", "coredis")),
    ("limits moving window (redis-py)", _limits("moving", "redispy")),
    ("limits sliding window counter (redis-py)", _limits("counter", "redispy")),
    ("pyrate-limiter RedisBucket (redis-py)", _pyrate),
]


# --- measuring ---------------------------------------------------------------------------


async def _rate(decide: Decide, tasks: int, seconds: float) -> tuple[float, int]:
    """Decisions per second of ``tasks`` tasks deciding for ``seconds``, and how many."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < stop:
            await decide(i)
            i += 7919
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(tasks)))
    return done / (time.perf_counter() - started), done


async def measure(name: str, setup: Setup, port: int, keys: int, seconds: float) -> Result:
    result = Result(name)
    _command(port, "FLUSHALL")
    try:
        async with setup(port, keys) as (decide, round_trips):
            for i in range(100):  # warm up: connections, scripts
                await decide(i)
            monitor = Monitor(port)
            for i in range(200):
                await decide(i)
            result.commands = monitor.stop() / 200
            result.single, _ = await _rate(decide, 1, seconds)
            before = round_trips() if round_trips is not None else 0
            result.concurrent, decisions = await _rate(decide, 100, seconds)
            if round_trips is not None:  # raises if any decision was not Redis's
                result.round_trips = (round_trips() - before) / decisions
    except Exception as exc:  # a peer that does not work here is reported, not fatal
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def table(results: list[Result]) -> str:
    rows = [
        "| case | decisions/s, 1 task | decisions/s, 100 tasks "
        "| commands per decision | round trips per decision, 100 tasks |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.error:
            rows.append(f"| {r.name} | error: {r.error} | | | |")
        else:
            if r.name.startswith(FLOOR):
                trips = "(writes as they come)"
            elif r.round_trips is not None:
                trips = f"{r.round_trips:.3f}"
            else:
                trips = f"{r.commands:.2f} (no pipelining)"
            rows.append(
                f"| {r.name} | {r.single:,.0f} | {r.concurrent:,.0f} | {r.commands:.2f} | {trips} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds over all the cases, interleaved; each case keeps its best round",
    )
    options = parser.parse_args()
    process, port = start_server()
    try:
        version = _command(port, "INFO", "server").split(b"redis_version:")[1].split(b"\r")[0]
        print(
            f"redis {version.decode()} on 127.0.0.1, Python {platform.python_version()}, "
            f"{options.seconds} s per measurement, {options.keys} keys, "
            f"best of {options.repeat} interleaved rounds\n"
        )
        best: dict[str, Result] = {}
        for round_ in range(options.repeat):
            for name, setup in CASES:
                if options.filter not in name:
                    continue
                result = asyncio.run(measure(name, setup, port, options.keys, options.seconds))
                print(f"  round {round_ + 1}, {name}: done", file=sys.stderr)
                kept = best.setdefault(name, result)
                if kept is not result and not result.error:
                    kept.single = max(kept.single, result.single)
                    kept.concurrent = max(kept.concurrent, result.concurrent)
        results = list(best.values())
        print(table(results))
        floors = [r for r in results if not r.error and r.name.startswith(FLOOR)]
        peers = [r for r in results if not r.error and not r.name.startswith(("brace", FLOOR))]
        # one round trip per decision: the leased row is compared on its own below
        ours = [
            r
            for r in results
            if not r.error and r.name.startswith("brace") and "leased" not in r.name
        ]
        if peers and ours:
            for label, attribute in (("1 task", "single"), ("100 tasks", "concurrent")):
                best_peer = max(peers, key=lambda r: getattr(r, attribute))
                best_ours = max(ours, key=lambda r: getattr(r, attribute))
                ratio = getattr(best_ours, attribute) / getattr(best_peer, attribute)
                print(
                    f"\n{label}: best brace {getattr(best_ours, attribute):,.0f}/s "
                    f"({best_ours.name}) vs best peer {getattr(best_peer, attribute):,.0f}/s "
                    f"({best_peer.name}): x{ratio:.2f}"
                )
                if floors:
                    floor = max(floors, key=lambda r: getattr(r, attribute))
                    bound = getattr(floor, attribute) / getattr(best_peer, attribute)
                    print(
                        f"  floor {getattr(floor, attribute):,.0f}/s ({floor.name}): "
                        f"brace at {getattr(best_ours, attribute) / getattr(floor, attribute):.0%}"
                        f" of it; a one-round-trip client can be at most x{bound:.2f} the peer"
                    )
        leased = [r for r in results if not r.error and "leased" in r.name]
        moving = [r for r in results if not r.error and r.name == "limits moving window (redis-py)"]
        if leased and moving:
            print(
                f"\nleased vs limits moving window (redis-py), 1 task: "
                f"{leased[0].single:,.0f}/s vs {moving[0].single:,.0f}/s: "
                f"x{leased[0].single / moving[0].single:.1f}"
            )
        if any(options.filter in name for name, _ in CASES if "leased" in name):
            print(asyncio.run(leased_over_admission(port, options.seconds, 64)))
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()
