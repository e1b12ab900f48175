"""The client loop through brace.httpx.ResilientTransport over httpx.MockTransport: per-host
breakers and limits, the body cap, Retry-After, validation (asyncio and trio, virtual time)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest

import brace
from brace.aiohttp import ResilientMiddleware
from brace.httpx import ResilientTransport


def server(answers: dict[str, list[httpx.Response]], seen: list[str]) -> httpx.MockTransport:
    """A mock server answering each host from its list (the last answer repeats)."""

    def handle(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        seen.append(host)
        queue = answers[host]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    return httpx.MockTransport(handle)


def fast_retry(attempts: int = 3) -> brace.Retry:
    return brace.Retry(attempts, backoff=brace.Backoff.exponential(base=0.01, cap=0.05))


async def test_breakers_are_per_host_by_default() -> None:
    """After three 500s from host A (failure_threshold=3), host B still answers; A refuses."""
    seen: list[str] = []
    inner = server({"a": [httpx.Response(500)], "b": [httpx.Response(200)]}, seen)
    transport = ResilientTransport(
        inner, breaker=brace.CircuitBreaker(failure_threshold=3, recovery_time=30)
    )
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(3):
            assert (await http.get("http://a/")).status_code == 500
        with pytest.raises(brace.CircuitOpen) as refused:
            await http.get("http://a/")
        assert (await http.get("http://b/")).status_code == 200
    assert seen == ["a", "a", "a", "b"]
    assert refused.value.name == "a:80"
    assert set(transport.breakers) == {"a:80", "b:80"}
    assert transport.breakers["a:80"].state is brace.CircuitState.OPEN
    assert transport.breaker is not None
    assert transport.breaker.state is brace.CircuitState.CLOSED  # the template is never used


async def test_one_key_gives_one_breaker() -> None:
    """key=lambda request: "all" shares one breaker: host B is refused after A's failures."""
    seen: list[str] = []
    inner = server({"a": [httpx.Response(500)], "b": [httpx.Response(200)]}, seen)
    breaker = brace.CircuitBreaker(failure_threshold=3, recovery_time=30, name="api")
    transport = ResilientTransport(inner, breaker=breaker, key=lambda request: "all")
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(3):
            await http.get("http://a/")
        with pytest.raises(brace.CircuitOpen) as refused:
            await http.get("http://b/")
    assert seen == ["a", "a", "a"]
    assert refused.value.name == "api all"


async def test_ports_are_distinct_keys() -> None:
    """The default key is host:port: two ports of one host have two breakers."""
    inner = server({"a": [httpx.Response(200)]}, [])
    transport = ResilientTransport(inner, breaker=brace.CircuitBreaker())
    async with httpx.AsyncClient(transport=transport) as http:
        await http.get("http://a/")
        await http.get("https://a/")
        await http.get("http://a:8080/")
    assert set(transport.breakers) == {"a:80", "a:443", "a:8080"}


async def test_limits_are_per_host_by_default() -> None:
    """A TokenBucket given is a template: host B does not wait behind host A's calls."""
    inner = server({"a": [httpx.Response(200)], "b": [httpx.Response(200)]}, [])
    bucket = brace.TokenBucket(1, per=10.0, burst=1, clock=anyio.current_time)
    transport = ResilientTransport(inner, limiter=bucket)
    async with httpx.AsyncClient(transport=transport) as http:
        start = anyio.current_time()
        await http.get("http://a/")
        await http.get("http://b/")
        assert anyio.current_time() - start < 1.0
        await http.get("http://a/")
        assert anyio.current_time() - start >= 9.9
    shared = ResilientTransport(inner, limiter=bucket, key=None)
    async with httpx.AsyncClient(transport=shared) as http:
        start = anyio.current_time()
        await http.get("http://a/")
        await http.get("http://b/")
        assert anyio.current_time() - start >= 9.9  # key=None: the bucket itself


async def test_retry_after_unicode_digit_returns_the_answer() -> None:
    """Regression: a 503 with `retry-after: ²` is retried as if it had none, then returned."""
    seen: list[str] = []
    answer = httpx.Response(503, headers={b"retry-after": "²".encode()}, content=b"busy")
    transport = ResilientTransport(server({"a": [answer]}, seen), retry=fast_retry())
    async with httpx.AsyncClient(transport=transport) as http:
        response = await http.get("http://a/")
    assert response.status_code == 503
    assert response.text == "busy"
    assert len(seen) == 3


async def test_retry_after_is_slept_and_bounded() -> None:
    """Retry-After: 5 is waited; one over max_retry_after is handed back at once."""
    seen: list[str] = []
    answers = [httpx.Response(429, headers={"retry-after": "5"}), httpx.Response(200)]
    transport = ResilientTransport(server({"a": answers}, seen), retry=fast_retry())
    async with httpx.AsyncClient(transport=transport) as http:
        start = anyio.current_time()
        assert (await http.get("http://a/")).status_code == 200
        assert 5.0 <= anyio.current_time() - start < 6.0
    answers = [httpx.Response(503, headers={"retry-after": "99999999999"}), httpx.Response(200)]
    transport = ResilientTransport(server({"a": answers}, seen), max_retry_after=60)
    async with httpx.AsyncClient(transport=transport) as http:
        assert (await http.get("http://a/")).status_code == 503


async def test_body_over_the_cap_is_handed_back_whole() -> None:
    """A retryable answer longer than max_body is returned at once, its body whole; a
    shorter one is retried and the last comes back whole."""
    seen: list[str] = []
    big = b"x" * 1000
    inner = server({"a": [httpx.Response(503, content=big)]}, seen)
    transport = ResilientTransport(inner, retry=fast_retry(), max_body=999)
    async with httpx.AsyncClient(transport=transport) as http:
        response = await http.get("http://a/")
        assert (response.status_code, response.content, len(seen)) == (503, big, 1)
    transport = ResilientTransport(inner, retry=fast_retry(), max_body=1000)
    async with httpx.AsyncClient(transport=transport) as http:
        response = await http.get("http://a/")
        assert (response.status_code, response.content, len(seen)) == (503, big, 4)


async def test_breaker_settles_from_status() -> None:
    """5xx answers are failures, 4xx successes; an open circuit stops retrying."""
    seen: list[str] = []
    inner = server({"a": [httpx.Response(404)], "b": [httpx.Response(503)]}, seen)
    transport = ResilientTransport(
        inner, retry=fast_retry(5), breaker=brace.CircuitBreaker(failure_threshold=2)
    )
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(3):
            assert (await http.get("http://a/")).status_code == 404
        with pytest.raises(brace.CircuitOpen):
            await http.get("http://b/")
    assert seen.count("b") == 2
    assert transport.breakers["a:80"].statistics().successes == 3


async def test_key_must_return_a_str() -> None:
    """A key function returning something else than a str is a TypeError naming key."""
    inner = server({"a": [httpx.Response(200)]}, [])
    transport = ResilientTransport(
        inner,
        breaker=brace.CircuitBreaker(),
        key=lambda request: 3,  # type: ignore[arg-type,return-value]
    )
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(TypeError, match="key"):
            await http.get("http://a/")


ADAPTERS: list[Callable[..., Any]] = [ResilientTransport, ResilientMiddleware]


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(
    ("options", "error", "name"),
    [
        ({"retry_statuses": (700,)}, ValueError, "retry_statuses"),
        ({"retry_statuses": (True,)}, ValueError, "retry_statuses"),
        ({"retry_statuses": "503"}, TypeError, "retry_statuses"),
        ({"retry_methods": "GET"}, TypeError, "retry_methods"),
        ({"retry_methods": ("GET", 1)}, ValueError, "retry_methods"),
        ({"retry_methods": ("GET POST",)}, ValueError, "retry_methods"),
        ({"retry": 3}, TypeError, "retry"),
        ({"breaker": object()}, TypeError, "breaker"),
        ({"limiter": object()}, TypeError, "limiter"),
        ({"respect_retry_after": 1}, TypeError, "respect_retry_after"),
        ({"max_retry_after": -1}, ValueError, "max_retry_after"),
        ({"max_retry_after": float("nan")}, ValueError, "max_retry_after"),
        ({"max_retry_after": "60"}, TypeError, "max_retry_after"),
        ({"key": "host"}, TypeError, "key"),
        ({"max_keys": 0}, ValueError, "max_keys"),
        ({"max_keys": 1.5}, TypeError, "max_keys"),
        ({"max_body": -1}, ValueError, "max_body"),
    ],
)
def test_bad_configuration(
    adapter: Callable[..., Any], options: dict[str, Any], error: type[Exception], name: str
) -> None:
    """Both adapters refuse the same bad options at construction, naming the parameter."""
    with pytest.raises(error, match=name):
        adapter(**options)


def test_lower_case_methods_are_normalised() -> None:
    """retry_methods=("get",) is read as GET, for both adapters."""
    for adapter in ADAPTERS:
        assert adapter(retry_methods=("get", "Put")).retry_methods == {"GET", "PUT"}


async def test_keyed_limiters() -> None:
    """A RateLimiter is keyed by host:port (or "*" with key=None); a SlidingWindow is a
    template like a TokenBucket; any other limiter with acquire() is shared."""
    inner = server({"a": [httpx.Response(200)], "b": [httpx.Response(200)]}, [])
    limiter = brace.RateLimiter(brace.TokenBucket(1, per=10.0, burst=1), clock=anyio.current_time)
    async with httpx.AsyncClient(transport=ResilientTransport(inner, limiter=limiter)) as http:
        await http.get("http://a/")
        await http.get("http://b/")
    assert limiter.statistics().keys == 2
    assert (await limiter.peek("a:80")).allowed is False
    async with httpx.AsyncClient(
        transport=ResilientTransport(inner, limiter=limiter, key=None)
    ) as http:
        await http.get("http://a/")
    assert (await limiter.peek("*")).allowed is False
    window = brace.SlidingWindow(1, 10.0, clock=anyio.current_time)
    async with httpx.AsyncClient(transport=ResilientTransport(inner, limiter=window)) as http:
        start = anyio.current_time()
        await http.get("http://a/")
        await http.get("http://b/")
        assert anyio.current_time() - start < 1.0

    class Counter:
        calls = 0

        async def acquire(self) -> None:
            Counter.calls += 1

    async with httpx.AsyncClient(transport=ResilientTransport(inner, limiter=Counter())) as http:
        await http.get("http://a/")
        await http.get("http://b/")
    assert Counter.calls == 2


class Body(httpx.AsyncByteStream):
    """A response body that yields ``chunks``, then raises ``error`` or waits forever."""

    def __init__(self, chunks: list[bytes], error: Exception | None) -> None:
        self.chunks = chunks
        self.error = error
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.error is not None:
            raise self.error
        await anyio.sleep_forever()

    async def aclose(self) -> None:
        self.closed = True


async def test_a_body_failing_midway_is_closed_and_retried() -> None:
    """A 503 whose body breaks while it is read is closed; the error is retried as any
    transport error, and raised when retrying stops."""
    bodies: list[Body] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(Body([b"par"], httpx.ReadError("reset")))
        return httpx.Response(503, stream=bodies[-1])

    transport = ResilientTransport(httpx.MockTransport(handle), retry=fast_retry())
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.ReadError):
            await http.get("http://a/")
    assert len(bodies) == 3
    assert all(body.closed for body in bodies)


async def test_cancelled_while_reading_closes_and_releases() -> None:
    """Cancelled while a retryable body is read: the response is closed, and the half-open
    probe was settled from the status already (a 503 reopens the circuit), none left held."""
    bodies: list[Body] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(Body([b"slow"], None))
        return httpx.Response(503, stream=bodies[-1])

    breaker = brace.CircuitBreaker(failure_threshold=1, recovery_time=60, clock=anyio.current_time)
    transport = ResilientTransport(httpx.MockTransport(handle), breaker=breaker, key=None)
    breaker.open_for(0.5)
    await anyio.sleep(1)
    assert breaker.state is brace.CircuitState.HALF_OPEN
    async with httpx.AsyncClient(transport=transport) as http:
        with anyio.move_on_after(5):
            await http.get("http://a/")
    assert bodies[0].closed
    stats = breaker.statistics()
    assert (stats.state, stats.half_open_calls) == (brace.CircuitState.OPEN, 0)


async def test_cancelled_while_sending_gives_the_probe_back() -> None:
    """A half-open probe cancelled while the server has not answered gives its permit back:
    the next call is admitted as the probe."""
    answer_now = False

    async def handle(request: httpx.Request) -> httpx.Response:
        if not answer_now:
            await anyio.sleep_forever()
        return httpx.Response(200)

    breaker = brace.CircuitBreaker(failure_threshold=1, clock=anyio.current_time)
    transport = ResilientTransport(httpx.MockTransport(handle), breaker=breaker, key=None)
    breaker.open_for(0.5)
    await anyio.sleep(1)
    async with httpx.AsyncClient(transport=transport) as http:
        with anyio.move_on_after(5):
            await http.get("http://a/")
        assert breaker.statistics().half_open_calls == 0
        answer_now = True
        assert (await http.get("http://a/")).status_code == 200
    assert breaker.state is brace.CircuitState.CLOSED


async def test_repeated_retry_after_is_absent() -> None:
    """Two Retry-After headers count as none: a huge second value does not stop retries."""
    seen: list[str] = []
    busy = httpx.Response(503, headers=[("retry-after", "0"), ("retry-after", "99999")])
    transport = ResilientTransport(
        server({"a": [busy, httpx.Response(200)]}, seen), retry=fast_retry(), max_retry_after=60
    )
    async with httpx.AsyncClient(transport=transport) as http:
        assert (await http.get("http://a/")).status_code == 200
    assert len(seen) == 2
