"""Issue 19: arbitrary numbers given to every public constructor.

Each parameter gets its default or anything numeric-ish: ints (huge ones too), floats
(subnormal, huge, infinite, NaN, negative zero), bools and values of the wrong type.
Either the constructor raises a ``ValueError``/``TypeError`` whose message names one of
the parameters, or the first 1,000 calls work: they return or raise only the documented
refusals (``brace.Rejected`` and its kind), driven by a fake clock, on asyncio and on
trio (under virtual time, as in ``conftest.py``) where the calls are async.
"""

from __future__ import annotations

import math
import random
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import brace
from brace._core.adaptive import AIMDCore, Gradient2Core, VegasCore
from brace.testing import FakeClock, virtual_time

CALLS = 1000
BACKENDS = ("asyncio", "trio")

ODD_NUMBERS = st.sampled_from(
    [
        0,
        -1,
        1,
        2,
        2**53,
        2**53 + 1,
        2**63,
        10**400,
        -(10**400),
        5e-324,
        1e-320,
        1e-300,
        1e308,
        -1e308,
        -0.0,
        math.nan,
        math.inf,
        -math.inf,
        0.5,
        1e15,
        1e16,
    ]
)
WRONG_TYPES = st.sampled_from(["1", b"1", [], 1j, object()])
NUMBERS = st.one_of(
    ODD_NUMBERS,
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.booleans(),
    WRONG_TYPES,
    st.none(),
)
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def arguments(**defaults: object) -> st.SearchStrategy[dict[str, object]]:
    """The keywords at their defaults but one to three, which get number-ish values."""

    @st.composite
    def draw_arguments(draw: st.DrawFn) -> dict[str, object]:
        names = draw(st.sets(st.sampled_from(sorted(defaults)), min_size=1, max_size=3))
        return {
            name: draw(NUMBERS) if name in names else default for name, default in defaults.items()
        }

    return draw_arguments()


def construct(make: Callable[[], Any], names: object) -> Any:
    """``make()``, or None if it raised a ValueError/TypeError naming a parameter."""
    try:
        return make()
    except (ValueError, TypeError) as error:
        message = str(error)
        assert any(name in message for name in names), message  # type: ignore[attr-defined]
        assert len(message) < 2000
        return None


def run_async(main: Callable[[], Awaitable[None]], backend: str) -> None:
    """``main()`` on ``backend`` with virtual time, as the test fixtures do."""
    anyio.run(main, backend=backend, backend_options=virtual_time(backend))


async def noop() -> None:
    """Work that does nothing."""


# --- the limiters ----------------------------------------------------------------------


@SETTINGS
@given(args=arguments(rate=10.0, per=1.0, burst=None), step=st.sampled_from([0.0, 0.001, 1.0]))
def test_token_bucket(args: dict[str, Any], step: float) -> None:
    """TokenBucket: a named error, or 1,000 decisions in range."""
    clock = FakeClock()
    bucket = construct(lambda: brace.TokenBucket(**args, clock=clock), args)
    if bucket is None:
        return
    # GCRA's 1 us slack counts as tokens when a token takes less than that (> 1e6/s).
    most = bucket.burst + int(1e-6 / (bucket.per / bucket.rate))
    for _ in range(CALLS):
        clock.advance(step)
        decision = bucket.try_acquire()
        assert 0 <= decision.remaining <= most
        assert decision.retry_after >= 0
        assert decision.reset_after >= 0
    assert bucket.available() >= 0
    bucket.statistics()


@SETTINGS
@given(args=arguments(limit=10, window=1.0), exact=st.booleans(), step=st.sampled_from([0.0, 0.3]))
def test_sliding_window(args: dict[str, Any], exact: bool, step: float) -> None:
    """SlidingWindow: a named error, or 1,000 decisions in range."""
    clock = FakeClock()
    window = construct(lambda: brace.SlidingWindow(**args, exact=exact, clock=clock), args)
    if window is None:
        return
    for _ in range(CALLS):
        clock.advance(step)
        decision = window.try_acquire()
        assert 0 <= decision.remaining <= decision.limit
        assert decision.retry_after >= 0
        assert decision.reset_after >= 0
    window.statistics()


@SETTINGS
@given(args=arguments(limit=10, period=60.0))
def test_rate(args: dict[str, Any]) -> None:
    """Rate, and its text through parse_rate: a named error, or a policy that decides."""
    rate = construct(lambda: brace.Rate(**args), args)
    if rate is None:
        return
    assert brace.parse_rate(str(rate)) == rate
    limiter = brace.RateLimiter(rate, clock=FakeClock())
    for _ in range(CALLS):
        limiter.try_hit("k")


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(args=arguments(max_keys=100), kind=st.sampled_from(["10/s", "bucket", "log"]))
def test_rate_limiter_and_memory_store(backend: str, args: dict[str, Any], kind: str) -> None:
    """RateLimiter(max_keys=) and MemoryStore(max_keys): a named error, or 1,000 hits work."""
    clock = FakeClock()
    policy: Any = {
        "10/s": "10/s",
        "bucket": brace.TokenBucket(10, per=1.0),
        "log": brace.SlidingWindow(10, 1.0, exact=True),
    }[kind]
    limiter = construct(lambda: brace.RateLimiter(policy, clock=clock, **args), args)
    store = construct(lambda: brace.MemoryStore(args["max_keys"], clock=clock), args)
    if limiter is None:
        assert store is None
        return
    limiters = [limiter, brace.RateLimiter(policy, store=store, clock=clock)]

    async def main() -> None:
        for i in range(CALLS):
            clock.advance(0.01)
            for each in limiters:
                decision = await each.hit(f"key:{i % 300}")
                assert decision.remaining >= 0

    run_async(main, backend)


# --- breaker, retry, timeout --------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(
    args=arguments(
        failure_threshold=15,
        recovery_time=30.0,
        half_open_max_calls=1,
        failure_rate=None,
        minimum_calls=10,
        window=60.0,
        slow_call_duration=None,
        window_calls=None,
        window_buckets=10,
        slow_call_rate=1.0,
        success_threshold=1,
        recovery_backoff=1.0,
        max_recovery_time=None,
        recovery_jitter=0.0,
        max_half_open_wait=None,
    )
)
def test_circuit_breaker(backend: str, args: dict[str, Any]) -> None:
    """CircuitBreaker: a named error, or 1,000 calls (failing now and then) work."""
    clock = FakeClock()
    breaker = construct(lambda: brace.CircuitBreaker(**args, clock=clock), args)
    if breaker is None:
        return

    async def fail() -> None:
        raise OSError("down")

    async def main() -> None:
        for i in range(CALLS):
            clock.advance(0.5)
            retry_after: float | None = None
            try:
                await breaker.call(fail if i % 3 == 0 else noop)
            except OSError:
                pass
            except brace.CircuitOpen as error:
                retry_after = error.retry_after
            assert retry_after is None or retry_after >= 0
        until = breaker.statistics().time_until_half_open
        assert until is None or until >= 0

    run_async(main, backend)


@SETTINGS
@given(
    kind=st.sampled_from(["constant", "linear", "exponential", "full_jitter", "decorrelated"]),
    a=NUMBERS,
    b=NUMBERS,
    c=NUMBERS,
    cap=st.one_of(st.none(), NUMBERS),
    jitter=st.one_of(st.none(), NUMBERS),
    floor=st.one_of(st.just(0.0), NUMBERS),
)
def test_backoff(kind: str, a: Any, b: Any, c: Any, cap: Any, jitter: Any, floor: Any) -> None:
    """Backoff.*: a named error, or 1,000 delays that are finite and >= 0."""
    makers: dict[str, tuple[Callable[[], Any], tuple[str, ...]]] = {
        "constant": (lambda: brace.Backoff.constant(a), ("delay",)),
        "linear": (lambda: brace.Backoff.linear(a, b), ("start", "step")),
        "exponential": (
            lambda: brace.Backoff.exponential(a, factor=b, cap=c, min=floor),
            ("base", "factor", "cap", "min"),
        ),
        "full_jitter": (
            lambda: brace.Backoff.full_jitter(a, factor=b, cap=c),
            ("base", "factor", "cap"),
        ),
        "decorrelated": (lambda: brace.Backoff.decorrelated_jitter(a, b), ("base", "cap")),
    }
    make, names = makers[kind]
    backoff = construct(make, names)
    if backoff is None:
        return
    if cap is not None:
        backoff = construct(lambda: backoff.capped(cap), ("maximum",))
        if backoff is None:
            return
    if jitter is not None:
        backoff = construct(lambda: backoff.with_jitter(jitter), ("fraction",))
        if backoff is None:
            return
    rng = random.Random(0)
    previous = 0.0
    for attempt in range(1, CALLS + 1):
        previous = backoff.delay(attempt, previous, rng)
        assert math.isfinite(previous), (attempt, previous)
        assert previous >= 0, (attempt, previous)


@SETTINGS
@given(args=arguments(ratio=0.2, min_per_second=10.0, window=10.0))
def test_retry_budget(args: dict[str, Any]) -> None:
    """RetryBudget: a named error, or 1,000 requests and retries counted."""
    clock = FakeClock()
    budget = construct(lambda: brace.RetryBudget(**args, clock=clock), args)
    if budget is None:
        return
    for _ in range(CALLS):
        clock.advance(0.01)
        budget.record_request()
        budget.try_retry()
    budget.statistics()


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(args=arguments(attempts=3, deadline=None), delay=NUMBERS)
def test_retry(backend: str, args: dict[str, Any], delay: Any) -> None:
    """Retry: a named error, or 1,000 calls (each failing once, then working) work."""
    backoff = construct(lambda: brace.Backoff.constant(delay), ("delay",))
    if backoff is None:
        return
    retry = construct(lambda: brace.Retry(**args, backoff=backoff, clock=anyio.current_time), args)
    if retry is None:
        return

    # A retried call sleeps the delay: a long one would only wait (virtual time, but
    # looptime steps through it), so those get calls that work at once.
    retried = CALLS // 10 if backoff.delay(1, 0.0, random.Random(0)) <= 1.0 else 0

    async def main() -> None:
        for _ in range(retried):
            failed: list[bool] = []

            async def flaky(failed: list[bool] = failed) -> None:
                if not failed:
                    failed.append(True)
                    raise OSError("once")

            try:
                await retry.call(flaky)
            except OSError:
                assert retry.attempts == 1 or retry.deadline is not None
        for _ in range(CALLS):
            await retry.call(noop)

    run_async(main, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(seconds=NUMBERS)
def test_timeout(backend: str, seconds: Any) -> None:
    """Timeout: a named error, or 1,000 quick calls work."""
    timeout = construct(lambda: brace.Timeout(seconds), ("seconds",))
    if timeout is None:
        return

    async def main() -> None:
        for _ in range(CALLS):
            await timeout.call(noop)

    run_async(main, backend)


# --- executor, adaptive limit, memory guard, load, shutdown ------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(
    args=arguments(
        concurrency=10,
        max_queue=1000,
        timeout=None,
        queue_timeout=None,
        aging=10.0,
        codel_target=0.005,
        codel_interval=0.1,
        default_priority=10,
        reservoir_size=1024,
    ),
    discipline=st.sampled_from(["fifo", "codel", "adaptive_lifo"]),
)
def test_priority_executor(backend: str, args: dict[str, Any], discipline: Any) -> None:
    """PriorityExecutor: a named error, or 1,000 runs and slots work."""
    executor = construct(
        lambda: brace.PriorityExecutor(**args, discipline=discipline, clock=anyio.current_time),
        args,
    )
    if executor is None:
        return

    async def main() -> None:
        for _ in range(CALLS // 2):
            await executor.run(noop)
            async with executor.slot():
                pass
        executor.statistics()

    run_async(main, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(
    kind=st.sampled_from(["aimd", "gradient2", "vegas"]),
    args=arguments(initial=10, min_limit=1, max_limit=200, window=0.1, min_samples=10),
    extra=NUMBERS,
    extra2=NUMBERS,
)
def test_adaptive_limit(
    backend: str, kind: str, args: dict[str, Any], extra: Any, extra2: Any
) -> None:
    """AdaptiveLimit (and its cores): a named error, or 1,000 observed runs work."""
    makers: dict[str, tuple[Callable[[], Any], tuple[str, ...]]] = {
        "aimd": (
            lambda: AIMDCore(**args, backoff_ratio=extra, increase=extra2),
            ("backoff_ratio", "increase"),
        ),
        "gradient2": (
            lambda: Gradient2Core(**args, tolerance=extra, queue_size=extra2),
            ("tolerance", "queue_size"),
        ),
        "vegas": (lambda: VegasCore(**args, alpha=extra, beta=extra2), ("alpha", "beta")),
    }
    make, names = makers[kind]
    core = construct(make, (*names, *args))
    if core is None:
        return
    limit = brace.AdaptiveLimit(core)

    async def main() -> None:
        executor = brace.PriorityExecutor(limit=limit, clock=anyio.current_time)
        for _ in range(CALLS):
            await executor.run(anyio.sleep, 0.001)

    run_async(main, backend)


@SETTINGS
@given(
    args=arguments(
        high=2**30,
        critical=None,
        low=None,
        interval=1.0,
        shed_priority=20,
        default_priority=10,
        queue_timeout=None,
        retry_after=None,
        pressure_high=None,
        collect_on_high=None,
        collect_interval=None,
    ),
    used=st.sampled_from([0, 2**29, 2**31, 2**40]),
)
def test_memory_guard(args: dict[str, Any], used: int) -> None:
    """MemoryGuard: a named error, or 1,000 checks work."""
    clock = FakeClock()
    guard = construct(lambda: brace.MemoryGuard(**args, probe=lambda: used, clock=clock), args)
    if guard is None:
        return
    for _ in range(CALLS):
        clock.advance(0.1)
        guard.check()
        guard.admit(brace.Priority.LOW)
    guard.statistics()


@SETTINGS
@given(start=NUMBERS, step=NUMBERS, target=NUMBERS)
def test_fake_clock(start: Any, step: Any, target: Any) -> None:
    """FakeClock: a named error (never OverflowError), or 1,000 moves that stay finite."""
    clock = construct(lambda: FakeClock(start), ("start",))
    if clock is None:
        return

    def moved(move: Callable[[], None], name: str) -> bool:
        """``move()``; False if it raised a ValueError/TypeError naming ``name``."""
        before = clock()
        message = ""
        try:
            move()
        except (ValueError, TypeError) as error:
            message = str(error)
        if not message:
            return True
        assert name in message
        assert clock() == before  # a refused move moves nothing
        return False

    moved(lambda: clock.advance(step), "seconds")
    moved(lambda: clock.set(target), "now")
    for _ in range(CALLS):
        before = clock()
        moved(lambda: clock.advance(1e300), "seconds")
        assert math.isfinite(clock())
        assert clock() >= before
    assert math.isfinite(clock.now)


@SETTINGS
@given(args=arguments(max_lag=0.1, interval=0.1, smoothing=0.3, retry_after=1.0), lag=NUMBERS)
def test_load_monitor(args: dict[str, Any], lag: Any) -> None:
    """LoadMonitor: a named error, or 1,000 lag samples and checks work."""
    monitor = construct(lambda: brace.LoadMonitor(**args, clock=FakeClock()), args)
    if monitor is None:
        return
    if construct(lambda: monitor.observe(lag), ("lag",)) is None and lag is not None:
        lag = 0.0
    for _ in range(CALLS):
        monitor.observe(0.05)
        monitor.should_shed()
        retry_after: float | None = None
        try:
            monitor.check()
        except brace.Rejected as error:
            retry_after = error.retry_after
        assert retry_after is None or retry_after >= 0
    monitor.statistics()


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(args=arguments(timeout=30.0, delay=0.0))
def test_graceful_shutdown(backend: str, args: dict[str, Any]) -> None:
    """GracefulShutdown: a named error, or a drain of an executor that works."""
    shutdown = construct(
        lambda: brace.GracefulShutdown(**args, signals=(signal.SIGUSR2,), clock=anyio.current_time),
        args,
    )
    if shutdown is None:
        return

    async def main() -> None:
        executor = shutdown.register(brace.PriorityExecutor())
        for _ in range(CALLS):
            await executor.run(noop)
        shutdown.trigger()
        report = await shutdown.wait_drained()
        assert report is None or report.duration >= 0
        shutdown.statistics()

    run_async(main, backend)
