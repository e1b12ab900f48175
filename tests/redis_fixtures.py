"""Fixtures for the Redis store's tests: a real redis-server on a free 127.0.0.1 port.

The suite starts its own ``redis-server`` (no persistence) and kills it at teardown.
Without the binary the tests skip, unless ``BRACE_REQUIRE_REDIS=1`` (set by ``.ci/run``)
makes that a failure. Load with ``pytest_plugins = ("redis_fixtures",)``; the helpers are
in ``redis_server``.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterator

import pytest

from redis_server import (
    ACL_PASSWORD,
    ACL_USER,
    CLIENT_KINDS,
    PASSWORD,
    REDIS_BINARY,
    REDIS_CLI,
    Certificates,
    RedisCluster,
    RedisServer,
    sentinel_server,
    tls_server,
    wait_for_sentinel,
)

__all__ = (
    "asyncio_loop",
    "auth_redis",
    "auth_redis_url",
    "client_kind",
    "collect_coredis_garbage",
    "own_redis_server",
    "redis_cluster",
    "redis_port",
    "redis_server",
    "sentinel_redis",
    "tls_redis",
)


def _require(binary: str = REDIS_BINARY) -> None:
    if os.path.exists(binary):
        return
    message = f"{os.path.basename(binary)} not found ({binary})"
    if os.environ.get("BRACE_REQUIRE_REDIS") == "1":
        pytest.fail(f"{message} and BRACE_REQUIRE_REDIS=1")
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server for the whole session, on a free port."""
    _require()
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.resume()  # in case a test left it stopped
        server.kill()


@pytest.fixture
def redis_port(redis_server: RedisServer) -> int:
    """The session server's port, its data and scripts flushed for this test."""
    assert redis_server.call("FLUSHALL").startswith(b"+OK")
    assert redis_server.call("SCRIPT", "FLUSH").startswith(b"+OK")
    return redis_server.port


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server for this test alone, which the test may kill and restart."""
    _require()
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.resume()
        server.kill()


@pytest.fixture(params=["asyncio", "uvloop"])
def asyncio_loop(request: pytest.FixtureRequest) -> str:
    """An asyncio event loop to run a test on: the standard one, and uvloop."""
    loop: str = request.param
    return loop


@pytest.fixture(params=CLIENT_KINDS)
def client_kind(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(client library, backend) for one run of a test."""
    kind: tuple[str, str] = request.param
    return kind


@pytest.fixture
def collect_coredis_garbage() -> Iterator[None]:
    """Collect coredis' leaked streams after the test, not in whichever test GC runs."""
    yield
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Unclosed <MemoryObject", ResourceWarning)
        gc.collect()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-node Redis Cluster (no replicas) for the whole session, on free ports."""
    _require()
    _require(REDIS_CLI)
    cluster = RedisCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def tls_redis() -> Iterator[tuple[RedisServer, int, Certificates]]:
    """A server answering TLS (certificates made by trustme): (server, TLS port, certs)."""
    _require()
    certificates = Certificates()
    server, tls_port = tls_server(certificates)
    try:
        server.start()
        yield server, tls_port, certificates
    finally:
        server.kill()
        certificates.cleanup()


@pytest.fixture(scope="session")
def sentinel_redis() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and one Sentinel monitoring it as ``mymaster``: (primary, sentinel)."""
    _require()
    primary = RedisServer()
    primary.start()
    sentinel = sentinel_server(primary.port)
    try:
        sentinel.start()
        wait_for_sentinel(sentinel, "mymaster", primary.port)
        yield primary, sentinel
    finally:
        sentinel.kill()
        primary.kill()


@pytest.fixture(scope="session")
def auth_redis() -> Iterator[RedisServer]:
    """A server with a password (``PASSWORD``) and an ACL user ``ACL_USER``."""
    _require()
    server = RedisServer(
        args=[
            "--requirepass",
            PASSWORD,
            "--user",
            ACL_USER,
            "on",
            f">{ACL_PASSWORD}",
            "~*",
            "+@all",
        ]
    )
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def auth_redis_url(auth_redis: RedisServer) -> str:
    """A URL of the ``auth_redis`` server with a wrong password."""
    return f"redis://:wrong-{PASSWORD}@127.0.0.1:{auth_redis.port}/0"
