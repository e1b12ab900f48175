"""brace.chaos: faults at the configured rate, reproducible with a seed, never when disabled."""

from __future__ import annotations

import logging
import math
import random

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import brace
import brace.chaos
from brace.chaos import should_inject


async def ok() -> str:
    return "ok"


@given(
    rate=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**32),
    flags=st.lists(st.booleans(), max_size=50),
)
def test_should_inject_draws_once_per_enabled_call(
    rate: float, seed: int, flags: list[bool]
) -> None:
    """Each enabled call draws exactly one number and injects when it is below the rate;
    a disabled call draws nothing and never injects."""
    source = random.Random(seed)
    mirror = random.Random(seed)
    for flag in flags:
        injected = should_inject(flag, rate, random=source)
        if flag:
            assert injected is (mirror.random() < rate)
        else:
            assert injected is False
    assert source.random() == mirror.random()


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9])
async def test_injects_at_the_configured_rate(rate: float) -> None:
    """Over 10,000 calls with a fixed seed, the injections stay within 4.5 binomial standard
    deviations of rate * 10,000 (and the count is the same for the same seed)."""
    n = 10_000
    counts = []
    for _ in range(2):
        broken = brace.chaos.exception(ValueError("chaos"), injection_rate=rate, seed=2026)
        failed = 0
        for _ in range(n):
            try:
                await broken.call(ok)
            except ValueError:
                failed += 1
        assert broken.statistics() == brace.chaos.ChaosStatistics(calls=n, injected=failed)
        counts.append(failed)
    assert counts[0] == counts[1]
    bound = 4.5 * math.sqrt(n * rate * (1 - rate))
    assert abs(counts[0] - n * rate) <= bound


async def test_never_injects_when_disabled() -> None:
    """A disabled strategy (flag or predicate) never injects, even at rate 1."""
    switch = False
    strategies = [
        brace.chaos.exception(ValueError(), injection_rate=1.0, enabled=False),
        brace.chaos.exception(ValueError(), injection_rate=1.0, enabled=lambda: switch),
        brace.chaos.outcome("chaos", injection_rate=1.0, enabled=False),
        brace.chaos.latency(5.0, injection_rate=1.0, enabled=lambda: switch),
    ]
    start = anyio.current_time()
    for strategy in strategies:
        for _ in range(100):
            assert await strategy.call(ok) == "ok"
        assert strategy.statistics().injected == 0
    assert anyio.current_time() == start
    switch = True
    with pytest.raises(ValueError):
        await strategies[1].call(ok)


async def test_latency_sleeps_on_the_loop_clock() -> None:
    """Injected latency is an anyio sleep: virtual time moves by exactly ``seconds``."""
    slow = brace.chaos.latency(2.5, injection_rate=1.0)
    start = anyio.current_time()
    assert await slow.call(ok) == "ok"
    assert anyio.current_time() - start == pytest.approx(2.5)
    async with slow:
        pass
    assert anyio.current_time() - start == pytest.approx(5.0)


async def test_exception_factory_and_context_manager() -> None:
    """An exception factory is called on each injection; async with raises before the body."""
    made: list[Exception] = []

    def factory() -> Exception:
        made.append(ConnectionResetError(len(made)))
        return made[-1]

    broken = brace.chaos.exception(factory, injection_rate=1.0)
    ran = False
    with pytest.raises(ConnectionResetError):
        async with broken:
            ran = True
    assert not ran
    with pytest.raises(ConnectionResetError):
        await broken.call(ok)
    assert len(made) == 2


async def test_outcome_replaces_the_result_without_calling() -> None:
    """outcome returns the substitute (value or factory) and does not call the function."""
    calls = 0

    @brace.chaos.outcome(factory=lambda: "fake", injection_rate=1.0)
    async def real() -> str:
        nonlocal calls
        calls += 1
        return "real"

    assert await real() == "fake"
    assert calls == 0
    assert await brace.chaos.outcome(42, injection_rate=1.0).call(ok) == 42  # type: ignore[comparison-overlap]
    # not a context manager: TypeError (AttributeError before Python 3.11)
    with pytest.raises((TypeError, AttributeError), match=r"__aenter__|asynchronous context"):
        async with brace.chaos.outcome(1, injection_rate=1.0):  # type: ignore[attr-defined]
            pass


async def test_behavior_runs_before_the_call() -> None:
    """A behaviour runs before the call it is injected into, then the call runs."""
    order: list[str] = []

    async def behavior() -> None:
        order.append("behavior")

    async def work() -> str:
        order.append("work")
        return "ok"

    await brace.chaos.behavior(behavior, injection_rate=1.0).call(work)
    assert order == ["behavior", "work"]


async def test_chaos_in_compose_is_retried() -> None:
    """Injected faults inside compose go through the same Retry as real ones."""
    broken = brace.chaos.exception(ConnectionError("chaos"), injection_rate=0.5, seed=3)
    retry = brace.Retry(10, backoff=brace.Backoff.constant(0.01))
    policy = brace.compose(retry, broken)
    for _ in range(20):
        assert await policy.run(ok) == "ok"
    assert retry.statistics().retries == broken.statistics().injected


def test_bad_configuration_names_the_parameter() -> None:
    """Bad options raise at construction, naming the parameter."""
    with pytest.raises(ValueError, match="injection_rate"):
        brace.chaos.latency(1.0, injection_rate=1.5)
    with pytest.raises(TypeError, match="injection_rate"):
        brace.chaos.latency(1.0, injection_rate="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seconds"):
        brace.chaos.latency(-1.0, injection_rate=0.5)
    with pytest.raises(TypeError, match="enabled"):
        brace.chaos.latency(1.0, injection_rate=0.5, enabled="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="random or seed"):
        brace.chaos.latency(1.0, injection_rate=0.5, seed=1, random=random.Random(1))
    with pytest.raises(TypeError, match="exception"):
        brace.chaos.exception(3, injection_rate=0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not both"):
        brace.chaos.outcome(1, factory=lambda: 2, injection_rate=0.5)
    with pytest.raises(TypeError, match="behavior"):
        brace.chaos.behavior(3, injection_rate=0.5)  # type: ignore[arg-type]


def test_registry_sections_and_counters() -> None:
    """Fallback, Hedge and chaos strategies appear in their own Registry sections, with
    their ever-growing fields exported as counters."""
    from brace._metrics import collect

    registry = brace.Registry()
    kept = [  # the registry holds weak references
        registry.register("menu", brace.Fallback([])),
        registry.register("search", brace.Hedge(0.1)),
        registry.register("slow", brace.chaos.latency(1.0, injection_rate=0.1)),
    ]
    snapshot = registry.snapshot()
    assert snapshot["fallbacks"]["menu"]["fallbacks"] == 0
    assert snapshot["hedges"]["search"]["hedge_wins"] == 0
    assert snapshot["chaos"]["slow"] == {"calls": 0, "injected": 0}
    kinds = {family.spec.sample_name(): family.spec.type for family in collect(registry.items())}
    assert kinds["brace_chaos_injected_total"] == "counter"
    assert kinds["brace_hedge_wins_total"] == "counter"
    assert len(kept) == 3


# -- the on_inject hook and the brace.chaos log -------------------------------------------


def _strategies(
    rate: float, seed: int, hook: brace.chaos.ChaosHook
) -> list[brace.chaos.ChaosStrategy]:
    """One strategy of each kind, named after it, on the same seed and hook."""

    async def nothing() -> None:
        pass

    return [
        brace.chaos.latency(0.5, injection_rate=rate, seed=seed, on_inject=hook, name="latency"),
        brace.chaos.exception(
            lambda: ValueError("chaos"),
            injection_rate=rate,
            seed=seed,
            on_inject=hook,
            name="exception",
        ),
        brace.chaos.outcome(
            "chaos", injection_rate=rate, seed=seed, on_inject=hook, name="outcome"
        ),
        brace.chaos.behavior(
            nothing, injection_rate=rate, seed=seed, on_inject=hook, name="behavior"
        ),
    ]


@settings(max_examples=20, deadline=None)
@given(
    rate=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**32),
    calls=st.integers(min_value=0, max_value=40),
)
async def test_one_event_per_injection(rate: float, seed: int, calls: int) -> None:
    """For every kind, the hook sees exactly the statistics' injections, each naming its
    strategy, its kind and the fault that took effect."""
    events: list[brace.chaos.ChaosDetails] = []
    for strategy in _strategies(rate, seed, events.append):
        seen = len(events)
        raised: list[BaseException] = []
        for _ in range(calls):
            try:
                result = await strategy.call(ok)
            except ValueError as exc:
                raised.append(exc)
            else:
                assert result in ("ok", "chaos")
        mine = events[seen:]
        assert len(mine) == strategy.statistics().injected
        assert all(event.name == event.kind == strategy.name for event in mine)
        if strategy.name == "latency":
            assert all(event.injected == 0.5 for event in mine)
        elif strategy.name == "exception":
            assert [event.injected for event in mine] == raised  # the very instances raised
        elif strategy.name == "outcome":
            assert all(event.injected == "chaos" for event in mine)


async def test_hook_runs_before_the_fault_takes_effect() -> None:
    """The hook is called before the latency is slept, in async with too, and before the
    behaviour runs."""
    seen_at: list[float] = []
    start = anyio.current_time()
    slow = brace.chaos.latency(
        3.0, injection_rate=1.0, on_inject=lambda _: seen_at.append(anyio.current_time())
    )
    await slow.call(ok)
    async with slow:
        pass
    assert seen_at == pytest.approx([start, start + 3.0], abs=1e-5)
    order: list[str] = []

    async def behaviour() -> None:
        order.append("behavior")

    chaotic = brace.chaos.behavior(
        behaviour, injection_rate=1.0, on_inject=lambda details: order.append(details.kind)
    )
    await chaotic.call(ok)
    assert order == ["behavior", "behavior"]
    assert chaotic.statistics().injected == 1


async def test_a_raising_hook_reaches_the_caller_instead_of_the_fault() -> None:
    """What the hook raises reaches the caller; the fault does not take effect and the
    call is not made; the injection is still counted."""

    def hook(details: brace.chaos.ChaosDetails) -> None:
        raise RuntimeError(details.kind)

    made: list[str] = []

    async def call() -> str:
        made.append("call")
        return "ok"

    start = anyio.current_time()
    for strategy in _strategies(1.0, 1, hook):
        with pytest.raises(RuntimeError) as caught:
            await strategy.call(call)
        assert caught.value.args == (strategy.name,)
        assert strategy.statistics() == brace.chaos.ChaosStatistics(calls=1, injected=1)
    assert made == []
    assert anyio.current_time() == start


async def test_injections_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    """Each injection is logged at DEBUG on brace.chaos, naming the strategy and its kind;
    calls without a fault log nothing."""
    broken = brace.chaos.outcome("x", injection_rate=0.5, seed=3, name="menu")
    with caplog.at_level(logging.DEBUG, logger="brace.chaos"):
        for _ in range(50):
            await broken.call(ok)
    records = [record for record in caplog.records if record.name == "brace.chaos"]
    assert len(records) == broken.statistics().injected > 0
    assert all(record.levelno == logging.DEBUG for record in records)
    assert "'menu'" in records[0].getMessage()
    assert "outcome" in records[0].getMessage()


def test_on_inject_must_be_callable() -> None:
    """A non-callable on_inject is refused at construction, naming the parameter."""
    with pytest.raises(TypeError, match="on_inject"):
        brace.chaos.latency(1.0, injection_rate=0.5, on_inject=3)  # type: ignore[arg-type]
