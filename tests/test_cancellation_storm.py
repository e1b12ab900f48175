"""Cancellation storms: thousands of waiters cancelled at random moments; the books balance.

Times are virtual (trio's MockClock, looptime on asyncio), the randomness is seeded, and
the limiters read the loop's clock, so every run replays the same storm. Arrivals,
patiences and the refill are on a 1/64 s grid, so deadlines often fall on the very tick
a waiter's tokens come back: the race between a grant and a cancellation is exercised.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from brace import SlidingWindow, TokenBucket

SEED = 20261127
TICK = 1 / 64


@dataclass
class Storm:
    """What happened to each waiter of a storm."""

    granted: list[tuple[int, int, float]] = field(default_factory=list)  # number, cost, when
    cancelled: list[int] = field(default_factory=list)
    outcomes: dict[int, int] = field(default_factory=dict)  # number -> how many outcomes


async def raise_storm(
    limiter: TokenBucket | SlidingWindow, waiters: int, max_cost: int, seed: int
) -> Storm:
    """Waiter ``n`` arrives at ``n`` ticks, asks for 1..max_cost, and gives up after a random
    patience (a third of them never do); returns who was granted and who was cancelled."""
    rng = random.Random(seed)
    storm = Storm()
    cancelled_class = anyio.get_cancelled_exc_class()

    async def waiter(number: int, cost: int, patience: float) -> None:
        await anyio.sleep(number * TICK)
        with anyio.move_on_after(patience):
            try:
                decision = await limiter.acquire(cost)
            except cancelled_class:
                storm.cancelled.append(number)
                storm.outcomes[number] = storm.outcomes.get(number, 0) + 1
                raise
            storm.outcomes[number] = storm.outcomes.get(number, 0) + 1
            assert decision.allowed
            storm.granted.append((number, cost, anyio.current_time()))

    # A lost wake-up would hang the storm: fail instead (virtual time, so free).
    with anyio.fail_after(3600):
        async with anyio.create_task_group() as group:
            for number in range(waiters):
                cost = rng.randint(1, max_cost)
                patience = math.inf if rng.random() < 1 / 3 else rng.randint(0, 64 * 20) * TICK
                group.start_soon(waiter, number, cost, patience)
    return storm


def check_books(storm: Storm, waiters: int, acquired: int, cancelled: int) -> None:
    """Each waiter got exactly one outcome, and the limiter's counters agree."""
    assert len(storm.outcomes) == waiters
    assert set(storm.outcomes.values()) == {1}  # a Decision or Cancelled, never both
    granted = [number for number, _, _ in storm.granted]
    assert not set(granted) & set(storm.cancelled)
    assert len(granted) + len(storm.cancelled) == waiters
    assert sum(cost for _, cost, _ in storm.granted) == acquired
    assert len(storm.cancelled) == cancelled
    # First come, first served: waiter n joined the queue before waiter n + 1.
    assert granted == sorted(granted)
    # Cancellations really happened, at all kinds of moments, and so did grants.
    assert len(storm.cancelled) > waiters // 4
    assert len(granted) > waiters // 4


async def test_token_bucket_survives_a_storm_of_10000_cancellations() -> None:
    """10,000 waiters, most cancelled at random: never more than burst + rate * elapsed is
    granted, no cancelled waiter is granted, and afterwards the bucket delivers its rate."""
    rate, burst, waiters = 64.0, 16, 10_000
    bucket = TokenBucket(rate, burst=burst, clock=anyio.current_time)
    start = anyio.current_time()
    storm = await raise_storm(bucket, waiters, max_cost=4, seed=SEED)

    stats = bucket.statistics()
    check_books(storm, waiters, stats.acquired, stats.cancelled)
    assert (stats.waiting, stats.waiting_cost, stats.waited > waiters // 2) == (0, 0, True)
    assert not bucket._queue.waiters  # no tombstone left behind
    total = 0
    for _, cost, when in storm.granted:
        total += cost
        assert total <= burst + rate * (when - start) + 1e-6
    # The uncancelled waiters kept the bucket busy: it ran at its full rate to the end.
    finish = storm.granted[-1][2]
    assert total >= rate * (finish - start - 1.0)

    # After the storm, the bucket still delivers exactly its rate.
    await anyio.sleep(burst / rate)
    assert bucket.available() == burst
    begin = anyio.current_time()
    tasks, each = 8, 2 * burst + 10 * int(rate)
    async with anyio.create_task_group() as group:
        for _ in range(tasks):
            group.start_soon(_take, bucket, each)
    assert anyio.current_time() - begin == pytest.approx((tasks * each - burst) / rate)


async def _take(bucket: TokenBucket, tokens: int) -> None:
    for _ in range(tokens):
        await bucket.acquire()


@pytest.mark.parametrize("exact", [False, True], ids=["counter", "log"])
async def test_sliding_window_survives_a_storm_of_cancellations(
    anyio_backend: Any, exact: bool
) -> None:
    """3,000 waiters on a window, most cancelled at random: no interval of ``window`` admits
    more than the bound (limit for the log, 2 * limit - 1 for the counter), no cancelled
    waiter is admitted, and afterwards the window admits its full limit again."""
    limit, length, waiters = 32, 1.0, 3_000
    window = SlidingWindow(limit, length, exact=exact, clock=anyio.current_time)
    storm = await raise_storm(window, waiters, max_cost=3, seed=SEED + exact)

    stats = window.statistics()
    check_books(storm, waiters, stats.acquired, stats.cancelled)
    assert not window._queue.waiters
    bound = limit if exact else 2 * limit - 1
    times = [(when, cost) for _, cost, when in storm.granted]
    for index, (end, _) in enumerate(times):
        inside = sum(cost for when, cost in times[: index + 1] if when > end - length + 1e-9)
        assert inside <= bound

    await anyio.sleep(2 * length)
    assert window.remaining() == limit
    assert all(window.try_acquire() for _ in range(limit))
    assert not window.try_acquire()
