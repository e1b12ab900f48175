"""Timeout: cancel work that runs too long and raise :class:`brace.TimeoutExceeded`.

Each entry gets a deadline at the running loop's own cost (see ``_cancel``): on asyncio
3.11+ a ``loop.call_at`` timer that cancels the task, counted back out with
``Task.uncancel`` (what ``asyncio.timeout`` does); on trio a bare ``trio.CancelScope``;
on asyncio 3.10 an anyio ``CancelScope``. Only our own deadline becomes a
``TimeoutExceeded``: a cancellation from an enclosing scope (asked for before or together
with ours) reaches the caller unchanged, and an anyio shield opened inside the body holds
our cancellation off until it closes, as anyio's own scopes would.

``async with timeout:`` may be used by many tasks at once and nested in one task: the
open entries live in a per-instance ``ContextVar`` as a linked stack (on asyncio 3.11+,
cheaper, in a dict by task), so each task finds its own on exit.
"""

from __future__ import annotations

import functools
import logging
from asyncio import CancelledError
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import anyio
from typing_extensions import ParamSpec

from ._cancel import NATIVE, Deadline, current_task, running_loop, trio_scope_after
from ._core._validate import check_positive
from ._events import EventHook, Refused, event_hook, refusals
from ._exceptions import TimeoutExceeded

__all__ = ("Timeout", "TimeoutStatistics")

logger = logging.getLogger("brace.timeout")

P = ParamSpec("P")
T = TypeVar("T")

# A linked stack of the entries this task has open on one Timeout: (innermost, rest);
# an entry is a cancel scope (trio, asyncio 3.10) or None (a Timeout(None) has nothing
# to enter). On asyncio 3.11+ a Timeout with a limit keeps its Deadlines in _open.
_Stack = tuple[Any, "_Stack | None"]


@dataclass(frozen=True, slots=True)
class TimeoutStatistics:
    """``calls``: entries and calls started; ``timed_out``: how many ran out of time;
    ``refusals``: ``{"timeout": timed_out}``."""

    calls: int
    timed_out: int
    refusals: Mapping[str, int]


class Timeout:
    """Cancel the body after ``seconds`` and raise :class:`brace.TimeoutExceeded`.

    Use it as ``async with timeout:``, as a decorator, or as ``await timeout.call(fn,
    *args, **kwargs)``. ``seconds=None`` means no limit. The deadline is on the event
    loop's clock (``anyio.current_time()``), which is what virtual-time tests drive, so
    there is no ``clock=`` argument: a timeout is enforced by the loop, not measured.
    An instance is reusable and may be entered by many tasks at once.

    ``on_event``: a hook, or hooks, called with a `brace.events.Refused` (reason
    ``"timeout"``, ``time`` on the loop's clock) each time the body runs out of time,
    just before ``TimeoutExceeded`` is raised; timeouts are logged at DEBUG on
    ``brace.timeout``. ``name`` names the timeout in events and log records.
    """

    __slots__ = (
        "__weakref__",
        "_calls",
        "_name",
        "_on_event",
        "_open",
        "_scopes",
        "_seconds",
        "_timed_out",
    )

    def __init__(
        self,
        seconds: float | None,
        *,
        name: str | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
    ) -> None:
        self._seconds = None if seconds is None else check_positive(seconds, "seconds")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        self._name = name
        self._on_event = event_hook(on_event)
        self._scopes: ContextVar[_Stack | None] = ContextVar("brace.Timeout", default=None)
        # asyncio 3.11+: each task's innermost open Deadline (linked to the enclosing ones
        # by .outer); cheaper than the ContextVar. Bounded by the tasks inside right now.
        self._open: dict[Any, Deadline] = {}
        self._calls = 0
        self._timed_out = 0

    @property
    def seconds(self) -> float | None:
        """The limit in seconds, or ``None`` for no limit."""
        return self._seconds

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``; cancel it and raise ``TimeoutExceeded`` if it overruns."""
        self._calls += 1
        seconds = self._seconds
        if seconds is None:
            return await fn(*args, **kwargs)
        loop = running_loop()
        if loop is not None and NATIVE:
            deadline = Deadline(loop, seconds)
            try:
                result = await fn(*args, **kwargs)
            except CancelledError:
                if deadline.close(cancelled=True):
                    raise self._expired() from None
                raise
            except BaseException:
                deadline.close(cancelled=False)
                raise
            deadline.close(cancelled=False)
            return result
        if loop is None:
            scope = trio_scope_after(seconds)
        else:
            scope = anyio.CancelScope(deadline=loop.time() + seconds)
            scope.__enter__()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            if not scope.__exit__(type(error), error, error.__traceback__):
                raise
        else:
            scope.__exit__(None, None, None)
            return result
        # Reached only when our scope swallowed the cancellation its deadline caused.
        raise self._expired()

    async def __aenter__(self) -> None:
        self._calls += 1
        seconds = self._seconds
        entry: Any = None  # no limit: nothing to enter
        if seconds is not None:
            loop = running_loop()
            if loop is None:
                entry = trio_scope_after(seconds)
            elif NATIVE:
                deadline = Deadline(loop, seconds)
                task = deadline.task
                opened = self._open
                deadline.outer = opened.get(task)
                opened[task] = deadline
                return
            else:
                entry = anyio.CancelScope(deadline=loop.time() + seconds)
                entry.__enter__()
        scopes = self._scopes
        scopes.set((entry, scopes.get()))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if self._seconds is not None and NATIVE:
            loop = running_loop()
            if loop is not None:
                task = current_task(loop)
                opened = self._open
                deadline = opened.pop(task, None)
                if deadline is None:
                    raise RuntimeError("this Timeout was not entered in this task")
                if deadline.outer is not None:
                    opened[task] = deadline.outer
                if deadline.close(exc_type is not None and issubclass(exc_type, CancelledError)):
                    raise self._expired()
                return False
        scopes = self._scopes
        stack = scopes.get()
        if stack is None:
            raise RuntimeError("this Timeout was not entered in this task")
        entry, rest = stack
        scopes.set(rest)
        if entry is None:
            return False
        swallowed = entry.__exit__(exc_type, exc, traceback)
        if entry.cancelled_caught:
            raise self._expired()
        return bool(swallowed)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an ``async def`` so that every call runs under this timeout."""
        if not callable(fn):
            raise TypeError(f"fn must be an async callable, got {type(fn).__name__}")
        call = self.call

        @functools.wraps(fn)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            return await call(fn, *args, **kwargs)

        return timed

    def _expired(self) -> TimeoutExceeded:
        """Count and report one timeout; the exception to raise."""
        self._timed_out += 1
        logger.debug("timeout %r: the body ran over %s s", self._name, self._seconds)
        if self._on_event is not None:
            self._on_event(Refused(self._name, anyio.current_time(), "timeout", "timeout"))
        return TimeoutExceeded(timeout=self._seconds)

    @property
    def name(self) -> str | None:
        """The name given at construction (carried by events and log records)."""
        return self._name

    def statistics(self) -> TimeoutStatistics:
        return TimeoutStatistics(
            calls=self._calls,
            timed_out=self._timed_out,
            refusals=refusals(timeout=self._timed_out),
        )

    def __repr__(self) -> str:
        return f"Timeout({self._seconds!r})"
