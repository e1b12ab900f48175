"""The test harness itself: async tests run on both backends with virtual time
(`brace.testing.virtual_time`, on every Python: `VirtualTimeLoop` stands in for
looptime 0.7 on 3.10)."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable

import anyio
import pytest

from brace.testing import VirtualTimeLoop, virtual_time


async def test_sleep_is_virtual(anyio_backend_name: str) -> None:
    """An hour of anyio.sleep passes instantly in wall time but fully on the loop's clock
    (the conftest fixture's options)."""
    wall = time.monotonic()
    start = anyio.current_time()
    await anyio.sleep(3600)
    assert anyio.current_time() - start >= 3600
    assert time.monotonic() - wall < 5
    assert anyio_backend_name in {"asyncio", "trio"}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_hour_passes_at_once(backend: str) -> None:
    """A sleep of an hour ends with the loop's clock an hour on, at once."""

    async def main() -> float:
        start = anyio.current_time()
        await anyio.sleep(3600)
        return anyio.current_time() - start

    real = time.perf_counter()
    slept = anyio.run(main, backend=backend, backend_options=virtual_time(backend))
    assert slept == pytest.approx(3600, abs=1e-3)
    assert time.perf_counter() - real < 60  # a real hour would never get here


def test_each_call_gives_a_fresh_clock() -> None:
    """The options are built anew: a second run starts its clock again."""
    first, second = virtual_time("trio"), virtual_time("trio")
    assert first["clock"] is not second["clock"]


def test_the_asyncio_loop_fits_the_python() -> None:
    """looptime's loop on 3.11+ where it installs, VirtualTimeLoop on 3.10."""
    factory = virtual_time("asyncio")["loop_factory"]
    if sys.version_info < (3, 11):
        assert factory is VirtualTimeLoop
    else:
        import looptime

        assert factory is looptime.new_event_loop


def test_an_unknown_backend_is_named() -> None:
    with pytest.raises(ValueError, match="backend must be 'asyncio' or 'trio', got 'curio'"):
        virtual_time("curio")


def finishes_within(seconds: float, run: Callable[[], object]) -> bool:
    """Whether ``run()`` returns within ``seconds`` of real time (a stalled virtual clock
    spins for ever: the thread is left to it, daemonic)."""
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_timers_a_fraction_of_a_microsecond_apart_come_due() -> None:
    """Tasks sleeping random, unrounded delays all wake, in order, at their own times:
    the case where looptime 0.7's clock (rounded to the microsecond) stopped for good with
    a timer a fraction of a microsecond ahead."""
    draws = random.Random(2026)
    delays = [draws.uniform(0, 0.01) for _ in range(200)] + [5e-3 + 1.6e-7, 5e-3]
    woke: list[tuple[float, float]] = []

    async def sleeper(delay: float) -> None:
        await anyio.sleep(delay)
        woke.append((delay, anyio.current_time()))

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for delay in delays:
                group.start_soon(sleeper, delay)

    options = {"loop_factory": VirtualTimeLoop}
    assert finishes_within(60, lambda: anyio.run(main, backend="asyncio", backend_options=options))
    assert sorted(delay for delay, _ in woke) == sorted(delays)
    assert [delay for delay, _ in woke] == sorted(delays)  # woken in the order of their delays
    for delay, now in woke:
        assert now == pytest.approx(delay, abs=1e-9)


def test_real_io_is_waited_for_when_no_timer_is_pending() -> None:
    """With no timer, the loop waits for real I/O: a worker thread's result arrives."""

    def work() -> str:
        time.sleep(0.01)
        return "done"

    async def main() -> str:
        return await anyio.to_thread.run_sync(work)

    loop_options = {"loop_factory": VirtualTimeLoop}
    assert anyio.run(main, backend="asyncio", backend_options=loop_options) == "done"
