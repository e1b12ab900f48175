"""Many processes, one limit: 4 worker processes x 100 tasks never exceed it in any window.

Each worker process opens its own client (what ``RedisStore.from_url`` builds on asyncio,
uvloop and trio, and coredis on trio), connects, waits for the word to start, starts 100 tasks
and for one second every task hits the same key of each policy as fast as it can. A
worker reports the server time (``TIME``, read by the script that decided) of each
admission and how many it was refused. Pooled, those times must obey each policy's
guarantee over every window, and the refusals must outnumber the admissions (otherwise
the test would prove nothing).
"""

from __future__ import annotations

import json
import subprocess
import sys

from brace._core.gcra import EPSILON as GCRA_EPSILON
from brace._core.gcra import GCRA
from brace._core.window import EPSILON as WINDOW_EPSILON
from redis_server import RedisCluster

pytest_plugins = ("redis_fixtures",)

WORKERS = [
    ("default", "asyncio"),
    ("default", "uvloop"),
    ("coredis", "trio"),
    ("default", "trio"),
]
TASKS = 100
SECONDS = 1.0
BURST, RATE = 5, 40.0  # GCRA: 40 per second, bursts of 5
LIMIT, WINDOW = 10, 0.25  # counter and log: 10 per 250 ms

_WORKER = """
import json, sys, time
import anyio
from brace._core.gcra import GCRA
from brace._core.window import SlidingLog, SlidingWindowCounter
from brace.redis import RedisStore

library, backend, url, cluster = sys.argv[1:5]
cluster = cluster == "cluster"
seconds, tasks, rate, burst, limit, window = map(float, sys.argv[5:])
tasks, burst, limit = int(tasks), int(burst), int(limit)
policies = {
    "gcra": GCRA(rate, 1.0, burst=burst),
    "counter": SlidingWindowCounter(limit, window),
    "log": SlidingLog(limit, window),
}

async def main():
    admitted = {name: [] for name in policies}
    refused = {name: 0 for name in policies}
    errors = []
    async def work(client):
        store = RedisStore(client, timeout=None)
        for policy in policies.values():  # connected, scripts loaded: then wait for "go"
            await store.peek(policy, "warm-up", 1)
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        stop = time.monotonic() + seconds
        async def task():
            while time.monotonic() < stop:
                for name, policy in policies.items():
                    try:
                        decision, now = await store._decide_at(
                            policy, "shared", 1, None, coalesce=True
                        )
                    except Exception as exc:
                        errors.append(repr(exc))
                        return
                    if decision.allowed:
                        admitted[name].append(now)
                    else:
                        refused[name] += 1
        async with anyio.create_task_group() as group:
            for _ in range(tasks):
                group.start_soon(task)
    if library == "default":
        from brace.redis._clients import UrlClient
        client = UrlClient(url, cluster=cluster, options={})
        await client.open()
        try:
            await work(client)
        finally:
            await client.aclose()
    else:
        import coredis
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            kind = coredis.RedisCluster if cluster else coredis.Redis
            core = kind.from_url(url)
        async with core:
            await work(core)
    print(json.dumps({"admitted": admitted, "refused": refused, "errors": errors}))

if backend == "uvloop":
    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
else:
    anyio.run(main, backend=backend)
"""


def _run_workers(url: str, cluster: bool) -> tuple[dict[str, list[float]], dict[str, int]]:
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WORKER,
                library,
                backend,
                url,
                "cluster" if cluster else "single",
                *map(repr, (SECONDS, TASKS, RATE, BURST, LIMIT, WINDOW)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for library, backend in WORKERS
    ]
    for process in processes:  # every worker connected before any starts
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    pooled: dict[str, list[float]] = {"gcra": [], "counter": [], "log": []}
    refused = dict.fromkeys(pooled, 0)
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        report = json.loads(out)
        assert report["errors"] == []
        for name, times in report["admitted"].items():
            pooled[name].extend(times)
            refused[name] += report["refused"][name]
    for times in pooled.values():
        times.sort()
    return pooled, refused


def _most_in_any_window(times: list[float], window: float, slack: float) -> int:
    """The most admissions in any (t - window + slack, t] ending at an admission."""
    most = 0
    first = 0
    for last, stamp in enumerate(times):
        while times[first] <= stamp - window + slack:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_four_processes_never_exceed_the_limit(redis_port: int) -> None:
    """Pooled admissions of 4 processes x 100 tasks obey each policy in every window."""
    _check_limits(*_run_workers(f"redis://127.0.0.1:{redis_port}/0", cluster=False))


def test_four_processes_never_exceed_the_limit_on_a_cluster(redis_cluster: RedisCluster) -> None:
    """The same on a 3-node Redis Cluster: every policy's key keeps its limit."""
    url = f"redis://127.0.0.1:{redis_cluster.ports[0]}"
    _check_limits(*_run_workers(url, cluster=True))


def _check_limits(pooled: dict[str, list[float]], refused: dict[str, int]) -> None:
    print({name: len(times) for name, times in pooled.items()}, refused)
    # The tasks contended: each policy refused far more than it admitted (else the
    # bounds below would prove nothing).
    for name, times in pooled.items():
        assert times
        assert refused[name] > 3 * len(times), name

    # Exact sliding log: any window of WINDOW seconds holds at most LIMIT.
    log = pooled["log"]
    assert _most_in_any_window(log, WINDOW, WINDOW_EPSILON) <= LIMIT

    # Counter: each aligned window admits at most LIMIT, any sliding one under 2 * LIMIT.
    counter = pooled["counter"]
    per_window: dict[int, int] = {}
    for stamp in counter:
        index = int(stamp // WINDOW)
        per_window[index] = per_window.get(index, 0) + 1
    assert max(per_window.values()) <= LIMIT
    assert _most_in_any_window(counter, WINDOW, 0.0) <= 2 * LIMIT - 1

    # GCRA: between any two admissions, at most burst + elapsed / interval of them.
    gcra = pooled["gcra"]
    interval = GCRA(RATE, 1.0, burst=BURST).interval
    for i, first in enumerate(gcra):
        for j in range(i, len(gcra)):
            allowed = BURST + (gcra[j] - first + GCRA_EPSILON) / interval
            assert j - i + 1 <= allowed + 1e-9, (i, j, first, gcra[j])
