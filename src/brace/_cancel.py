"""Cancellation at the running loop's own cost, shared by Timeout and PriorityExecutor.run.

On asyncio (3.11+) a deadline is a ``loop.call_at`` timer that calls ``Task.cancel`` and
the exit counts the request back out with ``Task.uncancel`` (what ``asyncio.timeout``
does); the cancellation is ours only if no other one was asked for meanwhile
(``Task.cancelling()`` back to its value at entry), so an enclosing anyio scope's
cancellation always reaches its scope. anyio's shielded scopes are honoured: a native
cancellation that falls due while the task is inside a shield opened after our entry
waits until the shield is gone (checked every millisecond, the rare case). On trio a
bare ``trio.CancelScope`` stands in for anyio's wrapper around one.
"""

from __future__ import annotations

import asyncio
import math
import sys
from typing import Any, Final, cast
from weakref import ref as _ref

__all__ = (
    "NATIVE",
    "Deadline",
    "Scope",
    "current_task",
    "get_running_loop",
    "move_after",
    "request_scope",
    "scope_of",
    "shielded",
    "trio_scope",
    "trio_scope_after",
)

#: Task.cancelling/uncancel exist (3.11+): the native path may be used on asyncio
NATIVE: Final = sys.version_info >= (3, 11)
#: the running asyncio loop, or None (on trio) without raising
get_running_loop = asyncio._get_running_loop
#: ``current_task(loop)``: C-level on 3.12+; on 3.11 the lookup asyncio's Python
#: ``current_task`` makes, without its frame
current_task: Any = (
    asyncio.current_task if sys.version_info >= (3, 12) else asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
)

_task_states: Any = None
_trio_cancel_scope: Any = None
_trio_now: Any = None
#: how often a cancellation held off by a shield looks again (seconds)
SHIELD_POLL: Final = 0.001


def scope_of(task: asyncio.Task[Any]) -> Any:
    """anyio's innermost cancel scope in ``task`` (None if it has none): the boundary
    below which a shield holds off our cancellation."""
    global _task_states
    states = _task_states
    if states is None:
        from anyio._backends._asyncio import _task_states as weak_states

        # the WeakKeyDictionary's own dict, read as its get() does, without its frame
        states = _task_states = cast(Any, weak_states).data
    state = states.get(_ref(task))
    return None if state is None else state.cancel_scope


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
        "_handle",
        "_loop",
        "_open",
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
        self._when = when = loop.time() + seconds
        self._handle: asyncio.Handle | None = (
            None if when == math.inf else loop.call_at(when, self._fire)
        )

    @property
    def deadline(self) -> float:
        return self._when

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._when = value
        if not self._open or self.expired:
            return  # closed, or already cancelled: nothing left to move
        handle = self._handle
        if handle is not None:
            handle.cancel()
        self._handle = None if value == math.inf else self._loop.call_at(value, self._fire)

    def _fire(self) -> None:
        task: asyncio.Task[Any] = self.task
        if task.done():
            self._handle = None
            return
        if shielded(task, self._boundary):
            self._handle = self._loop.call_at(self._loop.time() + SHIELD_POLL, self._fire)
            return
        self._handle = None
        self.expired = True
        task.cancel("brace: deadline exceeded")

    def close(self, cancelled: bool) -> bool:
        """Leave the deadline; True when the body ended (``cancelled``) in our
        cancellation alone. Idempotent."""
        self._open = False
        handle = self._handle
        if handle is not None:
            handle.cancel()
            self._handle = None
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

    __slots__ = ("cancel_called", "cancelled_caught")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: Any) -> None:
        super().__init__(loop, math.inf, task)  # no deadline until the request has a slot
        self.cancel_called = False
        self.cancelled_caught = False

    def after(self, seconds: float) -> None:
        """Move the deadline to ``seconds`` from now."""
        self.deadline = self._loop.time() + seconds

    def cancel(self) -> None:
        if self.cancel_called or not self._open:
            return
        self.cancel_called = True
        if self.expired:
            return  # its deadline cancelled it already
        handle = self._handle
        if handle is not None:
            handle.cancel()
        loop = self._loop
        if current_task(loop) is self.task:
            # the task cancels its own scope: at its next suspension, as anyio's would
            # (a body that ends before one is not cancelled, and leaves no cancellation
            # behind: closing the scope drops this call)
            self._handle = loop.call_soon(self._fire)
        else:
            self._handle = None
            self._fire()  # (a shield in the way holds it off, as at the deadline)

    def _fire(self) -> None:
        super()._fire()
        if self.expired:
            self.cancel_called = True

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
    loop = get_running_loop()
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
