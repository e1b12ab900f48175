"""The health endpoints' JSON (`brace.asgi.health_app`): the specification's field names,
nesting and units, validated against docs/schema/health-v1.json, on asyncio and trio
with virtual time, so every figure is known exactly."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import brace
from brace._health_body import SCHEMA_VERSION
from brace.asgi import BraceMiddleware, Limit, Rule, health_app
from spec_health_client import BODIES, read_full, read_queue, validate

MB = 2**20

SPEC_STATS = {
    "pending",
    "running",
    "completed",
    "failed",
    "totalProcessed",
    "averageWaitTime",
    "averageProcessingTime",
    "circuitBreakerOpen",
}


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def sleep_for(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "done"


async def fail() -> None:
    raise RuntimeError("boom")


async def get_all(app: Any, prefix: str = "") -> dict[str, Any]:
    """Every health body, each validated against its schema definition."""
    bodies: dict[str, Any] = {}
    async with client(app) as http:
        for path, definition in BODIES.items():
            response = await http.get(prefix + path)
            assert response.headers["content-type"].startswith("application/json")
            assert response.headers["cache-control"] == "no-store"
            validate(response.json(), definition)
            bodies[path] = response.json()
    return bodies


async def test_queue_body_is_the_specification_example_with_exact_figures() -> None:
    """With known work on virtual time, /health/queue reads, by the specification's
    names, exactly the counts, the milliseconds and the per-priority waiters it should."""
    registry = brace.Registry()
    executor = registry.register(
        "default",
        brace.PriorityExecutor(concurrency=1, max_queue=10, clock=anyio.current_time),
    )
    app = health_app(registry)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(executor.run, sleep_for, 1.0)
        await anyio.lowlevel.checkpoint()
        for priority in (brace.Priority.LOW, brace.Priority.MEDIUM, brace.Priority.HIGH):
            tasks.start_soon(functools.partial(executor.run, sleep_for, 1.0, priority=priority))
        await anyio.sleep(0.5)
        during = read_queue((await get_all(app))["/health/queue"])
        assert (during.pending, during.running) == (3, 1)
        assert (during.high, during.medium, during.low) == (1, 1, 1)
    # waits 0, 1, 2, 3 s (HIGH, then MEDIUM, then LOW); each ran 1 s
    with pytest.raises(RuntimeError):
        await executor.run(fail)
    with pytest.raises(brace.TimeoutExceeded):
        await executor.run(sleep_for, 1.0, timeout=0.5)
    body = (await get_all(app))["/health/queue"]
    assert set(body["queue"]) == {"stats", "circuitBreakerState", "queueDistribution"}
    assert set(body["queue"]["stats"]) == SPEC_STATS
    assert set(body["middleware"]) == {"activeRequests", "memoryUsage"}
    assert set(body["middleware"]["memoryUsage"]) == {"heapUsed"}
    assert set(body["rateLimit"]) == {"activeWindows", "activeBuckets"}
    after = read_queue(body)
    assert (after.completed, after.failed, after.total_processed) == (4, 2, 6)
    assert after.average_wait_ms == pytest.approx(1000.0)  # 6 s of waiting / 6 admitted
    assert after.average_processing_ms == pytest.approx(750.0)  # 4.5 s busy / 6 finished
    assert (after.pending, after.running, after.breaker_state) == (0, 0, "CLOSED")
    assert after.active_requests == 0  # no middleware registered
    assert body["executors"]["default"]["timedOut"] == 1
    assert body["executors"]["default"]["concurrency"] == 1
    assert body["defaults"]["executor"] == "default"


async def test_breaker_state_and_several_primitives() -> None:
    """The first registered executor and breaker fill the specification's fields unless
    others are named; all of them are beside it by name."""
    registry = brace.Registry()
    first = registry.register(
        "first", brace.PriorityExecutor(concurrency=2, clock=anyio.current_time)
    )
    second = registry.register("second", brace.PriorityExecutor(concurrency=3))
    upstream = registry.register(
        "upstream", brace.CircuitBreaker(failure_threshold=1, clock=anyio.current_time)
    )
    database = registry.register("database", brace.CircuitBreaker(clock=anyio.current_time))
    with pytest.raises(RuntimeError):
        async with upstream:
            raise RuntimeError("down")
    assert upstream.state is brace.CircuitState.OPEN
    await first.run(sleep_for, 0.25)

    body = (await get_all(health_app(registry)))["/health/queue"]
    spec = read_queue(body)
    assert (spec.breaker_state, spec.breaker_open) == ("OPEN", True)
    assert spec.completed == 1
    assert spec.average_processing_ms == pytest.approx(250.0)
    assert set(body["executors"]) == {"first", "second"}
    assert body["executors"]["second"]["concurrency"] == 3
    assert body["circuitBreakers"]["upstream"]["state"] == "OPEN"
    assert body["circuitBreakers"]["upstream"]["timeUntilHalfOpen"] == pytest.approx(29_750.0)
    assert body["circuitBreakers"]["database"]["state"] == "CLOSED"
    assert body["defaults"]["circuitBreaker"] == "upstream"

    chosen = health_app(registry, executor="second", breaker="database")
    body = (await get_all(chosen))["/health/queue"]
    spec = read_queue(body)
    assert (spec.breaker_state, spec.breaker_open, spec.completed) == ("CLOSED", False, 0)
    assert body["defaults"] == {
        "executor": "second",
        "circuitBreaker": "database",
        "memoryGuard": None,
        "loadMonitor": None,
    }
    # a name that is not registered: the specification's fields read as "nothing there"
    missing = (await get_all(health_app(registry, executor="nope")))["/health/queue"]
    assert read_queue(missing).total_processed == 0
    assert missing["defaults"]["executor"] is None
    with pytest.raises(ValueError, match="executor"):
        health_app(registry, executor="")
    with pytest.raises(ValueError, match="breaker"):
        health_app(registry, breaker=5)  # type: ignore[arg-type]
    assert registry.get("second") is second
    assert registry.get("database") is database


async def test_rate_limits_memory_and_middleware() -> None:
    """``rateLimit`` counts keys holding a window and keys holding a bucket (the
    middleware's own limiters included, none twice); ``heapUsed`` is the memory guard's
    figure in MB; ``activeRequests`` counts the request in flight through the middleware."""
    clock: Callable[[], float] = anyio.current_time
    registry = brace.Registry()
    windows = registry.register(
        "windows", brace.RateLimiter(brace.SlidingWindow(limit=5, window=60), clock=clock)
    )
    buckets = registry.register(
        "buckets",
        brace.RateLimiter(brace.TokenBucket(rate=5, per=60, burst=5), clock=clock),
    )
    for key in ("a", "b", "c"):
        await windows.hit(key)
    for key in ("a", "b"):
        await buckets.hit(key)
    # two limiters on one store with the same parameters hold the same keys: once
    store = registry.register("store", brace.MemoryStore(clock=clock))
    shared = [
        registry.register(
            name, brace.RateLimiter(brace.SlidingWindow(limit=9, window=30), store=store)
        )
        for name in ("shared_a", "shared_b")
    ]
    await shared[0].hit("x")
    await shared[1].hit("y")
    usage = [123 * MB + 1000]
    guard = registry.register(
        "process", brace.MemoryGuard(high=350 * MB, probe=lambda: usage[0], clock=clock)
    )
    guard.sample()

    inner = health_app(registry)
    rules = [Rule("/limited", limits=[Limit("10/minute", per="client", name="route")])]
    middleware = registry.register(
        "http", BraceMiddleware(inner, rules=rules, default=Rule(), clock=clock)
    )
    # the middleware's limiter, registered too: counted once
    registry.register("route", middleware.limiters["route"])
    async with client(middleware) as http:
        assert (await http.get("/limited")).status_code == 404  # limited, then not found
    bodies = await get_all(middleware)
    spec = read_queue(bodies["/health/queue"])
    assert (spec.active_windows, spec.active_buckets) == (3 + 2 + 1, 2)
    assert spec.heap_used_mb == 123
    assert spec.active_requests == 1  # this very request
    limiters = bodies["/health/queue"]["rateLimiters"]
    assert limiters["buckets"] == {
        "algorithm": "tokenBucket",
        "activeKeys": 2,
        "allowed": 2,
        "rejected": 0,
    }
    assert limiters["route"]["activeKeys"] == 1
    assert limiters["shared_a"]["activeKeys"] == limiters["shared_b"]["activeKeys"] == 2
    assert len(limiters) == 5  # the store is not a limiter
    full = bodies["/health/full"]
    assert full["memory"] == {
        "heapUsed": 123,
        "rss": full["memory"]["rss"],
        "level": "NORMAL",
        "high": 350,
        "critical": None,
    }
    assert read_full(full).queue.active_windows == 6
    assert bodies["/health/metrics"]["memory"]["heapUsed"] == 123


async def test_full_body_has_checks_uptime_breakers_and_status() -> None:
    """/health/full: every check (durations in ms), uptime, memory, every breaker's state,
    the queue and the rate limits; 503 with status failing; liveness stays 200."""
    registry = brace.Registry()
    executor = registry.register("default", brace.PriorityExecutor())
    breaker = registry.register("db", brace.CircuitBreaker())
    shutdown = registry.register("server", brace.GracefulShutdown())
    health = brace.Health(shutdown=shutdown, clock=anyio.current_time)

    async def database() -> None:
        await anyio.sleep(0.125)

    async def cache() -> bool:
        return False

    health.add("database", database)
    health.add("cache", cache, critical=False)
    app = health_app(registry, health=health)
    bodies = await get_all(app)
    full = read_full(bodies["/health/full"])
    assert full.status == "degraded"
    assert full.checks == {"database": "ok", "cache": "degraded", "shutdown": "ok"}
    assert bodies["/health/full"]["checks"]["database"]["duration"] == pytest.approx(125.0)
    assert full.breaker_states == {"db": "CLOSED"}
    assert registry.get("default") is executor
    assert registry.get("db") is breaker
    assert full.uptime_ms >= 0
    assert bodies["/health/full"]["shutdown"] == {"ready": True, "finished": False}
    assert bodies["/health"] == {"schemaVersion": 1, "status": "ok"}

    shutdown.trigger()
    async with client(app) as http:
        response = await http.get("/health/full")
        assert response.status_code == 503
        validate(response.json(), "full")
        assert response.json()["status"] == "failing"
        assert response.json()["shutdown"]["ready"] is False
        assert (await http.get("/health")).status_code == 200


async def test_metrics_body_and_event_loop() -> None:
    """/health/metrics: process figures in ms and MB, the load monitor's lag in ms, and
    the registry's snapshot unchanged (snake_case, seconds)."""
    registry = brace.Registry()
    monitor = registry.register("loop", brace.LoadMonitor(max_lag=0.25, clock=anyio.current_time))
    executor = registry.register("default", brace.PriorityExecutor())
    body = (await get_all(health_app(registry)))["/health/metrics"]
    assert body["eventLoop"]["maxLag"] == pytest.approx(250.0)
    assert body["process"]["threads"] >= 1
    assert body["memory"]["rss"] is None or body["memory"]["rss"] >= 1
    assert body["statistics"] == registry.snapshot()
    assert body["statistics"]["load"]["loop"]["max_lag"] == pytest.approx(0.25)
    assert (await get_all(health_app()))["/health/metrics"]["eventLoop"] is None
    assert registry.get("loop") is monitor
    assert registry.get("default") is executor


async def test_empty_app_bodies_are_valid() -> None:
    """Without a registry or checks every body is still the schema's, with zeros."""
    bodies = await get_all(health_app(), prefix="")
    spec = read_queue(bodies["/health/queue"])
    assert (spec.pending, spec.total_processed, spec.breaker_state) == (0, 0, "CLOSED")
    assert bodies["/health/full"]["status"] == "ok"
    assert bodies["/health/full"]["checks"] == {}


async def test_error_bodies_are_valid() -> None:
    """403, 404 and 405 answer the schema's error body."""
    app = health_app(brace.Registry(), allow=["10.0.0.0/8"])
    async with client(app) as http:
        answers = [
            await http.get("/health/queue"),
            await http.get("/health/nope"),
            await http.post("/health"),
        ]
    assert [answer.status_code for answer in answers] == [403, 404, 405]
    for answer in answers:
        validate(answer.json(), "error")


def test_schema_is_valid_draft_2020_12() -> None:
    """The schema file is itself a valid draft 2020-12 schema, and names its version."""
    import jsonschema  # type: ignore[import-untyped]

    from spec_health_client import SCHEMA

    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$defs"]["schemaVersion"]["const"] == SCHEMA_VERSION
    # the specification's objects are closed: a client can rely on exactly these fields
    for name in ("queue", "queueStats", "queueDistribution", "middleware", "rateLimit"):
        assert SCHEMA["$defs"][name]["additionalProperties"] is False
    assert set(SCHEMA["$defs"]["queueStats"]["required"]) == SPEC_STATS


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=40, deadline=None)
@given(
    waiters=st.lists(st.tuples(st.integers(min_value=-5, max_value=35), st.booleans()), max_size=25)
)
def test_distribution_adds_up_to_pending(backend: str, waiters: list[tuple[int, bool]]) -> None:
    """Whatever the priorities waiting (finer ones too) and whichever waiters are cancelled,
    ``queueDistribution`` counts each live waiter once, in its class, and adds up to
    ``pending``."""
    registry = brace.Registry()
    executor = registry.register("default", brace.PriorityExecutor(concurrency=1, max_queue=50))
    expected = {"high": 0, "medium": 0, "low": 0}
    for priority, cancelled in waiters:
        if not cancelled:
            name = "high" if priority < 10 else "medium" if priority < 20 else "low"
            expected[name] += 1

    async def wait(priority: int, scope: anyio.CancelScope) -> None:
        with scope:
            await executor.run(anyio.lowlevel.checkpoint, priority=priority)

    async def main() -> dict[str, Any]:
        release = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(executor.run, release.wait)
            await anyio.wait_all_tasks_blocked()
            scopes = []
            for priority, _ in waiters:
                scope = anyio.CancelScope()
                scopes.append(scope)
                tasks.start_soon(wait, priority, scope)
            await anyio.wait_all_tasks_blocked()
            for scope, (_, cancelled) in zip(scopes, waiters, strict=True):
                if cancelled:
                    scope.cancel()
            await anyio.wait_all_tasks_blocked()
            body = await _queue_body(health_app(registry))
            release.set()
        return body

    body = anyio.run(main, backend=backend)
    spec = read_queue(body)
    assert {"high": spec.high, "medium": spec.medium, "low": spec.low} == expected
    assert spec.pending == sum(expected.values())
    assert spec.running == 1


async def _queue_body(app: Any) -> dict[str, Any]:
    async with client(app) as http:
        body: dict[str, Any] = (await http.get("/health/queue")).json()
    validate(body, "queueMetrics")
    return body
