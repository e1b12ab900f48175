"""brace.Timeout on both backends, in virtual time."""

from __future__ import annotations

import dataclasses
import inspect
import math
import random
from typing import Any

import anyio
import pytest

import brace
from brace import Timeout, TimeoutExceeded


async def test_overrun_raises_timeout_exceeded_at_the_deadline() -> None:
    """A body sleeping past the limit is cancelled at the limit with TimeoutExceeded."""
    timeout = Timeout(2.0)
    start = anyio.current_time()
    with pytest.raises(TimeoutExceeded) as caught:
        await timeout.call(anyio.sleep, 10)
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, brace.BraceError)
    assert caught.value.timeout == 2.0
    assert anyio.current_time() - start == pytest.approx(2.0)
    assert timeout.statistics() == brace.TimeoutStatistics(
        calls=1, timed_out=1, refusals={"timeout": 1}
    )


async def test_fast_body_returns_its_value() -> None:
    """A body finishing in time returns normally, its value untouched."""

    async def answer(x: int, *, y: int) -> int:
        await anyio.sleep(1)
        return x + y

    timeout = Timeout(2.0)
    assert await timeout.call(answer, 1, y=2) == 3
    async with timeout:
        await anyio.sleep(1.5)
    assert timeout.statistics() == brace.TimeoutStatistics(
        calls=2, timed_out=0, refusals={"timeout": 0}
    )


async def test_async_with_overrun() -> None:
    """`async with` raises TimeoutExceeded and the rest of the body never runs."""
    reached = False

    async def body() -> None:
        nonlocal reached
        async with Timeout(3):
            await anyio.sleep(5)
            reached = True

    start = anyio.current_time()
    with pytest.raises(TimeoutExceeded):
        await body()
    assert not reached
    assert anyio.current_time() - start == pytest.approx(3.0)


async def test_none_means_no_limit() -> None:
    """seconds=None never times out."""
    timeout = Timeout(None)
    await timeout.call(anyio.sleep, 86_000)
    async with timeout:
        await anyio.sleep(86_000)
    assert timeout.statistics().timed_out == 0


async def test_exceptions_from_the_body_pass_unchanged() -> None:
    """An error raised by the body in time is not touched."""
    error = KeyError("x")
    with pytest.raises(KeyError) as caught:
        async with Timeout(5):
            raise error
    assert caught.value is error


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["call", "async with"])
async def test_outer_cancellation_is_not_mistranslated(form: str) -> None:
    """An enclosing scope's earlier deadline cancels through the timeout, not TimeoutExceeded."""
    timeout = Timeout(5)
    with anyio.move_on_after(1) as outer:
        if form == "call":
            await timeout.call(anyio.sleep, 10)
        else:
            async with timeout:
                await anyio.sleep(10)
    assert outer.cancelled_caught
    assert timeout.statistics().timed_out == 0


async def test_simultaneous_outer_deadline_wins() -> None:
    """When the outer and the inner deadline fall together, the outer cancellation wins."""
    timeout = Timeout(1)
    with anyio.move_on_after(1) as outer:
        await timeout.call(anyio.sleep, 10)
    assert outer.cancelled_caught


async def test_outer_cancel_reaches_caller_unchanged() -> None:
    """The Cancelled raised in the body is the very object that leaves the timeout."""
    seen: list[BaseException] = []
    caught: list[BaseException] = []

    async def body() -> None:
        try:
            await anyio.sleep(10)
        except BaseException as exc:
            seen.append(exc)
            raise

    scopes: list[anyio.CancelScope] = []

    async def run() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            try:
                await Timeout(5).call(body)
            except anyio.get_cancelled_exc_class() as exc:
                caught.append(exc)
                raise

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.sleep(1)
        scopes[0].cancel()
    assert caught[0] is seen[0]
    assert type(caught[0]) is anyio.get_cancelled_exc_class()


async def test_concurrent_tasks_share_one_timeout() -> None:
    """Many tasks entering one Timeout at once each get their own deadline."""
    timeout = Timeout(5)
    outcomes: dict[int, str] = {}

    async def worker(index: int) -> None:
        await anyio.sleep(index * 0.5)  # staggered entries
        try:
            async with timeout:
                await anyio.sleep(index % 10)
        except TimeoutExceeded:
            outcomes[index] = "timeout"
        else:
            outcomes[index] = "done"

    async with anyio.create_task_group() as tg:
        for index in range(40):
            tg.start_soon(worker, index)
    assert outcomes == {i: "done" if i % 10 < 5 else "timeout" for i in range(40)}
    assert timeout.statistics() == brace.TimeoutStatistics(
        calls=40, timed_out=20, refusals={"timeout": 20}
    )


async def test_nested_entries_of_one_instance_in_one_task() -> None:
    """Nested `async with` of the same Timeout: the outer deadline fires, counted once."""
    timeout = Timeout(5)

    async def nested() -> None:
        async with timeout:
            await anyio.sleep(3)
            async with timeout:  # its deadline (8) is later than the outer one (5)
                await anyio.sleep(4)

    start = anyio.current_time()
    with pytest.raises(TimeoutExceeded):
        await nested()
    assert anyio.current_time() - start == pytest.approx(5.0)
    assert timeout.statistics().timed_out == 1


async def test_inner_entry_times_out_and_outer_continues() -> None:
    """An inner entry's deadline raises inside; the outer entry goes on normally."""
    timeout = Timeout(2)
    async with timeout:
        with pytest.raises(TimeoutExceeded):
            async with Timeout(1):
                await anyio.sleep(3)
        await anyio.sleep(0.5)
    assert timeout.statistics().timed_out == 0


async def test_decorator_keeps_signature() -> None:
    """@Timeout keeps the wrapped function's name, docstring and signature."""

    async def work(delay: float, *, label: str = "x") -> str:
        """Do work."""
        await anyio.sleep(delay)
        return label

    decorated = Timeout(1)(work)
    assert decorated.__name__ == "work"
    assert decorated.__doc__ == "Do work."
    assert inspect.signature(decorated) == inspect.signature(work)
    assert await decorated(0.5, label="y") == "y"
    with pytest.raises(TimeoutExceeded):
        await decorated(2)


async def test_exit_without_enter_is_an_error() -> None:
    """Exiting a Timeout this task never entered is a RuntimeError."""
    with pytest.raises(RuntimeError, match="not entered"):
        await Timeout(1).__aexit__(None, None, None)


def test_statistics_is_frozen_and_slotted() -> None:
    """statistics() is a frozen, slotted dataclass."""
    stats = Timeout(1).statistics()
    assert not hasattr(stats, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.calls = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("seconds", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_bad_seconds(seconds: Any, error: type[Exception]) -> None:
    """Bad seconds raise at construction, naming the parameter."""
    with pytest.raises(error, match="seconds"):
        Timeout(seconds)


async def test_random_cancellation_leaves_no_open_entry() -> None:
    """Cancelled or timed out at random moments, no entry is left on the task's stack."""
    rng = random.Random(3)
    timeout = Timeout(1.0)
    expired = 0
    for _ in range(200):
        with anyio.move_on_after(rng.uniform(0, 2)):
            try:
                async with timeout:
                    await anyio.sleep(rng.uniform(0, 2))
            except TimeoutExceeded:
                expired += 1
        assert timeout._scopes.get() is None
    assert timeout.statistics() == brace.TimeoutStatistics(
        calls=200, timed_out=expired, refusals={"timeout": expired}
    )
    assert 0 < expired < 200
