"""CircuitBreaker.replica(): the same configuration, a fresh and independent state."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brace import CircuitBreaker, CircuitOpen, CircuitState, CircuitStateChange
from brace.testing import FakeClock, FixedRandom, virtual_time

BACKENDS = ("asyncio", "trio")


class Boom(Exception):
    """A failure of the guarded service."""


class Excluded(Boom):
    """Listed in ``exclude``: the service answered."""


class Soft(Boom):
    """``is_failure`` says it is no failure."""


class Other(Exception):
    """Not in ``exceptions``: counts as a success."""


class Ignored(Boom):
    """Listed in ``ignore``: counts as neither failure nor success."""


def run_async(main: Callable[[], Awaitable[None]], backend: str) -> None:
    """``main()`` on ``backend`` with virtual time, as the fixtures of conftest.py do."""
    anyio.run(main, backend=backend, backend_options=virtual_time(backend))


class SettableClock:
    """A clock the test may set back, to replay one call on a second breaker."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_replica_carries_every_constructor_parameter() -> None:
    """replica() passes on exactly the parameters of CircuitBreaker.__init__, no fewer."""
    parameters = set(inspect.signature(CircuitBreaker.__init__).parameters) - {"self"}
    breaker = CircuitBreaker()
    assert set(breaker._arguments) == parameters
    assert set(inspect.signature(CircuitBreaker.replica).parameters) == {"self", "name"}


CORE_SETTINGS = (
    "failure_threshold",
    "recovery_time",
    "half_open_max_calls",
    "failure_rate",
    "minimum_calls",
    "slow_call_duration",
    "slow_call_rate",
    "success_threshold",
    "recovery_backoff",
    "max_recovery_time",
    "recovery_jitter",
    "max_half_open_wait",
    "random",
    "needs_duration",
    "needs_end_time",
)


def test_replica_has_the_configuration_and_a_fresh_state() -> None:
    """Every setting differs from its default in the original and is the same in the replica."""
    clock = FakeClock()
    seen: list[CircuitStateChange] = []

    rng = FixedRandom(0.25)

    def is_failure(error: BaseException) -> bool:
        return not isinstance(error, Soft)

    def bad(result: object) -> bool:
        return result == "bad"

    original = CircuitBreaker(
        failure_threshold=2,
        recovery_time=4.0,
        half_open_max_calls=3,
        failure_rate=0.5,
        minimum_calls=4,
        window=30.0,
        slow_call_duration=2.0,
        exceptions=(Boom,),
        exclude=(Excluded,),
        window_calls=None,
        window_buckets=5,
        slow_call_rate=0.75,
        success_threshold=2,
        recovery_backoff=2.0,
        max_recovery_time=60.0,
        recovery_jitter=0.5,
        max_half_open_wait=7.0,
        ignore=Ignored,
        is_failure=is_failure,
        failure_result=bad,
        on_state_change=[seen.append],
        clock=clock,
        random=rng,
        name="a",
    )
    for _ in range(2):
        original.try_enter().failure()
    assert original.state is CircuitState.OPEN
    replica = original.replica(name="b")
    assert isinstance(replica, CircuitBreaker)
    assert type(CircuitBreaker().replica()) is type(CircuitBreaker())  # the fast closed class
    assert replica.state is CircuitState.CLOSED
    stats = replica.statistics()
    assert (stats.name, stats.failures, stats.opened_count) == ("b", 0, 0)
    for setting in CORE_SETTINGS:
        assert getattr(replica._core, setting) == getattr(original._core, setting), setting
    assert type(replica._core.window) is type(original._core.window)
    assert replica._core.window.width == original._core.window.width  # type: ignore[union-attr]
    assert replica._clock is clock
    assert replica._exceptions == (Boom,)
    assert replica._exclude == (Excluded,)
    assert replica._ignore == (Ignored,)
    assert replica._is_failure is is_failure
    assert replica._failure_result is bad
    assert replica._hooks == (seen.append,)
    assert original.replica().name == "a"
    for _ in range(2):
        replica.try_enter().failure()
    assert [change.name for change in seen] == ["a", "b"]  # the hook is shared too


def test_a_subclass_replicates_as_itself() -> None:
    """A user's subclass gets a replica of its own class."""

    class Mine(CircuitBreaker):
        __slots__ = ()

    replica = Mine(failure_threshold=3).replica()
    assert type(replica) is Mine
    assert replica._core.failure_threshold == 3


configs = st.fixed_dictionaries(
    {
        "failure_threshold": st.none() | st.integers(1, 4),
        "recovery_time": st.integers(1, 8).map(float),
        "half_open_max_calls": st.integers(1, 3),
        "success_threshold": st.integers(1, 3),
        "recovery_backoff": st.sampled_from([1.0, 2.0]),
        "recovery_jitter": st.sampled_from([0.0, 0.5]),
    },
    optional={
        "failure_rate": st.sampled_from([0.25, 0.5, 1.0]),
        "minimum_calls": st.integers(1, 4),
        "window_calls": st.integers(4, 8),
        "window": st.integers(1, 20).map(float),
        "slow_call_duration": st.sampled_from([0.5, 2.0]),
        "max_recovery_time": st.sampled_from([8.0, 20.0]),
        "max_half_open_wait": st.sampled_from([0.5, 3.0]),
    },
)
KINDS = ("ok", "fail", "excluded", "soft", "bad", "other", "ignored")
steps = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 8).map(lambda k: k / 4)), max_size=40
)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, before=steps, sequence=steps)
def test_a_replica_decides_as_a_breaker_built_with_the_same_arguments(
    backend: str, config: dict[str, Any], before: list[tuple[str, float]], sequence: list[Any]
) -> None:
    """Fed the same calls at the same times, a replica and a new breaker agree on everything."""
    if config.get("window_calls", 10) < config.get("minimum_calls", 10):
        config["window_calls"] = config.get("minimum_calls", 10)
    if config.get("max_recovery_time", 60.0) < config["recovery_time"]:
        del config["max_recovery_time"]
    clock = SettableClock()
    current = ["original"]
    changes: dict[str, list[CircuitStateChange]] = {"original": [], "a": [], "b": []}

    def hook(change: CircuitStateChange) -> None:
        changes[current[0]].append(change)

    arguments: dict[str, Any] = {
        **config,
        "exceptions": (Boom,),
        "exclude": Excluded,
        "ignore": Ignored,
        "is_failure": lambda error: not isinstance(error, Soft),
        "failure_result": lambda result: result == "bad",
        "on_state_change": hook,
        "clock": clock,
        "random": FixedRandom(0.5),
    }
    original = CircuitBreaker(**arguments, name="original")

    async def step(breaker: CircuitBreaker, kind: str, duration: float) -> object:
        async def work() -> str:
            clock.advance(duration)
            errors = {
                "fail": Boom,
                "excluded": Excluded,
                "soft": Soft,
                "other": Other,
                "ignored": Ignored,
            }
            if kind in errors:
                raise errors[kind]
            return kind

        try:
            return await breaker.call(work)
        except CircuitOpen as refusal:
            return ("refused", refusal.retry_after, refusal.state)
        except Exception as error:
            return type(error)

    async def main() -> None:
        for kind, duration in before:
            await step(original, kind, duration)
        replica = original.replica(name="b")
        reference = CircuitBreaker(**arguments, name="b")
        original.force_open()
        for kind, duration in sequence:
            start = clock.now
            current[0] = "a"
            got = await step(replica, kind, duration)
            end = clock.now
            clock.now = start  # the same call at the same times for both
            current[0] = "b"
            expected = await step(reference, kind, duration)
            assert (got, clock.now) == (expected, end)
            clock.advance(0.25)
            current[0] = "a"
            ours = replica.statistics()  # may make a lazy move: logged as the replica's
            current[0] = "b"
            assert ours == reference.statistics()
        assert changes["a"] == changes["b"]
        assert original.state is CircuitState.OPEN

    run_async(main, backend)
