"""Issue 3: a circuit breaker's closed path, one successful protected call.

Every case protects the same work, ``await noop()`` (an empty coroutine, also timed alone
as the floor), with a breaker configured like the demo server's (opens at 15 failures,
30 s recovery) that stays closed.

- brace: ``async with breaker`` (the target), ``await breaker.call(noop)``, ``@breaker``;
- purgatory 3: ``async with`` a breaker from ``AsyncCircuitBreakerFactory`` — got once
  and reused (its cheapest form, the one the target is judged against), and as its README
  writes it, ``async with await factory.get_breaker(name)`` on every call, and its
  decorator ``@factory(name)``;
- circuitbreaker 2: ``@circuit(...)`` on an ``async def``;
- aiobreaker 1: ``await breaker.call_async(noop)`` and ``@breaker`` on an ``async def``;
- pybreaker 1: its ``call_async`` needs tornado (not installed, and it builds tornado
  coroutines), so it is timed as ``breaker.call(f)`` on a *sync* ``f`` (no await at all:
  flatters pybreaker) and as ``with breaker.calling(): await noop()`` (its context manager
  around an await, which works in any loop because pybreaker only keeps counters).

None of the peers' closed paths touches asyncio, so they also run on trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from ._harness import Case, Op, Role, Target, brace_attr, import_optional, noop

# --- brace ---------------------------------------------------------------------------


def _brace_breaker() -> Any:
    return brace_attr("CircuitBreaker")(failure_threshold=15, recovery_time=30.0)


@asynccontextmanager
async def brace_async_with() -> AsyncIterator[Op]:
    breaker = _brace_breaker()

    async def op(n: int) -> None:
        work = noop
        for _ in range(n):
            async with breaker:
                await work()

    yield op


@asynccontextmanager
async def brace_call() -> AsyncIterator[Op]:
    breaker = _brace_breaker()

    async def op(n: int) -> None:
        call = breaker.call
        work = noop
        for _ in range(n):
            await call(work)

    yield op


@asynccontextmanager
async def brace_decorator() -> AsyncIterator[Op]:
    breaker = _brace_breaker()

    protected = breaker(noop)

    async def op(n: int) -> None:
        for _ in range(n):
            await protected()

    yield op


# --- purgatory -----------------------------------------------------------------------


def _purgatory_factory() -> Any:
    purgatory = import_optional("purgatory")
    return purgatory.AsyncCircuitBreakerFactory(default_threshold=15, default_ttl=30)


@asynccontextmanager
async def purgatory_reused() -> AsyncIterator[Op]:
    factory = _purgatory_factory()
    breaker = await factory.get_breaker("bench")

    async def op(n: int) -> None:
        work = noop
        for _ in range(n):
            async with breaker:
                await work()

    yield op


@asynccontextmanager
async def purgatory_documented() -> AsyncIterator[Op]:
    factory = _purgatory_factory()

    async def op(n: int) -> None:
        get_breaker = factory.get_breaker
        work = noop
        for _ in range(n):
            async with await get_breaker("bench"):
                await work()

    yield op


@asynccontextmanager
async def purgatory_decorator() -> AsyncIterator[Op]:
    factory = _purgatory_factory()

    protected = factory("bench")(noop)

    async def op(n: int) -> None:
        for _ in range(n):
            await protected()

    yield op


# --- circuitbreaker ------------------------------------------------------------------


@asynccontextmanager
async def circuitbreaker_decorator() -> AsyncIterator[Op]:
    circuitbreaker = import_optional("circuitbreaker")

    protected = circuitbreaker.circuit(failure_threshold=15, recovery_timeout=30)(noop)

    async def op(n: int) -> None:
        for _ in range(n):
            await protected()

    yield op


# --- aiobreaker ----------------------------------------------------------------------


def _aiobreaker() -> Any:
    aiobreaker = import_optional("aiobreaker")
    return aiobreaker.CircuitBreaker(fail_max=15, timeout_duration=timedelta(seconds=30))


@asynccontextmanager
async def aiobreaker_call_async() -> AsyncIterator[Op]:
    breaker = _aiobreaker()

    async def op(n: int) -> None:
        call_async = breaker.call_async
        work = noop
        for _ in range(n):
            await call_async(work)

    yield op


@asynccontextmanager
async def aiobreaker_decorator() -> AsyncIterator[Op]:
    breaker = _aiobreaker()

    protected = breaker(noop)

    async def op(n: int) -> None:
        for _ in range(n):
            await protected()

    yield op


# --- pybreaker -----------------------------------------------------------------------


def _pybreaker() -> Any:
    pybreaker = import_optional("pybreaker")
    return pybreaker.CircuitBreaker(fail_max=15, reset_timeout=30)


def _sync_noop() -> None:
    pass


@asynccontextmanager
async def pybreaker_sync_call() -> AsyncIterator[Op]:
    breaker = _pybreaker()

    async def op(n: int) -> None:
        call = breaker.call
        work = _sync_noop
        for _ in range(n):
            call(work)

    yield op


@asynccontextmanager
async def pybreaker_calling() -> AsyncIterator[Op]:
    breaker = _pybreaker()

    async def op(n: int) -> None:
        calling = breaker.calling
        work = noop
        for _ in range(n):
            with calling():
                await work()

    yield op


def _case(key: str, label: str, setup: Any, **kwargs: Any) -> Case:
    role: Role = "brace" if key.startswith("breaker.brace") else "peer"
    return Case("breaker", key, label, role, setup, **kwargs)


CASES = (
    _case(
        "breaker.brace.async_with",
        "brace: async with CircuitBreaker: await noop()",
        brace_async_with,
        brace=("CircuitBreaker",),
    ),
    _case(
        "breaker.brace.call",
        "brace: await breaker.call(noop)",
        brace_call,
        brace=("CircuitBreaker",),
    ),
    _case(
        "breaker.brace.decorator",
        "brace: @breaker async def",
        brace_decorator,
        brace=("CircuitBreaker",),
    ),
    _case(
        "breaker.purgatory.reused",
        "purgatory: async with breaker (got once): await noop()",
        purgatory_reused,
        requires=("purgatory",),
    ),
    _case(
        "breaker.purgatory.documented",
        "purgatory: async with await factory.get_breaker(name)",
        purgatory_documented,
        requires=("purgatory",),
    ),
    _case(
        "breaker.purgatory.decorator",
        "purgatory: @factory(name) async def",
        purgatory_decorator,
        requires=("purgatory",),
    ),
    _case(
        "breaker.circuitbreaker",
        "circuitbreaker: @circuit async def",
        circuitbreaker_decorator,
        requires=("circuitbreaker",),
    ),
    _case(
        "breaker.aiobreaker.call_async",
        "aiobreaker: await breaker.call_async(noop)",
        aiobreaker_call_async,
        requires=("aiobreaker",),
    ),
    _case(
        "breaker.aiobreaker.decorator",
        "aiobreaker: @breaker async def",
        aiobreaker_decorator,
        requires=("aiobreaker",),
    ),
    _case(
        "breaker.pybreaker.sync",
        "pybreaker: breaker.call(sync f) (no await)",
        pybreaker_sync_call,
        requires=("pybreaker",),
    ),
    _case(
        "breaker.pybreaker.calling",
        "pybreaker: with breaker.calling(): await noop()",
        pybreaker_calling,
        requires=("pybreaker",),
    ),
)

FLOORS = ("floor.await",)

PURGATORY = ("breaker.purgatory.reused", "breaker.purgatory.documented")
PEERS = tuple(case.key for case in CASES if case.role == "peer")

TARGETS = (
    Target(
        "breaker",
        "async with CircuitBreaker <= 0.6 x purgatory (its fastest form; issue 16)",
        "breaker.brace.async_with",
        PURGATORY,
        0.6,
    ),
    Target(
        "breaker",
        "(informative) async with CircuitBreaker below every breaker peer",
        "breaker.brace.async_with",
        PEERS,
        1.0,
        mode="every",
    ),
)
