"""Issue 3: a retry policy's success path, one call that succeeds the first time.

Every case retries ``await noop()`` (an empty coroutine, also timed alone as the floor)
on any ``Exception``, up to 3 attempts with exponential backoff, and the call succeeds at
once, so what is timed is what a retry wrapper costs on the path taken by nearly every
call of a healthy service.

- brace: ``await retry.call(noop)`` (the target) and ``@retry`` on an ``async def``;
- tenacity 9: ``@retry(...)`` on an ``async def`` (copies its ``AsyncRetrying`` per call),
  ``await AsyncRetrying(...)(noop)`` on one reused object, and the documented
  ``async for attempt in AsyncRetrying(...): with attempt: ...`` loop;
- stamina: ``@stamina.retry(on=Exception, attempts=3)`` and
  ``AsyncRetryingCaller(attempts=3).on(Exception)`` (both built on tenacity);
- backoff 2: ``@backoff.on_exception(backoff.expo, Exception, max_tries=3)``.

tenacity and stamina support trio; backoff sleeps with asyncio, but its success path
never sleeps, so all of them run on trio here too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ._harness import Case, Op, Role, Target, brace_attr, import_optional, noop


def _brace_retry() -> Any:
    return brace_attr("Retry")(attempts=3)


@asynccontextmanager
async def brace_call() -> AsyncIterator[Op]:
    retry = _brace_retry()

    async def op(n: int) -> None:
        call = retry.call
        work = noop
        for _ in range(n):
            await call(work)

    yield op


@asynccontextmanager
async def brace_decorator() -> AsyncIterator[Op]:
    retry = _brace_retry()

    protected = retry(noop)

    async def op(n: int) -> None:
        for _ in range(n):
            await protected()

    yield op


def _tenacity_options() -> dict[str, Any]:
    tenacity = import_optional("tenacity")
    return {
        "stop": tenacity.stop_after_attempt(3),
        "wait": tenacity.wait_exponential(multiplier=0.1, max=10.0),
        "retry": tenacity.retry_if_exception_type(Exception),
        "reraise": True,
    }


@asynccontextmanager
async def tenacity_decorator() -> AsyncIterator[Op]:
    tenacity = import_optional("tenacity")

    protected = tenacity.retry(**_tenacity_options())(noop)

    async def op(n: int) -> None:
        for _ in range(n):
            await protected()

    yield op


@asynccontextmanager
async def tenacity_object() -> AsyncIterator[Op]:
    tenacity = import_optional("tenacity")
    retrying = tenacity.AsyncRetrying(**_tenacity_options())

    async def op(n: int) -> None:
        work = noop
        for _ in range(n):
            await retrying(work)

    yield op


@asynccontextmanager
async def tenacity_loop() -> AsyncIterator[Op]:
    tenacity = import_optional("tenacity")
    options = _tenacity_options()

    async def op(n: int) -> None:
        work = noop
        retrying = tenacity.AsyncRetrying
        for _ in range(n):
            async for attempt in retrying(**options):
                with attempt:
                    await work()

    yield op


@asynccontextmanager
async def stamina_decorator() -> AsyncIterator[Op]:
    stamina = import_optional("stamina")

    protected = stamina.retry(on=Exception, attempts=3)(noop)

    async def op(n: int) -> None:
        for _ in range(n):
            await protected()

    yield op


@asynccontextmanager
async def stamina_caller() -> AsyncIterator[Op]:
    stamina = import_optional("stamina")
    caller = stamina.AsyncRetryingCaller(attempts=3).on(Exception)

    async def op(n: int) -> None:
        work = noop
        for _ in range(n):
            await caller(work)

    yield op


@asynccontextmanager
async def backoff_decorator() -> AsyncIterator[Op]:
    backoff = import_optional("backoff")

    protected = backoff.on_exception(backoff.expo, Exception, max_tries=3)(noop)

    async def op(n: int) -> None:
        for _ in range(n):
            await protected()

    yield op


def _case(key: str, label: str, setup: Any, **kwargs: Any) -> Case:
    role: Role = "brace" if key.startswith("retry.brace") else "peer"
    return Case("retry", key, label, role, setup, **kwargs)


CASES = (
    _case("retry.brace.call", "brace: await retry.call(noop)", brace_call, brace=("Retry",)),
    _case("retry.brace.decorator", "brace: @retry async def", brace_decorator, brace=("Retry",)),
    _case(
        "retry.tenacity.decorator",
        "tenacity: @retry async def",
        tenacity_decorator,
        requires=("tenacity",),
    ),
    _case(
        "retry.tenacity.object",
        "tenacity: await AsyncRetrying(...)(noop), reused",
        tenacity_object,
        requires=("tenacity",),
    ),
    _case(
        "retry.tenacity.loop",
        "tenacity: async for attempt in AsyncRetrying(...)",
        tenacity_loop,
        requires=("tenacity",),
    ),
    _case(
        "retry.stamina.decorator",
        "stamina: @stamina.retry async def",
        stamina_decorator,
        requires=("stamina",),
    ),
    _case(
        "retry.stamina.caller",
        "stamina: await AsyncRetryingCaller(...).on(Exception)(noop)",
        stamina_caller,
        requires=("stamina",),
    ),
    _case(
        "retry.backoff",
        "backoff: @on_exception async def",
        backoff_decorator,
        requires=("backoff",),
    ),
)

FLOORS = ("floor.await",)

TENACITY = ("retry.tenacity.decorator", "retry.tenacity.object", "retry.tenacity.loop")
PEERS = tuple(case.key for case in CASES if case.role == "peer")

TARGETS = (
    Target(
        "retry",
        "await retry.call <= 1/20 x tenacity (its fastest form)",
        "retry.brace.call",
        TENACITY,
        1 / 20,
    ),
    Target(
        "retry",
        "await retry.call below every retry peer",
        "retry.brace.call",
        PEERS,
        1.0,
        mode="every",
    ),
)
