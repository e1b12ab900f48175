"""A real redis-server for the Redis store's tests, and the clients to reach it.

Helpers only; the pytest fixtures are in ``redis_fixtures`` (load them in a test module
with ``pytest_plugins = ("redis_fixtures",)``).

Why the Redis tests are synchronous functions calling ``anyio.run``: the suite's virtual
clocks (trio's ``MockClock(autojump_threshold=0)``, looptime on asyncio) jump to the next
deadline whenever every task waits, and a task waiting for a socket counts as waiting:
a ``timeout`` around a Redis call then fires at once (checked: a ``PING`` under
``anyio.fail_after(1)`` on a looptime loop raises ``TimeoutError``). Talking to a real
server needs real time, so these tests run their own loops, briefly.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import pytest

T = TypeVar("T")

# coredis 6.9 leaves the anyio memory streams of a request that failed or was cancelled
# unclosed (its bug, not the store's: the store makes no streams). Modules using coredis
# ignore that ResourceWarning (a filterwarnings mark) and use the fixture
# ``collect_coredis_garbage`` so that the leaks are collected within their own tests.
COREDIS_LEAK = "ignore:Unclosed <MemoryObject:ResourceWarning"

REDIS_BINARY = shutil.which("redis-server") or "/usr/bin/redis-server"

# The loops every test opening a Redis socket runs on: uvloop is what uvicorn[standard]
# runs on by default, so it is tested wherever asyncio is.
BACKENDS = ["asyncio", "uvloop", "trio"]

# (client library, loop): "default" is what RedisStore.from_url builds (redis-py on
# asyncio and uvloop, coredis on trio); coredis runs on anyio; redis-py only on asyncio
# (under trio, RedisStore.check raises RedisBackendError: see test_redis_stacks.py).
CLIENT_KINDS = [
    pytest.param(("default", "asyncio"), id="default-asyncio"),
    pytest.param(("default", "uvloop"), id="default-uvloop"),
    pytest.param(("default", "trio"), id="default-trio"),
    pytest.param(("redis-py", "asyncio"), id="redis-py-asyncio"),
    pytest.param(("redis-py", "uvloop"), id="redis-py-uvloop"),
    pytest.param(("coredis", "asyncio"), id="coredis-asyncio"),
    pytest.param(("coredis", "uvloop"), id="coredis-uvloop"),
    pytest.param(("coredis", "trio"), id="coredis-trio"),
]


def free_port() -> int:
    """A TCP port nobody listens on at the moment, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one command over a fresh blocking socket; the raw reply (test helper)."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


class RedisServer:
    """One redis-server process on a fixed port, which can be killed and started again."""

    def __init__(self, port: int | None = None) -> None:
        self.port = free_port() if port is None else port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                REDIS_BINARY,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10.0
        while True:
            try:
                if command(self.port, "PING", timeout=0.5).startswith(b"+PONG"):
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server and reap it (its data is gone: no persistence)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the server accepts connections but answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def call(self, *args: str) -> bytes:
        return command(self.port, *args)


@asynccontextmanager
async def open_client(library: str, port: int, **options: Any) -> AsyncIterator[Any]:
    """A connected client on 127.0.0.1:``port``: from_url's, redis-py's or coredis's."""
    if library == "default":
        from brace.redis._clients import UrlClient

        url_client = UrlClient(f"redis://127.0.0.1:{port}/0", cluster=False, options=options)
        await url_client.open()
        try:
            yield url_client
        finally:
            await url_client.aclose()
    elif library == "redis-py":
        import redis.asyncio

        client = redis.asyncio.Redis(host="127.0.0.1", port=port, **options)
        try:
            yield client
        finally:
            await client.aclose()
    else:
        import coredis

        core = coredis.Redis(host="127.0.0.1", port=port, **options)
        async with core:
            yield core


def run(backend: str, fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` to completion on ``backend`` (``asyncio``, ``uvloop`` or ``trio``) with
    real time (see the module's docs)."""

    async def main() -> T:
        return await fn()

    if backend == "uvloop":
        return anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
    return anyio.run(main, backend=backend)
