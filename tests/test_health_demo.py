"""Acceptance: a client written from the specification's field list reads the health
endpoints of a live `brace-demo serve` (a real uvicorn process on 127.0.0.1, real time,
a few seconds), after traffic, and every body validates against the schema."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from spec_health_client import QueueMetrics, read_full, read_queue, validate

MB = 2**20

# SEED.md's health endpoint list, and the schema definition of each body
ENDPOINTS = {
    "/health": "liveness",
    "/api/health/full": "full",
    "/api/health/queue": "queueMetrics",
    "/api/health/metrics": "systemMetrics",
}


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[str, int]]:
    """`brace-demo serve` on a free port: its base URL and the server's pid."""
    command = [sys.executable, "-m", "brace_demo", "serve", "--port", "0", "--loop", "asyncio"]
    command += ["--log-level", "warning"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline().decode()
            found = re.search(r"listening on (http://[0-9.]+:\d+)", line)
            assert found is not None, line
            yield found[1], server.pid
            server.send_signal(signal.SIGTERM)
            assert server.wait(40) is not None
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(10)


def resident_mb(pid: int) -> float | None:
    """The process's RSS in MB, read the way an operator would (``/proc/PID/status``)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return None if found is None else int(found[1]) * 1024 / MB


def test_spec_client_reads_the_live_demo(demo: tuple[str, int]) -> None:
    """After a burst of AI calls that must queue (40 at once, 10 slots, 0.5 s each), the
    specification's client reads /api/health/queue and /api/health/full of `brace-demo
    serve`: counts add up, times are milliseconds, heapUsed is the server's memory in MB,
    the AI limits of 40 users show as 40 active windows; all four bodies validate.
    (A real event loop, not virtual time: the server is another process.)"""
    url, pid = demo
    snapshots: list[QueueMetrics] = []
    results: dict[str, Any] = {}

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await traffic(http)

    async def traffic(http: httpx.AsyncClient) -> None:
        for path, definition in ENDPOINTS.items():
            response = await http.get(path)
            assert response.status_code == 200, (path, response.text)
            validate(response.json(), definition)
        before = read_queue((await http.get("/api/health/queue")).json())

        served = 0
        for burst in range(3):  # a busy machine may shed a burst (503 overloaded): again
            reads: list[int] = []

            async def read(user: int, burst: int = burst, reads: list[int] = reads) -> None:
                headers = {"x-user": f"reader-{burst}-{user}"}
                answer = await http.post("/api/ai", json={"prompt": "hello"}, headers=headers)
                if answer.status_code == 503:  # shed by the load monitor or the queue
                    assert answer.json()["error"] in ("overloaded", "queue_full"), answer.text
                else:
                    assert answer.status_code == 200, answer.text
                reads.append(answer.status_code)

            async def watch(reads: list[int] = reads) -> None:
                while len(reads) < 40:
                    answer = await http.get("/api/health/queue")
                    validate(answer.json(), "queueMetrics")
                    snapshots.append(read_queue(answer.json()))
                    await anyio.sleep(0.02)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(watch)
                for user in range(40):
                    tasks.start_soon(read, user)
            served += reads.count(200)
            if max(snapshot.pending for snapshot in snapshots) > 0 and served >= 40:
                break
        results["served"] = served

        body = (await http.get("/api/health/queue")).json()
        validate(body, "queueMetrics")
        after = read_queue(body)
        full_body = (await http.get("/api/health/full")).json()
        validate(full_body, "full")
        full = read_full(full_body)
        for path, definition in ENDPOINTS.items():
            validate((await http.get(path)).json(), definition)
        missing = await http.get("/api/health/nope")
        assert missing.status_code == 404
        validate(missing.json(), "error")
        results.update(before=before, after=after, full=full)

    anyio.run(scenario)
    before, after, full = results["before"], results["after"], results["full"]

    # the burst queued: some snapshot saw AI calls (MEDIUM) waiting, and every snapshot's
    # distribution added up to its pending count (read_queue checks that)
    assert max(snapshot.pending for snapshot in snapshots) > 0, snapshots
    assert max(snapshot.medium for snapshot in snapshots) > 0
    assert all(snapshot.running <= 10 for snapshot in snapshots)
    # counts: at least the calls answered 200 finished since the first look, none failed
    assert results["served"] >= 40
    assert after.completed - before.completed >= results["served"], (before, after)
    assert after.failed == 0
    # milliseconds: each call holds a slot for the upstream's 0.5 s (the health checks
    # beside them take about none), and 30 of the 40 waited 0.5 s or more for a slot;
    # in seconds these would read below 1
    assert after.average_processing_ms >= 20.0, after
    assert after.average_processing_ms < 30_000.0
    assert after.average_wait_ms > 5.0, after
    assert (after.breaker_state, after.breaker_open) == ("CLOSED", False)
    # rate limits: each reader has its own 10/minute window
    assert after.active_windows >= 40
    assert after.active_buckets >= 0
    # the request asking is itself in flight through the middleware
    assert after.active_requests >= 1
    # heapUsed is MB of the server's memory
    assert 5 <= after.heap_used_mb <= 4096
    rss = resident_mb(pid)
    if rss is not None:
        assert abs(after.heap_used_mb - rss) <= max(30.0, rss * 0.3), (after.heap_used_mb, rss)
    # the full-health body: status, memory, uptime, breakers, queue, rate limits
    assert full.status == "ok", full
    assert full.checks["database"] == "ok", full
    assert full.breaker_states == {"ai_upstream": "CLOSED"}
    assert full.uptime_ms > 100.0  # the server has run for a while: seconds as ms
    assert abs(full.heap_used_mb - after.heap_used_mb) <= 30
    assert full.queue.completed >= after.completed
    assert full.queue.active_windows >= 40
