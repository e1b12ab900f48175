"""brace.Fallback: a substitute exactly on the configured outcomes, never on a cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import brace
from brace._fallback import FallbackDetails, triggers

ERRORS: list[type[Exception]] = [ValueError, KeyError, OSError, brace.RateLimited, RuntimeError]


def test_triggers_on_exactly_the_configured_types() -> None:
    """triggers() accepts an exception exactly when it is an instance of a configured type."""

    @given(st.sampled_from(ERRORS), st.sets(st.sampled_from(ERRORS)))
    def check(raised: type[Exception], configured: set[type[Exception]]) -> None:
        error = raised("x") if raised is not brace.RateLimited else brace.RateLimited()
        expected = any(isinstance(error, kind) for kind in configured)
        assert triggers(error, tuple(configured), None) is expected

    check()


def test_triggers_never_on_base_exceptions() -> None:
    """A BaseException (cancellation, KeyboardInterrupt) never triggers, whatever the filter."""
    assert not triggers(KeyboardInterrupt(), (Exception,), None)
    assert not triggers(asyncio.CancelledError(), None, lambda exc: True)
    assert triggers(None, (), None)  # a rejected result always does


@settings(max_examples=40, deadline=None)
@given(
    raised=st.sampled_from([*ERRORS, None]),
    configured=st.sets(st.sampled_from(ERRORS), min_size=1),
    reject=st.booleans(),
)
def test_fallback_triggers_exactly_on_configured_outcomes(
    raised: type[Exception] | None, configured: set[type[Exception]], reject: bool
) -> None:
    """The substitute is returned exactly for a configured exception or a rejected result;
    any other exception reaches the caller unchanged and a good result passes through."""
    seen: list[FallbackDetails[Any]] = []
    fallback = brace.Fallback(
        "substitute",
        fallback_on=tuple(configured),
        fallback_if_result=(lambda value: value == "bad") if reject else None,
        on_fallback=seen.append,
    )
    error = None if raised is None else raised()

    async def work() -> str:
        if error is not None:
            raise error
        return "bad"

    async def main() -> None:
        if error is not None and not isinstance(error, tuple(configured)):
            with pytest.raises(type(error)) as caught:
                await fallback.call(work)
            assert caught.value is error
            assert seen == []
        elif error is not None or reject:
            assert await fallback.call(work) == "substitute"
            assert len(seen) == 1
            assert seen[0].exception is error
            assert seen[0].substitute == "substitute"
        else:
            assert await fallback.call(work) == "bad"
            assert seen == []

    anyio.run(main)


async def test_timeout_and_rejection_trigger_by_default() -> None:
    """By default Timeout's TimeoutExceeded and a breaker's CircuitOpen get the substitute."""
    fallback = brace.Fallback(0)
    policy = brace.compose(fallback, brace.Timeout(1.0))

    async def slow() -> int:
        await anyio.sleep(5)
        return 1

    assert await policy.run(slow) == 0

    async def refused() -> int:
        raise brace.CircuitOpen(retry_after=1.0)

    assert await fallback.run(refused) == 0
    assert fallback.statistics() == brace.FallbackStatistics(
        calls=2, successes=0, fallbacks=2, failures=0
    )


async def test_cancellation_from_outside_is_not_a_fallback() -> None:
    """A call cancelled from outside stays cancelled: no substitute, no hook."""
    seen: list[object] = []
    fallback = brace.Fallback("substitute", on_fallback=seen.append)
    finished = False

    async def slow() -> str:
        await anyio.sleep(10)
        return "late"

    with anyio.move_on_after(1) as scope:
        await fallback.call(slow)
        finished = True
    assert scope.cancelled_caught
    assert not finished
    assert seen == []


async def test_factory_sync_and_async_receive_the_outcome() -> None:
    """A factory (sync or async) is called with the details of the failed call."""

    def sync_factory(details: FallbackDetails[Any]) -> str:
        return f"sync {details.exception!r}"

    async def async_factory(details: FallbackDetails[Any]) -> str:
        await anyio.lowlevel.checkpoint()
        return f"async {details.result!r}"

    async def boom() -> str:
        raise ValueError("boom")

    async def empty() -> str:
        return ""

    assert await brace.Fallback(factory=sync_factory).call(boom) == "sync ValueError('boom')"
    fallback = brace.Fallback(factory=async_factory, fallback_if_result=lambda value: not value)
    assert await fallback.call(empty) == "async ''"


async def test_last_good_result_per_key_is_bounded() -> None:
    """last_good returns the last good result of the same key, keeping at most max_keys."""
    fallback = brace.Fallback(last_good=True, key=lambda user: user, max_keys=2)
    failing: set[str] = set()

    @fallback
    async def profile(user: str) -> str:
        if user in failing:
            raise ConnectionError(user)
        return f"profile of {user}"

    for user in ("a", "b", "c"):
        assert await profile(user) == f"profile of {user}"
    failing.update({"a", "b", "c"})
    assert await profile("c") == "profile of c"
    assert await profile("b") == "profile of b"
    with pytest.raises(ConnectionError):
        await profile("a")  # evicted: the oldest of three with max_keys=2
    assert fallback.statistics().failures == 1


async def test_last_good_before_value() -> None:
    """With last_good and a value, the value is used only until a good result is kept."""
    fallback = brace.Fallback("default", last_good=True)
    ok = False

    async def work() -> str:
        if not ok:
            raise OSError
        return "fresh"

    assert await fallback.call(work) == "default"
    ok = True
    assert await fallback.call(work) == "fresh"
    ok = False
    assert await fallback.call(work) == "fresh"


def test_bad_configuration_names_the_parameter() -> None:
    """Bad options raise at construction, naming the parameter."""
    with pytest.raises(TypeError, match="substitute"):
        brace.Fallback()
    with pytest.raises(TypeError, match="not both"):
        brace.Fallback(1, factory=lambda details: 2)
    with pytest.raises(TypeError, match="fallback_on"):
        brace.Fallback(1, fallback_on=KeyboardInterrupt)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fallback_on"):
        brace.Fallback(1, fallback_on=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_keys"):
        brace.Fallback(last_good=True, max_keys=0)
    with pytest.raises(TypeError, match="last_good"):
        brace.Fallback(1, key=lambda: 1)
    with pytest.raises(TypeError, match="fallback_if_result"):
        brace.Fallback(1, fallback_if_result=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_fallback"):
        brace.Fallback(1, on_fallback=3)  # type: ignore[arg-type]
