"""brace.compose: order of application, the run/call/decorator forms, Retry + Timeout."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import anyio
import pytest

import brace
from brace import Backoff, Retry, Timeout, TimeoutExceeded, compose

T = TypeVar("T")


class CallRecorder:
    """A policy with `call` that logs when it is entered and left."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        self.log.append(f"{self.name} in")
        try:
            return await fn(*args, **kwargs)
        finally:
            self.log.append(f"{self.name} out")


class ContextRecorder:
    """A policy that is only a reusable async context manager."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def __aenter__(self) -> None:
        self.log.append(f"{self.name} in")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.log.append(f"{self.name} out")


async def test_policies_apply_outermost_first() -> None:
    """compose(a, b, c, d): a enters first and leaves last, the call sits innermost."""
    log: list[str] = []

    async def work(value: int) -> int:
        log.append("work")
        return value * 2

    policy = compose(
        CallRecorder("a", log),
        ContextRecorder("b", log),
        CallRecorder("c", log),
        ContextRecorder("d", log),
    )
    assert await policy.run(work, 21) == 42
    assert log == ["a in", "b in", "c in", "d in", "work", "d out", "c out", "b out", "a out"]


@pytest.mark.anyio
@pytest.mark.parametrize("innermost", ["call", "context"])
async def test_innermost_policy_of_either_kind(innermost: str) -> None:
    """The innermost layer works whether it is a `call` policy or a context manager."""
    log: list[str] = []
    inner = CallRecorder("i", log) if innermost == "call" else ContextRecorder("i", log)

    async def work() -> str:
        log.append("work")
        return "done"

    assert await compose(ContextRecorder("o", log), inner).run(work) == "done"
    assert log == ["o in", "i in", "work", "i out", "o out"]


async def test_run_call_and_decorator_forward_arguments() -> None:
    """run, call and @policy forward args and kwargs, even a keyword named fn."""

    async def echo(*args: object, **kwargs: object) -> tuple[object, object]:
        return args, kwargs

    policy = compose(CallRecorder("a", []), ContextRecorder("b", []))
    assert await policy.run(echo, 1, fn=2) == ((1,), {"fn": 2})
    assert await policy.call(echo, 1, fn=2) == ((1,), {"fn": 2})
    assert await policy(echo)(1, fn=2) == ((1,), {"fn": 2})


async def test_decorator_keeps_signature() -> None:
    """@policy keeps the wrapped function's name and signature."""

    async def fetch(url: str, *, retries: int = 0) -> str:
        """Fetch."""
        return url

    decorated = compose(Timeout(1))(fetch)
    assert decorated.__name__ == "fetch"
    assert inspect.signature(decorated) == inspect.signature(fetch)
    assert await decorated("u") == "u"


async def test_retry_outside_timeout_limits_each_attempt() -> None:
    """compose(Retry, Timeout): each attempt gets its own timeout and a slow one is retried."""
    durations = iter([5.0, 5.0, 0.5])
    starts: list[float] = []

    async def work() -> str:
        starts.append(anyio.current_time())
        await anyio.sleep(next(durations))
        return "ok"

    policy = compose(Retry(3, backoff=Backoff.constant(1.0)), Timeout(2))
    start = anyio.current_time()
    assert await policy.run(work) == "ok"
    assert [t - start for t in starts] == pytest.approx([0.0, 3.0, 6.0])


async def test_timeout_outside_retry_limits_the_total() -> None:
    """compose(Timeout, Retry): the timeout bounds every attempt and sleep together."""
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        await anyio.sleep(1)
        raise ValueError

    policy = compose(Timeout(4), Retry(10, backoff=Backoff.constant(1.0)))
    start = anyio.current_time()
    with pytest.raises(TimeoutExceeded):
        await policy.run(failing)
    assert anyio.current_time() - start == pytest.approx(4.0)
    assert calls == 2


async def test_exceptions_cross_every_layer_unchanged() -> None:
    """An error from the call reaches the caller as the same object."""
    error = LookupError("gone")

    async def broken() -> None:
        raise error

    policy = compose(CallRecorder("a", []), ContextRecorder("b", []), Timeout(5))
    with pytest.raises(LookupError) as caught:
        await policy.run(broken)
    assert caught.value is error


async def test_async_context_managers_from_anyio_work() -> None:
    """A plain reusable async context manager (anyio.Semaphore) is a policy."""
    policy = compose(anyio.Semaphore(2))
    running = 0
    peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(1)
        running -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(policy.run, work)
    assert peak == 2


async def test_nested_policies_flatten() -> None:
    """A Policy inside compose is spliced in, keeping the order."""
    log: list[str] = []
    a, b, c = (CallRecorder(n, log) for n in "abc")
    policy = compose(compose(a, b), c)
    assert policy.policies == (a, b, c)

    async def work() -> None:
        log.append("work")

    await policy.run(work)
    assert log == ["a in", "b in", "c in", "work", "c out", "b out", "a out"]


async def test_empty_compose_just_calls() -> None:
    """compose() with no policies awaits the function directly."""

    async def one() -> int:
        return 1

    assert await compose().run(one) == 1


def test_bad_policies_are_refused_at_construction() -> None:
    """Objects that are neither policies nor async context managers raise TypeError."""
    with pytest.raises(TypeError, match=r"policies\[1\]"):
        compose(Timeout(1), object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="instance"):
        compose(Retry)  # type: ignore[arg-type]


needs_breaker = pytest.mark.skipif(
    not hasattr(brace, "CircuitBreaker"), reason="CircuitBreaker not built yet"
)


@needs_breaker
async def test_breaker_inside_retry_sees_every_attempt() -> None:
    """compose(Retry, CircuitBreaker): the breaker records each attempt, not each call."""
    breaker = brace.CircuitBreaker(failure_threshold=100, clock=anyio.current_time)
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise ValueError

    with pytest.raises(ValueError):
        await compose(Retry(3, backoff=Backoff.constant(0.1)), breaker).run(failing)
    assert calls == 3
    assert breaker.statistics().failures == 3


@needs_breaker
async def test_retry_waits_out_an_open_circuit() -> None:
    """A CircuitOpen's retry_after makes the retry wait for the half-open probe."""
    breaker = brace.CircuitBreaker(failure_threshold=2, recovery_time=5.0, clock=anyio.current_time)
    outcomes = iter([ValueError(), ValueError(), None])
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        failure = next(outcomes)
        if failure is not None:
            raise failure
        return "ok"

    policy = compose(Retry(5, backoff=Backoff.constant(0.1), clock=anyio.current_time), breaker)
    start = anyio.current_time()
    assert await policy.run(flaky) == "ok"
    assert calls == 3  # the attempt refused by the open circuit never reached flaky
    assert anyio.current_time() - start == pytest.approx(5.1, abs=0.01)
