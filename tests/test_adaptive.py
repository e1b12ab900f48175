"""Adaptive concurrency limits: the pure cores, and an executor steering a simulated service."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import brace
from brace import AdaptiveLimit, PriorityExecutor
from brace._core.adaptive import AIMDCore, Gradient2Core, LimitCore, VegasCore


def feed(core: LimitCore, start: float, seconds: float, rtt: float, inflight: int) -> float:
    """Feed one sample per millisecond for ``seconds`` seconds; return the time reached."""
    now = start
    for _ in range(round(seconds * 1000)):
        now += 0.001
        core.update(now, rtt, inflight, False)
    return now


def test_aimd_backs_off_on_a_drop_and_grows_one_per_window_under_load() -> None:
    """AIMD multiplies by backoff_ratio on a drop and adds one slot per busy window."""
    core = AIMDCore(10, 1, 100, backoff_ratio=0.5, window=1.0, min_samples=1)
    core.update(0.0, 0.01, 10, False)  # opens the first window
    core.update(1.0, 0.01, 10, False)
    assert core.limit == 11
    core.update(1.5, 0.01, 10, True)  # within the window: nothing moves yet
    assert core.limit == 11
    core.update(2.0, 0.01, 10, False)
    assert core.limit == 5.5
    core.update(3.0, 0.01, 1, False)  # app-limited: an idle service proves nothing
    assert core.limit == 5.5


def test_aimd_treats_slow_responses_as_drops() -> None:
    """With latency_threshold, a window whose mean latency exceeds it shrinks the limit."""
    core = AIMDCore(20, 1, 100, latency_threshold=0.1)
    feed(core, 0.0, 1.0, 0.2, 20)
    assert core.limit < 20 * 0.9


def test_vegas_grows_while_the_service_queue_is_short_and_shrinks_when_long() -> None:
    """Vegas grows at no-load latency and shrinks once latency implies a long internal queue."""
    core = VegasCore(20, 1, 200)
    now = feed(core, 0.0, 0.5, 0.010, 20)
    assert core.limit > 20
    grown = core.limit
    feed(core, now, 2.0, 0.030, int(grown))  # two thirds of the limit are queueing
    assert core.limit < grown


def test_gradient2_shrinks_when_latency_rises_and_grows_back_when_it_falls() -> None:
    """Gradient2 cuts the limit when recent latency exceeds tolerance x long-term latency."""
    core = Gradient2Core(50, 1, 200)
    now = feed(core, 0.0, 2.0, 0.010, 50)
    steady = core.limit
    assert steady >= 50
    now = feed(core, now, 2.0, 0.040, 50)
    assert core.limit < steady / 2
    low = core.limit
    feed(core, now, 2.0, 0.010, int(low))
    assert core.limit > low + 10


@given(
    samples=st.lists(
        st.tuples(st.floats(0.0001, 10.0), st.integers(0, 300), st.booleans(), st.floats(0.0, 1.0)),
        max_size=200,
    ),
    kind=st.sampled_from(["aimd", "gradient2", "vegas"]),
)
def test_limits_stay_within_their_bounds(
    samples: list[tuple[float, int, bool, float]], kind: str
) -> None:
    """Whatever the samples, every algorithm keeps min_limit <= limit <= max_limit."""
    core: LimitCore = {
        "aimd": AIMDCore(5, 2, 40, window=0.1, min_samples=1),
        "gradient2": Gradient2Core(5, 2, 40, window=0.1, min_samples=1),
        "vegas": VegasCore(5, 2, 40, window=0.1, min_samples=1),
    }[kind]
    now = 0.0
    for rtt, inflight, dropped, dt in samples:
        now += dt
        limit = core.update(now, rtt, inflight, dropped)
        assert 2 <= limit <= 40
        assert 2 <= core.slots <= 40


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"min_limit": 0}, ValueError),
        ({"min_limit": 10, "max_limit": 5}, ValueError),
        ({"initial": 500}, ValueError),
        ({"window": 0}, ValueError),
        ({"max_limit": 2.5}, TypeError),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object], error: type[Exception]) -> None:
    """Bounds, window and initial value are checked at construction, naming the parameter."""
    with pytest.raises(error, match=next(iter(kwargs))):
        AdaptiveLimit.aimd(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backoff_ratio"):
        AdaptiveLimit.aimd(backoff_ratio=1.5)
    with pytest.raises(ValueError, match="tolerance"):
        AdaptiveLimit.gradient2(tolerance=0.5)
    with pytest.raises(ValueError, match="beta"):
        AdaptiveLimit.vegas(alpha=5, beta=4)


def test_one_limit_steers_one_executor() -> None:
    """Attaching sets the executor's concurrency; a second executor is refused."""
    limit = AdaptiveLimit.vegas(initial=7)
    executor = PriorityExecutor(limit=limit)
    assert executor.concurrency == 7
    with pytest.raises(ValueError, match="one executor"):
        PriorityExecutor(limit=limit)


class Service:
    """Latency is flat up to ``knee`` calls in flight, then grows with the queue inside."""

    def __init__(self, knee: int, base: float = 0.1) -> None:
        self.knee = knee
        self.base = base
        self.inflight = 0

    async def __call__(self) -> None:
        self.inflight += 1
        try:
            await anyio.sleep(self.base * max(1.0, self.inflight / self.knee))
        finally:
            self.inflight -= 1


SETTINGS: dict[str, Any] = {"window": 0.5, "initial": 4, "max_limit": 200}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("make_limit", "settles"),
    [
        # latency_threshold 1.5 x base: AIMD backs off once the queue inside adds 50 %
        (lambda: AdaptiveLimit.aimd(latency_threshold=0.15, **SETTINGS), (1.0, 1.7)),
        # Gradient2 tolerates 1.5 x latency plus queue_size: it settles above the knee
        (lambda: AdaptiveLimit.gradient2(**SETTINGS), (1.2, 2.5)),
        (lambda: AdaptiveLimit.vegas(**SETTINGS), (1.0, 1.6)),
    ],
    ids=["aimd", "gradient2", "vegas"],
)
async def test_the_limit_finds_the_knee_follows_it_down_and_recovers(
    make_limit: object, settles: tuple[float, float]
) -> None:
    """Against a service with a knee, the limit settles near it, drops with it, and recovers."""
    changes: list[brace.LimitChanged] = []
    limit: AdaptiveLimit = make_limit()  # type: ignore[operator]
    limit.on_change = changes.append
    executor = PriorityExecutor(4, 10_000, limit=limit, clock=anyio.current_time)
    service = Service(knee=10)
    running = True
    seen: list[int] = []

    async def client() -> None:
        while running:
            await executor.run(service)

    async with anyio.create_task_group() as tg:
        for _ in range(60):  # far more demand than the service can take
            tg.start_soon(client)
        await anyio.sleep(20)
        seen.append(executor.concurrency)  # settled at knee 10
        service.knee = 3  # the service degrades
        await anyio.sleep(20)
        seen.append(executor.concurrency)
        service.knee = 10  # and recovers
        await anyio.sleep(20)
        seen.append(executor.concurrency)
        running = False
    low, high = settles
    assert low * 10 <= seen[0] <= high * 10, seen
    assert seen[1] <= seen[0] / 2, seen
    assert seen[1] <= high * 3 + 4, seen
    assert low * 10 <= seen[2] <= high * 10, seen
    stats = limit.statistics()
    assert stats.increases > 0
    assert stats.decreases > 0
    assert changes
    assert changes[-1].limit == executor.concurrency


async def test_slot_blocks_feed_the_adaptive_limit_too() -> None:
    """With an adaptive limit, slot() times its block and reports it like run() does."""
    limit = AdaptiveLimit.aimd(initial=4, window=0.1, min_samples=1)
    executor = PriorityExecutor(max_queue=100, limit=limit, clock=anyio.current_time)
    for _ in range(20):
        async with executor.slot():
            await anyio.sleep(0.05)
    with pytest.raises(LookupError):
        async with executor.slot():
            raise LookupError
    stats = limit.statistics()
    assert stats.samples == 21
    assert executor.statistics().failed == 1
    assert executor.statistics().running == 0
