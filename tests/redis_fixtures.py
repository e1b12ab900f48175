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

from redis_server import CLIENT_KINDS, REDIS_BINARY, RedisServer

__all__ = (
    "client_kind",
    "collect_coredis_garbage",
    "own_redis_server",
    "redis_port",
    "redis_server",
)


def _require() -> None:
    if os.path.exists(REDIS_BINARY):
        return
    message = f"redis-server not found ({REDIS_BINARY})"
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
