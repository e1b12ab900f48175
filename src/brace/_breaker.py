"""CircuitBreaker: the async shell around :class:`brace._core.breaker.CircuitBreakerCore`.

The shell reads the clock, classifies outcomes (exception types, predicates,
cancellation) and raises :class:`~brace.CircuitOpen`; every decision is the core's.
Nothing here ever waits: a breaker admits or refuses at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import logging
import random as _random
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar

from ._clock import check_clock
from ._core._inline import inline_steps
from ._core._validate import check_random
from ._core.backoff import RandomSource
from ._core.breaker import (
    CircuitBreakerCore,
    CircuitBreakerStatistics,
    CircuitEvent,  # noqa: F401 (read by the inlined succeed_closed)
    CircuitState,
    CircuitStateChange,
    succeed_closed,
    succeed_closed_bare,
)
from ._done import DONE
from ._events import EventHook, Refused, event_hook, hooks_of
from ._exceptions import CircuitOpen
from ._metrics import CALL_BUCKETS, Histogram

__all__ = ("CircuitBreaker", "CircuitTicket", "StateChangeHook")

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("brace.breaker")

_CLOSED = CircuitState.CLOSED


# ``__aenter__`` and ``__aexit__`` are plain methods returning the finished awaitable
# brace._done.DONE: the closed path of ``async with breaker`` is the hot path of every call.


def _is_cancellation(error: BaseException) -> bool:
    """True for asyncio's and trio's cancellation (what anyio.get_cancelled_exc_class()
    gives), without needing to know which library is running."""
    if isinstance(error, asyncio.CancelledError):
        return True
    trio = sys.modules.get("trio")
    return trio is not None and isinstance(error, trio.Cancelled)


class StateChangeHook(Protocol):
    """Called with the details of each state change; exceptions it raises are logged."""

    def __call__(self, change: CircuitStateChange, /) -> object: ...


def _exception_types(value: object, name: str) -> tuple[type[BaseException], ...]:
    types = (value,) if isinstance(value, type) else value
    if not isinstance(types, tuple) or not all(
        isinstance(item, type) and issubclass(item, BaseException) for item in types
    ):
        raise TypeError(f"{name} must be an exception type or a tuple of them, got {value!r}")
    return types


def _optional_callable(value: object, name: str) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {value!r}")
    return value


class CircuitBreaker:
    """Stop calling a service that keeps failing; let a few probes find out when it is back.

    Closed, calls run and their outcomes are counted; when a rule trips (``failure_threshold``
    failures in a row, a ``failure_rate`` or slow-call rate over the window), the circuit
    opens and every call fails at once with :class:`~brace.CircuitOpen` for
    ``recovery_time`` seconds. Then it turns half-open: ``half_open_max_calls`` probes may
    run at a time, others are refused; ``success_threshold`` good probes close it, a bad
    one opens it again (for longer, with ``recovery_backoff``).

    Use it as ``async with breaker:``, as a decorator on an ``async def``, through
    ``await breaker.call(fn, *args)`` (which can also judge results with
    ``failure_result``), or, from synchronous adapter code, ``breaker.try_enter()``.

    Args:
        failure_threshold: Failures in a row that open the circuit; ``None`` disables the rule.
        recovery_time: Seconds the circuit stays open after a trip, before probes.
        half_open_max_calls: Probes that may run at the same time while half-open.
        failure_rate: Open when failures / calls over the window reaches this (0-1];
            ``None`` disables the rule.
        minimum_calls: Calls the window must hold before any rate rule may trip.
        window: Length in seconds of the (bucketed) time window of the rate rules.
        slow_call_duration: A call taking this many seconds or more is slow; ``None``
            disables slow-call accounting. Slow probes count as failed probes.
        exceptions: Exception types that count as failures.
        exclude: Exception types (subclasses of ``exceptions``) that do not; a call
            ending with one counts as a success: the service did answer.
        ignore: Exception types that count as neither failure nor success (as a
            cancellation does): the call is forgotten, a probe's permit is given back
            and the state stays as it is. Checked before ``exceptions`` and ``exclude``.
        window_calls: Use a window of the last ``window_calls`` calls instead of time
            (at most a million: the ring is allocated at once).
        window_buckets: Buckets in the time window (memory is O(buckets); at most a
            million).
        slow_call_rate: Open when slow calls / calls over the window reaches this.
        success_threshold: Successful probes needed to close from half-open.
        recovery_backoff: Growth factor of the open period on trips in a row (>= 1).
        max_recovery_time: Cap of the grown open period.
        recovery_jitter: Fraction (0 to < 1) by which each open period is randomly shortened.
        max_half_open_wait: Seconds a half-open period may last without closing before the
            circuit opens again (a trip, like a failed probe); ``None``: no bound.
        is_failure: Predicate on an exception matching ``exceptions`` and not ``exclude``:
            ``False`` makes it a success.
        failure_result: Predicate on a result returned through :meth:`call` or the
            decorator: ``True`` makes it a failure (say, an HTTP 503 response).
        on_state_change: A hook, or hooks, called with a :class:`CircuitStateChange`.
        on_event: A hook, or hooks, called with every event: each
            :class:`CircuitStateChange` and a `brace.events.Refused` (reason
            ``"circuit_open"``) for each refused call. What a hook raises is logged on
            ``brace.breaker`` and swallowed. State changes are logged there too (WARNING
            when the circuit opens, INFO otherwise), refusals at DEBUG.
        clock: Zero-argument callable returning monotonic seconds.
        random: The source of the jitter: a ``random.Random`` (anything with ``random()``);
            default the ``random`` module's.
        name: Name carried by statistics, state changes and :class:`~brace.CircuitOpen`.
        record_durations: Time every call into the ``call_duration`` histogram the
            metric exporters read (it takes the breaker off its untimed fast path; a
            slow-call rule times every call anyway, and then they are recorded too).

    Cancellation is neither a failure nor a success, and a cancelled probe gives its permit
    back. :class:`~brace.CircuitOpen` raised inside the block (a nested breaker refusing)
    is ignored the same way: the service was not called. Every exception propagates
    unchanged.

    While closed (without a slow-call rule) the instance's class is a private subclass
    whose ``__aenter__`` has nothing to decide; ``isinstance`` works as usual.
    """

    __slots__ = (
        "__weakref__",
        "_arguments",
        "_clock",
        "_core",
        "_durations",
        "_exceptions",
        "_exclude",
        "_failure_result",
        "_hooks",
        "_ignore",
        "_is_failure",
        "_needs_duration",
        "_needs_end_time",
        "_no_outcome",
        "_on_event",
        "_tickets",
        "_tickets_out",
        "_transitions",
    )

    def __init__(
        self,
        failure_threshold: int | None = 15,
        recovery_time: float = 30.0,
        *,
        half_open_max_calls: int = 1,
        failure_rate: float | None = None,
        minimum_calls: int = 10,
        window: float = 60.0,
        slow_call_duration: float | None = None,
        exceptions: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        exclude: type[BaseException] | tuple[type[BaseException], ...] = (),
        window_calls: int | None = None,
        window_buckets: int = 10,
        slow_call_rate: float = 1.0,
        success_threshold: int = 1,
        recovery_backoff: float = 1.0,
        max_recovery_time: float | None = None,
        recovery_jitter: float = 0.0,
        max_half_open_wait: float | None = None,
        ignore: type[BaseException] | tuple[type[BaseException], ...] = (),
        is_failure: Callable[[BaseException], bool] | None = None,
        failure_result: Callable[[Any], bool] | None = None,
        on_state_change: StateChangeHook | Iterable[StateChangeHook] | None = None,
        clock: Callable[[], float] | None = None,
        random: RandomSource | None = None,
        name: str | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
        record_durations: bool = False,
    ) -> None:
        self._exceptions = _exception_types(exceptions, "exceptions")
        self._exclude = _exception_types(exclude, "exclude")
        self._ignore = _exception_types(ignore, "ignore")
        # A nested breaker's refusal: the service was not called.
        self._no_outcome: tuple[type[BaseException], ...] = (CircuitOpen, *self._ignore)
        self._is_failure = _optional_callable(is_failure, "is_failure")
        self._failure_result = _optional_callable(failure_result, "failure_result")
        self._clock: Callable[[], float] = check_clock(clock)
        if on_state_change is None:
            hooks: tuple[StateChangeHook, ...] = ()
        elif callable(on_state_change):
            hooks = (on_state_change,)
        else:
            hooks = tuple(on_state_change)
            for hook in hooks:
                _optional_callable(hook, "on_state_change")
        self._hooks = hooks
        self._on_event = event_hook(on_event)
        self._transitions: dict[tuple[str, str], int] = {}  # (old, new) state -> count
        # What replica() passes to a new breaker: every parameter of __init__ (a test
        # compares these keys with the signature), the types and hooks as normalized.
        self._arguments: dict[str, Any] = {
            "failure_threshold": failure_threshold,
            "recovery_time": recovery_time,
            "half_open_max_calls": half_open_max_calls,
            "failure_rate": failure_rate,
            "minimum_calls": minimum_calls,
            "window": window,
            "slow_call_duration": slow_call_duration,
            "exceptions": self._exceptions,
            "exclude": self._exclude,
            "window_calls": window_calls,
            "window_buckets": window_buckets,
            "slow_call_rate": slow_call_rate,
            "success_threshold": success_threshold,
            "recovery_backoff": recovery_backoff,
            "max_recovery_time": max_recovery_time,
            "recovery_jitter": recovery_jitter,
            "max_half_open_wait": max_half_open_wait,
            "ignore": self._ignore,
            "is_failure": is_failure,
            "failure_result": failure_result,
            "on_state_change": hooks,
            "clock": clock,
            "random": random,
            "name": name,
            "on_event": hooks_of(self._on_event),
            "record_durations": record_durations,
        }
        self._core = CircuitBreakerCore(
            failure_threshold=failure_threshold,
            recovery_time=recovery_time,
            half_open_max_calls=half_open_max_calls,
            failure_rate=failure_rate,
            minimum_calls=minimum_calls,
            window=window,
            window_calls=window_calls,
            window_buckets=window_buckets,
            slow_call_duration=slow_call_duration,
            slow_call_rate=slow_call_rate,
            success_threshold=success_threshold,
            recovery_backoff=recovery_backoff,
            max_recovery_time=max_recovery_time,
            recovery_jitter=recovery_jitter,
            random=_random.random if random is None else _random_source(random).random,
            max_half_open_wait=max_half_open_wait,
            name=name,
            listener=self._changed,
        )
        if not isinstance(record_durations, bool):
            raise TypeError(f"record_durations must be a bool, got {record_durations!r}")
        self._needs_duration = self._core.needs_duration or record_durations
        self._needs_end_time = self._core.needs_end_time or record_durations
        # every call's duration when every call is timed (see brace._metrics), else None
        self._durations = Histogram(CALL_BUCKETS) if self._needs_duration else None
        self._settle()
        # The tickets of the ``async with`` blocks of the running task, innermost first:
        # (ticket, start, previous entry). A block admitted while closed pushes none when
        # no slow-call rule needs its start time: that is the fast path.
        self._tickets: contextvars.ContextVar[tuple[int, float, Any] | None] = (
            contextvars.ContextVar(f"brace.CircuitBreaker.tickets.{name}", default=None)
        )
        #: how many tickets all tasks hold: none, and a closed exit need not look
        self._tickets_out = 0

    # -- observation ---------------------------------------------------------------------

    @property
    def clock(self) -> Callable[[], float]:
        """The clock the breaker reads (what its replicas share)."""
        return self._clock

    @property
    def failure_threshold(self) -> int | None:
        """Failures in a row that open the circuit (None: only the failure rate does)."""
        return self._core.failure_threshold

    @property
    def recovery_time(self) -> float:
        """Seconds the circuit stays open before a probe may test it."""
        return self._core.recovery_time

    @property
    def name(self) -> str | None:
        return self._core.name

    @property
    def state(self) -> CircuitState:
        """The state now (an open circuit whose time is up reads as half-open)."""
        return self._core.poll(self._clock())

    def statistics(self) -> CircuitBreakerStatistics:
        """A snapshot of the counters, the window and the state."""
        return self._core.statistics(self._clock())

    def replica(self, *, name: str | None = None) -> CircuitBreaker:
        """A new, independent breaker with this one's configuration and a fresh state.

        Every constructor argument is carried over as given (rules, thresholds, windows,
        ``exceptions``/``exclude``, predicates, hooks, ``clock``, ``random``, recovery
        backoff...); the replica starts closed with every counter at zero, and nothing
        one of them records reaches the other. ``name`` names the replica (default: this
        breaker's name). A subclass's replica is made by calling its class with the same
        keyword arguments.
        """
        arguments = dict(self._arguments)
        if name is not None:
            arguments["name"] = name
        cls = CircuitBreaker if type(self) in _CLASSES else type(self)
        return cls(**arguments)

    # -- manual control ------------------------------------------------------------------

    def force_open(self) -> None:
        """Open until :meth:`force_close`, :meth:`reset` or :meth:`open_for`."""
        self._core.force_open(self._clock())

    def open_for(self, seconds: float) -> None:
        """Open for exactly ``seconds`` (a server's ``Retry-After``), then half-open."""
        self._core.open_for(seconds, self._clock())

    def force_close(self) -> None:
        """Close now, forgetting the window and earlier trips."""
        self._core.force_close(self._clock())

    def reset(self) -> None:
        """Back to a new breaker's state: closed, every counter at zero."""
        self._core.reset(self._clock())

    # -- admission and outcomes ----------------------------------------------------------

    def _admit(self) -> tuple[int, float]:
        now = self._clock()
        ticket = self._core.admit(now)
        if ticket is None:
            raise self._rejection(now)
        return ticket, now

    def _rejection(self, now: float) -> CircuitOpen:
        core = self._core
        retry_after = core.retry_after(now)
        state = core.state
        name = core.name
        what = "circuit breaker" if name is None else f"circuit breaker {name!r}"
        if state is CircuitState.HALF_OPEN:
            message = f"{what} is half-open and every probe is taken"
        elif retry_after is None:
            message = f"{what} is forced open"
        else:
            message = f"{what} is open; retry after {retry_after:.2f} s"
        logger.debug("%s", message)
        if self._on_event is not None:
            self._on_event(Refused(name, now, "circuit_open", "circuit_breaker", retry_after))
        return CircuitOpen(message, retry_after=retry_after, name=name, state=state)

    def _succeeded(self, ticket: int, start: float) -> None:
        if ticket or self._needs_end_time:
            now = self._clock()
            self._core.success(ticket, now, now - start)
            if self._durations is not None:
                self._durations.observe(now - start)
        else:
            self._core.success(0, 0.0)

    def _failed(self, ticket: int, start: float) -> None:
        now = self._clock()
        self._core.failure(ticket, now, now - start)
        if self._durations is not None:
            self._durations.observe(now - start)

    def _ended_with(self, ticket: int, start: float, error: BaseException) -> None:
        """Record a call that raised ``error``: failure, success or no outcome at all."""
        if isinstance(error, self._no_outcome) or _is_cancellation(error):
            self._core.release(ticket)
        elif isinstance(error, self._exceptions) and not isinstance(error, self._exclude):
            failed = True
            if self._is_failure is not None:
                try:
                    failed = bool(self._is_failure(error))
                except Exception:
                    logger.exception("is_failure raised; counting the call as a failure")
            if failed:
                self._failed(ticket, start)
            else:
                self._succeeded(ticket, start)
        elif isinstance(error, Exception):
            self._succeeded(ticket, start)
        else:  # KeyboardInterrupt, SystemExit, GeneratorExit: nothing about the service
            self._core.release(ticket)

    def _returned(self, ticket: int, start: float, result: object) -> None:
        predicate = self._failure_result
        if predicate is not None:
            try:
                failed = bool(predicate(result))
            except Exception:
                logger.exception("failure_result raised; counting the call as a failure")
                failed = True
            if failed:
                self._failed(ticket, start)
                return
        self._succeeded(ticket, start)

    def _changed(self, change: CircuitStateChange) -> None:
        key = (change.old.value, change.new.value)
        self._transitions[key] = self._transitions.get(key, 0) + 1
        self._settle()
        logger.log(
            logging.WARNING if change.new is CircuitState.OPEN else logging.INFO,
            "circuit breaker %r: %s -> %s (%s)",
            change.name,
            change.old,
            change.new,
            change.reason,
        )
        for hook in self._hooks:
            _call_hook(hook, change)
        if self._on_event is not None:
            self._on_event(change)

    def _settle(self) -> None:
        """Take the class that fits the state (see :class:`_ClosedCircuitBreaker`)."""
        if type(self) in _CLASSES:  # a user's subclass keeps its class and the plain path
            if self._core.state is not _CLOSED or self._needs_duration:
                cls: type[CircuitBreaker] = CircuitBreaker
            elif self._needs_end_time or self._core.window is not None:
                cls = _ClosedWindowCircuitBreaker
            else:
                cls = _ClosedCircuitBreaker
            self.__class__ = cls  # pyright: ignore[reportAttributeAccessIssue]

    # -- the three ways to guard a call --------------------------------------------------

    def __aenter__(self) -> Awaitable[None]:
        core = self._core
        if core.state is _CLOSED and not self._needs_duration:
            return DONE  # (a subclass's path; the breaker's own class is faster still)
        now = self._clock()
        ticket = core.admit(now)
        if ticket is None:
            raise self._rejection(now)
        tickets = self._tickets
        tickets.set((ticket, now, tickets.get()))
        self._tickets_out += 1
        return DONE

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Awaitable[None]:
        tickets = self._tickets
        entry = tickets.get()
        if entry is None:  # admitted while closed, on the fast path: no slow-call rule
            if exc is None:
                self._core.closed_success(self._clock() if self._needs_end_time else 0.0)
                return DONE
            ticket, start = 0, 0.0
        else:
            ticket, start, previous = entry
            tickets.set(previous)
            self._tickets_out -= 1
            if exc is None:
                now = self._clock()
                self._core.success(ticket, now, now - start)
                if self._durations is not None:
                    self._durations.observe(now - start)
                return DONE
        self._ended_with(ticket, start, exc)
        return DONE

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await fn(*args, **kwargs)`` through the breaker; return its result."""
        if self._core.state is _CLOSED and not self._needs_duration:
            ticket, start = 0, 0.0
        else:
            ticket, start = self._admit()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            self._ended_with(ticket, start, error)
            raise
        self._returned(ticket, start, result)
        return result

    def __call__(self, fn: Callable[P, Awaitable[T]], /) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate an ``async def`` so that every call goes through the breaker."""
        if not callable(fn):
            raise TypeError(f"CircuitBreaker decorates an async function, got {fn!r}")
        # call()'s body, inlined: one coroutine less per call.
        core = self._core
        needs_duration = self._needs_duration

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            if core.state is _CLOSED and not needs_duration:
                ticket, start = 0, 0.0
            else:
                ticket, start = self._admit()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as error:
                self._ended_with(ticket, start, error)
                raise
            self._returned(ticket, start, result)
            return result

        return guarded

    def try_enter(self) -> CircuitTicket:
        """Admit one call now or raise :class:`~brace.CircuitOpen`; report through the ticket.

        For adapters that see the outcome somewhere else than in a ``with`` block (an
        HTTP middleware reading the response status, say).
        """
        if self._core.state is _CLOSED and not self._needs_duration:
            return CircuitTicket(self, 0, 0.0)
        ticket, start = self._admit()
        return CircuitTicket(self, ticket, start)

    def __repr__(self) -> str:
        core = self._core
        return f"<CircuitBreaker name={core.name!r} state={core.state.value}>"


class _ClosedCircuitBreaker(CircuitBreaker):
    """A closed breaker without a slow-call rule: the class of the hot path.

    Entering such a breaker needs no decision and no per-call state (the ticket is 0 and
    no start time is needed), so ``__aenter__`` is a C-level callable returning the
    finished awaitable: no Python frame at all. The breaker moves between this class and
    :class:`CircuitBreaker` on every state change (``_settle``), the state pattern.
    """

    __slots__ = ()

    __aenter__ = itertools.repeat(DONE).__next__  # pyright: ignore[reportAssignmentType]

    @inline_steps
    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Awaitable[None]:
        # CircuitBreaker.__aexit__'s first case with the core's step inlined: a call
        # admitted here that ended well, while no task holds a ticket (so this one has
        # none to take back: the general exit reads the task's own)
        if exc is None and not self._tickets_out:
            core = self._core
            moved = succeed_closed_bare(core)  # noqa: F841 (never moves)
            return DONE
        return CircuitBreaker.__aexit__(self, exc_type, exc, traceback)


class _ClosedWindowCircuitBreaker(_ClosedCircuitBreaker):
    """:class:`_ClosedCircuitBreaker` for a breaker with a failure-rate window (or one
    whose successes need their time: recorded call durations): the same exit, which
    records the call in the window (at the time, if it needs one) and may trip it."""

    __slots__ = ()

    @inline_steps
    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Awaitable[None]:
        if exc is None and not self._tickets_out:
            core = self._core
            now = self._clock() if self._needs_end_time else 0.0
            moved = succeed_closed(core, now)  # noqa: F841 (moved: _settle swapped the class)
            return DONE
        return CircuitBreaker.__aexit__(self, exc_type, exc, traceback)


_CLASSES = (CircuitBreaker, _ClosedCircuitBreaker, _ClosedWindowCircuitBreaker)


def _call_hook(hook: StateChangeHook, change: CircuitStateChange) -> None:
    try:
        hook(change)
    except Exception:
        logger.exception("circuit breaker %r: state-change hook %r raised", change.name, hook)


class CircuitTicket:
    """One admitted call; report how it ended exactly once."""

    __slots__ = ("_breaker", "_start", "_ticket")

    def __init__(self, breaker: CircuitBreaker, ticket: int, start: float) -> None:
        self._breaker: CircuitBreaker | None = breaker
        self._ticket = ticket
        self._start = start

    @property
    def pending(self) -> bool:
        """True until the call's outcome is reported (``success``, ``failure``, ...)."""
        return self._breaker is not None

    @property
    def is_probe(self) -> bool:
        """True when the call is a half-open probe."""
        return self._ticket != 0

    def _take(self) -> CircuitBreaker:
        breaker = self._breaker
        if breaker is None:
            raise RuntimeError("this ticket's outcome was already reported")
        self._breaker = None
        return breaker

    def success(self) -> None:
        """The call worked."""
        self._take()._succeeded(self._ticket, self._start)

    def failure(self) -> None:
        """The call failed."""
        self._take()._failed(self._ticket, self._start)

    def cancel(self) -> None:
        """The call ended without telling anything about the service (a probe's permit
        is given back)."""
        self._take()._core.release(self._ticket)

    def record_exception(self, error: BaseException) -> None:
        """The call raised ``error``: classify it as the breaker would in a block."""
        self._take()._ended_with(self._ticket, self._start, error)

    def record_result(self, result: object) -> None:
        """The call returned ``result``: a failure if ``failure_result`` says so."""
        self._take()._returned(self._ticket, self._start, result)


def _random_source(value: object) -> RandomSource:
    check_random(value)
    return value  # type: ignore[return-value]
