"""Hedge: when a call has not answered after a delay, start another attempt and take the
first good answer ("The Tail at Scale"; Polly v8's hedging strategy).

Theory of operation
-------------------
One call runs in its own anyio task group. The primary attempt starts at once; whenever
``delay`` passes without an answer, or every attempt running has failed, one more attempt
starts, up to ``max_extra`` of them, each only if the budget grants it (a
:class:`brace.RetryBudget`: extra attempts stay below ``ratio`` x calls plus a small
floor, over a sliding window, so hedging cannot multiply the load on a slow dependency).
The first attempt to return wins: the task group's scope is cancelled, so every other
attempt is cancelled *and awaited* before ``call`` returns; nothing outlives the call.
If every attempt fails, the primary's exception is raised. A cancellation from outside
cancels every attempt and reaches the caller unchanged.

The delay may be a number or a zero-argument callable asked before each extra attempt;
:class:`LatencyQuantile` is such a callable, giving a quantile (e.g. the p95) of the
durations of recent attempts, which the hedge records when the delay has a ``record``
method.

Each extra attempt is announced before it starts: to the ``on_hedge`` hook (sync, with a
:class:`HedgeDetails`; what it raises cancels the call's attempts and reaches the caller,
as with ``Retry``'s ``on_retry`` and ``Fallback``'s ``on_fallback``) and at DEBUG on the
``brace.hedge`` logger.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

import anyio
from typing_extensions import ParamSpec

from ._clock import check_clock
from ._core._validate import check_finite, check_int
from ._events import Event, EventHook, event_hook
from ._retry import RetryBudget

__all__ = (
    "Hedge",
    "HedgeDetails",
    "HedgeHook",
    "HedgeStatistics",
    "LatencyQuantile",
    "quantile",
)

logger = logging.getLogger("brace.hedge")

P = ParamSpec("P")
T = TypeVar("T")


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, nearest rank (a value that was seen)."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class LatencyQuantile:
    """A hedge delay that follows a quantile of the durations of recent attempts.

    Keeps the last ``size`` durations given to :meth:`record` (a ring: O(size) memory);
    calling it returns their ``q`` quantile (nearest rank), recomputed at most once every
    ``refresh`` records, or ``initial`` until ``minimum`` durations were recorded. Never
    less than ``floor`` seconds.
    """

    __slots__ = (
        "__weakref__",
        "_count",
        "_current",
        "_floor",
        "_initial",
        "_minimum",
        "_next",
        "_q",
        "_refresh",
        "_ring",
        "_since",
        "_size",
    )

    def __init__(
        self,
        q: float = 0.95,
        *,
        initial: float,
        size: int = 512,
        minimum: int = 20,
        refresh: int = 16,
        floor: float = 0.0,
    ) -> None:
        q = check_finite(q, "q", "from 0.0 to 1.0 (exclusive of 0)")
        if not 0.0 < q <= 1.0:
            raise ValueError(f"q must be a quantile > 0.0 and <= 1.0, got {q!r}")
        self._q = q
        self._initial = check_finite(initial, "initial", ">= 0")
        if self._initial < 0:
            raise ValueError(f"initial must be a number of seconds >= 0, got {initial!r}")
        self._size = check_int(size, "size", minimum=1)
        self._minimum = check_int(minimum, "minimum", minimum=1)
        self._refresh = check_int(refresh, "refresh", minimum=1)
        self._floor = check_finite(floor, "floor", ">= 0")
        if self._floor < 0:
            raise ValueError(f"floor must be a number of seconds >= 0, got {floor!r}")
        self._ring: list[float] = []
        self._next = 0
        self._count = 0
        self._since = 0
        self._current = max(self._initial, self._floor)

    def record(self, seconds: float) -> None:
        """Add the duration of one finished attempt."""
        ring = self._ring
        if len(ring) < self._size:
            ring.append(seconds)
        else:
            ring[self._next] = seconds
            self._next = (self._next + 1) % self._size
        self._count += 1
        self._since += 1
        if self._count >= self._minimum and self._since >= self._refresh:
            self._since = 0
            self._current = max(quantile(sorted(ring), self._q), self._floor)

    def __call__(self) -> float:
        """The delay now, in seconds."""
        return self._current

    @property
    def recorded(self) -> int:
        """How many durations were recorded since creation."""
        return self._count

    def __repr__(self) -> str:
        return f"LatencyQuantile({self._q!r}, initial={self._initial!r}, size={self._size!r})"


@dataclass(frozen=True, slots=True)
class HedgeDetails(Event):
    """What the ``on_hedge`` hook learns as an extra attempt starts.

    ``attempt``: the number of the attempt starting (the primary is 0, the first extra
    attempt 1). ``delay``: seconds waited since the previous attempt started (less than
    the hedge's delay when every running attempt had failed). ``elapsed``: seconds since
    the call started. Both are on the event loop's clock. ``name``: the hedge's name.
    """

    kind: ClassVar[str] = "hedge"

    name: str  # pyright: ignore[reportIncompatibleMethodOverride]
    attempt: int
    delay: float
    elapsed: float
    time: float = math.nan  # pyright: ignore[reportIncompatibleMethodOverride]
    """The event loop's clock as the attempt starts (a `brace.events.Event`, kind
    ``"hedge"``)."""


class HedgeHook(Protocol):
    """Called synchronously with the :class:`HedgeDetails` before each extra attempt."""

    def __call__(self, details: HedgeDetails, /) -> None: ...


@dataclass(frozen=True, slots=True)
class HedgeStatistics:
    """Counters of one :class:`Hedge` since it was made.

    ``calls``: calls started. ``attempts``: attempts started (primaries and extras).
    ``hedges``: extra attempts started. ``hedge_wins``: calls answered by an extra attempt.
    ``refused``: extra attempts the budget would not grant. ``failures``: calls where every
    attempt failed.
    """

    calls: int
    attempts: int
    hedges: int
    hedge_wins: int
    refused: int
    failures: int


class _Race(Generic[T]):
    """The shared state of one hedged call."""

    __slots__ = ("errors", "finished", "has_winner", "running", "wake", "winner", "winner_index")

    def __init__(self) -> None:
        self.has_winner = False
        self.winner: T | None = None
        self.winner_index = -1
        self.errors: dict[int, Exception] = {}
        self.running = 0
        self.finished = 0
        self.wake = anyio.Event()


class Hedge:
    """Start extra attempts of a slow call and return the first successful answer.

    Use it as a decorator or as ``await hedge.call(fn, *args, **kwargs)`` (``run`` is the
    same); it is a policy that :func:`brace.compose` accepts. It is not an async context
    manager: one body cannot be run twice at once. Only idempotent calls should be hedged.

    Args:
        delay: seconds to wait for an answer before each extra attempt (``0``: start them
            all at once), or a zero-argument callable returning it, asked before each
            extra attempt (e.g. a :class:`LatencyQuantile`; a delay with a ``record``
            method is given the duration of every attempt that finishes).
        max_extra: the most extra attempts per call (an int >= 1).
        alternatives: async callables taking the same arguments, used by the extra
            attempts in turn (the first extra uses ``alternatives[0]``, ...; when there
            are fewer than ``max_extra``, the last is used again). Default: ``fn`` itself.
            Inside :func:`brace.compose`, alternatives need the Hedge innermost, where it
            is handed ``fn`` itself.
        budget: a :class:`brace.RetryBudget` granting the extra attempts (default: a
            ``RetryBudget(ratio=0.1, min_per_second=1.0, window=10.0)`` of its own, on
            ``clock``). Share one between the hedges that call the same dependency.
        clock: the clock of the default budget (default: ``time.monotonic``) and of the
            durations recorded into the delay (default: the event loop's,
            ``anyio.current_time``, which virtual-time tests drive).
        on_hedge: called synchronously with the :class:`HedgeDetails` before each extra
            attempt starts; what it raises cancels the call's attempts (the extra one is
            not started) and reaches the caller.
        name: a name for hooks, logs and repr.
    """

    __slots__ = (
        "__weakref__",
        "_alternatives",
        "_attempts",
        "_budget",
        "_calls",
        "_clock",
        "_delay",
        "_failures",
        "_hedge_wins",
        "_hedges",
        "_max_extra",
        "_name",
        "_on_event",
        "_on_hedge",
        "_record",
        "_refused",
    )

    def __init__(
        self,
        delay: float | Callable[[], float],
        *,
        max_extra: int = 1,
        alternatives: Sequence[Callable[..., Awaitable[Any]]] = (),
        budget: RetryBudget | None = None,
        clock: Callable[[], float] | None = None,
        on_hedge: HedgeHook | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
        name: str = "",
    ) -> None:
        if callable(delay):
            self._delay: float | Callable[[], float] = delay
        else:
            seconds = check_finite(delay, "delay", ">= 0")
            if seconds < 0:
                raise ValueError(f"delay must be a number of seconds >= 0, got {delay!r}")
            self._delay = seconds
        record = getattr(delay, "record", None)
        self._record = cast("Callable[[float], None]", record) if callable(record) else None
        self._max_extra = check_int(max_extra, "max_extra", minimum=1)
        given: object = alternatives
        if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
            raise TypeError(
                f"alternatives must be a sequence of async callables, got {alternatives!r}"
            )
        for index, alternative in enumerate(alternatives):
            if not callable(alternative):
                raise TypeError(
                    f"alternatives[{index}] must be an async callable, got {alternative!r}"
                )
        self._alternatives = tuple(alternatives)
        if clock is not None:
            clock = check_clock(clock)  # None: anyio.current_time, below
        if budget is None:
            budget = RetryBudget(ratio=0.1, min_per_second=1.0, window=10.0, clock=clock)
        elif not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a brace.RetryBudget or None, got {budget!r}")
        self._budget = budget
        self._clock = clock if clock is not None else anyio.current_time
        if on_hedge is not None and not callable(on_hedge):
            raise TypeError(f"on_hedge must be a callable or None, got {on_hedge!r}")
        self._on_hedge = on_hedge
        self._on_event = event_hook(on_event)
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self._name = name
        self._calls = 0
        self._attempts = 0
        self._hedges = 0
        self._hedge_wins = 0
        self._refused = 0
        self._failures = 0

    @property
    def max_extra(self) -> int:
        return self._max_extra

    @property
    def budget(self) -> RetryBudget:
        return self._budget

    @property
    def name(self) -> str:
        return self._name

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, hedged; return the first successful answer."""
        self._calls += 1
        self._budget.record_request()
        race: _Race[T] = _Race()
        alternatives = self._alternatives
        delay = self._delay
        budget = self._budget
        launched = 1
        can_hedge = True
        started_at = call_started = anyio.current_time()
        next_at: float | None = None
        hook_error: Exception | None = None
        async with anyio.create_task_group() as group:
            self._attempts += 1
            race.running = 1
            group.start_soon(self._attempt, race, group.cancel_scope, 0, fn, args, kwargs)
            while not race.has_winner:
                more = can_hedge and launched <= self._max_extra
                if race.running == 0 and not more:
                    break  # every attempt failed and no more may start
                race.wake = wake = anyio.Event()
                if race.running and more:
                    if next_at is None:  # the delay counts from the latest start
                        next_at = started_at + (delay() if callable(delay) else delay)
                    with anyio.CancelScope(deadline=next_at):
                        await wake.wait()
                    if wake.is_set():
                        continue  # an attempt finished: look again
                elif race.running:
                    await wake.wait()
                    continue
                # the delay passed, or every attempt so far failed: one more attempt
                if not budget.try_retry():
                    self._refused += 1
                    can_hedge = False
                    continue
                now = anyio.current_time()
                if (
                    self._on_hedge is not None
                    or self._on_event is not None
                    or logger.isEnabledFor(logging.DEBUG)
                ):
                    hook_error = self._announce(launched, now - started_at, now - call_started, now)
                    if hook_error is not None:
                        group.cancel_scope.cancel()
                        break
                target = (
                    fn if not alternatives else alternatives[min(launched, len(alternatives)) - 1]
                )
                self._attempts += 1
                self._hedges += 1
                race.running += 1
                group.start_soon(
                    self._attempt, race, group.cancel_scope, launched, target, args, kwargs
                )
                launched += 1
                started_at = now
                next_at = None
        if hook_error is not None:
            raise hook_error
        if race.has_winner:
            if race.winner_index:
                self._hedge_wins += 1
            return cast(T, race.winner)
        self._failures += 1
        errors = race.errors
        raise errors[0] if 0 in errors else errors[max(errors)]

    def _announce(self, attempt: int, delay: float, elapsed: float, now: float) -> Exception | None:
        """Log and hand the details of the extra attempt about to start to the hook;
        return what the hook raised (it goes to the caller once the attempts are over)."""
        logger.debug(
            "hedge %r: starting attempt %d after %.3f s (%.3f s into the call)",
            self._name,
            attempt,
            delay,
            elapsed,
        )
        details = HedgeDetails(self._name, attempt, delay, elapsed, now)
        if self._on_event is not None:
            self._on_event(details)
        hook = self._on_hedge
        if hook is not None:
            try:
                hook(details)
            except Exception as exc:
                return exc
        return None

    async def _attempt(
        self,
        race: _Race[T],
        scope: anyio.CancelScope,
        index: int,
        target: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        clock = self._clock
        record = self._record
        start = clock() if record is not None else 0.0
        try:
            value = await target(*args, **kwargs)
        except Exception as exc:
            race.errors[index] = exc
        else:
            if not race.has_winner:
                race.has_winner = True
                race.winner = value
                race.winner_index = index
                if race.running > 1:  # cancel the other attempts (the host wakes below)
                    scope.cancel()
        finally:
            race.running -= 1
            race.wake.set()
        if record is not None:
            record(clock() - start)

    run = call

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an ``async def`` so that every call goes through :meth:`call`."""
        if not callable(fn):
            raise TypeError(f"fn must be an async callable, got {type(fn).__name__}")
        call = self.call

        @functools.wraps(fn)
        async def hedged(*args: P.args, **kwargs: P.kwargs) -> T:
            return await call(fn, *args, **kwargs)

        return hedged

    def statistics(self) -> HedgeStatistics:
        return HedgeStatistics(
            calls=self._calls,
            attempts=self._attempts,
            hedges=self._hedges,
            hedge_wins=self._hedge_wins,
            refused=self._refused,
            failures=self._failures,
        )

    def __repr__(self) -> str:
        return f"Hedge({self._delay!r}, max_extra={self._max_extra!r}, name={self._name!r})"
