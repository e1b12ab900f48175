"""Retry: run an async call again when it fails, waiting a backoff between attempts.

The shell keeps the success path to one counter and one ``await``; everything else
(which exception is retryable, how long to wait, whether the deadline or the budget still
allows another attempt) happens only after a failure, in :meth:`Retry._plan`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import random as _random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Protocol, TypeVar, cast

import anyio
from typing_extensions import ParamSpec, Self

from ._clock import check_clock
from ._core._validate import check_int, check_positive, check_random
from ._core.backoff import Backoff, RandomSource, as_backoff
from ._core.budget import RetryBudgetCore
from ._core.retry import RetryStop, plan_retry
from ._events import Event, EventHook, event_hook

__all__ = (
    "Attempt",
    "Backoff",
    "Retry",
    "RetryBudget",
    "RetryBudgetStatistics",
    "RetryDetails",
    "RetryHook",
    "RetryStatistics",
)

P = ParamSpec("P")
T = TypeVar("T")

ExceptionPredicate = Callable[[Exception], bool]
RetryOn = type[Exception] | tuple[type[Exception], ...] | ExceptionPredicate

_DEFAULT_BACKOFF = Backoff.decorrelated_jitter(base=0.1, cap=10.0)


# -- the testing switch (driven by brace.testing) -----------------------------------------


@dataclass(frozen=True, slots=True)
class _TestingMode:
    attempts: int | None


_testing: _TestingMode | None = None


def set_testing(enabled: bool, *, attempts: int | None = None) -> None:
    """Turn retry sleeping off (``enabled=True``) or back on, for every :class:`Retry`."""
    global _testing
    if attempts is not None:
        check_int(attempts, "attempts", minimum=1)
    _testing = _TestingMode(attempts) if enabled else None


def restore_testing(mode: _TestingMode | None) -> None:
    """Put back a switch saved with :func:`testing_mode`."""
    global _testing
    _testing = mode


def testing_mode() -> _TestingMode | None:
    """The current testing switch, or ``None`` when retries sleep normally."""
    return _testing


# -- details, hooks, statistics ---------------------------------------------------------


logger = logging.getLogger("brace.retry")


@dataclass(frozen=True, slots=True)
class RetryDetails(Event):
    """What a :class:`RetryHook` learns before each sleep.

    ``attempt``: the number of the attempt that just failed (1 for the first).
    ``exception``: what it raised, or ``None`` when ``result`` was rejected instead.
    ``result``: the rejected return value (``None`` when an exception was raised).
    ``sleep``: seconds the retry is about to wait before attempt ``attempt + 1``.
    ``elapsed``: seconds since the first attempt started.
    ``name``: the retry's name (``""`` when it was not given one).
    ``time``: the retry's clock reading (``nan`` when it had no reason to read it: no
    ``deadline``, ``on_retry`` nor ``on_event``). A `brace.events.Event` of kind
    ``"retry"``.
    """

    kind: ClassVar[str] = "retry"

    name: str  # pyright: ignore[reportIncompatibleMethodOverride]
    attempt: int
    exception: Exception | None
    result: object
    sleep: float
    elapsed: float
    time: float = float("nan")  # pyright: ignore[reportIncompatibleMethodOverride]


class RetryHook(Protocol):
    """Called synchronously before each sleep, with the :class:`RetryDetails`."""

    def __call__(self, details: RetryDetails, /) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryStatistics:
    """Counters of one :class:`Retry` since it was made.

    ``calls``: calls started. ``attempts``: attempts started (``calls`` + retries made).
    ``retries``: retries granted (a sleep was started for each).
    ``successes``: calls that returned a value the retry accepted.
    ``failures``: calls that ended without one: an exception reached the caller, or a
    rejected result was returned because retrying stopped.
    ``exhausted``: calls that stopped because every attempt was used.
    ``budget_exhausted``: calls that stopped because the retry budget refused a retry.
    ``deadline_exceeded``: calls that stopped because the next sleep would cross the
    deadline.
    """

    calls: int
    attempts: int
    retries: int
    successes: int
    failures: int
    exhausted: int
    budget_exhausted: int
    deadline_exceeded: int


@dataclass(frozen=True, slots=True)
class RetryBudgetStatistics:
    """``requests`` and ``retries`` in the current window, ``available`` retries left
    right now, and the totals since creation: ``total_requests``, ``total_retries``,
    ``refused`` (retries the budget would not grant)."""

    requests: int
    retries: int
    available: int
    total_requests: int
    total_retries: int
    refused: int


class RetryBudget:
    """Caps retries at ``ratio`` of the requests plus a floor, over a sliding window.

    A retry is granted while ``retries <= ratio * requests + min_per_second * window``
    stays true for the last ``window`` seconds (``requests`` are first attempts). Share
    one budget between the :class:`Retry` objects that call the same dependency.
    """

    __slots__ = ("__weakref__", "_clock", "_core")

    def __init__(
        self,
        ratio: float = 0.2,
        *,
        min_per_second: float = 10.0,
        window: float = 10.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._core = RetryBudgetCore(ratio, min_per_second, window)
        self._clock = check_clock(clock)

    @property
    def ratio(self) -> float:
        return self._core.ratio

    @property
    def min_per_second(self) -> float:
        return self._core.min_per_second

    @property
    def window(self) -> float:
        return self._core.window

    @property
    def core(self) -> RetryBudgetCore:
        """The pure state machine (what :class:`Retry` plans with, given its clock)."""
        return self._core

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def record_request(self) -> None:
        """Count one request (the first attempt of a call)."""
        self._core.record_request(self._clock())

    def try_retry(self) -> bool:
        """Grant (and count) one retry if the budget allows it now; never waits."""
        return self._core.try_retry(self._clock())

    def statistics(self) -> RetryBudgetStatistics:
        now = self._clock()
        requests, retries = self._core.counts(now)
        return RetryBudgetStatistics(
            requests=requests,
            retries=retries,
            available=self._core.available(now),
            total_requests=self._core.requested,
            total_retries=self._core.granted,
            refused=self._core.refused,
        )

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio!r}, min_per_second={self.min_per_second!r}, "
            f"window={self.window!r})"
        )


# -- Retry ------------------------------------------------------------------------------


class Retry:
    """Run an async call up to ``attempts`` times, sleeping a backoff between attempts.

    Use it as a decorator, as ``await retry.call(fn, *args, **kwargs)``, or as a loop::

        async for attempt in retry:
            with attempt:
                await fetch()

    ``retry_on`` picks the retryable exceptions: a type, a tuple of types, or a predicate
    ``(exception) -> bool``. Only ``Exception`` subclasses are ever retried: cancellation
    and other ``BaseException`` s pass straight through. An exception with a numeric
    ``retry_after`` (every :class:`brace.Rejected`) makes the retry wait at least that
    long. ``retry_if_result`` retries a call whose return value it calls true; when
    retrying stops, the last value is returned. ``deadline`` (seconds since the first
    attempt) stops retrying as soon as the next sleep would reach it; ``budget``
    (:class:`RetryBudget`) refuses retries beyond a share of the traffic. Whenever
    retrying stops, the last exception is raised as it was.
    """

    __slots__ = (
        "__weakref__",
        "_attempts",
        "_backoff",
        "_budget",
        "_budget_exhausted",
        "_calls",
        "_clock",
        "_deadline",
        "_deadline_exceeded",
        "_exhausted",
        "_failures",
        "_name",
        "_needs_start",
        "_on_event",
        "_on_retry",
        "_retried_attempts",
        "_retries",
        "_retry_if_result",
        "_retry_predicate",
        "_retry_types",
        "_rng",
        "_successes",
    )

    def __init__(
        self,
        attempts: int = 3,
        *,
        backoff: Backoff | Callable[[int], float] | None = None,
        retry_on: RetryOn = Exception,
        retry_if_result: Callable[[Any], bool] | None = None,
        deadline: float | None = None,
        budget: RetryBudget | None = None,
        on_retry: RetryHook | None = None,
        clock: Callable[[], float] | None = None,
        random: RandomSource | None = None,
        name: str = "",
        on_event: EventHook | Iterable[EventHook] | None = None,
    ) -> None:
        self._attempts = check_int(attempts, "attempts", minimum=1)
        self._backoff = _DEFAULT_BACKOFF if backoff is None else as_backoff(backoff, "backoff")
        self._retry_types, self._retry_predicate = _check_retry_on(retry_on)
        if retry_if_result is not None and not callable(retry_if_result):
            raise TypeError(
                f"retry_if_result must be a callable (result) -> bool or None, "
                f"got {type(retry_if_result).__name__}"
            )
        self._retry_if_result = retry_if_result
        if deadline is not None:
            deadline = check_positive(deadline, "deadline")
        self._deadline = deadline
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget or None, got {type(budget).__name__}")
        self._budget = budget
        if on_retry is not None and not callable(on_retry):
            raise TypeError(f"on_retry must be a callable or None, got {type(on_retry).__name__}")
        self._on_retry = on_retry
        self._on_event = event_hook(on_event)
        self._clock = check_clock(clock)
        check_random(random)
        self._rng: RandomSource = random if random is not None else _random.Random()
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self._name = name
        # The first attempt's start time is needed only to measure elapsed time.
        self._needs_start = (
            deadline is not None or on_retry is not None or self._on_event is not None
        )
        self._calls = 0
        self._retried_attempts = 0
        self._retries = 0
        self._successes = 0
        self._failures = 0
        self._exhausted = 0
        self._budget_exhausted = 0
        self._deadline_exceeded = 0

    # -- public forms --------------------------------------------------------------------

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, retrying it as configured; return its result."""
        self._calls += 1
        if self._budget is not None:
            self._budget.record_request()
        start = self._clock() if self._needs_start else 0.0
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            failure: Exception | None = exc
            result = cast(T, None)
        else:
            check = self._retry_if_result
            if check is None or not check(result):
                self._successes += 1
                return result
            failure = None
        return await self._retry(fn, args, kwargs, start, failure, result)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an ``async def`` so that every call goes through :meth:`call`."""
        _check_async_callable(fn, "fn")
        call = self.call

        @functools.wraps(fn)
        async def retrying(*args: P.args, **kwargs: P.kwargs) -> T:
            return await call(fn, *args, **kwargs)

        return retrying

    def __aiter__(self) -> AttemptIterator:
        """``async for attempt in retry: with attempt: ...``; each loop has its own state."""
        return AttemptIterator(self)

    def statistics(self) -> RetryStatistics:
        return RetryStatistics(
            calls=self._calls,
            attempts=self._calls + self._retried_attempts,
            retries=self._retries,
            successes=self._successes,
            failures=self._failures,
            exhausted=self._exhausted,
            budget_exhausted=self._budget_exhausted,
            deadline_exceeded=self._deadline_exceeded,
        )

    @property
    def attempts(self) -> int:
        return self._attempts

    @property
    def backoff(self) -> Backoff:
        return self._backoff

    @property
    def deadline(self) -> float | None:
        return self._deadline

    @property
    def budget(self) -> RetryBudget | None:
        return self._budget

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return (
            f"Retry(attempts={self._attempts!r}, backoff={self._backoff!r}, "
            f"deadline={self._deadline!r}, name={self._name!r})"
        )

    # -- the failure path ------------------------------------------------------------------

    async def _retry(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        start: float,
        failure: Exception | None,
        result: T,
    ) -> T:
        """Keep retrying after the first attempt failed (an exception or a bad result)."""
        check = self._retry_if_result
        number = 1
        previous = 0.0
        while True:
            plan = self._plan(number, start, previous, failure, result)
            if plan is None:
                self._failures += 1
                if failure is not None:
                    raise failure
                return result
            sleep, previous = plan
            await anyio.sleep(sleep)
            number += 1
            self._retried_attempts += 1
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                failure = exc
            else:
                if check is None or not check(result):
                    self._successes += 1
                    return result
                failure = None

    def _plan(
        self, number: int, start: float, previous: float, failure: Exception | None, result: object
    ) -> tuple[float, float] | None:
        """After attempt ``number`` failed: ``(sleep, backoff delay)`` before the next one,
        or ``None`` to stop. Counts the outcome and calls the hook."""
        if failure is not None and not self._retryable(failure):
            return None
        testing = _testing
        attempts = self._attempts
        if testing is not None and testing.attempts is not None and testing.attempts < attempts:
            attempts = testing.attempts
        elapsed = 0.0
        now = math.nan
        if self._needs_start and number < attempts:
            now = self._clock()
            elapsed = max(0.0, now - start)  # 0: the clock stepped back
        budget = self._budget
        plan = plan_retry(
            number,
            previous,
            attempts=attempts,
            backoff=self._backoff,
            random=self._rng,
            retry_after=None if failure is None else getattr(failure, "retry_after", None),
            elapsed=elapsed,
            deadline=self._deadline,
            budget=None if budget is None else budget.core,
            now=0.0 if budget is None else budget.clock(),
            sleeps=testing is None,
        )
        if isinstance(plan, RetryStop):
            if plan is RetryStop.EXHAUSTED:
                self._exhausted += 1
            elif plan is RetryStop.DEADLINE:
                self._deadline_exceeded += 1
            else:
                self._budget_exhausted += 1
            return None
        sleep, delay = plan
        self._retries += 1
        logger.debug(
            "retry %r: attempt %d failed (%r); retrying in %.3f s",
            self._name,
            number,
            failure if failure is not None else result,
            sleep,
        )
        if self._on_retry is not None or self._on_event is not None:
            details = RetryDetails(self._name, number, failure, result, sleep, elapsed, now)
            if self._on_retry is not None:
                self._on_retry(details)
            if self._on_event is not None:
                self._on_event(details)
        return sleep, delay

    def _retryable(self, failure: Exception) -> bool:
        types = self._retry_types
        if types is not None:
            return isinstance(failure, types)
        predicate = self._retry_predicate
        assert predicate is not None
        return bool(predicate(failure))


class Attempt:
    """One attempt of an ``async for attempt in retry`` loop; use it as ``with attempt:``.

    Leaving the block with a retryable exception swallows it when another attempt will
    follow (the loop then sleeps and goes on); otherwise the exception propagates.
    """

    __slots__ = ("_loop", "number")

    def __init__(self, loop: AttemptIterator, number: int) -> None:
        self._loop = loop
        #: 1 for the first attempt, 2 for the first retry, ...
        self.number = number

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        return self._loop._attempt_done(self.number, exc)

    def __repr__(self) -> str:
        return f"<Attempt number={self.number}>"


class AttemptIterator:
    """The state of one ``async for attempt in retry`` loop."""

    __slots__ = ("_number", "_previous", "_retry", "_sleep", "_start", "_state")

    # _state: "new" before the first attempt, "running" while an attempt runs,
    # "retrying" when the last attempt failed and another is planned, "done" at the end.

    def __init__(self, retry: Retry) -> None:
        self._retry = retry
        self._number = 0
        self._previous = 0.0
        self._sleep = 0.0
        self._start = 0.0
        self._state = "new"

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Attempt:
        retry = self._retry
        state = self._state
        if state == "new":
            retry._calls += 1
            if retry._budget is not None:
                retry._budget.record_request()
            self._start = retry._clock() if retry._needs_start else 0.0
        elif state == "retrying":
            await anyio.sleep(self._sleep)
            retry._retried_attempts += 1
        else:
            if state == "running":  # the body finished without a retryable failure
                retry._successes += 1
            self._state = "done"
            raise StopAsyncIteration
        self._state = "running"
        self._number += 1
        return Attempt(self, self._number)

    def _attempt_done(self, number: int, exc: BaseException | None) -> bool:
        if number != self._number or self._state != "running":
            raise RuntimeError("an Attempt may only be used once, inside its own iteration")
        if exc is None:
            return False
        retry = self._retry
        self._state = "done"
        if not isinstance(exc, Exception):  # cancellation, KeyboardInterrupt, ...
            return False
        plan = retry._plan(number, self._start, self._previous, exc, None)
        if plan is None:
            retry._failures += 1
            return False
        self._sleep, self._previous = plan
        self._state = "retrying"
        return True


# -- helpers ---------------------------------------------------------------------------


def _check_retry_on(
    retry_on: object,
) -> tuple[tuple[type[Exception], ...] | None, ExceptionPredicate | None]:
    types: tuple[object, ...]
    if isinstance(retry_on, type):
        types = (retry_on,)
    elif isinstance(retry_on, tuple):
        types = retry_on
    elif callable(retry_on):
        return None, cast(ExceptionPredicate, retry_on)
    else:
        raise TypeError(
            "retry_on must be an exception type, a tuple of them, or a predicate "
            f"(exception) -> bool, got {type(retry_on).__name__}"
        )
    for kind in types:
        if not isinstance(kind, type) or not issubclass(kind, BaseException):
            raise TypeError(f"retry_on must hold exception types, got {kind!r}")
        if not issubclass(kind, Exception):
            raise TypeError(
                f"retry_on may only name Exception subclasses: {kind.__name__} is a "
                "BaseException (cancellation, KeyboardInterrupt, ...) and is never retried"
            )
    return cast(tuple[type[Exception], ...], types), None


def _check_async_callable(fn: object, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be an async callable, got {type(fn).__name__}")
    if not (
        inspect.iscoroutinefunction(fn)
        or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
    ):
        raise TypeError(f"{name} must be an async function (async def), got {fn!r}")
