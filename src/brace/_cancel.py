"""Cancellation at the running loop's own cost, shared by Timeout and PriorityExecutor.run.

On asyncio (3.11+) a deadline is a timer that calls ``Task.cancel`` and the exit counts
the request back out with ``Task.uncancel`` (what ``asyncio.timeout`` does), and the
timers of one loop share one ``loop.call_at`` (`Timers`). The cancellation is ours only
if no other one was asked for meanwhile (``Task.cancelling()`` back to its value at
entry), so an enclosing anyio scope's cancellation always reaches its scope. anyio's
shielded scopes are honoured: a native cancellation that falls due while the task is
inside a shield opened after our entry waits until the shield is gone (checked every
millisecond, the rare case). On trio a bare ``trio.CancelScope`` stands in for anyio's
wrapper around one.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import sys
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from threading import get_ident
from typing import Any, Final, cast
from weakref import WeakKeyDictionary, ref

from ._core._inline import step

__all__ = (
    "NATIVE",
    "Deadline",
    "Scope",
    "Timers",
    "current_task",
    "get_running_loop",
    "move_after",
    "request_scope",
    "running_loop",
    "scope_of",
    "shielded",
    "timers_of",
    "trio_scope",
    "trio_scope_after",
)

#: Task.cancelling/uncancel exist (3.11+): the native path may be used on asyncio
NATIVE: Final = sys.version_info >= (3, 11)
#: the running asyncio loop, or None (on trio) without raising
get_running_loop = asyncio._get_running_loop
#: asyncio's own lookup of the running loop is cheap: from 3.12 it no longer calls
#: ``getpid()`` (a system call, about 150 ns on a virtual machine) each time
CHEAP_LOOKUP: Final = sys.version_info >= (3, 12)
#: ``current_task(loop)``: C-level on 3.12+; on 3.11 the lookup asyncio's Python
#: ``current_task`` makes, without its frame
current_task: Any = (
    asyncio.current_task if sys.version_info >= (3, 12) else asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
)

#: [the asyncio loop last found running (an asyncio loop: it has ``_thread_id``)]
LAST_LOOP: list[Any] = [None]
#: [anyio's map of asyncio task states (its WeakKeyDictionary's dict)], once loaded
ANYIO_STATES: list[Any] = []
_trio_cancel_scope: Any = None
_trio_now: Any = None
#: how often a cancellation held off by a shield looks again (seconds)
SHIELD_POLL: Final = 0.001
#: a heap with fewer dropped entries than this is not rebuilt (asyncio's own threshold)
_MIN_SWEEP: Final = 100
_order = itertools.count()


class Timers:
    """The deadlines of one asyncio loop behind a single timer of the loop's own.

    A deadline per request (or per ``Timeout`` entry) as a ``loop.call_at`` each is a
    ``TimerHandle`` made, pushed into the loop's heap (ordered there by a Python
    ``__lt__``), cancelled, and swept out later. Here a deadline is a list ``[when,
    order, callback]`` in a heap of our own (ordered in C), and only the earliest is a
    loop timer. `drop` empties an entry (its callback becomes None): emptied entries
    leave the heap when they reach its head, or all at once when they are more than
    half of it, as asyncio does with its cancelled timers. Bounded by the deadlines
    open now plus as many dropped ones.
    """

    __slots__ = ("_armed", "_dead", "_handle", "_heap", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # weakly: the loop's map of Timers must not keep the loop alive
        self._loop = ref(loop)
        self._heap: list[list[Any]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._armed = math.inf  # when the loop's timer is set for (inf: not set)
        self._dead = 0

    def add(self, when: float, callback: Callable[[], None]) -> list[Any]:
        """Call ``callback`` once the loop's clock reaches ``when``; the entry to `drop`."""
        entry = [when, next(_order), callback]
        heappush(self._heap, entry)
        if when < self._armed:
            self._arm(when)
        return entry

    def drop(self, entry: list[Any]) -> None:
        """Forget an entry `add` returned (a no-op once it was called or dropped)."""
        if entry[2] is None:
            return
        entry[2] = None
        self._dead = dead = self._dead + 1
        if dead > _MIN_SWEEP and dead * 2 > len(self._heap):
            self._heap = heap = [each for each in self._heap if each[2] is not None]
            heapify(heap)
            self._dead = 0

    def __len__(self) -> int:
        """Entries in the heap, dropped ones included (for the tests)."""
        return len(self._heap)

    def _arm(self, when: float) -> None:
        loop = self._loop()
        if loop is None:
            return
        handle = self._handle
        if handle is not None:
            handle.cancel()
        self._armed = when
        self._handle = loop.call_at(when, self._run)

    def _run(self) -> None:
        due = self._armed  # the loop found this time due
        self._handle = None
        self._armed = math.inf
        loop = self._loop()
        if loop is None:
            return
        now = loop.time()
        if now < due:
            now = due
        try:
            while heap := self._heap:  # (read again: a callback may add, or sweep)
                entry = heap[0]
                callback = entry[2]
                if callback is None:
                    heappop(heap)
                    self._dead -= 1
                elif entry[0] <= now:
                    heappop(heap)
                    entry[2] = None
                    callback()
                else:
                    break
        finally:
            heap = self._heap
            if heap and self._handle is None:
                self._arm(heap[0][0])


_timers: WeakKeyDictionary[asyncio.AbstractEventLoop, Timers] = WeakKeyDictionary()
#: the last loop asked for and its Timers (one tuple: read and replaced atomically)
_last: tuple[Any, Any] = (None, None)


def timers_of(loop: asyncio.AbstractEventLoop) -> Timers:
    """The `Timers` of ``loop``."""
    global _last
    last = _last
    if last[0] is loop:
        return cast(Timers, last[1])
    timers = _timers.get(loop)
    if timers is None:
        timers = _timers[loop] = Timers(loop)
    _last = (loop, timers)
    return timers


@step
def running_loop() -> Any:
    """The running asyncio loop, or None (on trio): ``asyncio._get_running_loop()``
    without, before 3.12, its ``getpid()`` call.

    A step (inlined into ``PriorityExecutor.run``). Before 3.12 the loop found last is
    kept and taken again while its ``_thread_id`` is this thread: an asyncio loop sets
    that while it runs and clears it when it stops, and one thread runs one loop at a
    time, so it is the loop asyncio would answer. uvloop's loops have no ``_thread_id``
    and are looked up each time, as is the absence of a loop (on trio: asyncio answers
    that without ``getpid()``); a fork forgets the loop (asyncio's reason for its
    ``getpid()``).
    """
    if CHEAP_LOOKUP:
        loop = get_running_loop()
    else:
        loop = LAST_LOOP[0]
        if loop is None or loop._thread_id != get_ident():
            loop = get_running_loop()
            LAST_LOOP[0] = loop if isinstance(loop, asyncio.BaseEventLoop) else None
    return loop


def _forget_loop() -> None:
    LAST_LOOP[0] = None


if hasattr(os, "register_at_fork"):  # not on Windows (nor a fork there)
    os.register_at_fork(after_in_child=_forget_loop)


def anyio_states() -> Any:
    """anyio's map of asyncio task states: the dict of its WeakKeyDictionary, read as
    that class's ``get()`` does, without its frame (anyio's backend imported on demand)."""
    if not ANYIO_STATES:
        from anyio._backends._asyncio import _task_states

        ANYIO_STATES.append(cast(Any, _task_states).data)
    return ANYIO_STATES[0]


@step
def scope_of(task: asyncio.Task[Any]) -> Any:
    """anyio's innermost cancel scope in ``task`` (None if it has none): the boundary
    below which a shield holds off our cancellation. A step (inlined into
    ``PriorityExecutor.run``)."""
    state = (ANYIO_STATES[0] if ANYIO_STATES else anyio_states()).get(ref(task))
    scope = None if state is None else state.cancel_scope
    return scope


def shielded(task: asyncio.Task[Any], boundary: Any) -> bool:
    """Whether ``task`` is inside a shielded anyio scope entered below ``boundary``."""
    scope = scope_of(task)
    while scope is not None and scope is not boundary:
        if scope._shield:
            return True
        scope = scope._parent_scope
    return False


def trio_scope(deadline: float) -> Any:
    """A bare ``trio.CancelScope`` (anyio's on trio wraps one, at about twice the cost)."""
    global _trio_cancel_scope
    if _trio_cancel_scope is None:
        import trio

        _trio_cancel_scope = trio.CancelScope
    return _trio_cancel_scope(deadline=deadline)


def trio_scope_after(seconds: float) -> Any:
    """A bare ``trio.CancelScope`` with its deadline ``seconds`` from now, entered."""
    global _trio_now
    if _trio_now is None:
        import trio

        _trio_now = trio.current_time
    scope = trio_scope(_trio_now() + seconds)
    scope.__enter__()
    return scope


class Deadline:
    """A native deadline on the current asyncio task: ``asyncio.timeout``, holding off
    while an anyio shield opened inside is in the way. ``deadline`` (on the loop's
    clock; ``inf``: none) may be moved while it is open, as a cancel scope's may."""

    __slots__ = (
        "_boundary",
        "_cancelling",
        "_entry",
        "_loop",
        "_open",
        "_timers",
        "_when",
        "expired",
        "outer",
        "task",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float, task: Any = None) -> None:
        # Any: Task.cancelling/uncancel are 3.11+ (NATIVE), mypy checks for 3.10
        if task is None:
            task = current_task(loop)
            if task is None:
                raise RuntimeError("a timeout must be entered in a task")
        self._loop = loop
        self.task = task
        self._cancelling: int = task.cancelling()
        self._boundary = scope_of(task)
        self.expired = False
        self._open = True
        #: the task's enclosing entry of the same Timeout (its stack of open entries)
        self.outer: Deadline | None = None
        self._timers = timers = timers_of(loop)
        self._when = when = loop.time() + seconds
        #: our entry in the loop's `Timers` (None: no deadline, or it fired)
        self._entry: list[Any] | None = None if when == math.inf else timers.add(when, self._fire)

    @property
    def deadline(self) -> float:
        return self._when

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._when = value
        if not self._open or self.expired:
            return  # closed, or already cancelled: nothing left to move
        self._disarm()
        if value != math.inf:
            self._entry = self._timers.add(value, self._fire)

    def _disarm(self) -> None:
        """Take our entry out of the loop's `Timers` (no firing pending)."""
        entry = self._entry
        if entry is not None:
            self._entry = None
            self._timers.drop(entry)

    def _fire(self) -> None:
        task: asyncio.Task[Any] = self.task
        self._entry = None
        if task.done():
            return
        if shielded(task, self._boundary):
            self._entry = self._timers.add(self._loop.time() + SHIELD_POLL, self._fire)
            return
        self.expired = True
        task.cancel("brace: deadline exceeded")

    def close(self, cancelled: bool) -> bool:
        """Leave the deadline; True when the body ended (``cancelled``) in our
        cancellation alone. Idempotent."""
        self._open = False
        self._disarm()
        if not self.expired:
            return False
        self.expired = False  # counted out once: closing again is a no-op
        # ours only if no other cancellation was asked for meanwhile (then it goes on)
        return self.task.uncancel() <= self._cancelling and cancelled


class Scope(Deadline):
    """A cancel scope at the loop's own cost, for the HTTP pipeline's requests: a
    `Deadline` (none at first) that can also be cancelled (a drain's timeout), entered with
    ``with``; it reads as much of anyio's `CancelScope` as the pipeline and the executor's
    drain use (``deadline``, ``cancel()``, ``cancel_called``, ``cancelled_caught``).

    ``cancel()`` may come before the ``with`` (a drain already past its timeout): the task
    is cancelled at its next suspension and the ``with`` catches it, as anyio's scope
    would."""

    __slots__ = ("_soon", "cancel_called", "cancelled_caught")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: Any) -> None:
        super().__init__(loop, math.inf, task)  # no deadline until the request has a slot
        self.cancel_called = False
        self.cancelled_caught = False
        #: a cancellation by its own task, due at the task's next suspension
        self._soon: asyncio.Handle | None = None

    def after(self, seconds: float) -> None:
        """Move the deadline to ``seconds`` from now."""
        self.deadline = self._loop.time() + seconds

    def cancel(self) -> None:
        if self.cancel_called or not self._open:
            return
        self.cancel_called = True
        if self.expired:
            return  # its deadline cancelled it already
        self._disarm()
        loop = self._loop
        if current_task(loop) is self.task:
            # the task cancels its own scope: at its next suspension, as anyio's would
            # (a body that ends before one is not cancelled, and leaves no cancellation
            # behind: closing the scope drops this call); call_soon, not a timer: a
            # timer due now would run after the task's own next step
            self._soon = loop.call_soon(self._fire)
        else:
            self._fire()  # (a shield in the way holds it off, as at the deadline)

    def _fire(self) -> None:
        self._soon = None
        super()._fire()
        if self.expired:
            self.cancel_called = True

    def close(self, cancelled: bool) -> bool:
        soon = self._soon
        if soon is not None:
            soon.cancel()
            self._soon = None
        return super().close(cancelled)

    def __enter__(self) -> Scope:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> bool:
        if self.close(isinstance(exc, asyncio.CancelledError)):
            self.cancelled_caught = True
            return True
        return False


def request_scope() -> Any:
    """A cancel scope for one request, at the running loop's own cost: a `Scope` on
    asyncio 3.11+, a bare ``trio.CancelScope`` on trio, anyio's elsewhere (3.10)."""
    loop = running_loop()
    if loop is None:
        return trio_scope(math.inf)
    if NATIVE:
        task = current_task(loop)
        if task is not None:
            return Scope(loop, task)
    import anyio

    return anyio.CancelScope()


def move_after(scope: Any, seconds: float) -> None:
    """Move a `request_scope`'s deadline to ``seconds`` from now, on its own clock."""
    if type(scope) is Scope:
        scope.after(seconds)
    else:
        import anyio

        scope.deadline = anyio.current_time() + seconds
