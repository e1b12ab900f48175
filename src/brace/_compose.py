"""compose: stack policies around a call, outermost first.

``compose(a, b, c).run(fn)`` behaves like ``a.call(b.call, c.call, fn)`` nested: ``a``
sees the whole thing, ``c`` sits right around ``fn``. A policy is anything with
``async def call(self, fn, /, *args, **kwargs)`` (every brace primitive, another
:class:`Policy`) or any reusable async context manager (``asyncio.Semaphore``,
``anyio.CapacityLimiter``, ...). The chain of closures is built once, in the
constructor; a call walks it without building anything.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar, cast

from typing_extensions import ParamSpec

__all__ = ("CallPolicy", "Policy", "compose")

P = ParamSpec("P")
T = TypeVar("T")

_Args = tuple[Any, ...]
_Kwargs = dict[str, Any]
_Step = Callable[[Callable[..., Awaitable[Any]], _Args, _Kwargs], Awaitable[Any]]


class CallPolicy(Protocol):
    """A policy that wraps a call: ``await policy.call(fn, *args, **kwargs)``."""

    def call(self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any) -> Any: ...


PolicyLike = CallPolicy | AbstractAsyncContextManager[Any]


class Policy:
    """Policies applied around a call, the first one outermost.

    ``await policy.run(fn, *args, **kwargs)`` (or ``call``), or decorate an ``async def``
    with ``@policy``. A Policy is itself a policy, so it nests in another ``compose``.
    """

    __slots__ = ("_chain", "_policies")

    def __init__(self, *policies: PolicyLike) -> None:
        flat: list[object] = []
        for index, policy in enumerate(policies):
            if isinstance(policy, Policy):
                flat.extend(policy._policies)
            else:
                _check_policy(policy, index)
                flat.append(policy)
        self._policies: tuple[object, ...] = tuple(flat)
        chain: _Step = _call_fn
        innermost = True
        for layer in reversed(self._policies):
            chain = _link(layer, chain, innermost)
            innermost = False
        self._chain = chain

    @property
    def policies(self) -> tuple[object, ...]:
        """The policies, outermost first (nested Policies flattened)."""
        return self._policies

    async def run(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through every policy, the first one outermost."""
        result: T = await self._chain(fn, args, kwargs)
        return result

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """The same as :meth:`run` (every brace policy offers ``call``)."""
        result: T = await self._chain(fn, args, kwargs)
        return result

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an ``async def`` so that every call goes through the policies."""
        if not callable(fn):
            raise TypeError(f"fn must be an async callable, got {type(fn).__name__}")
        chain = self._chain

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            result: T = await chain(fn, args, kwargs)
            return result

        return guarded

    def __repr__(self) -> str:
        return f"compose({', '.join(map(repr, self._policies))})"


def compose(*policies: PolicyLike) -> Policy:
    """Apply ``policies`` around a call, the first one outermost; see :class:`Policy`."""
    return Policy(*policies)


async def _call_fn(fn: Callable[..., Awaitable[Any]], args: _Args, kwargs: _Kwargs) -> Any:
    return await fn(*args, **kwargs)


def _link(policy: object, inner: _Step, innermost: bool) -> _Step:
    """One more layer around ``inner``: through ``policy.call`` or ``async with policy``."""
    call = getattr(policy, "call", None)
    if call is not None:
        if innermost:  # skip a frame: hand fn itself to the policy

            async def call_step(
                fn: Callable[..., Awaitable[Any]], args: _Args, kwargs: _Kwargs
            ) -> Any:
                return await call(fn, *args, **kwargs)

            return call_step

        async def call_layer(
            fn: Callable[..., Awaitable[Any]], args: _Args, kwargs: _Kwargs
        ) -> Any:
            return await call(inner, fn, args, kwargs)

        return call_layer

    context = cast(AbstractAsyncContextManager[Any], policy)
    if innermost:

        async def context_step(
            fn: Callable[..., Awaitable[Any]], args: _Args, kwargs: _Kwargs
        ) -> Any:
            async with context:
                return await fn(*args, **kwargs)

        return context_step

    async def context_layer(fn: Callable[..., Awaitable[Any]], args: _Args, kwargs: _Kwargs) -> Any:
        async with context:
            return await inner(fn, args, kwargs)

    return context_layer


def _check_policy(policy: object, index: int) -> None:
    if isinstance(policy, type):
        raise TypeError(
            f"policies[{index}] must be a policy instance, got the class {policy.__name__}"
        )
    call = getattr(policy, "call", None)
    if call is not None:
        if not callable(call):
            raise TypeError(f"policies[{index}].call must be callable, got {type(call).__name__}")
        return
    if not (hasattr(policy, "__aenter__") and hasattr(policy, "__aexit__")):
        raise TypeError(
            f"policies[{index}] must have an async call(fn, /, *args, **kwargs) method or be "
            f"an async context manager, got {type(policy).__name__}"
        )
