from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from ._core.adaptive import AIMDCore, Gradient2Core, LimitCore, VegasCore
from ._events import Event, EventHook, event_hook

if TYPE_CHECKING:
    from ._executor import PriorityExecutor

__all__ = ("AdaptiveLimit", "AdaptiveLimitStatistics", "LimitChanged", "LimitHook")

logger = logging.getLogger("brace.adaptive")


@dataclass(frozen=True, slots=True)
class LimitChanged(Event):
    """Details of one change of the executor's concurrency by an :class:`AdaptiveLimit`.

    A `brace.events.Event` of kind ``"limit_change"``; ``name`` is the executor's name.
    """

    kind: ClassVar[str] = "limit_change"

    algorithm: str
    previous: int
    limit: int
    latency: float
    dropped: bool
    time: float  # pyright: ignore[reportIncompatibleMethodOverride]
    name: str | None = None  # pyright: ignore[reportIncompatibleMethodOverride]


class LimitHook(Protocol):
    """Called whenever an :class:`AdaptiveLimit` changes the concurrency."""

    def __call__(self, details: LimitChanged, /) -> None: ...


@dataclass(frozen=True, slots=True)
class AdaptiveLimitStatistics:
    """A snapshot of an :class:`AdaptiveLimit`: the limit, its bounds and how it moved."""

    algorithm: str
    limit: int
    estimate: float
    min_limit: int
    max_limit: int
    samples: int
    increases: int
    decreases: int


class AdaptiveLimit:
    """Moves a :class:`brace.PriorityExecutor`'s ``concurrency`` from observed latency.

    Build one with :meth:`gradient2`, :meth:`aimd` or :meth:`vegas` and pass it as
    ``PriorityExecutor(limit=...)``. Every completed piece of work reports its processing
    time (a per-call timeout counts as a drop). Samples are pooled for ``window`` seconds
    (at least ``min_samples`` of them); the limit moves at most once per window, within
    ``[min_limit, max_limit]``, and the executor's slots follow it at once.
    """

    __slots__ = (
        "_core",
        "_decreases",
        "_executor",
        "_increases",
        "_on_event",
        "_samples",
        "on_change",
    )

    def __init__(
        self,
        core: LimitCore,
        *,
        on_change: LimitHook | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
    ) -> None:
        if not isinstance(core, LimitCore):
            raise TypeError(f"core must be an AIMDCore, Gradient2Core or VegasCore, got {core!r}")
        self._core = core
        self._executor: PriorityExecutor | None = None
        self.on_change = on_change
        self._on_event = event_hook(on_event)
        self._samples = 0
        self._increases = 0
        self._decreases = 0

    @classmethod
    def gradient2(
        cls,
        *,
        initial: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        smoothing: float = 0.2,
        tolerance: float = 1.5,
        long_window: int = 600,
        queue_size: float = 4.0,
        window: float = 0.1,
        min_samples: int = 10,
        on_change: LimitHook | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
    ) -> AdaptiveLimit:
        """Netflix's Gradient2: follow the ratio of long-term to recent latency."""
        return cls(
            Gradient2Core(
                initial,
                min_limit,
                max_limit,
                smoothing=smoothing,
                tolerance=tolerance,
                long_window=long_window,
                queue_size=queue_size,
                window=window,
                min_samples=min_samples,
            ),
            on_change=on_change,
            on_event=on_event,
        )

    @classmethod
    def aimd(
        cls,
        *,
        initial: int = 10,
        min_limit: int = 1,
        max_limit: int = 200,
        backoff_ratio: float = 0.9,
        increase: float = 1.0,
        latency_threshold: float | None = None,
        window: float = 0.1,
        min_samples: int = 10,
        on_change: LimitHook | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
    ) -> AdaptiveLimit:
        """Additive increase, multiplicative decrease on drops or slow responses."""
        return cls(
            AIMDCore(
                initial,
                min_limit,
                max_limit,
                backoff_ratio=backoff_ratio,
                increase=increase,
                latency_threshold=latency_threshold,
                window=window,
                min_samples=min_samples,
            ),
            on_change=on_change,
            on_event=on_event,
        )

    @classmethod
    def vegas(
        cls,
        *,
        initial: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        alpha: float = 3.0,
        beta: float = 6.0,
        smoothing: float = 1.0,
        window: float = 0.1,
        min_samples: int = 10,
        on_change: LimitHook | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
    ) -> AdaptiveLimit:
        """TCP Vegas: estimate the service's internal queue from the latency floor."""
        return cls(
            VegasCore(
                initial,
                min_limit,
                max_limit,
                alpha=alpha,
                beta=beta,
                smoothing=smoothing,
                window=window,
                min_samples=min_samples,
            ),
            on_change=on_change,
            on_event=on_event,
        )

    @property
    def limit(self) -> int:
        """The number of slots the limit asks for now."""
        return self._core.slots

    def attach(self, executor: PriorityExecutor) -> None:
        """Take charge of ``executor.concurrency`` (done by ``PriorityExecutor(limit=...)``)."""
        if self._executor is not None and self._executor is not executor:
            raise ValueError("an AdaptiveLimit steers one executor; make one per executor")
        self._executor = executor
        executor.concurrency = self._core.slots

    def observe(self, latency: float, dropped: bool, now: float) -> None:
        """Take one completion into account (called by the executor)."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("this AdaptiveLimit is not attached to an executor")
        core = self._core
        self._samples += 1
        previous = executor.concurrency
        core.update(now, latency, executor._core.running, dropped)
        limit = core.slots
        if limit != previous:
            if limit > previous:
                self._increases += 1
            else:
                self._decreases += 1
            executor.concurrency = limit
            # DEBUG, not INFO: the limit may move every ``window`` seconds
            logger.debug("adaptive limit (%s): %d -> %d slots", core.name, previous, limit)
            hook = self.on_change
            if hook is not None or self._on_event is not None:
                change = LimitChanged(
                    core.name, previous, limit, latency, dropped, now, executor.name
                )
                if hook is not None:
                    hook(change)
                if self._on_event is not None:
                    self._on_event(change)

    def statistics(self) -> AdaptiveLimitStatistics:
        """A snapshot of the limit and how often it moved."""
        core = self._core
        return AdaptiveLimitStatistics(
            algorithm=core.name,
            limit=core.slots,
            estimate=core.limit,
            min_limit=core.min_limit,
            max_limit=core.max_limit,
            samples=self._samples,
            increases=self._increases,
            decreases=self._decreases,
        )

    def __repr__(self) -> str:
        return f"AdaptiveLimit({self._core.name}, limit={self._core.slots})"
