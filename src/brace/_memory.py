"""MemoryGuard: the async shell around :class:`brace._core.memory.MemoryLevelsCore`.

The hot path reads a cached level: the probe is sampled at most once per ``interval``
(lazily, by the first check after the interval passed, or by :meth:`MemoryGuard.run` in
the background). Everything that decides is the core's; the shell reads the clock,
calls the probe, runs the garbage collector when told, and waits or raises.
"""

from __future__ import annotations

import functools
import gc
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar, overload

import anyio
from typing_extensions import ParamSpec

from ._clock import check_clock
from ._core._inline import inline_steps
from ._core._validate import check_positive
from ._core.memory import MemoryAdmission, MemoryLevel, MemoryLevelsCore, memory_admission
from ._done import DONE
from ._events import Event, EventHook, Reason, Refused, event_hook
from ._exceptions import MemoryPressure, QueueFull
from ._priority import Priority, check_priority
from ._probes import MemoryProbe, MemorySample, ProcessMemoryProbe

if TYPE_CHECKING:
    from ._executor import PriorityExecutor

__all__ = (
    "MemoryAdmission",
    "MemoryGuard",
    "MemoryGuardStatistics",
    "MemoryHook",
    "MemoryLevel",
    "MemoryLevelChange",
)

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("brace.memory")

_NORMAL = MemoryLevel.NORMAL
_HIGH = MemoryLevel.HIGH
_CRITICAL = MemoryLevel.CRITICAL


_ADMIT = MemoryAdmission.ADMIT


@dataclass(frozen=True, slots=True)
class MemoryLevelChange(Event):
    """The details passed to hooks when the level changes: from ``previous`` to ``level``
    on a sample of ``usage`` bytes (of ``limit``), at clock time ``at``; ``name``: the
    guard's name. A `brace.events.Event` of kind ``"memory_level_change"`` (``time`` is
    ``at``)."""

    kind: ClassVar[str] = "memory_level_change"

    previous: MemoryLevel
    level: MemoryLevel
    usage: int
    limit: int | None
    at: float
    name: str | None = None  # pyright: ignore[reportIncompatibleMethodOverride]

    @property
    def time(self) -> float:
        """The clock reading of the change (``at``), as every event has it."""
        return self.at


class MemoryHook(Protocol):
    """Called with the details of each level change; exceptions it raises are logged."""

    def __call__(self, change: MemoryLevelChange, /) -> object: ...


@dataclass(frozen=True, slots=True)
class MemoryGuardStatistics:
    """A snapshot of a :class:`MemoryGuard`.

    ``usage`` / ``limit`` / ``pressure`` come from the last sample; ``high``,
    ``critical``, ``low`` are the thresholds in bytes for that sample's limit (``None``:
    that level is off or its fraction has no limit to resolve against). Counts of work:
    ``admitted`` (let through, at once or after waiting), ``queued`` (told to wait),
    ``rejected`` (refused, at once or while waiting), and ``waiting`` (waiting now, in
    :meth:`MemoryGuard.wait_admitted` and the forms built on it; a waiter cancelled while
    waiting is neither admitted nor rejected). ``collections``: garbage collections the
    guard ran; ``probe_errors``: samples whose probe raised (the level is then kept).
    """

    level: MemoryLevel
    usage: int
    limit: int | None
    pressure: float | None
    high: float | None
    critical: float | None
    low: float | None
    samples: int
    level_changes: int
    admitted: int
    queued: int
    rejected: int
    waiting: int
    collections: int
    probe_errors: int


class MemoryGuard:
    """Sheds work when the process runs short of memory: levels NORMAL / HIGH / CRITICAL.

    Thresholds ``high``, ``critical`` (optional) and ``low`` (hysteresis: HIGH ends only
    below it; default 90 % of ``high``) are bytes (``int``) or fractions of the probe's
    limit (``float`` in ``(0, 1]``, e.g. ``high=0.8`` of the container's memory). ``probe``
    is any callable returning a :class:`brace.MemorySample` or bytes; the default is a
    :class:`brace.ProcessMemoryProbe` (resident set size). It is sampled at most every
    ``interval`` seconds.

    At HIGH, work of priority ``shed_priority`` or less urgent (default
    :attr:`Priority.LOW <brace.Priority.LOW>`) waits until memory recovers
    (``on_high="queue"``) or is refused (``on_high="shed"``); at CRITICAL every new piece of
    work is refused with :class:`brace.MemoryPressure` (``retry_after`` defaults to
    ``interval``, at least one second). Optional garbage collection: ``collect_on_high``
    (seconds: run ``gc.collect()`` on entering HIGH, at most once per that many seconds) and
    ``collect_interval`` (seconds: collect periodically); both off by default.
    ``pressure_high`` (percent of "some avg10" pressure stall, when the probe reports
    it) holds the level at HIGH while the kernel reports memory stalls.
    """

    __slots__ = (
        "__weakref__",
        "_admitted",
        "_bounds",
        "_clock",
        "_collections",
        "_core",
        "_hooks",
        "_interval",
        "_last",
        "_lazy",
        "_level",
        "_name",
        "_next_sample",
        "_on_event",
        "_probe",
        "_probe_errors",
        "_queue_timeout",
        "_queued",
        "_rejected",
        "_samples",
        "_shed_priority",
        "_shedding",
        "_waiting",
        "default_priority",
        "retry_after",
    )

    def __init__(
        self,
        high: float,
        *,
        critical: float | None = None,
        low: float | None = None,
        probe: MemoryProbe | Callable[[], MemorySample | int] | None = None,
        interval: float = 1.0,
        on_high: Literal["queue", "shed"] = "queue",
        shed_priority: int = Priority.LOW,
        default_priority: int = Priority.MEDIUM,
        queue_timeout: float | None = None,
        retry_after: float | None = None,
        pressure_high: float | None = None,
        collect_on_high: float | None = None,
        collect_interval: float | None = None,
        on_change: MemoryHook | Iterable[MemoryHook] = (),
        clock: Callable[[], float] | None = None,
        name: str | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        self._name = name
        self._on_event = event_hook(on_event)
        self._core = MemoryLevelsCore(
            high,
            critical=critical,
            low=low,
            pressure_high=pressure_high,
            collect_on_high=collect_on_high,
            collect_interval=collect_interval,
        )
        if probe is not None and not callable(probe):
            raise TypeError(f"probe must be a zero-argument callable, got {probe!r}")
        self._probe: Callable[[], MemorySample | int] = (
            ProcessMemoryProbe() if probe is None else probe
        )
        self._interval = check_positive(interval, "interval")
        if on_high not in ("queue", "shed"):
            raise ValueError(f"on_high must be 'queue' or 'shed', got {on_high!r}")
        self._shedding = on_high == "shed"
        self._shed_priority = check_priority(shed_priority, "shed_priority")
        self.default_priority = check_priority(default_priority, "default_priority")
        self._queue_timeout = (
            None if queue_timeout is None else check_positive(queue_timeout, "queue_timeout")
        )
        self.retry_after = (
            max(self._interval, 1.0)
            if retry_after is None
            else check_positive(retry_after, "retry_after")
        )
        hooks = (on_change,) if callable(on_change) else tuple(on_change)
        if not all(callable(hook) for hook in hooks):
            raise TypeError("on_change must be a callable or an iterable of callables")
        self._hooks: tuple[MemoryHook, ...] = hooks
        clock = check_clock(clock)
        self._clock: Callable[[], float] = time.monotonic if clock is None else clock
        self._level = _NORMAL
        self._last = MemorySample(0)
        self._next_sample = float("-inf")  # the first check samples
        self._lazy = True  # checks sample on their own; False while run() samples
        self._samples = 0
        self._admitted = 0
        self._queued = 0
        self._rejected = 0
        self._waiting = 0
        # executors given this guard (guard=): their queue bounds the work held here
        self._bounds: tuple[weakref.ref[PriorityExecutor], ...] = ()
        self._collections = 0
        self._probe_errors = 0

    # -- the hot path --------------------------------------------------------------------

    @property
    def level(self) -> MemoryLevel:
        """The memory level, sampled at most once per ``interval``."""
        if self._lazy and self._clock() >= self._next_sample:
            self.sample()
        return self._level

    @inline_steps
    def admit(self, priority: int | None = None) -> MemoryAdmission:
        """What to do with new work of this priority (``default_priority`` when omitted).

        ``ADMIT`` at NORMAL; at HIGH, ``QUEUE`` (or ``REJECT`` with ``on_high="shed"``)
        for work at ``shed_priority`` or less urgent, ``ADMIT`` for the rest; ``REJECT``
        at CRITICAL. Never waits and never raises.
        """
        if self._lazy and self._clock() >= self._next_sample:
            self.sample()
        level = self._level
        work = self.default_priority if priority is None else priority
        admission = memory_admission(level, work, self._shed_priority, self._shedding)
        if admission is _ADMIT:
            self._admitted += 1
        elif admission is MemoryAdmission.REJECT:
            self._rejected += 1
        else:
            self._queued += 1
        return admission

    def check(self, priority: int | None = None) -> MemoryAdmission:
        """Like :meth:`admit`, but raise :class:`brace.MemoryPressure` instead of ``REJECT``."""
        admission = self.admit(priority)
        if admission is MemoryAdmission.REJECT:
            raise self._pressure_error()
        return admission

    # -- sampling ------------------------------------------------------------------------

    def sample(self) -> MemoryLevel:
        """Read the probe now (whatever the interval), update the level and return it."""
        now = self._clock()
        self._next_sample = now + self._interval
        try:
            reading = self._probe()
            sample = reading if isinstance(reading, MemorySample) else MemorySample(int(reading))
        except Exception:
            self._probe_errors += 1
            logger.exception("memory probe %r raised; keeping level %s", self._probe, self._level)
            return self._level
        self._samples += 1
        self._last = sample
        core = self._core
        previous = self._level
        level = core.update(sample.usage, sample.limit, now, pressure=sample.pressure)
        self._level = level
        if level is not previous:
            change = MemoryLevelChange(previous, level, sample.usage, sample.limit, now, self._name)
            logger.log(
                logging.INFO if level is _NORMAL else logging.WARNING,
                "memory guard %r: %s -> %s (%d bytes in use)",
                self._name,
                previous.name,
                level.name,
                sample.usage,
            )
            for hook in self._hooks:
                _call_hook(hook, change)
            if self._on_event is not None:
                self._on_event(change)
        if core.should_collect(previous, now):
            self._collections += 1
            gc.collect()
        return level

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Sample every ``interval`` until cancelled (start it in a task group).

        Optional: without it, checks sample lazily. With it, the level (and the periodic
        garbage collection) stays current even while no request comes in.
        """
        self._core.start(self._clock())
        self.sample()
        self._lazy = False
        try:
            task_status.started()
            while True:
                await anyio.sleep(self._interval)
                self.sample()
        finally:
            self._lazy = True

    # -- waiting forms -------------------------------------------------------------------

    def wait_admitted(self, priority: int | None = None) -> Awaitable[None]:
        """``await guard.wait_admitted(priority)`` returns once work of this priority may
        start; raises :class:`brace.MemoryPressure` if it is refused (CRITICAL, shedding,
        or ``queue_timeout`` passed while waiting). (A plain method: admitted work awaits
        a finished awaitable, no coroutine.)"""
        admission = self.admit(priority)
        if admission is MemoryAdmission.ADMIT:
            return DONE
        if admission is MemoryAdmission.REJECT:
            raise self._pressure_error()
        return self.hold()

    def bind(self, executor: PriorityExecutor) -> None:
        """Let ``executor``'s queue bound the work held here (``PriorityExecutor(guard=)``)."""
        alive = tuple(ref for ref in self._bounds if ref() is not None)
        self._bounds = (*alive, weakref.ref(executor))

    def _limits(self) -> tuple[int | None, float | None]:
        """The tightest queue bound and wait timeout of the executors this guard is given to."""
        room: int | None = None
        timeout = self._queue_timeout
        for ref in self._bounds:
            executor = ref()
            if executor is None:
                continue
            free, queue_timeout = executor.queue_bounds()
            room = free if room is None else min(room, free)
            if queue_timeout is not None:
                timeout = queue_timeout if timeout is None else min(timeout, queue_timeout)
        return room, timeout

    async def hold(self) -> None:
        """Wait, after ``admit`` said QUEUE, until memory is back to NORMAL (or refuse).

        Given to executors (``guard=``), held work counts against their ``max_queue``
        (:class:`brace.QueueFull` once held work and their queue fill it) and their
        ``queue_timeout`` (:class:`brace.MemoryPressure` once held that long)."""
        timeout = self._queue_timeout
        if self._bounds:
            room, timeout = self._limits()
            if room is not None and self._waiting >= room:
                self._rejected += 1
                self._refused("queue_full")
                raise QueueFull(
                    "queue full: work held back by memory pressure fills it",
                    retry_after=self.retry_after,
                )
        deadline = None if timeout is None else self._clock() + timeout
        self._waiting += 1
        try:
            while True:
                now = self._clock()
                wake = max(self._next_sample, now)
                if deadline is not None and wake > deadline:
                    await anyio.sleep(max(deadline - now, 0.0))
                    self._rejected += 1
                    raise self._pressure_error()
                await anyio.sleep(wake - now)
                level = self.level
                if level is _CRITICAL:
                    self._rejected += 1
                    raise self._pressure_error()
                if level is _NORMAL:
                    self._admitted += 1
                    return
        finally:
            self._waiting -= 1

    def admitted(self, priority: int | None = None) -> _Admitted:
        """``async with guard.admitted(Priority.LOW): ...`` waits or raises like
        :meth:`wait_admitted`, then runs the block."""
        return _Admitted(self, priority)

    async def __aenter__(self) -> None:
        await self.wait_admitted()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args, **kwargs)`` once the guard admits it (at ``default_priority``)."""
        await self.wait_admitted()
        return await fn(*args, **kwargs)

    @overload
    def __call__(self, fn: Callable[P, Awaitable[T]], /) -> Callable[P, Awaitable[T]]: ...

    @overload
    def __call__(
        self, *, priority: int | None = None
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]: ...

    def __call__(
        self, fn: Callable[..., Awaitable[Any]] | None = None, *, priority: int | None = None
    ) -> Any:
        """Decorate an async function: ``@guard`` or ``@guard(priority=Priority.LOW)``."""
        if priority is not None:
            check_priority(priority, "priority")

        def decorate(function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
            @functools.wraps(function)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                await self.wait_admitted(priority)
                return await function(*args, **kwargs)

            return wrapper

        return decorate if fn is None else decorate(fn)

    # -- statistics ----------------------------------------------------------------------

    @property
    def held(self) -> int:
        """Tasks held back now, waiting for memory to come back to NORMAL."""
        return self._waiting

    def statistics(self) -> MemoryGuardStatistics:
        """The last sample, the thresholds it resolved to, and the counters."""
        core = self._core
        thresholds = core.thresholds
        last = self._last
        return MemoryGuardStatistics(
            level=self._level,
            usage=last.usage,
            limit=last.limit,
            pressure=last.pressure,
            high=thresholds.high,
            critical=thresholds.critical,
            low=thresholds.low,
            samples=self._samples,
            level_changes=core.changes,
            admitted=self._admitted,
            queued=self._queued,
            rejected=self._rejected,
            waiting=self._waiting,
            collections=self._collections,
            probe_errors=self._probe_errors,
        )

    def __repr__(self) -> str:
        return f"MemoryGuard(level={self._level.name}, usage={self._last.usage})"

    def _refused(self, reason: Reason) -> None:
        """Report one refusal raised to a caller (DEBUG log, ``on_event`` hooks)."""
        logger.debug("memory guard %r refused work (%s)", self._name, reason)
        if self._on_event is not None:
            self._on_event(
                Refused(self._name, self._clock(), reason, "memory_guard", self.retry_after)
            )

    @property
    def name(self) -> str | None:
        """The name given at construction (carried by events and log records)."""
        return self._name

    def _pressure_error(self) -> MemoryPressure:
        self._refused("memory")
        last = self._last
        return MemoryPressure(
            f"memory {self._level.name}: {last.usage} bytes in use", retry_after=self.retry_after
        )


class _Admitted:
    __slots__ = ("_guard", "_priority")

    def __init__(self, guard: MemoryGuard, priority: int | None) -> None:
        self._guard = guard
        self._priority = None if priority is None else check_priority(priority, "priority")

    async def __aenter__(self) -> None:
        await self._guard.wait_admitted(self._priority)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


def _call_hook(hook: MemoryHook, change: MemoryLevelChange) -> None:
    try:
        hook(change)
    except Exception:
        logger.exception("memory guard: level-change hook %r raised", hook)
