"""A 5/minute limit shared through Redis by the workers of real ASGI servers.

``tests/programs/redis_app.py`` under ``uvicorn --workers 2`` on uvloop and on asyncio,
and under hypercorn's trio worker, with ``RedisStore.from_url``: 12 requests spread over
the workers get exactly 5 answers of 200, since the workers share the count in Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from redis_server import free_port

pytest_plugins = ("redis_fixtures",)

PROGRAMS = Path(__file__).parent / "programs"

SERVERS = [
    pytest.param(
        ["-m", "uvicorn", "redis_app:app", "--loop", "uvloop", "--workers", "2"],
        "uvloop",
        id="uvicorn-uvloop",
    ),
    pytest.param(
        ["-m", "uvicorn", "redis_app:app", "--loop", "asyncio", "--workers", "2"],
        "asyncio",
        id="uvicorn-asyncio",
    ),
    pytest.param(
        ["-m", "hypercorn", "redis_app:app", "--worker-class", "trio", "--workers", "2"],
        "trio",
        id="hypercorn-trio",
    ),
]


def _serve(arguments: list[str], port: int, url: str) -> subprocess.Popen[bytes]:
    if arguments[1] == "uvicorn":
        where = ["--host", "127.0.0.1", "--port", str(port), "--lifespan", "on"]
    else:
        where = ["--bind", f"127.0.0.1:{port}"]
    environment = {
        **os.environ,
        "BRACE_REDIS_URL": url,
        "BRACE_REDIS_PREFIX": uuid.uuid4().hex,
        "PYTHONPATH": os.pathsep.join([str(PROGRAMS), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, *arguments, *where],
        cwd=PROGRAMS,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def stopped() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The servers a test starts, stopped (SIGTERM, then SIGKILL) at teardown."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + 30.0
    while True:
        try:
            return httpx.get(base + "/ready", timeout=1.0)
        except httpx.TransportError:
            if process.poll() is not None:
                assert process.stderr is not None
                raise AssertionError(process.stderr.read().decode()) from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize(("arguments", "loop"), SERVERS)
def test_twelve_requests_over_two_workers_get_exactly_five(
    arguments: list[str],
    loop: str,
    redis_port: int,
    stopped: list[subprocess.Popen[bytes]],
) -> None:
    """12 requests to a 5/minute limit over 2 workers: exactly 5 admitted, on this loop."""
    port = free_port()
    process = _serve(arguments, port, f"redis://127.0.0.1:{redis_port}/0")
    stopped.append(process)
    base = f"http://127.0.0.1:{port}"
    ready = _wait_ready(base, process)
    assert ready.status_code == 200
    assert ready.headers["x-loop"] == loop
    statuses = []
    for _ in range(12):
        with httpx.Client() as client:  # a new connection each: spread over the workers
            statuses.append(client.get(base + "/upload", timeout=5.0).status_code)
    assert statuses.count(200) == 5, statuses
    assert statuses.count(429) == 7, statuses


def test_a_wrong_password_stops_the_server_at_startup(
    auth_redis_url: str, stopped: list[subprocess.Popen[bytes]]
) -> None:
    """With a wrong password the app's lifespan check fails and uvicorn exits, naming it."""
    process = _serve(
        ["-m", "uvicorn", "redis_app:app", "--loop", "uvloop"], free_port(), auth_redis_url
    )
    stopped.append(process)
    _, err = process.communicate(timeout=30)
    assert process.returncode != 0
    assert b"RedisAuthenticationError" in err
