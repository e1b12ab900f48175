"""The async surface shared by TokenBucket and SlidingWindow, and their queue of waiters.

Theory of operation
-------------------
A local limiter is a single-key core (``TokenBucketCore``, ``SlidingWindowCounterCore``
or ``SlidingLogCore``: pure, ``now`` in, decisions out) behind this shell.

*Fast path.* When nobody waits and the core admits, ``try_acquire``, ``acquire`` and
``async with`` consume at once and never reach the event loop: no checkpoint, no lock.
``async with`` builds no `Decision` at all.

*Waiting.* Otherwise the caller joins a first-come-first-served `WaiterQueue`.
Only its head sleeps, for the core's ``retry_after``, then asks the core again and
consumes atomically (no await between the check and the consumption). The others wait on
an event until the head leaves, granted or cancelled, and hands headship to the next
live waiter. Consumption happens only at grant time and nothing is reserved, so a
waiter cancelled at any moment has consumed nothing and leaves nothing behind; and
because nothing awaits between the grant and the return, a waiter either returns a
decision or raises, never both. A cancelled waiter that is not the head is only marked
gone (a tombstone) and dropped when it reaches the front, so leaving is O(1) amortized.

While anyone waits, nobody barges: ``try_acquire`` refuses with the core's estimate of
the wait behind the queue (``behind``), and ``acquire`` / ``async with`` join the queue.
A cost of 0 is a query: it is always allowed and never waits.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import anyio
from typing_extensions import ParamSpec

from ._clock import check_clock
from ._core._validate import check_cost
from ._core.decision import Decision
from ._events import EventHook, Refused, event_hook

__all__ = ("LimiterCore", "LimiterShell", "WaiterQueue", "check_clock")

P = ParamSpec("P")
T = TypeVar("T")

# The head never sleeps less than this: a wait of 1e-18 s added to a clock reading of
# 1e6 s would not move it, and the head would spin without time passing.
MIN_SLEEP = 1e-6


class LimiterCore(Protocol):
    """What the shell needs from a single-key core (every method takes ``now``)."""

    @property
    def limit(self) -> int: ...

    def try_acquire(self, now: float, cost: int = 1) -> Decision: ...

    def admit(self, now: float, cost: int = 1) -> bool: ...

    def grant(self, now: float, cost: int = 1) -> Decision | None: ...

    def behind(self, now: float, cost: int, queued: int) -> Decision: ...

    def retry_after(self, now: float, cost: int = 1) -> float: ...


CoreT = TypeVar("CoreT", bound=LimiterCore)


class _Waiter:
    __slots__ = ("cost", "event", "gone")

    def __init__(self, cost: int) -> None:
        self.cost = cost
        self.event: anyio.Event | None = None
        self.gone = False


class WaiterQueue:
    """First come, first served; only the head sleeps; cancellation consumes nothing.

    ``live`` and ``cost`` count the waiters still waiting and the cost they ask for;
    ``waited`` and ``cancelled`` count, since creation, the calls that had to wait and
    those that left without being granted (cancelled, or any other exception).
    """

    __slots__ = ("cancelled", "cost", "live", "waited", "waiters")

    def __init__(self) -> None:
        # Empty exactly when nobody waits: the head is always live (tombstones behind it
        # are dropped when they reach the front), which the shells' fast path relies on.
        self.waiters: deque[_Waiter] = deque()
        self.live = 0
        self.cost = 0
        self.waited = 0
        self.cancelled = 0

    async def wait(
        self,
        cost: int,
        grant: Callable[[int], Decision | None],
        retry_after: Callable[[int], float],
    ) -> Decision:
        """Wait for this caller's turn, then for ``grant(cost)`` to return a decision.

        ``grant`` consumes and returns the decision when the core admits, else ``None``;
        ``retry_after`` says how long the head should sleep before asking again.
        """
        waiter = _Waiter(cost)
        waiters = self.waiters
        waiters.append(waiter)
        self.live += 1
        self.cost += cost
        self.waited += 1
        try:
            if waiters[0] is not waiter:
                event = waiter.event = anyio.Event()
                await event.wait()
            while (decision := grant(cost)) is None:
                delay = retry_after(cost)
                await anyio.sleep(delay if delay > MIN_SLEEP else MIN_SLEEP)
        except BaseException:
            # Cancelled (or anything else) before the grant: nothing was consumed.
            self.cancelled += 1
            self._leave(waiter)
            raise
        self._leave(waiter)
        return decision

    def _leave(self, waiter: _Waiter) -> None:
        waiter.gone = True
        self.live -= 1
        self.cost -= waiter.cost
        waiters = self.waiters
        if waiters[0] is waiter:
            waiters.popleft()
            while waiters and waiters[0].gone:
                waiters.popleft()
            if waiters:
                # Every waiter behind the head made its event before its first await.
                event = waiters[0].event
                assert event is not None
                event.set()


class LimiterShell(Generic[CoreT]):
    """``try_acquire`` / ``acquire`` / ``async with`` / decorator / ``call`` over a core."""

    __slots__ = (
        "__weakref__",
        "_acquired",
        "_admit",
        "_clock",
        "_core",
        "_limit",
        "_name",
        "_on_event",
        "_queue",
        "_rejected",
        "_waiters",
    )

    #: what a refusal's event and log record name as the refusing primitive
    _source: ClassVar[str] = "limiter"
    _logger: ClassVar[logging.Logger] = logging.getLogger("brace.limiter")

    def __init__(
        self,
        core: CoreT,
        clock: Callable[[], float] | None,
        name: str | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        self._name = name
        self._on_event = event_hook(on_event)
        self._core = core
        self._limit = core.limit
        self._clock = check_clock(clock)
        self._queue = WaiterQueue()
        # For the fast path: the deque is empty exactly when nobody waits, and a bound
        # method saves a lookup.
        self._waiters = self._queue.waiters
        self._admit = core.admit
        self._acquired = 0
        self._rejected = 0

    @property
    def clock(self) -> Callable[[], float]:
        """The clock the limiter reads."""
        return self._clock

    def try_acquire(self, cost: int = 1) -> Decision:
        """Take ``cost`` now if it is available and nobody waits; never blocks.

        Args:
            cost: how much to take, an int from 0 (a query: always allowed, takes
                nothing) to the limit.

        Returns:
            The decision. When refused, nothing is taken and ``retry_after`` estimates
                the wait, behind the callers already waiting if there are any.

        Raises:
            TypeError: ``cost`` is not an int.
            ValueError: ``cost`` is negative or above the limit (it could never be taken).
        """
        if cost.__class__ is not int or cost < 0 or cost > self._limit:
            cost = check_cost(cost, self._limit)
        queue = self._queue
        if queue.live:
            decision = self._core.behind(self._clock(), cost, queue.cost)
        else:
            decision = self._core.try_acquire(self._clock(), cost)
        if decision.allowed:
            self._acquired += cost
        else:
            self._rejected += 1
            self._refused(decision)
        return decision

    def _refused(self, decision: Decision) -> None:
        """Report a refusal of ``try_acquire``: DEBUG log, then the ``on_event`` hooks."""
        self._logger.debug(
            "%s %r refused: retry after %.3f s", self._source, self._name, decision.retry_after
        )
        if self._on_event is not None:
            self._on_event(
                Refused(
                    self._name,
                    self._clock(),
                    "rate_limited",
                    self._source,
                    retry_after=decision.retry_after,
                )
            )

    @property
    def name(self) -> str | None:
        """The name given at construction (carried by events and log records)."""
        return self._name

    async def acquire(self, cost: int = 1) -> Decision:
        """Take ``cost``, waiting first come, first served until it is available.

        Does not reach the event loop when ``cost`` is available and nobody waits.
        Cancel-safe: a waiter cancelled at any moment has taken nothing.

        Args:
            cost: how much to take, an int from 0 (a query: returns at once) to the limit.

        Returns:
            The decision under which ``cost`` was taken (always allowed).

        Raises:
            TypeError: ``cost`` is not an int.
            ValueError: ``cost`` is negative or above the limit (it could never be taken).
        """
        if cost.__class__ is not int or cost < 0 or cost > self._limit:
            cost = check_cost(cost, self._limit)
        queue = self._queue
        if not queue.live:
            decision = self._core.grant(self._clock(), cost)
            if decision is not None:
                self._acquired += cost
                return decision
        elif not cost:
            return self._core.behind(self._clock(), 0, queue.cost)
        return await queue.wait(cost, self._grant, self._retry_after)

    async def __aenter__(self) -> None:
        """``acquire(1)``, building no decision (the fastest way to take one)."""
        if not self._waiters and self._admit(self._clock(), 1):
            self._acquired += 1
            return
        await self._queue.wait(1, self._grant, self._retry_after)

    async def __aexit__(self, *exc_info: object) -> None:
        """Nothing to give back: what was taken comes back with time."""

    def __call__(self, fn: Callable[P, Awaitable[T]], /) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate an async function so that every call first takes 1 (``acquire(1)``).

        The wrapper keeps the signature, name and docstring of ``fn``.
        """
        if not callable(fn):
            raise TypeError(f"fn must be an async callable, got {type(fn).__name__}")

        @functools.wraps(fn)
        async def limited(*args: P.args, **kwargs: P.kwargs) -> T:
            await self.__aenter__()
            return await fn(*args, **kwargs)

        return limited

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Take 1 (``acquire(1)``), then return ``await fn(*args, **kwargs)``."""
        await self.__aenter__()
        return await fn(*args, **kwargs)

    def _grant(self, cost: int) -> Decision | None:
        decision = self._core.grant(self._clock(), cost)
        if decision is not None:
            self._acquired += cost
        return decision

    def _retry_after(self, cost: int) -> float:
        return self._core.retry_after(self._clock(), cost)
