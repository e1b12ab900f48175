from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from threading import get_ident  # noqa: F401  (read by running_loop, inlined)
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, overload
from weakref import ref  # noqa: F401  (read by scope_of, inlined)

import anyio
from typing_extensions import ParamSpec

from ._cancel import (  # (the names marked F401: read by the steps inlined into _run)
    ANYIO_STATES,  # noqa: F401
    CHEAP_LOOKUP,  # noqa: F401
    LAST_LOOP,  # noqa: F401
    NATIVE,
    SHIELD_POLL,
    Deadline,
    anyio_states,  # noqa: F401
    current_task,
    get_running_loop,  # noqa: F401
    running_loop,
    scope_of,
    shielded,
    trio_scope,
)
from ._clock import check_clock
from ._core._inline import inline_steps
from ._core._validate import check_positive
from ._core.admission import (
    AdmissionCore,
    Discipline,
    FullPolicy,
    Reservoir,
    Ticket,
    TicketState,
    admit_now,
    release_idle,
)
from ._done import DONE
from ._events import EventHook, Reason, RefusalCounter, Refused, event_hook
from ._exceptions import (
    Dropped,
    MemoryPressure,
    QueueFull,
    QueueTimeout,
    Rejected,
    ShuttingDown,
    TimeoutExceeded,
)
from ._memory import MemoryAdmission, MemoryGuard
from ._metrics import WAIT_BUCKETS, Histogram
from ._priority import Priority, check_priority

if TYPE_CHECKING:
    from ._adaptive import AdaptiveLimit

__all__ = (
    "Dropped",
    "DrainReport",
    "ExecutorStatistics",
    "PriorityExecutor",
)

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R", bound=BaseException)

logger = logging.getLogger("brace.executor")

_REASONS: tuple[Reason, ...] = (
    "queue_full",
    "dropped",
    "queue_timeout",
    "memory",
    "shutting_down",
)

_QUEUED = TicketState.QUEUED
_GRANTED = TicketState.GRANTED


class _Default(str, enum.Enum):
    DEFAULT = "default"


# (a str enum: equal to "default", the value the signatures show and accept)
_DEFAULT: Final = _Default.DEFAULT
_DefaultTimeout = Literal["default"]
#: the default of ``timeout=`` itself (an interned constant: ``is`` finds it; any other
#: "default" is found by `PriorityExecutor._limit`)
_DEFAULT_TIMEOUT: Final = "default"


@dataclass(frozen=True, slots=True)
class ExecutorStatistics:
    """A snapshot of a :class:`PriorityExecutor`.

    Counts are totals since construction. ``admitted`` slots were handed out;
    each ends as ``completed``, ``failed``, ``timed_out`` (its own ``timeout``) or
    ``cancelled_running`` (or is still ``running``). ``queued`` waiters ever entered the
    queue; each was admitted, ``dropped``, ``queue_timed_out``, ``cancelled_queued``, or is
    still ``pending``. ``rejected`` newcomers found the queue full, ``rejected_draining``
    arrived while draining. Wait and processing times are in seconds; the wait-time
    percentiles are over the most recent ``reservoir_size`` admissions. ``held``: work
    its memory guard holds at the door right now (memory HIGH); it counts against
    ``max_queue`` beside ``pending``. ``refusals``: every refusal by reason
    (``queue_full``, ``dropped``, ``queue_timeout``, ``memory``, ``shutting_down``), each
    counted once, as its ``on_event`` hooks saw it.
    """

    concurrency: int
    max_queue: int
    pending: int
    running: int
    admitted: int
    queued: int
    completed: int
    failed: int
    timed_out: int
    cancelled_running: int
    cancelled_queued: int
    dropped: int
    queue_timed_out: int
    rejected: int
    rejected_draining: int
    total_processed: int
    average_wait_time: float
    average_processing_time: float
    wait_time_p50: float
    wait_time_p90: float
    wait_time_p99: float
    admitted_by_priority: dict[int, int]
    pending_by_priority: dict[int, int]
    draining: bool
    held: int = 0
    refusals: Mapping[str, int] = dataclasses.field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class DrainReport:
    """What :meth:`PriorityExecutor.drain` did.

    ``finished``: work that ran to an end (completed, failed or timed out) during the
    drain. ``cancelled_running`` / ``cancelled_queued``: work cancelled when the timeout
    passed, running or still waiting (``cancelled`` is their sum). ``rejected``: calls
    refused with :class:`ShuttingDown` during the drain. ``still_running``: plain
    ``slot()`` holders, which carry no cancel scope and so could not be cancelled (``run()``
    work and the HTTP pipeline's requests can be), still running on return. ``timed_out``:
    whether the timeout passed before the executor was idle.
    """

    finished: int
    cancelled_running: int
    cancelled_queued: int
    rejected_while_draining: int
    still_running: int
    timed_out: bool
    duration: float

    @property
    def cancelled(self) -> int:
        """Running and queued work cancelled at the timeout."""
        return self.cancelled_running + self.cancelled_queued


class PriorityExecutor:
    """A bounded number of slots behind a bounded, priority-ordered queue.

    ``concurrency`` slots (changeable at runtime), a queue of at most ``max_queue`` waiters
    served by priority (lower first, FIFO within a priority, ``aging`` seconds of waiting
    worth one class), ``on_full`` deciding what a full queue does (``"reject"``,
    ``"drop_oldest"``, ``"drop_less_important"``), a ``discipline`` (``"fifo"``,
    ``"codel"``, ``"adaptive_lifo"``), ``queue_timeout`` (most seconds in the queue),
    ``timeout`` (default per-call limit on running time, counted from when work starts) and
    an optional :class:`brace.AdaptiveLimit` that moves ``concurrency`` with latency.

    ``on_event``: a hook, or hooks, called with a `brace.events.Refused` for every
    refusal (``queue_full``, ``dropped``, ``queue_timeout``, ``memory``,
    ``shutting_down``; ``priority`` set) just before the caller gets the exception; each
    is logged at DEBUG on ``brace.executor`` and counted in ``statistics().refusals``.
    ``name`` names the executor in events and log records.
    ``reserved`` of the slots are kept for work of priority ``reserved_for`` or more urgent
    (``Priority.HIGH``): less urgent work waits rather than take the last free ones, so
    urgent work starts at once instead of waiting for a slot to free (at least one slot
    stays open to all).
    """

    __slots__ = (
        "__weakref__",
        "_adaptive",
        "_cancelled_running",
        "_clock",
        "_core",
        "_default_priority",
        "_default_slot",
        "_drain_cancelled",
        "_drained",
        "_draining_cancel",
        "_failed",
        "_fast_seen",
        "_guard",
        "_idle_event",
        "_name",
        "_on_event",
        "_passed_on",
        "_processing_histogram",
        "_refusals",
        "_scopes",
        "_scopes_empty",
        "_slots",
        "_tasks",
        "_timed_out",
        "_timeout",
        "_wait_histogram",
        "_wait_total",
        "_waits",
    )

    def __init__(
        self,
        concurrency: int = 10,
        max_queue: int = 1000,
        *,
        timeout: float | None = None,
        queue_timeout: float | None = None,
        aging: float | None = 10.0,
        on_full: FullPolicy = "reject",
        discipline: Discipline = "fifo",
        codel_target: float = 0.005,
        codel_interval: float = 0.1,
        default_priority: int = Priority.MEDIUM,
        reservoir_size: int = 1024,
        limit: AdaptiveLimit | None = None,
        guard: MemoryGuard | None = None,
        clock: Callable[[], float] | None = None,
        name: str | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
        reserved: int = 0,
        reserved_for: int = Priority.HIGH,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        self._name = name
        self._on_event = event_hook(on_event)
        self._refusals = RefusalCounter(_REASONS)
        self._core = AdmissionCore(
            concurrency,
            max_queue,
            aging=aging,
            on_full=on_full,
            discipline=discipline,
            codel_target=codel_target,
            codel_interval=codel_interval,
            queue_timeout=queue_timeout,
            reserved=reserved,
            reserved_for=check_priority(reserved_for, "reserved_for"),
        )
        self._timeout = None if timeout is None else check_positive(timeout, "timeout")
        self._default_priority = check_priority(default_priority, "default_priority")
        self._waits = Reservoir(reservoir_size)
        # exported by brace.prometheus / brace.otel (see brace._metrics). Waits are
        # recorded on the queued path only: fast-path admissions are the core's
        # acquired_immediately, counted as zero waits when read. Processing times are
        # recorded once an exporter has read the histogram (None until then): run()'s
        # cost stays one attribute test while nobody exports.
        self._wait_histogram = Histogram(WAIT_BUCKETS)
        self._processing_histogram: Histogram | None = None
        clock = check_clock(clock)
        self._clock: Callable[[], float] = time.monotonic if clock is None else clock
        # one reusable context per priority value used; it also counts that priority's work
        self._slots: dict[int, _Slot] = {}
        self._wait_total = 0.0
        self._fast_seen = 0  # fast-path admissions already written to _waits as zeros
        self._failed = 0
        self._timed_out = 0
        self._cancelled_running = 0
        self._passed_on = 0  # slots granted to waiters cancelled before they resumed
        self._drain_cancelled = 0
        self._draining_cancel = False
        # run() work that drain() may cancel: the cancel scopes of work with a timeout (and
        # of all work on trio), the bare tasks of work without one on asyncio (3.11+);
        # _drained: the tasks drain() cancelled natively, until they unwind
        self._scopes: set[Any] = set()
        self._tasks: dict[Any, Any] = {}  # task -> anyio scope around it
        self._drained: set[Any] = set()
        self._scopes_empty: anyio.Event | None = None
        self._idle_event: anyio.Event | None = None
        if guard is not None and not isinstance(guard, MemoryGuard):
            raise TypeError(f"guard must be a brace.MemoryGuard or None, got {guard!r}")
        self._guard = guard
        if guard is not None:
            guard.bind(self)
        self._adaptive: AdaptiveLimit | None = None
        if limit is not None:
            limit.attach(self)
            self._adaptive = limit
        # the shared context of the default priority (None: an adaptive limit times each use)
        self._default_slot: _Slot | None = None
        if limit is None:
            self._default_slot = self._slot_for(None)

    # -- configuration -------------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        """The number of slots; assigning it takes effect at once (waiters move up)."""
        return self._core.concurrency

    @concurrency.setter
    def concurrency(self, value: int) -> None:
        changed = self._core.set_concurrency(value, self._clock())
        if changed:
            self._wake(changed)

    @property
    def max_queue(self) -> int:
        """The most waiters the queue holds."""
        return self._core.max_queue

    @property
    def guard(self) -> MemoryGuard | None:
        """The `brace.MemoryGuard` every admission passes first (``guard=``), or None."""
        return self._guard

    @property
    def draining(self) -> bool:
        """True once :meth:`drain` started: nothing new is admitted."""
        return self._core.closed

    # -- the three ways in ---------------------------------------------------------------

    def slot(self, priority: int | None = None) -> _Slot | _TimedSlot:
        """``async with executor.slot(priority=...)``: hold one slot for the block.

        Raises :class:`brace.QueueFull` (or :class:`Dropped`), :class:`brace.QueueTimeout`
        or :class:`brace.ShuttingDown` when no slot is given. Work in a plain ``slot()``
        block is not cancelled by :meth:`drain` (the block carries no cancel scope, which
        keeps the uncontended path as cheap as a semaphore); use :meth:`run` for work the
        drain must bound. brace's HTTP pipeline (`brace.asgi.BraceMiddleware` and the other
        adapters) puts each request's cancel scope under the drain itself.
        """
        if priority is None:
            slot = self._default_slot
            if slot is not None:
                return slot
        elif self._adaptive is None:
            try:
                slot = self._slots.get(priority)
            except TypeError:  # unhashable: _slot_for says what a priority must be
                slot = None
            if slot is not None:  # only checked priorities are in _slots
                return slot
        if self._adaptive is not None:
            return _TimedSlot(self._slot_for(priority))  # carries its start time: not shared
        return self._slot_for(priority)

    @property
    def default_priority(self) -> int:
        """The priority of work given none (``Priority.MEDIUM`` unless configured)."""
        return self._default_priority

    def _slot_for(self, priority: int | None) -> _Slot:
        if priority is None:
            if self._default_slot is not None:
                return self._default_slot
            priority = self._default_priority
        else:
            priority = check_priority(priority)
        slot = self._slots.get(priority)
        if slot is None:
            slot = self._slots[priority] = _Slot(self, priority)
        return slot

    def run(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        priority: int | None = None,
        timeout: float | _DefaultTimeout | None = "default",
        **kwargs: Any,
    ) -> Coroutine[Any, Any, T]:
        """Run ``await fn(*args, **kwargs)`` in a slot and return its result.

        (``priority`` and ``timeout`` are taken by ``run``; pass a function needing
        arguments of those names through :func:`functools.partial`, or use :meth:`call`,
        which keeps the exact signature for type checkers.)

        ``timeout`` (seconds; ``None`` for no limit; ``"default"``: the executor's ``timeout``)
        counts from when the work starts, not from when it was queued, and raises
        :class:`brace.TimeoutExceeded`. Work still running when a :meth:`drain` times out is
        cancelled and raises :class:`brace.ShuttingDown`.
        """
        # (a plain method returning the coroutine: one coroutine a job instead of two; the
        # defaults without a call each)
        slot = self._default_slot if priority is None else None
        return self._run(
            self._slot_for(priority) if slot is None else slot,
            self._timeout if timeout is _DEFAULT_TIMEOUT else self._limit(timeout),
            fn,
            args,
            kwargs,
        )

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``run(fn, *args, **kwargs)`` with the default priority and timeout (for compose)."""
        return await self._run(self._slot_for(None), self._timeout, fn, args, kwargs)

    @overload
    def __call__(self, fn: Callable[P, Awaitable[T]], /) -> Callable[P, Awaitable[T]]: ...

    @overload
    def __call__(
        self, *, priority: int | None = None, timeout: float | _DefaultTimeout | None = "default"
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]: ...

    def __call__(
        self,
        fn: Callable[..., Awaitable[Any]] | None = None,
        *,
        priority: int | None = None,
        timeout: float | _DefaultTimeout | None = "default",
    ) -> Any:
        """Decorate an ``async def`` so every call goes through :meth:`run`.

        ``@executor`` uses the defaults; ``@executor(priority=Priority.HIGH, timeout=60)``
        sets them for this function.
        """
        slot = self._slot_for(priority)
        limit = self._limit(timeout)

        def decorate(function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
            @functools.wraps(function)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return await self._run(slot, limit, function, args, kwargs)

            return wrapper

        if fn is not None:
            return decorate(fn)
        return decorate

    # -- draining ------------------------------------------------------------------------

    async def drain(self, timeout: float = 30.0) -> DrainReport:
        """Stop admitting, let queued and running work finish, cancel what is left.

        New calls get :class:`brace.ShuttingDown` from now on. When ``timeout`` seconds pass
        before the executor is idle, queued waiters get :class:`brace.ShuttingDown`, running
        :meth:`run` work is cancelled (and raises :class:`brace.ShuttingDown`), and so are
        the HTTP pipeline's requests (they answer 503); the call returns once that work has
        unwound. Plain ``slot()`` holders are not cancelled: they are counted in the
        report's ``still_running``. A drain that is itself cancelled (a second signal cuts
        a `brace.GracefulShutdown` short) cancels what is left at once, as at its timeout.
        """
        timeout = check_positive(timeout, "timeout")
        core = self._core
        start = self._clock()
        core.close()
        finished_before = self._finished()
        rejected_before = core.rejected_closed
        drained_before = self._drain_cancelled
        try:
            with anyio.move_on_after(timeout):
                await self.wait_idle()
        except BaseException:
            self._cancel_left()  # cut short: nothing is left to run on
            raise
        timed_out = bool(core.running or core.pending)
        cancelled_queued = 0
        if timed_out or self._scopes or self._tasks:
            cancelled_queued = self._cancel_left()
            await self._cancel_running()
        return DrainReport(
            finished=self._finished() - finished_before,
            cancelled_running=self._drain_cancelled - drained_before,
            cancelled_queued=cancelled_queued,
            rejected_while_draining=core.rejected_closed - rejected_before,
            still_running=core.running,
            timed_out=timed_out,
            duration=max(0.0, self._clock() - start),
        )

    def _cancel_left(self) -> int:
        """End every queued waiter and cancel every registered scope (the drain's
        timeout); return how many waiters were ended."""
        ended = self._core.cancel_all(self._clock())
        self._wake(ended)
        self._draining_cancel = True
        for scope in list(self._scopes):
            scope.cancel()
        return len(ended)

    def track(self, scope: anyio.CancelScope) -> None:
        """Put ``scope`` (one request of the HTTP pipeline) under the drain: cancelled at
        its timeout. Pair with :meth:`untrack`. (For adapters: plain ``slot()`` and
        ``run()`` work need none of this.)"""
        self._scopes.add(scope)
        if self._draining_cancel:
            scope.cancel()  # the drain's timeout has passed already

    def untrack(self, scope: anyio.CancelScope) -> None:
        """Take ``scope`` (see :meth:`track`) from under the drain."""
        scopes = self._scopes
        scopes.discard(scope)
        if not scopes and self._scopes_empty is not None:
            self._scopes_empty.set()

    @property
    def cancelling(self) -> bool:
        """True once a drain's timeout has passed: running work is being cancelled."""
        return self._draining_cancel

    async def wait_idle(self) -> None:
        """Wait until nothing runs and nothing waits."""
        core = self._core
        while core.running or core.pending:
            if self._idle_event is None:
                self._idle_event = anyio.Event()
            await self._idle_event.wait()

    # -- statistics ----------------------------------------------------------------------

    def queue_bounds(self) -> tuple[int, float | None]:
        """``(free places in the queue, queue_timeout)``: what bounds work held for it
        elsewhere (a memory guard given as ``guard=`` counts its held work against them)."""
        core = self._core
        return core.max_queue - core.pending, core.queue_timeout

    def statistics(self) -> ExecutorStatistics:
        """A consistent snapshot of the counters, averages and wait-time percentiles."""
        core = self._core
        self._sync_waits()
        p50, p90, p99 = self._waits.percentiles(0.5, 0.9, 0.99)
        admitted = core.acquired_immediately + core.granted
        processed = self._finished()
        return ExecutorStatistics(
            concurrency=core.concurrency,
            max_queue=core.max_queue,
            pending=core.pending,
            running=core.running,
            admitted=admitted,
            queued=core.tickets,
            completed=processed - self._failed - self._timed_out,
            failed=self._failed,
            timed_out=self._timed_out,
            cancelled_running=self._cancelled_running + self._drain_cancelled,
            cancelled_queued=core.cancelled,
            dropped=core.dropped,
            queue_timed_out=core.timed_out,
            rejected=core.rejected,
            rejected_draining=core.rejected_closed,
            total_processed=processed,
            average_wait_time=self._wait_total / admitted if admitted else 0.0,
            average_processing_time=(
                max(0.0, core.busy_time / core.completions) if core.completions else 0.0
            ),
            wait_time_p50=p50,
            wait_time_p90=p90,
            wait_time_p99=p99,
            admitted_by_priority={p: s.admitted for p, s in self._slots.items() if s.admitted},
            pending_by_priority=core.pending_by_priority(),
            draining=core.closed,
            held=0 if self._guard is None else self._guard.held,
            refusals=self._refusals.snapshot(),
        )

    def __repr__(self) -> str:
        core = self._core
        return (
            f"PriorityExecutor(concurrency={core.concurrency}, max_queue={core.max_queue}, "
            f"running={core.running}, pending={core.pending})"
        )

    # -- internals -----------------------------------------------------------------------

    def _limit(self, timeout: float | _DefaultTimeout | None) -> float | None:
        if timeout == "default":  # also the _DEFAULT sentinel of earlier versions
            return self._timeout
        if timeout is None:
            return None
        return check_positive(timeout, "timeout")

    @inline_steps
    async def _run(
        self,
        slot: _Slot,
        limit: float | None,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        """Run the work in a slot. On asyncio 3.11+ no cancel scope: a timeout is a native
        deadline, and the task is recorded (with anyio's scope around it, below which a
        shield holds drain off); drain() cancels it with ``Task.cancel``, counted back out
        with ``Task.uncancel``, and the cancellation is ours only if nobody else asked for
        one meanwhile. Elsewhere (trio, 3.10, run() nested in run() in one task):
        :meth:`_run_scoped`."""
        if self._guard is None:  # _acquire without its extra coroutine
            now = self._clock()
            core = self._core
            admitted = admit_now(core, now, slot.priority)
            if admitted:
                slot.admitted += 1
                started = now
            else:
                started = await self._wait(slot, now)
        else:
            started = await self._acquire(slot)
        loop = running_loop()
        task: Any = None if loop is None or not NATIVE else current_task(loop)
        tasks = self._tasks
        if task is None or task in tasks:
            return await self._run_scoped(slot, started, limit, loop, fn, args, kwargs)
        cancelling = task.cancelling()
        boundary = scope_of(task)
        tasks[task] = boundary
        deadline = None if limit is None else Deadline(loop, limit, task)  # pyright: ignore[reportArgumentType]
        outcome = _FAILED
        try:
            result = await fn(*args, **kwargs)
            outcome = _COMPLETED
        except asyncio.CancelledError:
            outcome = _CANCELLED
            drained = self._drained
            by_drain = task in drained
            if by_drain:
                drained.discard(task)
                task.uncancel()
            if deadline is not None and deadline.close(cancelled=True):
                outcome = _DRAINED if by_drain else _TIMED_OUT
            elif by_drain and task.cancelling() <= cancelling:
                outcome = _DRAINED
            else:
                raise
        finally:
            del tasks[task]
            if deadline is not None:
                deadline.close(cancelled=False)  # a no-op if already closed
            drained = self._drained
            if drained and task in drained:  # cancelled, but the work swallowed it
                drained.discard(task)
                task.uncancel()
            if self._scopes_empty is not None and not tasks and not self._scopes:
                self._scopes_empty.set()
            if (
                outcome is _COMPLETED
                and self._adaptive is None
                and self._processing_histogram is None
            ):
                # _finish's first case, with the core's release step inlined: a copy of
                # _finish's test, kept because the frame it saves is about 2.5 % of a
                # gathered job (executor.run's target is the thinnest of issue 16)
                core = self._core
                now = self._clock()
                released = release_idle(core, now)
                if not released:
                    self._release(started, outcome, now)
                elif self._idle_event is not None:
                    self._check_idle()
            else:
                self._finish(started, outcome)
        if outcome is _COMPLETED:
            return result  # pyright: ignore[reportPossiblyUnboundVariable, reportReturnType]
        if outcome is _DRAINED:
            raise self._drained_error(slot)
        raise TimeoutExceeded(timeout=limit)

    async def _run_scoped(
        self,
        slot: _Slot,
        started: float,
        limit: float | None,
        loop: asyncio.AbstractEventLoop | None,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        """:meth:`_run` in a cancel scope: a bare trio one on trio, anyio's on asyncio."""
        deadline = math.inf if limit is None else anyio.current_time() + limit
        scope = anyio.CancelScope(deadline=deadline) if loop is not None else trio_scope(deadline)
        scopes = self._scopes
        scopes.add(scope)
        outcome = _FAILED
        try:
            with scope:
                result = await fn(*args, **kwargs)
                outcome = _COMPLETED
            if scope.cancelled_caught:
                outcome = _DRAINED if self._draining_cancel else _TIMED_OUT
        except anyio.get_cancelled_exc_class():
            outcome = _CANCELLED
            raise
        finally:
            scopes.discard(scope)
            if self._scopes_empty is not None and not scopes and not self._tasks:
                self._scopes_empty.set()
            self._finish(started, outcome)
        if outcome is _COMPLETED:
            return result
        if outcome is _DRAINED:
            raise self._drained_error(slot)
        raise TimeoutExceeded(timeout=limit)

    def _drained_error(self, slot: _Slot) -> ShuttingDown:
        return self._refuse(
            "shutting_down",
            ShuttingDown("cancelled: the executor drained and its timeout passed"),
            slot.priority,
        )

    async def _cancel_running(self) -> None:
        """drain() at its deadline: cancel every running run() and wait until they unwind.

        A task inside a shielded anyio scope (opened in its work) is cancelled once the
        shield is gone, as anyio's own scope would be."""
        self._draining_cancel = True
        for scope in list(self._scopes):
            scope.cancel()
        drained = self._drained
        tasks = self._tasks
        while self._scopes or tasks:
            held = False
            for task, boundary in list(tasks.items()):
                if task not in drained:
                    if shielded(task, boundary):
                        held = True
                    else:
                        drained.add(task)
                        task.cancel("the executor drained and its timeout passed")
            if held:
                await anyio.sleep(SHIELD_POLL)
            else:
                self._scopes_empty = anyio.Event()
                await self._scopes_empty.wait()
        self._scopes_empty = None

    def _finished(self) -> int:
        """Work that ran to an end: completed, failed or timed out (cancelled is not)."""
        return self._core.completions

    def _sync_waits(self) -> None:
        """Write the fast path's zero waits (counted by the core) into the reservoir."""
        fast = self._core.acquired_immediately
        if fast != self._fast_seen:
            self._waits.zeros += fast - self._fast_seen
            self._fast_seen = fast

    async def _pass_guard(self, priority: int) -> None:
        """Ask the memory guard: raise MemoryPressure, wait while memory is HIGH, or go on.

        Work held back at HIGH waits at the door, not in the queue, so it takes no queue
        position from more urgent work; it still counts against ``max_queue`` (then
        :class:`brace.QueueFull`) and ``queue_timeout`` (then :class:`brace.MemoryPressure`).
        """
        guard = self._guard
        assert guard is not None
        if self._core.closed:
            raise self._refuse(
                "shutting_down",
                ShuttingDown("the executor is draining and admits no new work"),
                priority,
            )
        try:
            if guard.check(priority) is MemoryAdmission.QUEUE:
                await guard.hold()  # bounded by this executor's queue: see MemoryGuard.hold
        except MemoryPressure as error:
            raise self._refuse("memory", error, priority) from None
        except QueueFull as error:
            raise self._refuse("queue_full", error, priority) from None

    async def _acquire(self, slot: _Slot) -> float:
        """Take a slot (waiting if need be) and return the time the work starts."""
        if self._guard is not None:
            await self._pass_guard(slot.priority)
        now = self._clock()
        if self._core.try_acquire(now, slot.priority):
            slot.admitted += 1
            return now
        return await self._wait(slot, now)

    async def _wait(self, slot: _Slot, now: float) -> float:
        core = self._core
        ticket, changed = core.arrive(slot.priority, now)
        if changed:
            self._wake(changed)
        if ticket is None:
            if core.closed:
                raise self._refuse(
                    "shutting_down",
                    ShuttingDown("the executor is draining", retry_after=None),
                    slot.priority,
                )
            raise self._refuse(
                "queue_full",
                QueueFull(
                    f"the queue is full ({core.max_queue} waiting)",
                    retry_after=core.retry_after(),
                ),
                slot.priority,
            )
        if ticket.state is not _QUEUED:
            return self._granted(slot, ticket, now)
        deadline = core.deadline(ticket)
        try:
            if deadline is None:
                await _park(ticket)
            else:
                while ticket.state is _QUEUED:
                    with anyio.move_on_after(deadline - self._clock()):
                        await _park(ticket)
                    if ticket.state is _QUEUED:
                        expired = core.expire(self._clock())
                        if expired:
                            self._wake(expired)
        except BaseException:
            self._abandon(ticket)
            raise
        return self._granted(slot, ticket, self._clock())

    def _granted(self, slot: _Slot, ticket: Ticket, now: float) -> float:
        state = ticket.state
        if state is _GRANTED:
            slot.admitted += 1
            waited = max(0.0, now - ticket.enqueued_at)  # 0: the clock stepped back
            self._wait_total += waited
            self._sync_waits()
            self._waits.add(waited)
            self._wait_histogram.observe(waited)
            return now
        core = self._core
        if state is TicketState.DROPPED:
            raise self._refuse(
                "dropped",
                Dropped("dropped from the queue", retry_after=core.retry_after()),
                slot.priority,
            )
        if state is TicketState.TIMED_OUT:
            raise self._refuse(
                "queue_timeout",
                QueueTimeout(
                    f"waited {core.queue_timeout} s in the queue",
                    retry_after=core.retry_after(),
                ),
                slot.priority,
            )
        raise self._refuse(
            "shutting_down",
            ShuttingDown("the executor drained and its timeout passed", retry_after=None),
            slot.priority,
        )

    def _refuse(self, reason: Reason, error: R, priority: int) -> R:
        """Count and report one refusal (never on the success path); the error to raise."""
        self._refusals.add(reason)
        logger.debug(
            "executor %r refused priority %s: %s (%s)", self._name, priority, reason, error
        )
        if self._on_event is not None:
            retry_after = error.retry_after if isinstance(error, Rejected) else None
            self._on_event(
                Refused(
                    self._name,
                    self._clock(),
                    reason,
                    "executor",
                    retry_after=retry_after,
                    priority=priority,
                )
            )
        return error

    @property
    def name(self) -> str | None:
        """The name given at construction (carried by events and log records)."""
        return self._name

    def _abandon(self, ticket: Ticket) -> None:
        """The waiter was cancelled: leave the queue, or pass on a slot granted meanwhile."""
        state = ticket.state
        core = self._core
        if state is _QUEUED:
            core.leave(ticket, self._clock())
        elif state is _GRANTED:
            self._cancelled_running += 1
            self._passed_on += 1
            changed = core.release(self._clock(), completed=False)
            if changed:
                self._wake(changed)
        self._check_idle()

    @inline_steps
    def _finish(self, started: float | None, outcome: int) -> None:
        """Count how a piece of work ended, release its slot, wake who is next.

        ``started`` is known to :meth:`run` and timed slots, which feed the adaptive limit.
        """
        now = self._clock()
        core = self._core
        if outcome is _COMPLETED:
            # counted by the core as a completion that neither failed nor timed out
            if self._adaptive is None and self._processing_histogram is None:
                released = release_idle(core, now)  # (inlined) while nobody waits
                if released:
                    if self._idle_event is not None:
                        self._check_idle()
                    return
        elif outcome is _FAILED:
            self._failed += 1
        elif outcome is _TIMED_OUT:
            self._timed_out += 1
        elif outcome is _DRAINED:
            self._drain_cancelled += 1
        else:
            self._cancelled_running += 1
        self._release(started, outcome, now)

    def _release(self, started: float | None, outcome: int, now: float) -> None:
        """:meth:`_finish` after the counts: give the slot back through the core (feeding
        the adaptive limit and the processing-time histogram first), wake who is next."""
        core = self._core
        if outcome is _CANCELLED or outcome is _DRAINED:
            changed = core.release(now, completed=False)
        else:
            adaptive = self._adaptive
            if started is not None:
                processing = self._processing_histogram
                if processing is not None:
                    processing.observe(max(0.0, now - started))
                if adaptive is not None:
                    # before the release, so that "in flight" still includes this one
                    adaptive.observe(max(0.0, now - started), outcome is _TIMED_OUT, now)
            changed = core.release(now)
        if changed:
            self._wake(changed)
        elif self._idle_event is not None:
            self._check_idle()

    def _check_idle(self) -> None:
        core = self._core
        if self._idle_event is not None and not core.running and not core.pending:
            self._idle_event.set()
            self._idle_event = None

    def _wake(self, changed: tuple[Ticket, ...]) -> None:
        for ticket in changed:
            waiter = ticket.owner
            if waiter is not None:
                ticket.owner = None
                if isinstance(waiter, asyncio.Future):
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    waiter.set()  # type: ignore[attr-defined]
        self._check_idle()


async def _park(ticket: Ticket) -> None:
    """Sleep until :meth:`PriorityExecutor._wake` is called for ``ticket``.

    On asyncio the waiter is a bare future (an ``anyio.Event`` costs several times more);
    on trio it is an ``anyio.Event``. Cancellation goes through unchanged either way.
    """
    if anyio.get_cancelled_exc_class() is asyncio.CancelledError:  # we run on asyncio
        future = asyncio.get_running_loop().create_future()
        ticket.owner = future
        await future
    else:
        event = anyio.Event()
        ticket.owner = event
        await event.wait()


# outcomes of one piece of work (ints: compared by identity on the hot path)
_COMPLETED: Final = 0
_FAILED: Final = 1
_TIMED_OUT: Final = 2
_CANCELLED: Final = 3
_DRAINED: Final = 4


class _Slot:
    """The ``async with executor.slot()`` context: one slot for the duration of the block.

    It keeps no per-use state (the core measures service time by integrating ``running``),
    so one instance per priority value is shared by every task and the fast path allocates
    nothing; it counts the work admitted at its priority.
    """

    __slots__ = ("_executor", "admitted", "priority")

    def __init__(self, executor: PriorityExecutor, priority: int) -> None:
        self._executor = executor
        self.priority = priority
        self.admitted = 0

    @inline_steps
    def __aenter__(self) -> Awaitable[None]:
        # PriorityExecutor._acquire with the core's admission step inlined: the fast path
        # must cost no more than an asyncio.Semaphore and never reach the loop. A plain
        # method: a slot taken at once is a finished awaitable, no coroutine at all.
        executor = self._executor
        if executor._guard is not None:
            return self._enter_guarded()
        core = executor._core
        now = executor._clock()
        admitted = admit_now(core, now, self.priority)
        if admitted:
            self.admitted += 1
            return DONE
        return self._enter_queued(now)

    async def _enter_guarded(self) -> None:
        await self._executor._acquire(self)

    async def _enter_queued(self, now: float) -> None:
        await self._executor._wait(self, now)

    @inline_steps
    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        executor = self._executor
        if exc_type is None:
            # PriorityExecutor._finish for a completion, with the core's release step
            # inlined while nobody waits
            core = executor._core
            now = executor._clock()
            released = release_idle(core, now)
            if released:
                if executor._idle_event is not None:
                    executor._check_idle()
                return DONE
            executor._release(None, _COMPLETED, now)
            return DONE
        if issubclass(exc_type, anyio.get_cancelled_exc_class()):
            # after a drain's timeout: a pipeline request whose scope the drain cancelled
            executor._finish(None, _DRAINED if executor._draining_cancel else _CANCELLED)
        else:
            executor._finish(None, _FAILED)
        return DONE


class _TimedSlot:
    """A ``slot()`` context that times its block, for an executor with an adaptive limit."""

    __slots__ = ("_executor", "_slot", "_started")

    def __init__(self, slot: _Slot) -> None:
        self._executor = slot._executor
        self._slot = slot
        self._started = 0.0

    async def __aenter__(self) -> None:
        self._started = await self._executor._acquire(self._slot)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            outcome = _COMPLETED
        elif issubclass(exc_type, anyio.get_cancelled_exc_class()):
            outcome = _DRAINED if self._executor._draining_cancel else _CANCELLED
        else:
            outcome = _FAILED
        self._executor._finish(self._started, outcome)
