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

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
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
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"

# The credentials of the ``auth_redis`` fixture's server.
PASSWORD = "s3cret"
ACL_USER, ACL_PASSWORD = "alice", "wonderland"

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
    """One redis-server process on a fixed port, which can be killed and started again.

    ``args`` are more command-line options (``--requirepass``, ``--tls-port``, ...);
    ``config`` is the text of a configuration file to start from (a Sentinel's).
    """

    def __init__(
        self, port: int | None = None, *, args: Sequence[str] = (), config: str | None = None
    ) -> None:
        self.port = free_port() if port is None else port
        self.args = list(args)
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self._directory: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers PING (or asks for a password)."""
        # Its own directory: a replica writes the primary's snapshot (dump.rdb) there.
        if self._directory is None:
            self._directory = tempfile.TemporaryDirectory(prefix="brace-redis-")
        options = ["--port", str(self.port), "--bind", "127.0.0.1"]
        options += ["--save", "", "--appendonly", "no", "--dir", self._directory.name]
        options += self.args
        if self.config is not None:
            path = os.path.join(self._directory.name, "redis.conf")
            with open(path, "w") as file:
                file.write(self.config)
            options = [path, *options]
        self.process = subprocess.Popen(
            [REDIS_BINARY, *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10.0
        while True:
            try:
                if command(self.port, "PING", timeout=0.5).startswith((b"+PONG", b"-NOAUTH")):
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
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

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


class SwitchableClient:
    """A `brace.redis.ScriptClient` over a real one, that a test makes fail or hold.

    ``calls``: the ``EVALSHA`` calls that reached it. With ``error`` set, each call raises
    it (without reaching the server); with ``hold`` set, each call first sets ``held`` and
    waits for ``hold``.
    """

    def __init__(self, inner: Any) -> None:
        from brace.redis._clients import adapt_client

        self.inner = adapt_client(inner)  # a redis-py or coredis client, or an adapter
        self.calls = 0
        self.error: Exception | None = None
        self.hold: anyio.Event | None = None
        self.held = anyio.Event()

    async def evalsha(self, sha: str, keys: Sequence[Any], args: Sequence[Any]) -> object:
        self.calls += 1
        hold = self.hold
        if hold is not None:
            self.held.set()
            await hold.wait()
        if self.error is not None:
            raise self.error
        return await self.inner.evalsha(sha, keys, args)

    async def script_load(self, script: str) -> object:
        return await self.inner.script_load(script)


def run(backend: str, fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` to completion on ``backend`` (``asyncio``, ``uvloop`` or ``trio``) with
    real time (see the module's docs)."""

    async def main() -> T:
        return await fn()

    if backend == "uvloop":
        return anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
    return anyio.run(main, backend=backend)


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 >= 65536:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def node_port(fields: Sequence[str]) -> int:
    """The port of a node from its ``CLUSTER NODES`` fields (``host:port@bus``)."""
    return int(fields[1].split("@")[0].rsplit(":", 1)[1])


class RedisCluster:
    """redis-server nodes joined by ``redis-cli --cluster create``: three primaries, and
    ``replicas`` replicas of each."""

    def __init__(self, nodes: int = 3, *, replicas: int = 0) -> None:
        self.replicas = replicas
        self.directory = tempfile.TemporaryDirectory(prefix="brace-cluster-")
        self.servers: list[RedisServer] = []
        for _ in range(nodes):
            port = cluster_port()
            config = os.path.join(self.directory.name, f"nodes-{port}.conf")
            self.servers.append(
                RedisServer(
                    port,
                    args=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        config,
                        "--cluster-node-timeout",
                        "5000",
                        "--dir",
                        self.directory.name,
                    ],
                )
            )

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    def start(self) -> None:
        """Start the nodes, create the cluster, wait until every node says it is ok."""
        for server in self.servers:
            server.start()
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30.0
        while not all(b"cluster_state:ok" in self.info(port) for port in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        while any(b"master_link_status:down" in self.replication(port) for port in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("a replica did not catch up with its primary")
            time.sleep(0.05)

    def replication(self, port: int) -> bytes:
        return read_bulk(port, "INFO", "replication")

    def nodes(self) -> list[list[str]]:
        """``CLUSTER NODES``, one list of fields per node (id, address, flags, primary...)."""
        reply = read_bulk(self.ports[0], "CLUSTER", "NODES").decode()
        return [line.split() for line in reply.split("\r\n", 1)[1].splitlines() if line]

    def primary_of_slot(self, slot: int) -> list[str]:
        """The ``CLUSTER NODES`` fields of the primary that serves ``slot``."""
        for fields in self.nodes():
            for served in fields[8:]:
                low, _, high = served.partition("-")
                if "master" in fields[2] and int(low) <= slot <= int(high or low):
                    return fields
        raise LookupError(f"no primary serves slot {slot}")

    def replica_of_slot(self, slot: int) -> int:
        """The port of a replica of the primary that serves ``slot``."""
        primary = self.primary_of_slot(slot)
        for fields in self.nodes():
            if "slave" in fields[2] and fields[3] == primary[0]:
                return node_port(fields)
        raise LookupError(f"no replica serves slot {slot}")

    def info(self, port: int) -> bytes:
        return read_bulk(port, "CLUSTER", "INFO")

    def stop(self) -> None:
        for server in self.servers:
            server.kill()
        self.directory.cleanup()


def read_bulk(port: int, *args: str) -> bytes:
    """A command's whole reply over a fresh socket (for bulk replies of any size)."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as connection:
        connection.sendall(payload)
        reply = connection.recv(65536)
        if reply.startswith(b"$"):
            size = int(reply[1 : reply.index(b"\r\n")])
            while len(reply) < reply.index(b"\r\n") + 2 + size + 2:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                reply += chunk
        return reply


class Certificates:
    """A test CA and a server certificate for 127.0.0.1 (trustme), written to files."""

    def __init__(self) -> None:
        import trustme

        self.directory = tempfile.TemporaryDirectory(prefix="brace-tls-")
        authority = trustme.CA()
        server = authority.issue_cert("127.0.0.1", "localhost")
        self.ca = os.path.join(self.directory.name, "ca.pem")
        self.cert = os.path.join(self.directory.name, "server.pem")
        self.key = os.path.join(self.directory.name, "server.key")
        authority.cert_pem.write_to_path(self.ca)
        server.cert_chain_pems[0].write_to_path(self.cert)
        server.private_key_pem.write_to_path(self.key)

    def cleanup(self) -> None:
        self.directory.cleanup()


def tls_server(certificates: Certificates) -> tuple[RedisServer, int]:
    """A server answering TLS on a port of its own (and plain on ``.port``, for admin)."""
    tls_port = free_port()
    server = RedisServer(
        args=[
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            certificates.cert,
            "--tls-key-file",
            certificates.key,
            "--tls-ca-cert-file",
            certificates.ca,
            "--tls-auth-clients",
            "no",
        ]
    )
    return server, tls_port


def sentinel_server(primary_port: int, service: str = "mymaster") -> RedisServer:
    """A Sentinel monitoring the primary on ``primary_port`` (quorum 1)."""
    config = (
        f"sentinel monitor {service} 127.0.0.1 {primary_port} 1\n"
        f"sentinel down-after-milliseconds {service} 5000\n"
    )
    return RedisServer(args=["--sentinel"], config=config)


def wait_for_sentinel(sentinel: RedisServer, service: str, primary_port: int) -> None:
    """Wait until the Sentinel names the primary."""
    deadline = time.monotonic() + 10.0
    while str(primary_port).encode() not in read_bulk(
        sentinel.port, "SENTINEL", "get-master-addr-by-name", service
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the sentinel does not know the primary")
        time.sleep(0.05)
