"""SlidingWindow: one local sliding-window limiter (counter or exact log), on anyio."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from typing_extensions import Self

from ._core.window import SlidingLog, SlidingLogCore, SlidingWindowCounter, SlidingWindowCounterCore
from ._events import EventHook, refusals
from ._waiters import LimiterShell

__all__ = ("SlidingWindow", "SlidingWindowStatistics")

_WindowCore: TypeAlias = SlidingWindowCounterCore | SlidingLogCore


@dataclass(frozen=True, slots=True)
class SlidingWindowStatistics:
    """A snapshot of a `SlidingWindow`, from `SlidingWindow.statistics()`.

    Attributes:
        limit: the most admitted in any window.
        window: the length of the window, in seconds.
        exact: True for the exact sliding log, False for the two-window counter.
        remaining: how much more would be admitted now (waiters have not taken it).
        waiting: callers waiting in ``acquire`` now.
        waiting_cost: the cost those callers ask for.
        acquired: cost admitted since creation (by all calls together).
        rejected: ``try_acquire`` calls refused since creation.
        waited: ``acquire`` calls that had to wait, since creation.
        refusals: refusals by reason since creation: ``{"rate_limited": rejected}``.
        cancelled: waiting calls that left without being admitted (cancelled), since creation.
    """

    limit: int
    window: float
    exact: bool
    remaining: int
    waiting: int
    waiting_cost: int
    acquired: int
    rejected: int
    waited: int
    cancelled: int
    refusals: Mapping[str, int]


class SlidingWindow(LimiterShell[_WindowCore]):
    """At most ``limit`` admitted in any ``window`` seconds.

    By default a two-window counter: three numbers of state, and an estimate that
    assumes the previous fixed window's requests were spread evenly. Every fixed window
    (aligned on multiples of ``window``) admits at most ``limit``, and any ``window``
    seconds admit fewer than ``2 * limit`` (see `brace._core.window`). With
    ``exact=True`` it is the sliding log: it remembers every admission of the last
    ``window`` seconds (up to ``limit`` entries) and admits at most ``limit`` in every
    interval of ``window`` seconds, exactly.

    Non-blocking calls are sync, waiting is async and first come, first served:

    ```python
    window = SlidingWindow(60, 60.0)     # 60 a minute
    decision = window.try_acquire()      # a Decision; counts the request if allowed
    await window.acquire()               # waits its turn
    async with window: ...               # acquire(1)

    @window                              # acquire(1) before every call
    async def fetch(url: str) -> bytes: ...
    ```

    When there is room and nobody waits, ``try_acquire``, ``acquire`` and ``async with``
    complete without reaching the event loop. Waiting is cancel-safe: a cancelled waiter
    was never counted. While anyone waits, nobody jumps the queue: ``try_acquire`` is
    refused with an estimate of the wait behind the queue.

    Args:
        limit: the most admitted in a window, an int >= 1.
        window: the length of the window in seconds, a number > 0.
        exact: use the exact sliding log (memory O(limit)) instead of the counter.
        clock: a zero-argument callable returning monotonic seconds (default
            ``time.monotonic``; pass ``anyio.current_time`` on a virtual-time loop).
        name: a name for events and log records (default ``None``).
        on_event: a hook, or hooks, called with a `brace.events.Refused` (reason
            ``"rate_limited"``) for each refusal of ``try_acquire``; see ``docs/events.md``.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range.
    """

    __slots__ = ("_policy",)

    _source: ClassVar[str] = "sliding_window"
    _logger: ClassVar[logging.Logger] = logging.getLogger("brace.window")

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        exact: bool = False,
        clock: Callable[[], float] | None = None,
        name: str | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
    ) -> None:
        if not isinstance(exact, bool):
            raise TypeError(f"exact must be a bool, got {type(exact).__name__}")
        self._policy: SlidingWindowCounter | SlidingLog
        core: _WindowCore
        if exact:
            self._policy = log = SlidingLog(limit, window)
            core = log.core()
        else:
            self._policy = counter = SlidingWindowCounter(limit, window)
            core = SlidingWindowCounterCore(counter)
        super().__init__(core, clock, name, on_event)

    @classmethod
    def from_rate(
        cls,
        rate: str,
        *,
        exact: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> Self:
        """A window from a rate string: ``SlidingWindow.from_rate("20/15 minutes")``.

        ``"N/period"`` gives ``limit=N`` and ``window=period``.
        """
        from ._rate import parse_rate

        parsed = parse_rate(rate)
        return cls(parsed.limit, parsed.period, exact=exact, clock=clock)

    @property
    def policy(self) -> SlidingWindowCounter | SlidingLog:
        """The immutable parameters (what a keyed limiter reuses): counter or log."""
        return self._policy

    @property
    def limit(self) -> int:
        """The most admitted in a window."""
        return self._policy.limit

    @property
    def window(self) -> float:
        """The length of the window, in seconds."""
        return self._policy.window

    @property
    def exact(self) -> bool:
        """True for the exact sliding log, False for the two-window counter."""
        return isinstance(self._policy, SlidingLog)

    def remaining(self) -> int:
        """How much more would be admitted now, waiters or not."""
        return self._core.remaining(self._clock())

    def statistics(self) -> SlidingWindowStatistics:
        """A snapshot of the window's parameters, state and counters."""
        policy = self._policy
        queue = self._queue
        return SlidingWindowStatistics(
            limit=policy.limit,
            window=policy.window,
            exact=self.exact,
            remaining=self._core.remaining(self._clock()),
            waiting=queue.live,
            waiting_cost=queue.cost,
            acquired=self._acquired,
            rejected=self._rejected,
            waited=queue.waited,
            cancelled=queue.cancelled,
            refusals=refusals(rate_limited=self._rejected),
        )

    def __repr__(self) -> str:
        return (
            f"SlidingWindow(limit={self.limit!r}, window={self.window!r}, "
            f"exact={self.exact!r}, waiting={self._queue.live})"
        )
