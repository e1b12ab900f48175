"""Issue 3, 16: ``Timeout`` and a ``compose``d policy stack.

Timeout: ``async with brace.Timeout(30.0): await noop()`` and ``await timeout.call(noop)``
against the loop's own deadlines: ``anyio.fail_after``, ``asyncio.timeout`` (Python 3.11+,
asyncio) and ``trio.fail_after`` / ``trio.move_on_after`` (trio). Nothing times out: what
is timed is arming and disarming a deadline around a call that returns at once. Target
(issue 16): ``async with Timeout(30)`` at most 1.2 x ``asyncio.timeout(30)``; on trio
(informative) at most 1.2 x the faster of trio's two.

Compose: the client-side stack of the demo server, breaker outside, then retry, then a
30 s timeout, around ``noop``: ``await compose(breaker, retry, Timeout(30)).run(noop)``;
the same three brace primitives nested by hand; and the same stack built from peers,
purgatory's breaker (got once) around tenacity's ``AsyncRetrying`` around
``anyio.fail_after``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ._harness import Case, Op, Role, Target, brace_attr, import_optional, noop

ASYNCIO = frozenset({"asyncio"})
TRIO = frozenset({"trio"})

# --- timeout -------------------------------------------------------------------------


@asynccontextmanager
async def brace_timeout_async_with() -> AsyncIterator[Op]:
    timeout = brace_attr("Timeout")(30.0)

    async def op(n: int) -> None:
        work = noop
        for _ in range(n):
            async with timeout:
                await work()

    yield op


@asynccontextmanager
async def brace_timeout_call() -> AsyncIterator[Op]:
    timeout = brace_attr("Timeout")(30.0)

    async def op(n: int) -> None:
        call = timeout.call
        work = noop
        for _ in range(n):
            await call(work)

    yield op


@asynccontextmanager
async def anyio_fail_after() -> AsyncIterator[Op]:
    async def op(n: int) -> None:
        fail_after = anyio.fail_after
        work = noop
        for _ in range(n):
            with fail_after(30.0):
                await work()

    yield op


@asynccontextmanager
async def asyncio_timeout() -> AsyncIterator[Op]:
    timeout: Any = asyncio.timeout  # type: ignore[attr-defined]  # 3.11+; n/a before (CASES)

    async def op(n: int) -> None:
        work = noop
        for _ in range(n):
            async with timeout(30.0):
                await work()

    yield op


@asynccontextmanager
async def trio_fail_after() -> AsyncIterator[Op]:
    import trio

    async def op(n: int) -> None:
        fail_after = trio.fail_after
        work = noop
        for _ in range(n):
            with fail_after(30.0):
                await work()

    yield op


@asynccontextmanager
async def trio_move_on_after() -> AsyncIterator[Op]:
    import trio

    async def op(n: int) -> None:
        move_on_after = trio.move_on_after
        work = noop
        for _ in range(n):
            with move_on_after(30.0):
                await work()

    yield op


# --- compose -------------------------------------------------------------------------


def _brace_stack() -> tuple[Any, Any, Any]:
    breaker = brace_attr("CircuitBreaker")(failure_threshold=15, recovery_time=30.0)
    retry = brace_attr("Retry")(attempts=3)
    timeout = brace_attr("Timeout")(30.0)
    return breaker, retry, timeout


@asynccontextmanager
async def brace_compose() -> AsyncIterator[Op]:
    policy = brace_attr("compose")(*_brace_stack())

    async def op(n: int) -> None:
        run = policy.run
        work = noop
        for _ in range(n):
            await run(work)

    yield op


@asynccontextmanager
async def brace_by_hand() -> AsyncIterator[Op]:
    breaker, retry, timeout = _brace_stack()

    async def op(n: int) -> None:
        work = noop
        retry_call = retry.call
        timeout_call = timeout.call
        for _ in range(n):
            async with breaker:
                await retry_call(timeout_call, work)

    yield op


@asynccontextmanager
async def peer_stack() -> AsyncIterator[Op]:
    purgatory = import_optional("purgatory")
    tenacity = import_optional("tenacity")
    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=15, default_ttl=30)
    breaker = await factory.get_breaker("bench")
    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_exponential(multiplier=0.1, max=10.0),
        reraise=True,
    )

    async def timed() -> None:
        with anyio.fail_after(30.0):
            await noop()

    async def op(n: int) -> None:
        for _ in range(n):
            async with breaker:
                await retrying(timed)

    yield op


def _case(group: str, key: str, label: str, setup: Any, **kwargs: Any) -> Case:
    role: Role = "brace" if ".brace." in key else "reference"
    if "peer" in key:
        role = "peer"
    return Case(group, key, label, role, setup, **kwargs)


TIMEOUT_CASES = (
    _case(
        "timeout",
        "timeout.brace.async_with",
        "brace: async with Timeout(30): await noop()",
        brace_timeout_async_with,
        brace=("Timeout",),
    ),
    _case(
        "timeout",
        "timeout.brace.call",
        "brace: await Timeout(30).call(noop)",
        brace_timeout_call,
        brace=("Timeout",),
    ),
    _case("timeout", "timeout.anyio", "with anyio.fail_after(30): await noop()", anyio_fail_after),
    _case(
        "timeout",
        "timeout.asyncio",
        "async with asyncio.timeout(30): await noop()",
        asyncio_timeout,
        backends=ASYNCIO if sys.version_info >= (3, 11) else frozenset(),  # new in 3.11
    ),
    _case(
        "timeout",
        "timeout.trio",
        "with trio.fail_after(30): await noop()",
        trio_fail_after,
        backends=TRIO,
        requires=("trio",),
    ),
    _case(
        "timeout",
        "timeout.trio.move_on_after",
        "with trio.move_on_after(30): await noop()",
        trio_move_on_after,
        backends=TRIO,
        requires=("trio",),
    ),
)

COMPOSE_CASES = (
    _case(
        "compose",
        "compose.brace.compose",
        "brace: await compose(breaker, retry, Timeout(30)).run(noop)",
        brace_compose,
        brace=("compose", "CircuitBreaker", "Retry", "Timeout"),
    ),
    _case(
        "compose",
        "compose.brace.by_hand",
        "brace: the same three nested by hand",
        brace_by_hand,
        brace=("CircuitBreaker", "Retry", "Timeout"),
    ),
    _case(
        "compose",
        "compose.peer.stack",
        "purgatory > tenacity AsyncRetrying > anyio.fail_after",
        peer_stack,
        requires=("purgatory", "tenacity"),
    ),
)

CASES = TIMEOUT_CASES + COMPOSE_CASES
FLOORS = ("floor.await",)
TARGETS = (
    Target(
        "timeout",
        "async with Timeout(30) vs async with asyncio.timeout(30)",
        "timeout.brace.async_with",
        ("timeout.asyncio",),
        1.2,
        backends=ASYNCIO,
    ),
    Target(
        "timeout",
        "(informative) async with Timeout(30) vs trio.fail_after / move_on_after",
        "timeout.brace.async_with",
        ("timeout.trio", "timeout.trio.move_on_after"),
        1.2,
        backends=TRIO,
    ),
)
