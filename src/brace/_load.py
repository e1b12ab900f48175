"""LoadMonitor: event-loop lag measured by a sampling task, and probabilistic shedding.

The decisions (smoothing, the shedding ramp) are :class:`brace._core.load.LoadCore`'s; the
shell owns the sampling task, the clock and the random numbers.
"""

from __future__ import annotations

import functools
import logging
import random as _random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import anyio
import anyio.abc
from typing_extensions import ParamSpec

from ._clock import check_clock
from ._core._validate import check_positive, check_random
from ._core.backoff import RandomSource
from ._core.load import LoadCore
from ._events import EventHook, Refused, event_hook
from ._exceptions import Overloaded

logger = logging.getLogger("brace.load")

__all__ = ("LoadMonitor", "LoadMonitorStatistics")

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LoadMonitorStatistics:
    """A snapshot of a :class:`LoadMonitor`: the smoothed ``lag``, the ``last_lag`` and
    ``peak_lag`` samples (seconds), ``max_lag``, the current ``shed_probability``, the
    totals of ``samples`` taken, ``checks`` made and work ``shed``, and the
    ``uncounted_lag``: lateness the loop's own work cannot explain."""

    lag: float
    last_lag: float
    peak_lag: float
    max_lag: float
    shed_probability: float
    samples: int
    checks: int
    shed: int
    #: seconds of lateness the sampler measured but did not count, because the loop's
    #: thread was not running then (see ``cpu_clock``)
    uncounted_lag: float = 0.0


class LoadMonitor:
    """Measures how late the event loop runs and sheds new work when it runs too late.

    A task started with :meth:`run` sleeps ``interval`` seconds at a time and records how
    late it woke (the loop's lag), smoothed with weight ``smoothing`` per sample. New work
    is shed with probability 0 while the smoothed lag is at most ``max_lag``, rising in a
    straight line to 1 at ``2 * max_lag``. :meth:`should_shed` answers without raising,
    :meth:`check` raises :class:`Overloaded` (``retry_after`` seconds). ``random`` is a
    zero-argument callable returning a float in [0, 1) (inject one for tests).

    Only lateness the loop's own work can explain is counted: a sample is at most the CPU
    time the loop's thread used while the sampler slept (``cpu_clock``, default
    :func:`time.thread_time` when ``clock`` is the default). A loop that woke late because
    the operating system ran other processes (a busy neighbour, a stalled virtual machine)
    is not overloaded, and shedding its work would not make it faster. With an injected
    ``clock`` and no ``cpu_clock`` every late second counts.
    """

    __slots__ = (
        "__weakref__",
        "_checks",
        "_clock",
        "_core",
        "_cpu_clock",
        "_interval",
        "_on_event",
        "_random",
        "_shed",
        "_uncounted",
        "retry_after",
    )

    def __init__(
        self,
        max_lag: float = 0.1,
        *,
        interval: float = 0.1,
        smoothing: float = 0.3,
        retry_after: float = 1.0,
        random: RandomSource | None = None,
        clock: Callable[[], float] | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
        cpu_clock: Callable[[], float] | None = None,
    ) -> None:
        self._core = LoadCore(max_lag, smoothing=smoothing)
        self._on_event = event_hook(on_event)
        self._interval = check_positive(interval, "interval")
        self.retry_after = check_positive(retry_after, "retry_after")
        check_random(random)
        self._random: Callable[[], float] = _random.random if random is None else random.random
        real_clock = clock is None
        self._clock: Callable[[], float] = check_clock(clock)
        if cpu_clock is not None and not callable(cpu_clock):
            raise TypeError(f"cpu_clock must be a zero-argument callable, got {cpu_clock!r}")
        if cpu_clock is None and real_clock:
            cpu_clock = time.thread_time
        self._cpu_clock = cpu_clock
        self._uncounted = 0.0
        self._checks = 0
        self._shed = 0

    @property
    def lag(self) -> float:
        """The smoothed event-loop lag in seconds."""
        return self._core.lag

    @property
    def shed_probability(self) -> float:
        """The probability that :meth:`should_shed` answers True right now."""
        return self._core.probability

    def should_shed(self) -> bool:
        """Shed this piece of work? Never waits; True with :attr:`shed_probability`."""
        self._checks += 1
        core = self._core
        if core.probability and core.should_shed(self._random()):
            self._shed += 1
            return True
        return False

    def check(self) -> None:
        """Raise :class:`Overloaded` if this piece of work is to be shed."""
        if self.should_shed():
            logger.debug("load monitor: shedding work (lag %.3f s)", self._core.lag)
            if self._on_event is not None:
                self._on_event(
                    Refused(None, self._clock(), "load", "load_monitor", self.retry_after)
                )
            raise Overloaded(
                f"event loop lag {self._core.lag:.3f} s over {self._core.max_lag} s",
                retry_after=self.retry_after,
            )

    def observe(self, lag: float) -> None:
        """Record one lag sample by hand (what :meth:`run` does every ``interval``)."""
        if isinstance(lag, bool) or not isinstance(lag, (int, float)):
            raise TypeError(f"lag must be a number of seconds, got {type(lag).__name__}")
        self._core.observe(lag, self._clock())

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Sample the loop's lag every ``interval`` until cancelled (start it in a task group)."""
        clock = self._clock
        cpu_clock = self._cpu_clock
        interval = self._interval
        core = self._core
        task_status.started()
        if cpu_clock is None:
            while True:
                asked = clock()
                await anyio.sleep(interval)
                now = clock()
                core.observe(now - asked - interval, now)
        while True:
            asked = clock()
            ran = cpu_clock()
            await anyio.sleep(interval)
            now = clock()
            lag = now - asked - interval
            # the loop's own work cannot have made it later than the time it ran
            own = min(lag, cpu_clock() - ran)
            if own < lag:
                self._uncounted += lag - max(own, 0.0)
            core.observe(own, now)

    async def __aenter__(self) -> None:
        self.check()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args, **kwargs)`` unless the work is shed (:class:`Overloaded`)."""
        self.check()
        return await fn(*args, **kwargs)

    def __call__(self, fn: Callable[P, Awaitable[T]], /) -> Callable[P, Awaitable[T]]:
        """Decorate an async function: each call may be shed with :class:`Overloaded`."""

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            self.check()
            return await fn(*args, **kwargs)

        return wrapper

    def statistics(self) -> LoadMonitorStatistics:
        """The smoothed and raw lag, the shedding probability and the counters."""
        core = self._core
        return LoadMonitorStatistics(
            lag=core.lag,
            last_lag=core.last_lag,
            peak_lag=core.peak_lag,
            max_lag=core.max_lag,
            shed_probability=core.probability,
            samples=core.samples,
            checks=self._checks,
            shed=self._shed,
            uncounted_lag=self._uncounted,
        )

    def __repr__(self) -> str:
        core = self._core
        return f"LoadMonitor(lag={core.lag:.4f}, max_lag={core.max_lag})"
