"""Chaos strategies: inject latency, exceptions, substitute results or any behaviour into a
chosen share of calls, so that a resilience setup can be tested (Polly v8's chaos
strategies, formerly Simmy).

Theory of operation
-------------------
Each call asks :func:`should_inject` (pure, sync): when the strategy is enabled (a flag,
or a predicate asked per call), one number is drawn from the strategy's random source
and the fault is injected when it is below ``injection_rate``. A seeded source
(``seed=`` or ``random=random.Random(seed)``) makes the sequence of injections
reproducible; exactly one number is drawn per enabled call, so the sequence does not
depend on the outcome of earlier calls. Latency sleeps with ``anyio.sleep``: under
virtual time (trio's ``MockClock``, looptime) an injected second costs nothing.

Each injection is announced just before the fault takes effect: to the ``on_inject``
hook (sync, with a :class:`ChaosDetails`; what it raises reaches the caller instead of
the fault, as with ``Fallback``'s ``on_fallback``) and at DEBUG on the ``brace.chaos``
logger.
"""

from __future__ import annotations

import abc
import functools
import logging
import random as _random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, TypeVar, cast

import anyio
from typing_extensions import ParamSpec

from ._core._validate import check_finite
from ._events import EventHook, FaultInjected, event_hook

__all__ = (
    "ChaosBehavior",
    "ChaosDetails",
    "ChaosException",
    "ChaosHook",
    "ChaosLatency",
    "ChaosOutcome",
    "ChaosStatistics",
    "ChaosStrategy",
    "should_inject",
)

logger = logging.getLogger("brace.chaos")

P = ParamSpec("P")
T = TypeVar("T")


class RandomSource(Protocol):
    def random(self) -> float: ...


Enabled = bool | Callable[[], bool]


def should_inject(enabled: Enabled, rate: float, *, random: RandomSource) -> bool:
    """Whether to inject into this call: enabled now, and one draw below ``rate``.

    A disabled call draws nothing; an enabled one draws exactly one number, whatever the
    rate (so ``rate=1.0`` injects into every enabled call and ``rate=0.0`` into none).
    """
    if enabled is not True and (enabled is False or not enabled()):
        return False
    return random.random() < rate


ChaosKind = Literal["latency", "exception", "outcome", "behavior"]


@dataclass(frozen=True, slots=True)
class ChaosDetails:
    """What the ``on_inject`` hook learns as a fault is injected.

    ``kind``: ``"latency"``, ``"exception"``, ``"outcome"`` or ``"behavior"``.
    ``injected``: the fault itself: the seconds slept (latency), the exception about to be
    raised (made by the factory when one was given), the substitute result about to be
    returned (outcome), or the async callable about to run (behavior). ``name``: the
    strategy's name.
    """

    name: str
    kind: ChaosKind
    injected: object


class ChaosHook(Protocol):
    """Called synchronously with the :class:`ChaosDetails` as each fault is injected."""

    def __call__(self, details: ChaosDetails, /) -> None: ...


@dataclass(frozen=True, slots=True)
class ChaosStatistics:
    """``calls``: calls and entries seen; ``injected``: how many got the fault."""

    calls: int
    injected: int


class ChaosStrategy(abc.ABC):
    """What every chaos strategy shares: the rate, the switch, the random source, the
    counters, and the forms (``call``/``run``, decorator, and for the strategies that act
    before the body, ``async with``).

    Args:
        injection_rate: the share of calls that get the fault, from 0.0 to 1.0.
        enabled: ``True``/``False``, or a zero-argument predicate asked on each call.
        random: a ``random.Random`` (anything with ``random()``) to draw from.
        seed: a seed for a fresh ``random.Random`` (give ``random`` or ``seed``, not both).
        on_inject: called synchronously with the :class:`ChaosDetails` as each fault is
            injected, just before it takes effect; what it raises reaches the caller
            instead of the fault.
        name: a name for hooks, logs and repr.
    """

    __slots__ = (
        "__weakref__",
        "_calls",
        "_enabled",
        "_injected",
        "_name",
        "_on_event",
        "_on_inject",
        "_random",
        "_rate",
    )

    _kind: ChaosKind

    def __init__(
        self,
        *,
        injection_rate: float,
        enabled: Enabled = True,
        random: RandomSource | None = None,
        seed: int | None = None,
        on_inject: ChaosHook | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
        name: str = "",
    ) -> None:
        rate = check_finite(injection_rate, "injection_rate", "from 0.0 to 1.0")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"injection_rate must be from 0.0 to 1.0, got {injection_rate!r}")
        if not isinstance(enabled, bool) and not callable(enabled):
            raise TypeError(f"enabled must be a bool or a zero-argument predicate, got {enabled!r}")
        if random is not None and seed is not None:
            raise TypeError("give random or seed, not both")
        if random is not None and not callable(getattr(random, "random", None)):
            raise TypeError(
                "random must be a random.Random (anything with random()) or None, "
                f"got {type(random).__name__}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        if on_inject is not None and not callable(on_inject):
            raise TypeError(f"on_inject must be a callable or None, got {on_inject!r}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self._on_inject = on_inject
        self._on_event = event_hook(on_event)
        self._rate = rate
        self._enabled = enabled
        self._random: RandomSource = random if random is not None else _random.Random(seed)
        self._name = name
        self._calls = 0
        self._injected = 0

    @property
    def injection_rate(self) -> float:
        return self._rate

    @property
    def name(self) -> str:
        return self._name

    def try_inject(self) -> bool:
        """Decide (and count) whether this call gets the fault; never waits."""
        self._calls += 1
        if should_inject(self._enabled, self._rate, random=self._random):
            self._injected += 1
            return True
        return False

    @abc.abstractmethod
    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, with the fault in a share of the calls."""

    async def run(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """The same as :meth:`call`."""
        return await self.call(fn, *args, **kwargs)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an ``async def`` so that every call goes through :meth:`call`."""
        if not callable(fn):
            raise TypeError(f"fn must be an async callable, got {type(fn).__name__}")
        call = self.call

        @functools.wraps(fn)
        async def chaotic(*args: P.args, **kwargs: P.kwargs) -> T:
            return await call(fn, *args, **kwargs)

        return chaotic

    def statistics(self) -> ChaosStatistics:
        return ChaosStatistics(calls=self._calls, injected=self._injected)

    def _announce(self, injected: object) -> None:
        """Log the fault about to take effect and hand it to the hook."""
        logger.debug("chaos %r: injecting %s %r", self._name, self._kind, injected)
        if self._on_event is not None:
            self._on_event(FaultInjected(self._name, anyio.current_time(), self._kind, injected))
        hook = self._on_inject
        if hook is not None:
            hook(ChaosDetails(self._name, self._kind, injected))

    def _options(self) -> str:
        return f"injection_rate={self._rate!r}, name={self._name!r}"


class _BeforeCall(ChaosStrategy):
    """A strategy whose fault happens before the call: usable with ``async with`` too."""

    __slots__ = ()

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, injecting the fault into a share of the calls."""
        if self.try_inject():
            await self._inject()
        return await fn(*args, **kwargs)

    async def __aenter__(self) -> None:
        if self.try_inject():
            await self._inject()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        return False

    @abc.abstractmethod
    async def _inject(self) -> None:
        """The fault, before the call."""


class ChaosLatency(_BeforeCall):
    """Sleep ``seconds`` (with anyio) before a share of the calls."""

    __slots__ = ("_seconds",)
    _kind = "latency"

    def __init__(
        self,
        seconds: float,
        *,
        injection_rate: float,
        enabled: Enabled = True,
        random: RandomSource | None = None,
        seed: int | None = None,
        on_inject: ChaosHook | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
        name: str = "",
    ) -> None:
        super().__init__(
            injection_rate=injection_rate,
            enabled=enabled,
            random=random,
            seed=seed,
            on_inject=on_inject,
            on_event=on_event,
            name=name,
        )
        self._seconds = check_finite(seconds, "seconds", ">= 0")
        if self._seconds < 0:
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")

    @property
    def seconds(self) -> float:
        return self._seconds

    async def _inject(self) -> None:
        self._announce(self._seconds)
        await anyio.sleep(self._seconds)

    def __repr__(self) -> str:
        return f"ChaosLatency({self._seconds!r}, {self._options()})"


class ChaosException(_BeforeCall):
    """Raise an exception instead of making a share of the calls.

    ``exception`` is an exception instance (raised each time) or a zero-argument factory
    returning one (called on each injection, e.g. ``lambda: httpx.ConnectError("chaos")``).
    """

    __slots__ = ("_exception",)
    _kind = "exception"

    def __init__(
        self,
        exception: BaseException | Callable[[], BaseException],
        *,
        injection_rate: float,
        enabled: Enabled = True,
        random: RandomSource | None = None,
        seed: int | None = None,
        on_inject: ChaosHook | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
        name: str = "",
    ) -> None:
        super().__init__(
            injection_rate=injection_rate,
            enabled=enabled,
            random=random,
            seed=seed,
            on_inject=on_inject,
            on_event=on_event,
            name=name,
        )
        if not isinstance(exception, BaseException) and not callable(exception):
            raise TypeError(
                "exception must be an exception instance or a zero-argument factory, "
                f"got {exception!r}"
            )
        self._exception = exception

    async def _inject(self) -> None:
        exception = self._exception
        if not isinstance(exception, BaseException):
            exception = exception()
            if not isinstance(exception, BaseException):
                raise TypeError(
                    f"the exception factory must return an exception, got {exception!r}"
                )
        self._announce(exception)
        raise exception

    def __repr__(self) -> str:
        return f"ChaosException({self._exception!r}, {self._options()})"


class ChaosBehavior(_BeforeCall):
    """Run ``behavior()`` (an async callable) before a share of the calls, e.g. to drop a
    connection, fill a queue or flip a feature flag; what it raises reaches the caller."""

    __slots__ = ("_behavior",)
    _kind = "behavior"

    def __init__(
        self,
        behavior: Callable[[], Awaitable[object]],
        *,
        injection_rate: float,
        enabled: Enabled = True,
        random: RandomSource | None = None,
        seed: int | None = None,
        on_inject: ChaosHook | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
        name: str = "",
    ) -> None:
        super().__init__(
            injection_rate=injection_rate,
            enabled=enabled,
            random=random,
            seed=seed,
            on_inject=on_inject,
            on_event=on_event,
            name=name,
        )
        if not callable(behavior):
            raise TypeError(f"behavior must be an async callable, got {behavior!r}")
        self._behavior = behavior

    async def _inject(self) -> None:
        self._announce(self._behavior)
        await self._behavior()

    def __repr__(self) -> str:
        return f"ChaosBehavior({self._behavior!r}, {self._options()})"


class ChaosOutcome(ChaosStrategy):
    """Return a substitute result instead of making a share of the calls.

    ``result`` is the value returned; or give ``factory``, a zero-argument callable called
    on each injection (e.g. ``lambda: httpx.Response(503)``). Only through ``call``/``run``
    or as a decorator: ``async with`` cannot replace the value of its body.
    """

    __slots__ = ("_factory", "_result")
    _kind = "outcome"

    def __init__(
        self,
        result: object = None,
        *,
        factory: Callable[[], object] | None = None,
        injection_rate: float,
        enabled: Enabled = True,
        random: RandomSource | None = None,
        seed: int | None = None,
        on_inject: ChaosHook | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
        name: str = "",
    ) -> None:
        super().__init__(
            injection_rate=injection_rate,
            enabled=enabled,
            random=random,
            seed=seed,
            on_inject=on_inject,
            on_event=on_event,
            name=name,
        )
        if factory is not None and not callable(factory):
            raise TypeError(f"factory must be a zero-argument callable or None, got {factory!r}")
        if factory is not None and result is not None:
            raise TypeError("give result or factory, not both")
        self._result = result
        self._factory = factory

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, or return the substitute for a share of the calls."""
        if self.try_inject():
            factory = self._factory
            result = self._result if factory is None else factory()
            self._announce(result)
            return cast(T, result)
        return await fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"ChaosOutcome({self._result!r}, {self._options()})"
