"""brace.Retry and brace.RetryBudget on both backends, in virtual time."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import random
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import brace
import brace.testing
from brace import Backoff, Retry, RetryBudget, RetryDetails


class Boom(Exception):
    """A retryable failure for tests."""


class Fatal(Exception):
    """A failure the tests configure as not retryable."""


class Flaky:
    """An async callable that raises the queued exceptions, then returns ``value``."""

    def __init__(self, *failures: BaseException, value: object = "ok") -> None:
        self.failures = list(failures)
        self.value = value
        self.calls = 0
        self.times: list[float] = []
        self.raised: list[BaseException] = []

    async def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        self.times.append(anyio.current_time())
        if self.failures:
            failure = self.failures.pop(0)
            self.raised.append(failure)
            raise failure
        return self.value


def gaps(times: list[float]) -> list[float]:
    """The time between consecutive attempts."""
    return [b - a for a, b in itertools.pairwise(times)]


def make(attempts: int = 3, **kwargs: Any) -> Retry:
    kwargs.setdefault("backoff", Backoff.constant(1.0))
    return Retry(attempts, clock=anyio.current_time, **kwargs)


# -- call and decorator -------------------------------------------------------------------


async def test_success_first_time_makes_one_attempt() -> None:
    """A call that succeeds is awaited once, with no sleep, and counted as a success."""
    retry = make()
    flaky = Flaky()
    start = anyio.current_time()
    assert await retry.call(flaky) == "ok"
    assert flaky.calls == 1
    assert anyio.current_time() == start
    stats = retry.statistics()
    assert (stats.calls, stats.attempts, stats.retries, stats.successes) == (1, 1, 0, 1)


async def test_retries_until_success_sleeping_the_backoff() -> None:
    """Two failures then success: three attempts, one backoff delay apart."""
    retry = make(backoff=Backoff.linear(1.0, 1.0))
    flaky = Flaky(Boom(), Boom())
    assert await retry.call(flaky) == "ok"
    assert flaky.calls == 3
    assert gaps(flaky.times) == pytest.approx([1.0, 2.0])
    stats = retry.statistics()
    assert (stats.calls, stats.attempts, stats.retries, stats.successes) == (1, 3, 2, 1)


async def test_exhausted_attempts_reraise_the_last_exception() -> None:
    """After the last attempt the very exception it raised reaches the caller, unchained."""
    retry = make(attempts=3)
    first, second, last = Boom("1"), Boom("2"), Boom("3")
    flaky = Flaky(first, second, last)
    with pytest.raises(Boom) as caught:
        await retry.call(flaky)
    assert caught.value is last
    assert last.__context__ is None
    assert flaky.calls == 3
    stats = retry.statistics()
    assert (stats.failures, stats.exhausted, stats.retries, stats.attempts) == (1, 1, 2, 3)


async def test_attempts_one_never_retries() -> None:
    """attempts=1 makes a single attempt."""
    flaky = Flaky(Boom())
    with pytest.raises(Boom):
        await make(attempts=1).call(flaky)
    assert flaky.calls == 1


RETRY_ON: dict[str, Any] = {
    "type": Boom,
    "tuple": (KeyError, Boom),
    "predicate": lambda exc: isinstance(exc, Boom),
}


@pytest.mark.anyio
@pytest.mark.parametrize("form", sorted(RETRY_ON))
async def test_retry_on_selects_what_is_retried(form: str) -> None:
    """Only the exceptions retry_on names are retried; others propagate at once."""
    retry = make(retry_on=RETRY_ON[form])
    assert await retry.call(Flaky(Boom())) == "ok"
    fatal = Fatal()
    flaky = Flaky(fatal)
    with pytest.raises(Fatal) as caught:
        await retry.call(flaky)
    assert caught.value is fatal
    assert flaky.calls == 1
    assert retry.statistics().exhausted == 0


async def test_arguments_are_forwarded_even_one_named_fn() -> None:
    """call(fn, /, *args, **kwargs) forwards everything, including a keyword called fn."""

    async def echo(*args: object, **kwargs: object) -> tuple[object, object]:
        return args, kwargs

    assert await make().call(echo, 1, 2, fn=3) == ((1, 2), {"fn": 3})


async def test_decorator_keeps_signature_and_retries() -> None:
    """@retry keeps name, docstring and signature, and retries the decorated function."""
    failures = [Boom()]

    async def fetch(url: str, *, timeout: float = 1.0) -> str:
        """Fetch a thing."""
        if failures:
            raise failures.pop()
        return f"{url}:{timeout}"

    decorated = make()(fetch)
    assert decorated.__name__ == "fetch"
    assert decorated.__doc__ == "Fetch a thing."
    assert inspect.signature(decorated) == inspect.signature(fetch)
    assert await decorated("a", timeout=2.0) == "a:2.0"


def test_decorator_refuses_sync_functions() -> None:
    """Decorating a plain def is a TypeError: its result could not be awaited."""

    def sync() -> None: ...

    with pytest.raises(TypeError, match="async"):
        Retry()(sync)  # type: ignore[arg-type]


async def test_default_backoff_is_decorrelated_jitter() -> None:
    """Without backoff=, sleeps follow decorrelated jitter from 0.1 s (within [0.1, 0.3])."""
    retry = Retry(2, clock=anyio.current_time, random=random.Random(1))
    assert "decorrelated_jitter" in repr(retry.backoff)
    flaky = Flaky(Boom())
    await retry.call(flaky)
    assert 0.1 <= flaky.times[1] - flaky.times[0] <= 0.3


# -- cancellation and BaseException --------------------------------------------------------


async def test_cancellation_is_never_retried_and_reaches_caller_unchanged() -> None:
    """The Cancelled raised inside the attempt is the very object the caller sees."""
    retry = make(attempts=5, retry_on=Exception)
    seen: list[BaseException] = []
    caught: list[BaseException] = []
    calls = 0

    async def slow() -> None:
        nonlocal calls
        calls += 1
        try:
            await anyio.sleep(100)
        except BaseException as exc:
            seen.append(exc)
            raise

    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await retry.call(slow)
        except anyio.get_cancelled_exc_class() as exc:
            caught.append(exc)
            raise
    assert scope.cancelled_caught
    assert calls == 1
    assert caught[0] is seen[0]
    assert type(caught[0]) is anyio.get_cancelled_exc_class()


async def test_retry_on_predicate_cannot_catch_cancellation() -> None:
    """Even a predicate that says yes to everything never sees a cancellation."""
    asked: list[BaseException] = []

    def everything(exc: BaseException) -> bool:
        asked.append(exc)
        return True

    retry = make(attempts=5, retry_on=everything)
    with anyio.move_on_after(0.5):
        await retry.call(anyio.sleep, 100)
    assert asked == []


async def test_cancelled_while_sleeping_between_attempts() -> None:
    """A cancellation during the backoff sleep ends the call at once, with no more attempts."""
    retry = make(backoff=Backoff.constant(10.0))
    flaky = Flaky(Boom(), Boom())
    start = anyio.current_time()
    with anyio.move_on_after(5) as scope:
        await retry.call(flaky)
    assert scope.cancelled_caught
    assert flaky.calls == 1
    assert anyio.current_time() - start == pytest.approx(5)


class Interrupt(BaseException):
    """A BaseException that is not an Exception, like KeyboardInterrupt."""


async def test_base_exceptions_pass_through() -> None:
    """A BaseException (KeyboardInterrupt-like) is never retried."""
    interrupt = Interrupt()
    flaky = Flaky(interrupt)
    with pytest.raises(Interrupt) as caught:
        await make().call(flaky)
    assert caught.value is interrupt
    assert flaky.calls == 1


# -- retry_after, results, deadline ---------------------------------------------------------


async def test_rejected_retry_after_is_honoured() -> None:
    """A Rejected with retry_after=7 makes the retry wait 7 s instead of its 1 s backoff."""
    retry = make()
    flaky = Flaky(brace.RateLimited(retry_after=7.0), brace.CircuitOpen(retry_after=None))
    assert await retry.call(flaky) == "ok"
    assert gaps(flaky.times) == pytest.approx([7.0, 1.0])


async def test_any_exception_with_numeric_retry_after_is_honoured() -> None:
    """Any exception carrying a numeric retry_after waits at least that long, never less."""

    class Throttled(Exception):
        def __init__(self, retry_after: object) -> None:
            self.retry_after = retry_after

    flaky = Flaky(Throttled(3), Throttled(0.5), Throttled("soon"), Throttled(True))
    await make(attempts=5, backoff=Backoff.constant(2.0)).call(flaky)
    assert gaps(flaky.times) == pytest.approx([3.0, 2.0, 2.0, 2.0])


async def test_retry_if_result() -> None:
    """A result the predicate rejects is retried; the first accepted one is returned."""
    results = iter([None, None, 5])

    async def poll() -> int | None:
        return next(results)

    retry = make(attempts=5, retry_if_result=lambda value: value is None)
    assert await retry.call(poll) == 5
    assert retry.statistics().attempts == 3


async def test_retry_if_result_exhausted_returns_last_value() -> None:
    """When attempts run out on rejected results, the last result is returned (a failure)."""
    values = iter(range(10))

    async def count() -> int:
        return next(values)

    retry = make(attempts=3, retry_if_result=lambda value: value < 100)
    assert await retry.call(count) == 2
    stats = retry.statistics()
    assert (stats.failures, stats.exhausted, stats.successes) == (1, 1, 0)


async def test_deadline_stops_before_a_sleep_would_cross_it() -> None:
    """Constant 1 s backoff and a 2.5 s deadline: attempts at 0, 1, 2, then the error."""
    retry = make(attempts=100, deadline=2.5)
    last = Boom("last")
    flaky = Flaky(*[Boom() for _ in range(2)], last, *[Boom() for _ in range(10)])
    start = anyio.current_time()
    with pytest.raises(Boom) as caught:
        await retry.call(flaky)
    assert caught.value is last
    assert [t - start for t in flaky.times] == pytest.approx([0.0, 1.0, 2.0])
    assert anyio.current_time() - start == pytest.approx(2.0)
    assert retry.statistics().deadline_exceeded == 1


@st.composite
def schedules(draw: st.DrawFn) -> Backoff:
    kind = draw(st.sampled_from(["constant", "exponential", "decorrelated", "full"]))
    base = draw(st.floats(0.01, 3.0))
    if kind == "constant":
        return Backoff.constant(base)
    if kind == "exponential":
        return Backoff.exponential(base, factor=draw(st.floats(1.0, 3.0)), cap=base * 20)
    if kind == "full":
        return Backoff.full_jitter(base, factor=2.0, cap=base * 20)
    return Backoff.decorrelated_jitter(base, base * 20)


@pytest.mark.anyio
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    deadline=st.floats(0.5, 30.0),
    backoff=schedules(),
    durations=st.lists(st.floats(0.0, 4.0), min_size=1, max_size=30),
    retry_after=st.one_of(st.none(), st.floats(0.0, 10.0)),
    seed=st.integers(0, 2**32 - 1),
)
async def test_deadline_is_never_slept_past(
    deadline: float,
    backoff: Backoff,
    durations: list[float],
    retry_after: float | None,
    seed: int,
) -> None:
    """Every retry starts before the deadline: elapsed + sleep < deadline at each sleep."""
    details: list[RetryDetails] = []
    retry = Retry(
        1000,
        backoff=backoff,
        deadline=deadline,
        on_retry=details.append,
        clock=anyio.current_time,
        random=random.Random(seed),
    )
    starts: list[float] = []
    remaining = list(durations)

    async def attempt() -> str:
        starts.append(anyio.current_time())
        if not remaining:
            return "done"
        await anyio.sleep(remaining.pop(0))
        raise brace.Rejected(retry_after=retry_after)

    try:
        await retry.call(attempt)
    except brace.Rejected:
        assert retry.statistics().deadline_exceeded == 1
    else:
        assert not remaining
    for item in details:
        assert item.elapsed + item.sleep < deadline
    assert all(start - starts[0] < deadline for start in starts)
    stats = retry.statistics()
    assert stats.attempts == len(starts)
    assert stats.deadline_exceeded + stats.successes == 1


# -- budget -----------------------------------------------------------------------------------


async def test_budget_refusal_reraises_the_last_error() -> None:
    """A budget with no room raises the first attempt's own exception and counts it."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.0, clock=anyio.current_time)
    retry = make(budget=budget)
    error = Boom()
    flaky = Flaky(error)
    with pytest.raises(Boom) as caught:
        await retry.call(flaky)
    assert caught.value is error
    assert flaky.calls == 1
    assert retry.statistics().budget_exhausted == 1
    stats = budget.statistics()
    assert (stats.requests, stats.retries, stats.refused) == (1, 0, 1)


async def test_budget_is_shared_between_retries() -> None:
    """Two Retry objects drawing on one budget stay within ratio * requests + floor."""
    budget = RetryBudget(ratio=0.5, min_per_second=0.1, window=10.0, clock=anyio.current_time)
    first = make(attempts=10, budget=budget, backoff=Backoff.constant(0.0))
    second = make(attempts=10, budget=budget, backoff=Backoff.constant(0.0))
    for retry in (first, second):
        for _ in range(2):
            await retry.call(Flaky(value=1))
    # 4 requests: 0.5 * 4 + 0.1 * 10 = 3 retries allowed in the window, then refusals.
    flaky = Flaky(*[Boom() for _ in range(20)])
    with pytest.raises(Boom):
        await first.call(flaky)
    # 5 requests now: 3.5 retries; all three were spent on `first`.
    assert flaky.calls == 4
    other = Flaky(*[Boom() for _ in range(20)])
    with pytest.raises(Boom):
        await second.call(other)
    # 6 requests: 0.5 * 6 + 1 = 4 retries allowed, 3 used: one more for `other`.
    assert other.calls == 2
    stats = budget.statistics()
    assert stats.retries <= budget.ratio * stats.requests + budget.min_per_second * budget.window


def test_budget_validation() -> None:
    """Out-of-range budget settings raise naming the parameter."""
    with pytest.raises(ValueError, match="ratio"):
        RetryBudget(ratio=2)
    with pytest.raises(ValueError, match="window"):
        RetryBudget(window=-1)
    with pytest.raises(TypeError, match="clock"):
        RetryBudget(clock=3)  # type: ignore[arg-type]


# -- hooks and statistics -------------------------------------------------------------------


async def test_on_retry_receives_frozen_details() -> None:
    """The hook runs before each sleep with attempt number, exception, sleep and elapsed."""
    details: list[RetryDetails] = []
    retry = make(on_retry=details.append, name="db", backoff=Backoff.linear(1.0, 1.0))
    first, second = Boom(), Boom()
    await retry.call(Flaky(first, second))
    assert [d.attempt for d in details] == [1, 2]
    assert [d.exception for d in details] == [first, second]
    assert [d.sleep for d in details] == [1.0, 2.0]
    assert [d.elapsed for d in details] == pytest.approx([0.0, 1.0])
    assert {d.name for d in details} == {"db"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        details[0].attempt = 5  # type: ignore[misc]


async def test_on_retry_sees_rejected_results() -> None:
    """For a rejected result the details carry the result and no exception."""
    details: list[RetryDetails] = []
    values = iter([0, 1])

    async def poll() -> int:
        return next(values)

    await make(retry_if_result=lambda v: v == 0, on_retry=details.append).call(poll)
    assert [(d.exception, d.result) for d in details] == [(None, 0)]


def test_statistics_is_frozen_and_slotted() -> None:
    """statistics() is a frozen, slotted dataclass."""
    stats = Retry().statistics()
    assert not hasattr(stats, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.calls = 1  # type: ignore[misc]


# -- async for ---------------------------------------------------------------------------


async def test_async_for_retries_until_success() -> None:
    """The attempt context swallows retryable failures; the loop sleeps and goes on."""
    retry = make(backoff=Backoff.constant(2.0))
    flaky = Flaky(Boom(), Boom())
    numbers = []
    result = None
    async for attempt in retry:
        with attempt:
            numbers.append(attempt.number)
            result = await flaky()
    assert result == "ok"
    assert numbers == [1, 2, 3]
    assert gaps(flaky.times) == pytest.approx([2.0, 2.0])
    stats = retry.statistics()
    assert (stats.calls, stats.attempts, stats.successes) == (1, 3, 1)


async def test_async_for_exhausted_raises_last_exception() -> None:
    """After the last attempt its exception propagates out of the loop."""
    retry = make(attempts=2)
    last = Boom("last")
    flaky = Flaky(Boom(), last)

    async def loop() -> None:
        async for attempt in retry:
            with attempt:
                await flaky()

    with pytest.raises(Boom) as caught:
        await loop()
    assert caught.value is last
    assert flaky.calls == 2


async def test_async_for_not_retryable_propagates_at_once() -> None:
    """A non-retryable exception leaves the loop on the first attempt."""
    retry = make(retry_on=Boom)
    calls = 0

    async def loop() -> None:
        nonlocal calls
        async for attempt in retry:
            with attempt:
                calls += 1
                raise Fatal

    with pytest.raises(Fatal):
        await loop()
    assert calls == 1
    assert retry.statistics().failures == 1


async def test_async_for_cancellation_is_not_swallowed() -> None:
    """A cancellation inside the attempt leaves the loop; nothing is retried."""
    calls = 0
    with anyio.move_on_after(1) as scope:
        async for attempt in make(attempts=5):
            with attempt:
                calls += 1
                await anyio.sleep(10)
    assert scope.cancelled_caught
    assert calls == 1


async def test_async_for_body_without_attempt_context_runs_once() -> None:
    """A loop body that does not fail ends the loop after one pass."""
    passes = 0
    async for _attempt in make():
        passes += 1
    assert passes == 1


async def test_retry_is_reusable_across_concurrent_loops() -> None:
    """Each `async for` over one Retry has its own attempt state."""
    retry = make(attempts=3, backoff=Backoff.constant(1.0))
    results: dict[int, list[int]] = {}

    async def worker(index: int) -> None:
        failures = index % 3
        numbers: list[int] = []
        async for attempt in retry:
            with attempt:
                numbers.append(attempt.number)
                if attempt.number <= failures:
                    raise Boom
        results[index] = numbers

    async with anyio.create_task_group() as tg:
        for index in range(9):
            tg.start_soon(worker, index)
    assert results == {i: list(range(1, i % 3 + 2)) for i in range(9)}


async def test_attempt_cannot_be_reused() -> None:
    """Entering an old attempt again is a RuntimeError."""
    old = None
    async for attempt in make():
        old = attempt
        with attempt:
            pass
    assert old is not None
    with pytest.raises(RuntimeError, match="only be used once"), old:
        pass


# -- the testing switch ----------------------------------------------------------------------


async def test_disable_retry_sleep() -> None:
    """Within disable_retry_sleep() retries happen without any time passing."""
    retry = make(attempts=4, backoff=Backoff.constant(100.0))
    flaky = Flaky(Boom(), Boom(), Boom())
    start = anyio.current_time()
    with brace.testing.disable_retry_sleep():
        assert brace.testing.is_retry_testing()
        assert await retry.call(flaky) == "ok"
    assert anyio.current_time() == start
    assert flaky.calls == 4
    assert not brace.testing.is_retry_testing()


async def test_disable_retry_sleep_caps_attempts_and_nests() -> None:
    """attempts= caps every retry; leaving the block restores the outer setting."""
    retry = make(attempts=5)
    with brace.testing.disable_retry_sleep(attempts=3):
        with brace.testing.disable_retry_sleep(attempts=1):
            flaky = Flaky(Boom(), Boom())
            with pytest.raises(Boom):
                await retry.call(flaky)
            assert flaky.calls == 1
        flaky = Flaky(*[Boom() for _ in range(4)])
        with pytest.raises(Boom):
            await retry.call(flaky)
        assert flaky.calls == 3


def test_set_retry_testing() -> None:
    """set_retry_testing turns the switch on and off; a bad attempts is refused."""
    try:
        brace.testing.set_retry_testing(True, attempts=2)
        assert brace.testing.is_retry_testing()
        with pytest.raises(ValueError, match="attempts"):
            brace.testing.set_retry_testing(True, attempts=0)
    finally:
        brace.testing.set_retry_testing(False)
    assert not brace.testing.is_retry_testing()


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"attempts": 0}, ValueError, "attempts"),
        ({"attempts": 2.0}, TypeError, "attempts"),
        ({"backoff": "fast"}, TypeError, "backoff"),
        ({"retry_on": 3}, TypeError, "retry_on"),
        ({"retry_on": (Boom, "x")}, TypeError, "retry_on"),
        ({"retry_on": KeyboardInterrupt}, TypeError, "retry_on"),
        ({"retry_on": (Exception, BaseException)}, TypeError, "retry_on"),
        ({"retry_if_result": 1}, TypeError, "retry_if_result"),
        ({"deadline": 0}, ValueError, "deadline"),
        ({"deadline": "1"}, TypeError, "deadline"),
        ({"budget": 0.2}, TypeError, "budget"),
        ({"on_retry": 1}, TypeError, "on_retry"),
        ({"clock": 1}, TypeError, "clock"),
        ({"rng": 1}, TypeError, "rng"),
        ({"name": 1}, TypeError, "name"),
    ],
)
def test_bad_configuration_names_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    """Bad settings raise at construction, naming the parameter."""
    with pytest.raises(error, match=name):
        Retry(**kwargs)


def test_plain_callable_backoff_is_accepted() -> None:
    """A function (attempt) -> seconds works as backoff."""
    schedule: Callable[[int], float] = lambda n: 0.5 * n  # noqa: E731
    assert Retry(backoff=schedule).backoff.delay(2, 0.0, random.Random()) == 1.0


async def test_books_balance_under_random_cancellation() -> None:
    """Cancelled at random moments, a Retry's and its budget's counts still agree."""
    rng = random.Random(7)
    budget = RetryBudget(ratio=0.5, min_per_second=1.0, window=5.0, clock=anyio.current_time)
    retry = make(
        attempts=4, backoff=Backoff.full_jitter(0.5, factor=2.0, cap=4.0), budget=budget, random=rng
    )
    fn_calls = 0

    async def sometimes() -> str:
        nonlocal fn_calls
        fn_calls += 1
        await anyio.sleep(rng.uniform(0, 1))
        if rng.random() < 0.6:
            raise Boom
        return "ok"

    outcomes = {"ok": 0, "boom": 0, "cancelled": 0}
    for _ in range(300):
        with anyio.move_on_after(rng.uniform(0, 6)) as scope:
            try:
                await retry.call(sometimes)
                outcomes["ok"] += 1
            except Boom:
                outcomes["boom"] += 1
        if scope.cancelled_caught:
            outcomes["cancelled"] += 1
    stats = retry.statistics()
    assert stats.calls == 300
    assert stats.attempts == fn_calls
    assert stats.successes == outcomes["ok"]
    assert stats.failures == outcomes["boom"]
    assert outcomes["cancelled"] > 0
    assert stats.exhausted + stats.budget_exhausted <= stats.failures
    budget_stats = budget.statistics()
    assert budget_stats.total_requests == stats.calls
    assert budget_stats.total_retries == stats.retries
    assert stats.retries >= stats.attempts - stats.calls  # a cancelled sleep wastes a retry


async def test_exponential_floor_sets_the_shortest_wait() -> None:
    """With Backoff.exponential(min=...), a retry never waits less than the floor."""
    flaky = Flaky(Boom(), Boom(), Boom())
    retry = make(4, backoff=Backoff.exponential(base=0.25, factor=2, cap=10.0, min=1.0))
    assert await retry.call(flaky) == "ok"
    assert gaps(flaky.times) == [1.0, 1.0, 1.0]  # 0.25, 0.5, 1.0 raised to the floor
    flaky = Flaky(Boom(), Boom(), Boom())
    retry = make(4, backoff=Backoff.exponential(base=0.25, factor=2, cap=10.0))
    assert await retry.call(flaky) == "ok"
    assert gaps(flaky.times) == [0.25, 0.5, 1.0]
