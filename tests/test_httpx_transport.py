"""brace.httpx.ResilientTransport against a real uvicorn server on 127.0.0.1 that fails and
then recovers (real time, a few seconds in all; asyncio and trio)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import brace
from brace.httpx import ResilientTransport, parse_retry_after

# name -> requests seen; name -> status to answer while failing
SEEN: dict[str, int] = {}
FAILING: dict[str, int] = {}
NAMES = itertools.count()


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Real clocks: these tests talk to a real server over sockets."""
    return request.param


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "anyio_backend" in metafunc.fixturenames:
        metafunc.parametrize("anyio_backend", ["asyncio", "trio"], indirect=True)


async def flaky(request: Request) -> Response:
    """Fails ``fail`` times with ``status`` (and ``retry_after``), then answers 200."""
    name = request.path_params["name"]
    seen = SEEN[name] = SEEN.get(name, 0) + 1
    await request.body()
    if seen <= int(request.query_params.get("fail", "0")):
        headers = {}
        if "retry_after" in request.query_params:
            headers["retry-after"] = request.query_params["retry_after"]
        status = int(request.query_params.get("status", "503"))
        return PlainTextResponse(f"failure {seen}", status_code=status, headers=headers)
    return PlainTextResponse(f"ok after {seen}")


async def switch(request: Request) -> Response:
    """Answers FAILING[name] while set, else 200."""
    name = request.path_params["name"]
    SEEN[name] = SEEN.get(name, 0) + 1
    status = FAILING.get(name, 200)
    return PlainTextResponse(str(status), status_code=status)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """A uvicorn server on a free loopback port, for the whole module."""
    app = Starlette(
        routes=[
            Route("/flaky/{name}", flaky, methods=["GET", "POST", "PUT"]),
            Route("/switch/{name}", switch),
        ]
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn exited"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def name() -> str:
    return f"n{next(NAMES)}"


def fast_retry(attempts: int = 3) -> brace.Retry:
    return brace.Retry(attempts, backoff=brace.Backoff.exponential(base=0.01, cap=0.05))


async def test_retries_until_the_server_recovers(base_url: str) -> None:
    """Two 503s then a 200: the caller sees the 200 and the server saw three requests."""
    key = name()
    transport = ResilientTransport()
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        response = await http.get(f"/flaky/{key}", params={"fail": 2})
    assert response.status_code == 200
    assert response.text == "ok after 3"
    assert SEEN[key] == 3
    assert transport.retry.statistics().retries == 2


async def test_backoff_honours_retry_after(base_url: str) -> None:
    """A 429 with Retry-After: 1 makes the retry wait at least one second."""
    key = name()
    transport = ResilientTransport(retry=fast_retry())
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        start = time.monotonic()
        response = await http.get(
            f"/flaky/{key}", params={"fail": 1, "status": 429, "retry_after": 1}
        )
        elapsed = time.monotonic() - start
    assert response.status_code == 200
    assert 1.0 <= elapsed < 3.0
    assert SEEN[key] == 2


async def test_retry_after_can_be_ignored_or_too_long(base_url: str) -> None:
    """respect_retry_after=False retries at backoff speed; a Retry-After over the maximum is
    returned at once."""
    key = name()
    transport = ResilientTransport(retry=fast_retry(), respect_retry_after=False)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        start = time.monotonic()
        response = await http.get(f"/flaky/{key}", params={"fail": 1, "retry_after": 30})
        assert time.monotonic() - start < 1.0
        assert response.status_code == 200
    key = name()
    transport = ResilientTransport(retry=fast_retry(), max_retry_after=10)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        response = await http.get(f"/flaky/{key}", params={"fail": 1, "retry_after": 30})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    assert SEEN[key] == 1


async def test_unreadable_retry_after_returns_the_answer(base_url: str) -> None:
    """Regression: a real server's 503 with `retry-after: ²` (a Unicode digit) is retried as
    if it had no Retry-After, then handed back, not raised."""
    key = name()
    transport = ResilientTransport(retry=fast_retry(3))
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        response = await http.get(f"/flaky/{key}", params={"fail": 10, "retry_after": "²"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "²"
    assert response.text == "failure 3"
    assert SEEN[key] == 3


async def test_exhausted_retries_return_the_last_answer(base_url: str) -> None:
    """When every attempt fails, the last answer comes back whole (status, headers, body)."""
    key = name()
    transport = ResilientTransport(retry=fast_retry(3))
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        response = await http.get(f"/flaky/{key}", params={"fail": 10, "status": 502})
    assert response.status_code == 502
    assert response.text == "failure 3"
    assert response.headers["content-length"] == "9"
    assert SEEN[key] == 3


async def test_post_is_not_retried(base_url: str) -> None:
    """A POST is sent once: it is not idempotent."""
    key = name()
    transport = ResilientTransport(retry=fast_retry())
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        response = await http.post(f"/flaky/{key}", params={"fail": 1}, content=b"data")
    assert response.status_code == 503
    assert SEEN[key] == 1


async def test_streamed_body_is_never_replayed(base_url: str) -> None:
    """A PUT whose body is a stream is sent once; with bytes it is retried."""

    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    key = name()
    transport = ResilientTransport(retry=fast_retry())
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        response = await http.put(f"/flaky/{key}", params={"fail": 1}, content=body())
        assert response.status_code == 503
        assert SEEN[key] == 1
        other = name()
        response = await http.put(f"/flaky/{other}", params={"fail": 1}, content=b"chunk")
        assert response.status_code == 200
        assert SEEN[other] == 2


async def test_breaker_opens_and_closes(base_url: str) -> None:
    """With key=None (one breaker, the one given) two 500s open it: the next call fails fast
    unsent; after the recovery time a probe to the recovered server closes it."""
    key = name()
    FAILING[key] = 500
    breaker = brace.CircuitBreaker(failure_threshold=2, recovery_time=0.5)
    transport = ResilientTransport(retry=fast_retry(), breaker=breaker, key=None)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        assert (await http.get(f"/switch/{key}")).status_code == 500
        assert (await http.get(f"/switch/{key}")).status_code == 500
        assert breaker.state is brace.CircuitState.OPEN
        with pytest.raises(brace.CircuitOpen):
            await http.get(f"/switch/{key}")
        assert SEEN[key] == 2
        FAILING[key] = 200
        await anyio.sleep(0.6)
        assert (await http.get(f"/switch/{key}")).status_code == 200
    assert breaker.statistics().state is brace.CircuitState.CLOSED


async def test_breaker_counts_retried_503s_and_stops_retrying_when_open(base_url: str) -> None:
    """503s retried count against the breaker; once open, retrying stops with CircuitOpen."""
    key = name()
    breaker = brace.CircuitBreaker(failure_threshold=2, recovery_time=30)
    transport = ResilientTransport(retry=fast_retry(5), breaker=breaker)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        with pytest.raises(brace.CircuitOpen):
            await http.get(f"/flaky/{key}", params={"fail": 10})
    assert SEEN[key] == 2


async def test_transport_errors_are_retried() -> None:
    """Connection refused is retried, then raised as httpx.ConnectError."""
    transport = ResilientTransport(
        retry=brace.Retry(
            3,
            backoff=brace.Backoff.exponential(base=0.01, cap=0.05),
            retry_on=httpx.TransportError,
        )
    )
    with anyio.fail_after(10):
        async with httpx.AsyncClient(transport=transport) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get("http://127.0.0.1:9/")
    assert transport.retry.statistics().attempts == 3


async def test_client_side_rate_limit(base_url: str) -> None:
    """A token bucket of 10/s with burst 1 spaces four calls over at least 0.3 s."""
    key = name()
    bucket = brace.TokenBucket(rate=10, per=1.0, burst=1)
    transport = ResilientTransport(limiter=bucket)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        start = time.monotonic()
        for _ in range(4):
            assert (await http.get(f"/flaky/{key}")).status_code == 200
        assert time.monotonic() - start >= 0.28


async def test_keyed_limiter_per_host(base_url: str) -> None:
    """A RateLimiter limits per host: a second call to the same host waits its turn."""
    key = name()
    limiter = brace.RateLimiter(brace.TokenBucket(rate=5, per=1.0, burst=1))
    transport = ResilientTransport(limiter=limiter)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        start = time.monotonic()
        await http.get(f"/flaky/{key}")
        await http.get(f"/flaky/{key}")
        assert time.monotonic() - start >= 0.18
    assert limiter.statistics().keys == 1


def test_parse_retry_after() -> None:
    """Delay-seconds and HTTP-dates are read; junk is None; past dates are 0."""
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    now = 1445412480.0  # 2015-10-21 07:28:00 UTC
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == 30.0


def test_bad_configuration() -> None:
    """Wrong types and values fail at construction."""
    with pytest.raises(TypeError, match="retry"):
        ResilientTransport(retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retry_statuses"):
        ResilientTransport(retry_statuses=(700,))
    with pytest.raises(TypeError, match="limiter"):
        ResilientTransport(limiter=object())
    with pytest.raises(TypeError, match="inner"):
        ResilientTransport(inner=object())  # type: ignore[arg-type]
