"""Events: what every primitive tells its ``on_event`` hooks, and how it tells them.

Theory of operation: a primitive built with ``on_event=`` (a callable, or an iterable of
callables) keeps one callable in ``self._on_event`` (``None`` without hooks; several hooks
are wrapped in one fan-out). An event is built only on a path that is not the success
path (a refusal, a state change, a retry, a fallback...), and only after an
``if self._on_event is not None:`` check, so a primitive without hooks pays that one
check and nothing else. Every event is a frozen, slotted dataclass deriving from
:class:`Event`: ``kind`` (a class constant), ``name`` (the primitive's name) and ``time``
(the primitive's clock reading when it happened).

Hooks observe: what an ``on_event`` hook raises (an ``Exception``) is logged with its
traceback on the primitive's logger and swallowed, so an observer can never change the
outcome of a call. The older per-primitive hooks (``on_retry``, ``on_fallback``,
``on_hedge``, ``on_inject``) keep their documented behaviour (what they raise reaches the
caller); ``on_state_change`` and ``on_change`` log and swallow like ``on_event``.

Refusals have a closed set of reasons (:data:`REASONS`); each primitive that refuses
counts them in the ``refusals`` mapping of its statistics and reports each refusal once,
as a :class:`Refused` event and a DEBUG record on its ``brace.<primitive>`` logger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

from typing_extensions import TypeAliasType

if TYPE_CHECKING:
    import logging

__all__ = (
    "REASONS",
    "Event",
    "EventHook",
    "FaultInjected",
    "Reason",
    "Refused",
    "ShutdownStarted",
    "SlowRequest",
)

Reason = TypeAliasType(
    "Reason",
    Literal[
        "rate_limited",
        "queue_full",
        "dropped",
        "queue_timeout",
        "memory",
        "load",
        "shutting_down",
        "circuit_open",
        "timeout",
    ],
)
"""Why a call was refused (the ``reason`` of :class:`Refused`, a key of ``refusals``)."""

REASONS: tuple[Reason, ...] = (
    "rate_limited",
    "queue_full",
    "dropped",
    "queue_timeout",
    "memory",
    "load",
    "shutting_down",
    "circuit_open",
    "timeout",
)
"""Every refusal reason, in a fixed order."""


class Event:
    """The base of every event: ``kind``, ``name`` and ``time``.

    ``kind`` is a class constant (``"refused"``, ``"state_change"``, ``"retry"``...);
    ``name`` is the name of the primitive that emitted the event (``None`` or ``""``
    when it has none); ``time`` is that primitive's clock reading (its ``clock=``, or
    the event loop's clock for the primitives that have no ``clock=``). Subclasses are
    frozen, slotted dataclasses; dispatch on the class (``match event: case Refused():``)
    or on ``kind``.
    """

    __slots__ = ()

    kind: ClassVar[str] = "event"

    # Read-only for type checkers; each subclass provides them as frozen dataclass fields
    # (or a property reading ``at``). pyright reports any field that overrides a property
    # (reportIncompatibleMethodOverride), whatever its type, so each such field carries
    # an ignore for that rule alone; mypy checks the fields' types against these.
    if TYPE_CHECKING:

        @property
        def name(self) -> str | None: ...

        @property
        def time(self) -> float: ...


class EventHook(Protocol):
    """An ``on_event`` hook: called synchronously with each event; what it raises is
    logged and swallowed."""

    def __call__(self, event: Event, /) -> object: ...


@dataclass(frozen=True, slots=True)
class Refused(Event):
    """A call was refused (or, for ``"timeout"``, cut short) and the caller got an error.

    ``source`` is the kind of primitive that refused (``"rate_limiter"``,
    ``"token_bucket"``, ``"sliding_window"``, ``"executor"``, ``"circuit_breaker"``,
    ``"timeout"``, ``"memory_guard"``, ``"pipeline"``, ``"client"``); ``retry_after`` its
    estimate of when to try again (``None``: none); ``key`` the rate-limit key (limiters)
    or the host (client); ``priority`` the work's priority (executor, pipeline); ``rule``
    the route rule's name (pipeline).
    """

    kind: ClassVar[str] = "refused"

    name: str | None  # pyright: ignore[reportIncompatibleMethodOverride]
    time: float  # pyright: ignore[reportIncompatibleMethodOverride]
    reason: Reason
    source: str
    retry_after: float | None = None
    key: str | None = None
    priority: int | None = None
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class SlowRequest(Event):
    """An HTTP request took longer than the pipeline's ``slow_request`` seconds.

    ``name`` is the rule's name; ``duration`` the seconds it took; ``status`` the
    response's status (0: none was sent).
    """

    kind: ClassVar[str] = "slow_request"

    name: str | None  # pyright: ignore[reportIncompatibleMethodOverride]
    time: float  # pyright: ignore[reportIncompatibleMethodOverride]
    method: str
    path: str
    duration: float
    status: int


@dataclass(frozen=True, slots=True)
class ShutdownStarted(Event):
    """A :class:`brace.GracefulShutdown` started: ``signal`` is the signal's number, or
    ``None`` when :meth:`~brace.GracefulShutdown.begin` was called directly."""

    kind: ClassVar[str] = "shutdown_started"

    name: str | None  # pyright: ignore[reportIncompatibleMethodOverride]
    time: float  # pyright: ignore[reportIncompatibleMethodOverride]
    signal: int | None


@dataclass(frozen=True, slots=True)
class FaultInjected(Event):
    """A chaos strategy injected a fault: ``fault`` is ``"latency"``, ``"exception"``,
    ``"outcome"`` or ``"behavior"``; ``injected`` is the fault itself (see
    :class:`brace.chaos.ChaosDetails`, what the ``on_inject`` hook receives)."""

    kind: ClassVar[str] = "fault_injected"

    name: str | None  # pyright: ignore[reportIncompatibleMethodOverride]
    time: float  # pyright: ignore[reportIncompatibleMethodOverride]
    fault: str
    injected: object


# -- for the primitives -----------------------------------------------------------------


def event_hook(value: object, name: str = "on_event") -> Callable[[Event], None] | None:
    """One callable for ``on_event=``: ``None`` without hooks; a callable or an iterable
    of callables otherwise (checked here, so bad configuration fails at construction)."""
    if value is None:
        return None
    if callable(value):
        hooks: tuple[Callable[[Event], object], ...] = (value,)
    else:
        try:
            hooks = tuple(value)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"{name} must be a callable, an iterable of callables or None, got {value!r}"
            ) from None
        for hook in hooks:
            if not callable(hook):
                raise TypeError(f"{name} must hold callables only, got {hook!r}")
        if not hooks:
            return None
    return _Hooks(hooks)


class _Hooks:
    """Calls each hook in turn; what one raises is logged and the next still runs."""

    __slots__ = ("hooks",)

    def __init__(self, hooks: tuple[Callable[[Event], object], ...]) -> None:
        self.hooks = hooks

    def __call__(self, event: Event) -> None:
        for hook in self.hooks:
            try:
                hook(event)
            except Exception:
                _logger_of(event).exception("on_event hook %r raised on %r", hook, event)


def combine(*hooks: Callable[[Event], None] | None) -> Callable[[Event], None] | None:
    """One hook calling each given hook (``None`` ones left out)."""
    present = tuple(hook for hook in hooks if hook is not None)
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return _Hooks(present)


def hooks_of(hook: Callable[[Event], None] | None) -> tuple[Callable[[Event], object], ...]:
    """The hooks behind ``hook`` (what a replica or a copy passes on)."""
    if hook is None:
        return ()
    if isinstance(hook, _Hooks):
        return hook.hooks
    return (hook,)


# which logger an event's hook failure goes to: the primitive's own
_SOURCES = {
    "rate_limiter": "brace.limiter",
    "token_bucket": "brace.bucket",
    "sliding_window": "brace.window",
    "executor": "brace.executor",
    "circuit_breaker": "brace.breaker",
    "timeout": "brace.timeout",
    "memory_guard": "brace.memory",
    "load_monitor": "brace.load",
    "pipeline": "brace.asgi",
    "client": "brace.client",
}
_KINDS = {
    "state_change": "brace.breaker",
    "retry": "brace.retry",
    "limit_change": "brace.adaptive",
    "memory_level_change": "brace.memory",
    "fallback": "brace.fallback",
    "hedge": "brace.hedge",
    "fault_injected": "brace.chaos",
    "slow_request": "brace.asgi",
    "shutdown_started": "brace.shutdown",
    "load_change": "brace.load",
}


def _logger_of(event: Event) -> logging.Logger:
    import logging  # here: the cores import this module, and logging imports threading

    if isinstance(event, Refused):
        return logging.getLogger(_SOURCES.get(event.source, "brace"))
    return logging.getLogger(_KINDS.get(event.kind, "brace"))


class RefusalCounter:
    """Counts a primitive's refusals by reason; ``snapshot()`` is a read-only mapping
    holding every reason the primitive can give (zeros included)."""

    __slots__ = ("counts",)

    def __init__(self, reasons: Iterable[Reason]) -> None:
        self.counts: dict[str, int] = dict.fromkeys(reasons, 0)

    def add(self, reason: Reason) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1

    def snapshot(self) -> Mapping[str, int]:
        return MappingProxyType(dict(self.counts))


def refusals(**counts: int) -> Mapping[str, int]:
    """A read-only ``refusals`` snapshot from counts kept elsewhere."""
    return MappingProxyType(counts)
