"""FleetBreaker across 4 processes: propagation time, quorum, probes limited fleet-wide.

Each worker process (asyncio, asyncio, uvloop, trio) runs a `FleetBreaker` syncing every
100 ms, watches its breaker every 5 ms and prints each state change with the wall
clock (one host: the processes share it). The test tells workers, through stdin, when
their upstream fails; protected calls count themselves in and out of a Redis counter.
"""

from __future__ import annotations

import subprocess
import sys
import time

pytest_plugins = ("redis_fixtures",)

BACKENDS = ["asyncio", "asyncio", "uvloop", "trio"]
SYNC_INTERVAL = 0.1
# The propagation bound: the tripping replica's next sync, then each reader's, plus the
# round trips and the 5 ms watch; with room for a loaded 2-core machine.
BOUND = 2 * SYNC_INTERVAL + 0.4

_WORKER = """
import sys, time
import anyio
import brace
from brace.redis import FleetBreaker, RedisStore

backend, url, quorum, recovery = sys.argv[1:5]
quorum = None if quorum == "none" else float(quorum)

def say(*words):
    print(*words, flush=True)

async def main():
    store = RedisStore.from_url(url, timeout=2.0)
    async with store:
        breaker = brace.CircuitBreaker(
            failure_threshold=3, recovery_time=float(recovery), half_open_max_calls=5
        )
        fleet = FleetBreaker(
            store, "upstream", breaker, quorum=quorum, sync_interval=0.1,
            half_open_max_calls=1,
        )
        counter = store.client  # from_url's client: the library's own below
        async with anyio.create_task_group() as group:
            group.start_soon(fleet.run)

            async def watch():
                last = breaker.state
                while True:
                    await anyio.sleep(0.005)
                    state = breaker.state
                    if state is not last:
                        say("state", state.value, repr(time.time()))
                        last = state

            group.start_soon(watch)
            raw = counter._client.client

            async def broken():
                active = await raw.incr("calls-in-flight")
                await raw.incr("calls")
                try:
                    await anyio.sleep(0.05)
                finally:
                    await raw.decr("calls-in-flight")
                say("inflight", active)
                raise ConnectionError("upstream down")

            await fleet.sync()
            say("ready")
            while True:
                line = (await anyio.to_thread.run_sync(sys.stdin.readline)).strip()
                if line == "fail":
                    for _ in range(3):
                        try:
                            await fleet.call(broken)
                        except (ConnectionError, brace.CircuitOpen):
                            pass
                    say("tripped", breaker.state.value, repr(time.time()))
                elif line == "probe":
                    stop = time.monotonic() + 2.0
                    async def hammer():
                        while time.monotonic() < stop:
                            try:
                                await fleet.call(broken)
                            except (ConnectionError, brace.CircuitOpen):
                                pass
                            await anyio.sleep(0.01)
                    async with anyio.create_task_group() as inner:
                        for _ in range(3):
                            inner.start_soon(hammer)
                    say("probed", fleet.statistics().probes)
                else:
                    group.cancel_scope.cancel()
                    return

if backend == "uvloop":
    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
else:
    anyio.run(main, backend=backend)
"""


class Fleet:
    def __init__(self, port: int, quorum: str, recovery: float) -> None:
        url = f"redis://127.0.0.1:{port}/0"
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, backend, url, quorum, repr(recovery)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for backend in BACKENDS
        ]
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line == "ready\n", (line, process.communicate(timeout=30))

    def tell(self, index: int, word: str) -> None:
        stdin = self.processes[index].stdin
        assert stdin is not None
        stdin.write(word + "\n")
        stdin.flush()

    def finish(self) -> list[list[list[str]]]:
        """Stop every worker; each one's output lines, split into words."""
        outputs = []
        for index, process in enumerate(self.processes):
            if process.poll() is None:
                self.tell(index, "quit")
        for process in self.processes:
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
            outputs.append([line.split() for line in out.splitlines()])
        return outputs

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def _first_open(lines: list[list[str]]) -> float | None:
    for words in lines:
        if words[:2] == ["state", "open"]:
            return float(words[2])
    return None


def test_a_trip_reaches_every_process_in_time_and_probes_stay_one_at_a_time(
    redis_port: int,
) -> None:
    """Shared mode: one process trips, all 4 open within 2 sync intervals (+ slack);
    then, the upstream still down, at most 1 probe runs at a time across the fleet."""
    fleet = Fleet(redis_port, "none", 0.5)
    try:
        fleet.tell(0, "fail")
        time.sleep(1.0)
        for index in range(4):
            fleet.tell(index, "probe")
        time.sleep(3.0)
        outputs = fleet.finish()
    finally:
        fleet.kill()
    tripped = next(words for words in outputs[0] if words[0] == "tripped")
    assert tripped[1] == "open"
    opened = [_first_open(lines) for lines in outputs]
    assert all(when is not None for when in opened), outputs
    started = min(when for when in opened if when is not None)  # worker 0's own trip
    delays = [when - started for when in opened if when is not None]
    print("open after", [f"{delay:.3f}" for delay in delays])
    assert max(delays) <= BOUND
    in_flight = [int(words[1]) for lines in outputs for words in lines if words[0] == "inflight"]
    probes = sum(int(words[1]) for lines in outputs for words in lines if words[0] == "probed")
    print("probes", probes, "calls", len(in_flight))
    assert probes >= 2  # the fleet did probe, again and again
    assert max(in_flight) == 1  # but never two at once (the 3 tripping calls ran alone too)


def test_quorum_mode_opens_only_when_the_quorum_reports_open(redis_port: int) -> None:
    """quorum=0.5 of 4: one process failing alone opens only itself; a second opens all."""
    fleet = Fleet(redis_port, "0.5", 10.0)
    try:
        fleet.tell(0, "fail")
        time.sleep(1.0)
        second = time.time()
        fleet.tell(1, "fail")
        time.sleep(1.0)
        outputs = fleet.finish()
    finally:
        fleet.kill()
    opened = [_first_open(lines) for lines in outputs]
    print(opened, second)
    assert opened[0] is not None
    assert opened[0] < second
    for when in opened[1:]:
        assert when is not None
        assert second <= when <= second + BOUND + 0.2  # not before the quorum
