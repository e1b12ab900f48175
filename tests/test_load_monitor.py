"""LoadMonitor: the lag ramp in the core, and a blocked loop in virtual time raising it."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brace import LoadMonitor, Overloaded
from brace._core.load import LoadCore, shed_probability


class Draw:
    """A random source whose next value the test sets (``draw[0]``)."""

    def __init__(self, draw: list[float]) -> None:
        self.draw = draw

    def random(self) -> float:
        return self.draw[0]


@pytest.mark.parametrize(
    ("lag", "expected"),
    [(0.0, 0.0), (0.1, 0.0), (0.125, 0.25), (0.15, 0.5), (0.19, 0.9), (0.2, 1.0), (5.0, 1.0)],
)
def test_shed_probability_follows_the_ramp(lag: float, expected: float) -> None:
    """0 up to max_lag, linear to 1 at twice max_lag, 1 beyond."""
    assert shed_probability(lag, 0.1) == pytest.approx(expected)


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(st.floats(-1.0, 10.0, allow_nan=False), min_size=1, max_size=50),
    smoothing=st.floats(0.01, 1.0),
    max_lag=st.floats(0.001, 1.0),
)
def test_core_matches_the_ewma_model(
    samples: list[float], smoothing: float, max_lag: float
) -> None:
    """The core's smoothed lag is the textbook EWMA of the clamped samples."""
    core = LoadCore(max_lag, smoothing=smoothing)
    model = 0.0
    for index, sample in enumerate(samples):
        core.observe(sample, float(index))
        model = (1 - smoothing) * model + smoothing * max(sample, 0.0)
        assert core.lag == pytest.approx(model, abs=1e-9)
        assert core.probability == pytest.approx(shed_probability(model, max_lag), abs=1e-6)
    assert core.peak_lag == max(max(samples), 0.0)
    assert core.samples == len(samples)


def test_should_shed_uses_the_uniform_number() -> None:
    """At probability 0.5 a draw below 0.5 sheds and one above does not."""
    core = LoadCore(0.1, smoothing=1.0)
    core.observe(0.15, 0.0)
    assert core.should_shed(0.49)
    assert not core.should_shed(0.51)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_lag": 0}, ValueError),
        ({"smoothing": 1.5}, ValueError),
        ({"smoothing": "x"}, TypeError),
        ({"interval": -1}, ValueError),
        ({"random": 3}, TypeError),
        ({"clock": 3}, TypeError),
    ],
)
def test_bad_configuration_raises(kwargs: dict[str, object], error: type[Exception]) -> None:
    """Bad options fail at construction."""
    with pytest.raises(error):
        LoadMonitor(**kwargs)  # type: ignore[arg-type]


class BlockableClock:
    """The loop's virtual clock plus time "lost" to a simulated blocking call.

    A synchronous busy wait would burn real time that a virtual clock never sees; adding
    the blocked seconds to the clock reading is what the sampler would observe.
    """

    def __init__(self) -> None:
        self.lost = 0.0

    def __call__(self) -> float:
        return anyio.current_time() + self.lost

    def block(self, seconds: float) -> None:
        self.lost += seconds


async def test_idle_loop_has_no_lag() -> None:
    """On an idle virtual-time loop the sampler wakes on time: lag 0, nothing shed."""
    monitor = LoadMonitor(0.05, interval=0.1, clock=anyio.current_time)
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        await anyio.sleep(10.0)
        tg.cancel_scope.cancel()
    stats = monitor.statistics()
    assert stats.samples >= 99
    assert stats.lag == pytest.approx(0.0, abs=1e-9)
    assert not monitor.should_shed()


async def test_blocked_loop_raises_lag_and_shedding_follows_the_curve() -> None:
    """Each blocked interval adds its lag; the smoothed lag and probability follow the EWMA."""
    clock = BlockableClock()
    draw = [0.0]
    monitor = LoadMonitor(0.1, interval=1.0, smoothing=0.5, clock=clock, random=Draw(draw))
    expected = 0.0
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        for blocked in (0.2, 0.2, 0.2, 0.0, 0.0, 0.0, 0.0):
            await anyio.sleep(0.5)  # mid-interval: the sampler is asleep
            clock.block(blocked)  # the loop "was busy" for that long
            await anyio.sleep(0.5)  # the sampler wakes and measures
            await anyio.lowlevel.checkpoint()
            expected += 0.5 * (blocked - expected)
            assert monitor.lag == pytest.approx(expected)
            assert monitor.shed_probability == pytest.approx(shed_probability(expected, 0.1))
            probability = shed_probability(expected, 0.1)
            for uniform in (0.0, 0.3, 0.45, 0.55, 0.7, 0.99):
                draw[0] = uniform
                assert monitor.should_shed() is (uniform < probability)
            draw[0] = 0.0
            if probability:
                with pytest.raises(Overloaded):
                    monitor.check()
            else:
                monitor.check()
        tg.cancel_scope.cancel()
    assert monitor.statistics().peak_lag == pytest.approx(0.2)


async def test_lag_the_loop_did_not_spend_running_is_not_counted() -> None:
    """A late wake-up counts only up to the CPU time the loop's thread used meanwhile: a
    loop descheduled by a busy neighbour is not shed, a loop busy with its own work is."""
    clock = BlockableClock()
    cpu = [0.0]
    monitor = LoadMonitor(0.1, interval=1.0, smoothing=1.0, clock=clock, cpu_clock=lambda: cpu[0])
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        # (seconds late, of which the loop ran) -> the sample counted
        for late, ran, counted in ((0.5, 0.02, 0.02), (0.5, 0.5, 0.5), (0.3, 0.0, 0.0)):
            await anyio.sleep(0.5)
            clock.block(late)
            cpu[0] += ran
            await anyio.sleep(0.5)
            await anyio.lowlevel.checkpoint()
            assert monitor.statistics().last_lag == pytest.approx(counted)
        tg.cancel_scope.cancel()
    stats = monitor.statistics()
    assert stats.uncounted_lag == pytest.approx(0.48 + 0.3)
    assert stats.peak_lag == pytest.approx(0.5)


def test_cpu_clock_defaults_to_the_thread_s_cpu_time_only_with_the_real_clock() -> None:
    """With the default clock lag is compared with the thread's CPU time; with an injected
    clock and no cpu_clock every late second counts (fake time has no CPU time)."""
    assert LoadMonitor()._cpu_clock is time.thread_time
    assert LoadMonitor(clock=anyio.current_time)._cpu_clock is None
    with pytest.raises(TypeError, match="cpu_clock"):
        LoadMonitor(cpu_clock=1.0)  # type: ignore[arg-type]


async def test_context_manager_call_and_decorator_shed_when_overloaded() -> None:
    """``async with``, ``call`` and the decorator raise Overloaded at full shedding."""
    monitor = LoadMonitor(0.1, smoothing=1.0, clock=anyio.current_time, retry_after=2.0)

    @monitor
    async def work(x: int) -> int:
        return x + 1

    assert await work(1) == 2
    assert await monitor.call(work, 2) == 3
    monitor.observe(0.5)  # well past twice max_lag
    with pytest.raises(Overloaded) as caught:
        async with monitor:
            pass
    assert caught.value.retry_after == 2.0
    with pytest.raises(Overloaded):
        await monitor.call(work, 1)
    with pytest.raises(Overloaded):
        await work(1)
    assert monitor.statistics().shed == 3
