"""One event convention across primitives: each event fires once, with the right fields,
to ``on_event`` hooks that observe (what they raise is logged and swallowed)."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import anyio
import httpx
import pytest

import brace
import brace.chaos
from brace._limiter import local_hit
from brace.asgi import BraceMiddleware, Rule
from brace.events import (
    REASONS,
    CircuitStateChange,
    Event,
    FallbackDetails,
    FaultInjected,
    HedgeDetails,
    LimitChanged,
    MemoryLevelChange,
    Refused,
    RetryDetails,
    ShutdownStarted,
    SlowRequest,
)
from brace.httpx import ResilientTransport
from brace.testing import FakeClock, FixedRandom


def refused(events: list[Event]) -> list[Refused]:
    return [event for event in events if isinstance(event, Refused)]


# -- the convention ---------------------------------------------------------------------


def test_every_event_is_a_frozen_slotted_event_with_kind_name_and_time() -> None:
    """Every event class derives from Event, is frozen and slotted, and has a kind."""
    classes = (
        Refused,
        SlowRequest,
        ShutdownStarted,
        FaultInjected,
        CircuitStateChange,
        RetryDetails,
        LimitChanged,
        MemoryLevelChange,
        FallbackDetails,
        HedgeDetails,
    )
    kinds = {cls.kind for cls in classes}
    assert len(kinds) == len(classes)  # one kind per class
    for cls in classes:
        assert issubclass(cls, Event)
        assert dataclasses.is_dataclass(cls)
        assert getattr(cls, "__dataclass_params__").frozen  # noqa: B009
        assert "__slots__" in cls.__dict__
    event = Refused("x", 1.0, "timeout", "timeout")
    assert not hasattr(event, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.reason = "load"  # type: ignore[misc]
    assert len(REASONS) == 9


@pytest.mark.parametrize("bad", [3, [print, 3], "hook"])
def test_a_bad_hook_fails_at_construction_naming_on_event(bad: Any) -> None:
    """on_event must be a callable or an iterable of callables, checked at construction."""
    with pytest.raises(TypeError, match="on_event"):
        brace.TokenBucket(1, on_event=bad)


def test_a_raising_hook_is_logged_and_the_next_hook_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What an on_event hook raises is logged on the primitive's logger and swallowed; the
    other hooks still see the event and the caller gets its decision."""
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    bucket = brace.TokenBucket(1, clock=FakeClock(), on_event=[broken, seen.append], name="b")
    bucket.try_acquire()
    with caplog.at_level(logging.ERROR, logger="brace.bucket"):
        decision = bucket.try_acquire()
    assert not decision.allowed
    assert len(seen) == 1
    assert [record.name for record in caplog.records] == ["brace.bucket"]
    assert "boom" in caplog.text


# -- limiters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "source"),
    [
        (
            lambda clock, hook: brace.TokenBucket(2, clock=clock, on_event=hook, name="n"),
            "token_bucket",
        ),
        (
            lambda clock, hook: brace.SlidingWindow(2, 1.0, clock=clock, on_event=hook, name="n"),
            "sliding_window",
        ),
    ],
)
def test_local_limiters_report_each_refusal_once(make: Any, source: str) -> None:
    """A refused try_acquire is one Refused (rate_limited) and one count in refusals."""
    clock = FakeClock(100.0)
    events: list[Event] = []
    limiter = make(clock, events.append)
    assert limiter.try_acquire(2).allowed
    assert not limiter.try_acquire(1).allowed
    assert not limiter.try_acquire(1).allowed
    assert len(events) == 2
    first = events[0]
    assert isinstance(first, Refused)
    assert (first.name, first.time, first.reason, first.source) == (
        "n",
        100.0,
        "rate_limited",
        source,
    )
    assert first.retry_after is not None
    assert first.retry_after > 0
    assert limiter.statistics().refusals == {"rate_limited": 2}


def test_the_keyed_limiter_reports_the_key_once_per_refusal() -> None:
    """RateLimiter: every refused hit is one Refused with the key, through limit() too."""
    events: list[Event] = []
    limiter = brace.RateLimiter("1/minute", clock=FakeClock(), on_event=events.append, name="api")
    assert limiter.try_hit("u:1").allowed
    assert not limiter.try_hit("u:1").allowed
    assert [(e.reason, e.key, e.name, e.source) for e in refused(events)] == [
        ("rate_limited", "u:1", "api", "rate_limiter")
    ]
    assert limiter.statistics().refusals == {"rate_limited": 1}


def test_the_middlewares_hit_reports_refusals_as_try_hit_does() -> None:
    """The fields hit an HTTP middleware asks (`local_hit`) answers an admission with its
    numbers and reports each refusal once, as try_hit does; both are counted."""
    events: list[Event] = []
    clock = FakeClock()
    limiter = brace.RateLimiter("1/minute", clock=clock, on_event=events.append, name="api")
    found = local_hit(limiter)
    assert found is not None
    hit, limiter_clock = found
    assert limiter_clock is clock
    twin = brace.RateLimiter("1/minute", clock=clock).try_hit("u:1")  # the same, as a Decision
    assert hit("u:1", 1, clock()) == (twin.remaining, twin.reset_after)
    refusal = hit("u:1", 1, clock())
    assert isinstance(refusal, brace.Decision)
    assert not refusal.allowed
    assert [(e.reason, e.key, e.name) for e in refused(events)] == [("rate_limited", "u:1", "api")]
    assert (limiter.statistics().allowed, limiter.statistics().rejected) == (1, 1)


async def test_the_keyed_limiter_limit_raises_and_reports_once() -> None:
    """limit(key) refusing raises RateLimited after one event, not two."""
    events: list[Event] = []
    limiter = brace.RateLimiter("1/minute", clock=FakeClock(), on_event=events.append)
    async with limiter.limit("k"):
        pass
    with pytest.raises(brace.RateLimited):
        async with limiter.limit("k"):
            pass
    assert len(events) == 1


# -- breaker --------------------------------------------------------------------------------


async def test_the_breaker_reports_state_changes_and_refusals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Opening is one CircuitStateChange (logged at WARNING); each refused call is one
    Refused (circuit_open); on_state_change still gets the same change."""
    clock = FakeClock(10.0)
    events: list[Event] = []
    changes: list[CircuitStateChange] = []
    breaker = brace.CircuitBreaker(
        failure_threshold=1,
        recovery_time=5.0,
        clock=clock,
        name="db",
        on_state_change=changes.append,
        on_event=events.append,
    )
    with caplog.at_level(logging.INFO, logger="brace.breaker"), pytest.raises(ValueError):
        async with breaker:
            raise ValueError
    for _ in range(2):
        with pytest.raises(brace.CircuitOpen):
            async with breaker:
                pass
    change, *refusals = events
    assert isinstance(change, CircuitStateChange)
    assert change is changes[0]
    assert (change.kind, change.name, change.time, change.new) == (
        "state_change",
        "db",
        10.0,
        brace.CircuitState.OPEN,
    )
    assert [(r.reason, r.name, r.retry_after) for r in refused(refusals)] == [
        ("circuit_open", "db", 5.0)
    ] * 2
    assert breaker.statistics().refusals == {"circuit_open": 2}
    assert [r.levelname for r in caplog.records if "closed -> open" in r.message] == ["WARNING"]
    clock.advance(5.0)
    async with breaker:  # the probe closes the circuit: two more changes, at INFO
        pass
    assert [e.new for e in events if isinstance(e, CircuitStateChange)] == [
        brace.CircuitState.OPEN,
        brace.CircuitState.HALF_OPEN,
        brace.CircuitState.CLOSED,
    ]


def test_a_replica_keeps_the_on_event_hooks() -> None:
    """replica() carries on_event over, like every other argument."""
    events: list[Event] = []
    breaker = brace.CircuitBreaker(failure_threshold=1, clock=FakeClock(), on_event=events.append)
    copy = breaker.replica(name="copy")
    copy.force_open()
    assert [e.name for e in events] == ["copy"]


# -- timeout -----------------------------------------------------------------------------


async def test_the_timeout_reports_each_expiry_once() -> None:
    """A body running out of time is one Refused (timeout) on the loop's clock."""
    events: list[Event] = []
    timeout = brace.Timeout(1.0, name="t", on_event=events.append)
    with pytest.raises(brace.TimeoutExceeded):
        async with timeout:
            await anyio.sleep(5)
    async with timeout:
        pass
    [event] = events
    assert isinstance(event, Refused)
    assert (event.reason, event.source, event.name) == ("timeout", "timeout", "t")
    assert event.time == pytest.approx(anyio.current_time())
    assert timeout.statistics().refusals == {"timeout": 1}


# -- executor ----------------------------------------------------------------------------


async def test_the_executor_reports_queue_full_dropped_and_queue_timeout() -> None:
    """Each executor refusal is one Refused with its reason and priority, counted once."""
    events: list[Event] = []
    executor = brace.PriorityExecutor(
        concurrency=1,
        max_queue=1,
        queue_timeout=2.0,
        on_full="drop_less_important",
        clock=anyio.current_time,
        on_event=events.append,
        name="jobs",
    )
    outcomes: list[str] = []

    async def job(priority: int, hold: float) -> None:
        try:
            async with executor.slot(priority):
                await anyio.sleep(hold)
        except brace.Rejected as error:
            outcomes.append(type(error).__name__)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(job, brace.Priority.MEDIUM, 10.0)  # runs
        await anyio.sleep(0.1)
        tasks.start_soon(job, brace.Priority.LOW, 0.0)  # waits
        await anyio.sleep(0.1)
        tasks.start_soon(job, brace.Priority.LOW, 0.0)  # queue full
        await anyio.sleep(0.1)
        tasks.start_soon(job, brace.Priority.HIGH, 0.0)  # drops the waiting LOW, waits
        await anyio.sleep(0.1)
    # the HIGH waiter timed out after 2 s; the MEDIUM job finished at 10 s
    assert sorted(outcomes) == ["Dropped", "QueueFull", "QueueTimeout"]
    assert [(e.reason, e.priority, e.name, e.source) for e in refused(events)] == [
        ("queue_full", brace.Priority.LOW, "jobs", "executor"),
        ("dropped", brace.Priority.LOW, "jobs", "executor"),
        ("queue_timeout", brace.Priority.HIGH, "jobs", "executor"),
    ]
    refusals = executor.statistics().refusals
    assert refusals == {
        "queue_full": 1,
        "dropped": 1,
        "queue_timeout": 1,
        "memory": 0,
        "shutting_down": 0,
    }


async def test_the_executor_reports_shutting_down_and_memory() -> None:
    """Refused while draining (shutting_down) and by its memory guard (memory)."""
    events: list[Event] = []
    guard = brace.MemoryGuard(100, critical=200, probe=lambda: 500, clock=anyio.current_time)
    executor = brace.PriorityExecutor(guard=guard, on_event=events.append)
    with pytest.raises(brace.MemoryPressure):
        async with executor.slot():
            pass
    await executor.drain(1.0)
    with pytest.raises(brace.ShuttingDown):
        async with executor.slot():
            pass
    assert [e.reason for e in refused(events)] == ["memory", "shutting_down"]
    assert executor.statistics().refusals["memory"] == 1
    assert executor.statistics().refusals["shutting_down"] == 1


# -- retry, fallback, hedge, chaos --------------------------------------------------------


async def test_retry_events_fire_once_per_retry_and_cannot_break_the_call() -> None:
    """on_event sees a RetryDetails per retry; unlike on_retry, what it raises is swallowed."""
    events: list[Event] = []

    def record_then_break(event: Event) -> None:
        events.append(event)
        raise RuntimeError("observer bug")

    retry = brace.Retry(
        3,
        backoff=lambda attempt: 1.0,
        clock=anyio.current_time,
        name="r",
        on_event=record_then_break,
    )
    failures = iter([ValueError("1"), ValueError("2")])

    async def flaky() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "ok"

    assert await retry.call(flaky) == "ok"
    assert [
        (e.kind, e.name, e.attempt, e.sleep) for e in events if isinstance(e, RetryDetails)
    ] == [
        ("retry", "r", 1, 1.0),
        ("retry", "r", 2, 1.0),
    ]
    assert all(not math.isnan(e.time) for e in events)


async def test_fallback_hedge_and_chaos_events() -> None:
    """Fallback, Hedge and a chaos strategy each hand on_event one event per action."""
    events: list[Event] = []
    fallback = brace.Fallback("cached", on_event=events.append, name="f")

    async def broken() -> str:
        raise ValueError

    assert await fallback.call(broken) == "cached"
    hedge = brace.Hedge(0.5, on_event=events.append, name="h")

    async def slow() -> str:
        await anyio.sleep(1)
        return "x"

    assert await hedge.call(slow) == "x"
    chaos = brace.chaos.latency(0.1, injection_rate=1.0, on_event=events.append, name="c")

    async def fine() -> int:
        return 1

    assert await chaos.call(fine) == 1
    kinds = [(type(e).__name__, e.kind, e.name) for e in events]
    assert kinds == [
        ("FallbackDetails", "fallback", "f"),
        ("HedgeDetails", "hedge", "h"),
        ("FaultInjected", "fault_injected", "c"),
    ]
    fault = events[2]
    assert isinstance(fault, FaultInjected)
    assert (fault.fault, fault.injected) == ("latency", 0.1)


# -- memory, load, adaptive, shutdown -------------------------------------------------------


def test_memory_level_changes_and_refusals() -> None:
    """A level change is one MemoryLevelChange (named); a refusal one Refused (memory)."""
    clock = FakeClock()
    usage = [10]
    events: list[Event] = []
    guard = brace.MemoryGuard(
        100, critical=200, probe=lambda: usage[0], clock=clock, name="mem", on_event=events.append
    )
    guard.sample()
    usage[0] = 500
    guard.sample()
    with pytest.raises(brace.MemoryPressure):
        guard.check()
    change, refusal = events
    assert isinstance(change, MemoryLevelChange)
    assert (change.name, change.level, change.time) == ("mem", brace.MemoryLevel.CRITICAL, 0.0)
    assert isinstance(refusal, Refused)
    assert (refusal.reason, refusal.source, refusal.name) == ("memory", "memory_guard", "mem")


def test_the_load_monitor_reports_shed_work() -> None:
    """LoadMonitor.check() shedding is one Refused (load)."""
    events: list[Event] = []
    load = brace.LoadMonitor(
        0.1, random=FixedRandom(0.0), clock=FakeClock(), on_event=events.append
    )
    for _ in range(50):
        load.observe(1.0)
    with pytest.raises(brace.Overloaded):
        load.check()
    assert [(e.reason, e.source) for e in refused(events)] == [("load", "load_monitor")]


async def test_the_adaptive_limit_reports_each_change() -> None:
    """Each concurrency change is one LimitChanged carrying the executor's name."""
    events: list[Event] = []
    limit = brace.AdaptiveLimit.aimd(initial=10, window=0.1, min_samples=1, on_event=events.append)
    executor = brace.PriorityExecutor(limit=limit, clock=anyio.current_time, name="pool")
    for now in (1.0, 1.2, 1.4):  # drops: multiplicative decrease, once a window
        limit.observe(0.01, True, now)
        if events:
            break
    [event] = events
    assert isinstance(event, LimitChanged)
    assert (event.name, event.previous, event.kind) == ("pool", 10, "limit_change")
    assert event.limit < 10
    assert executor.concurrency == event.limit


async def test_the_shutdown_reports_its_start() -> None:
    """GracefulShutdown: one ShutdownStarted when the shutdown is carried out."""
    events: list[Event] = []
    shutdown = brace.GracefulShutdown(timeout=1.0, clock=anyio.current_time, on_event=events.append)
    shutdown.trigger(15)
    await shutdown.wait()
    [event] = events
    assert isinstance(event, ShutdownStarted)
    assert event.signal == 15


# -- HTTP: the middleware's slow requests, the client ---------------------------------------


async def test_the_pipeline_reports_slow_requests(caplog: pytest.LogCaptureFixture) -> None:
    """A request over slow_request is one SlowRequest event and one WARNING record."""
    events: list[Event] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await anyio.sleep(4)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = BraceMiddleware(
        app,
        default=Rule(name="all"),
        slow_request=3.0,
        clock=anyio.current_time,
        on_event=events.append,
    )
    transport = httpx.ASGITransport(app=middleware)
    with caplog.at_level(logging.WARNING, logger="brace.asgi"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/x")).status_code == 200
    [event] = events
    assert isinstance(event, SlowRequest)
    assert (event.name, event.method, event.path, event.status) == ("all", "GET", "/x", 200)
    assert event.duration == pytest.approx(4.0)
    assert len([r for r in caplog.records if "slow request" in r.message]) == 1


async def test_the_client_reports_a_request_stopped_by_an_open_circuit() -> None:
    """ResilientTransport: a request an open circuit stops is one Refused with the host."""
    events: list[Event] = []
    breaker = brace.CircuitBreaker(failure_threshold=1, clock=anyio.current_time)
    transport = ResilientTransport(
        httpx.MockTransport(lambda request: httpx.Response(503)),
        breaker=breaker,
        retry=brace.Retry(1),
        on_event=events.append,
    )
    async with httpx.AsyncClient(transport=transport) as http:
        assert (await http.get("http://api.test/")).status_code == 503
        with pytest.raises(brace.CircuitOpen):
            await http.get("http://api.test/")
    assert [(e.reason, e.source, e.key) for e in refused(events)] == [
        ("circuit_open", "client", "api.test:80")
    ]
