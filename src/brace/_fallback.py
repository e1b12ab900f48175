"""Fallback: when a call fails, is refused or times out, return a substitute instead.

The success path is one counter, one ``await`` and (with ``fallback_if_result``) one
predicate call. Everything else happens after a failure: :func:`triggers` (pure, sync)
decides whether the outcome is one the fallback handles, then the substitute is found:
the last good result (when kept), else the configured value or factory, else the outcome
goes to the caller unchanged. Only ``Exception`` s are ever handled: a cancellation (anyio's
``Cancelled``, asyncio's ``CancelledError``) and every other ``BaseException`` pass through,
so a cancellation from outside is never turned into a substitute.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

import anyio
from typing_extensions import ParamSpec

from ._core._validate import check_int
from ._events import Event, EventHook, event_hook

__all__ = (
    "Fallback",
    "FallbackDetails",
    "FallbackHook",
    "FallbackStatistics",
    "check_exception_filter",
    "triggers",
)

logger = logging.getLogger("brace.fallback")

P = ParamSpec("P")
T = TypeVar("T")

ExceptionPredicate = Callable[[Exception], bool]
ExceptionFilter = type[Exception] | tuple[type[Exception], ...] | ExceptionPredicate


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True)
class FallbackDetails(Event, Generic[T]):
    """What a fallback factory and the ``on_fallback`` hook learn about a handled outcome.

    ``exception``: what the call raised, or ``None`` when its ``result`` was rejected by
    ``fallback_if_result``. ``result``: the rejected value (``None`` after an exception).
    ``last_good``: ``True`` when the substitute is the last good result kept for the call's
    key (factories are never asked then). ``name``: the fallback's name. ``time``: the
    event loop's clock when the substitute was returned (``nan`` in what a factory
    receives). A `brace.events.Event` of kind ``"fallback"``.
    """

    kind: ClassVar[str] = "fallback"

    name: str  # pyright: ignore[reportIncompatibleMethodOverride]
    exception: Exception | None
    result: object
    last_good: bool
    substitute: T | None = None
    time: float = math.nan  # pyright: ignore[reportIncompatibleMethodOverride]


class FallbackHook(Protocol):
    """Called synchronously with the :class:`FallbackDetails` when a substitute is returned."""

    def __call__(self, details: FallbackDetails[Any], /) -> None: ...


@dataclass(frozen=True, slots=True)
class FallbackStatistics:
    """Counters of one :class:`Fallback` since it was made.

    ``calls``: calls started. ``successes``: calls whose own result was returned.
    ``fallbacks``: calls answered with a substitute. ``failures``: handled outcomes with no
    substitute to give (no last good result and no value or factory): the exception was
    raised, or the rejected result returned, unchanged. Exceptions the fallback does not
    handle are counted in none of the last three.
    """

    calls: int
    successes: int
    fallbacks: int
    failures: int


def check_exception_filter(
    value: object, name: str
) -> tuple[tuple[type[Exception], ...] | None, ExceptionPredicate | None]:
    """An exception type, a tuple of them, or a predicate: ``(types, None)`` or
    ``(None, predicate)``; only ``Exception`` subclasses are accepted."""
    kinds: tuple[object, ...]
    if isinstance(value, type):
        kinds = (value,)
    elif isinstance(value, tuple):
        kinds = value
    elif callable(value):
        return None, cast(ExceptionPredicate, value)
    else:
        raise TypeError(
            f"{name} must be an exception type, a tuple of them, or a predicate "
            f"(exception) -> bool, got {type(value).__name__}"
        )
    for kind in kinds:
        if not isinstance(kind, type) or not issubclass(kind, BaseException):
            raise TypeError(f"{name} must hold exception types, got {kind!r}")
        if not issubclass(kind, Exception):
            raise TypeError(
                f"{name} may only name Exception subclasses: {kind.__name__} is a "
                "BaseException (cancellation, KeyboardInterrupt, ...) and always passes through"
            )
    return cast(tuple[type[Exception], ...], kinds), None


def triggers(
    exception: BaseException | None,
    types: tuple[type[Exception], ...] | None,
    predicate: ExceptionPredicate | None,
) -> bool:
    """Whether an exception (``None``: a rejected result, always handled) is handled."""
    if exception is None:
        return True
    if not isinstance(exception, Exception):
        return False  # cancellation and other BaseExceptions: never
    if predicate is not None:
        return bool(predicate(exception))
    return types is not None and isinstance(exception, types)


class Fallback:
    """Return a substitute when a call raises a handled exception or a rejected result.

    Use it as a decorator or as ``await fallback.call(fn, *args, **kwargs)`` (``run`` is
    the same); it is a policy that :func:`brace.compose` accepts in any position, usually
    the outermost, so that it also sees ``brace.Rejected`` (rate limited, queue full,
    circuit open) and ``brace.TimeoutExceeded`` from the policies inside it. It is not an
    async context manager: ``async with`` cannot replace the value of its body.

    The substitute is, in order: the last good result kept for the call's key (with
    ``last_good=True``), else ``value``, else what ``factory(details)`` returns (sync or
    async; it receives the :class:`FallbackDetails`). When there is none, the outcome
    reaches the caller unchanged.

    Args:
        value: the substitute value.
        factory: a callable ``(details) -> substitute`` (or an async one), called on each
            handled outcome; what it raises reaches the caller.
        last_good: keep the last good result (per ``key``) and return it before ``value``
            or ``factory``.
        fallback_on: which exceptions are handled: a type, a tuple of types or a predicate
            ``(exception) -> bool`` (default: every ``Exception``). Cancellation and other
            ``BaseException`` s always pass through.
        fallback_if_result: a predicate ``(result) -> bool``: a result it calls true is
            handled like a failure.
        key: with ``last_good``, a function of the call's arguments naming the entry kept
            (default: one entry for every call).
        max_keys: the most last good results kept, least recently used first out.
        on_fallback: called synchronously with the :class:`FallbackDetails` whenever a
            substitute is returned.
        name: a name for hooks and repr.
    """

    __slots__ = (
        "__weakref__",
        "_cache",
        "_calls",
        "_factory",
        "_failures",
        "_fallbacks",
        "_key",
        "_last_good",
        "_max_keys",
        "_name",
        "_on_event",
        "_on_fallback",
        "_predicate",
        "_result_check",
        "_successes",
        "_types",
        "_value",
    )

    def __init__(
        self,
        value: Any = _UNSET,
        *,
        factory: Callable[[FallbackDetails[Any]], Any] | None = None,
        last_good: bool = False,
        fallback_on: ExceptionFilter = Exception,
        fallback_if_result: Callable[[Any], bool] | None = None,
        key: Callable[..., Hashable] | None = None,
        max_keys: int = 1024,
        on_fallback: FallbackHook | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
        name: str = "",
    ) -> None:
        if factory is not None and not callable(factory):
            raise TypeError(
                f"factory must be a callable (details) -> value or None, got {factory!r}"
            )
        if factory is not None and value is not _UNSET:
            raise TypeError("give value or factory, not both")
        if not isinstance(last_good, bool):
            raise TypeError(f"last_good must be a bool, got {type(last_good).__name__}")
        if value is _UNSET and factory is None and not last_good:
            raise TypeError("Fallback needs a substitute: value, factory, or last_good=True")
        self._types, self._predicate = check_exception_filter(fallback_on, "fallback_on")
        if fallback_if_result is not None and not callable(fallback_if_result):
            raise TypeError(
                "fallback_if_result must be a callable (result) -> bool or None, "
                f"got {type(fallback_if_result).__name__}"
            )
        if key is not None and not callable(key):
            raise TypeError(f"key must be a callable (*args, **kwargs) -> key or None, got {key!r}")
        if key is not None and not last_good:
            raise TypeError("key names the last good result kept: it needs last_good=True")
        if on_fallback is not None and not callable(on_fallback):
            raise TypeError(f"on_fallback must be a callable or None, got {on_fallback!r}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self._value = value
        self._factory = factory
        self._last_good = last_good
        self._result_check = fallback_if_result
        self._key = key
        self._max_keys = check_int(max_keys, "max_keys", minimum=1)
        self._on_fallback = on_fallback
        self._on_event = event_hook(on_event)
        self._name = name
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()
        self._calls = 0
        self._successes = 0
        self._fallbacks = 0
        self._failures = 0

    @property
    def name(self) -> str:
        return self._name

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``; return a substitute on a handled outcome."""
        self._calls += 1
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            if not triggers(exc, self._types, self._predicate):
                raise
            return cast(T, await self._substitute(exc, None, args, kwargs))
        check = self._result_check
        if check is not None and check(result):
            return cast(T, await self._substitute(None, result, args, kwargs))
        self._successes += 1
        if self._last_good:
            self._keep(args, kwargs, result)
        return result

    run = call

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an ``async def`` so that every call goes through :meth:`call`."""
        if not callable(fn):
            raise TypeError(f"fn must be an async callable, got {type(fn).__name__}")
        call = self.call

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            return await call(fn, *args, **kwargs)

        return guarded

    def statistics(self) -> FallbackStatistics:
        return FallbackStatistics(
            calls=self._calls,
            successes=self._successes,
            fallbacks=self._fallbacks,
            failures=self._failures,
        )

    def __repr__(self) -> str:
        return f"Fallback(last_good={self._last_good!r}, name={self._name!r})"

    # -- the failure path ------------------------------------------------------------------

    def _key_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
        key = self._key
        return None if key is None else key(*args, **kwargs)

    def _keep(self, args: tuple[Any, ...], kwargs: dict[str, Any], result: object) -> None:
        cache = self._cache
        key = self._key_of(args, kwargs)
        cache[key] = result
        cache.move_to_end(key)
        if len(cache) > self._max_keys:
            cache.popitem(last=False)

    async def _substitute(
        self,
        exception: Exception | None,
        result: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> object:
        if self._last_good:
            key = self._key_of(args, kwargs)
            if key in self._cache:
                substitute = self._cache[key]
                self._cache.move_to_end(key)
                return self._answer(
                    FallbackDetails(self._name, exception, result, True), substitute
                )
        details: FallbackDetails[Any] = FallbackDetails(self._name, exception, result, False)
        if self._value is not _UNSET:
            return self._answer(details, self._value)
        factory = self._factory
        if factory is None:  # last_good only, and nothing kept yet
            self._failures += 1
            if exception is not None:
                raise exception
            return result
        substitute = factory(details)
        if inspect.isawaitable(substitute):
            substitute = await substitute
        return self._answer(details, substitute)

    def _answer(self, details: FallbackDetails[Any], substitute: object) -> object:
        self._fallbacks += 1
        logger.debug("fallback %r: substituting for %r", self._name, details.exception)
        hook = self._on_fallback
        if hook is not None or self._on_event is not None:
            event = FallbackDetails(
                details.name,
                details.exception,
                details.result,
                details.last_good,
                substitute,
                anyio.current_time(),
            )
            if hook is not None:
                hook(event)
            if self._on_event is not None:
                self._on_event(event)
        return substitute
