"""The client's per-key breakers: bounded, least recently used out, and an evicted key never
comes back less closed to traffic than it left (a fake clock; no event loop)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import brace
from brace._client import _MIN_SLOTS, _BreakerTable
from brace.testing import FakeClock, FixedRandom


def distinct_slots(count: int) -> list[str]:
    """``count`` keys that fall in distinct slots of a small table's sketch (hashes of
    str are salted per process, so they are chosen at import)."""
    keys: dict[int, str] = {}
    for index in range(10_000):
        keys.setdefault(hash(f"h{index}") % _MIN_SLOTS, f"h{index}")
        if len(keys) == count:
            break
    return list(keys.values())


KEYS = distinct_slots(8)


def admitted(breaker: brace.CircuitBreaker, failed: bool) -> bool:
    """One call through ``breaker`` ending as ``failed`` says; False if refused."""
    try:
        ticket = breaker.try_enter()
    except brace.CircuitOpen:
        return False
    if failed:
        ticket.failure()
    else:
        ticket.success()
    return True


@settings(max_examples=300, deadline=None)
@given(
    max_keys=st.integers(1, 4),
    threshold=st.integers(1, 4),
    steps=st.lists(
        st.tuples(st.sampled_from(KEYS), st.booleans(), st.sampled_from([0.0, 0.5, 3.0, 11.0])),
        max_size=120,
    ),
)
def test_bounded_table_decides_as_unbounded_breakers(
    max_keys: int, threshold: int, steps: list[tuple[str, bool, float]]
) -> None:
    """With keys in distinct sketch slots, a table of max_keys breakers admits exactly the
    calls one breaker per key (never evicted) admits, and never holds more than max_keys."""
    clock = FakeClock()
    template = brace.CircuitBreaker(failure_threshold=threshold, recovery_time=10, clock=clock)
    table = _BreakerTable(template, max_keys)
    reference: dict[str, brace.CircuitBreaker] = {}
    for key, failed, pause in steps:
        clock.advance(pause)
        own = reference.setdefault(key, template.replica(name=key))
        assert admitted(table.get(key), failed) == admitted(own, failed)
        assert len(table.held) <= max_keys


def test_recovered_run_is_not_held_against_a_key() -> None:
    """A key back from the sketch that then recovers (a success ends its run) and is
    dropped at rest comes back with no run of failures: its slot was emptied on return
    (a regression: the stale run opened it one failure early)."""
    clock = FakeClock()
    table = _BreakerTable(brace.CircuitBreaker(failure_threshold=2, clock=clock), 1)
    first, second = KEYS[:2]
    assert admitted(table.get(first), failed=True)  # a run of 1
    assert admitted(table.get(second), failed=False)  # first spilled with its run
    assert admitted(table.get(first), failed=False)  # back with its run; a success ends it
    assert admitted(table.get(second), failed=False)  # first dropped at rest
    assert admitted(table.get(first), failed=True)  # a run of 1 again, not 2
    assert table.get(first).state is brace.CircuitState.CLOSED


def test_shared_slot_keeps_the_strictest() -> None:
    """Two keys spilled into one slot: the first back does not empty it, so the other
    comes back no less closed than it left."""
    table = _BreakerTable(brace.CircuitBreaker(failure_threshold=3, clock=FakeClock()), 1)
    slot_of: dict[int, str] = {}
    for index in range(100_000):
        second = f"k{index}"
        first = slot_of.setdefault(hash(second) % _MIN_SLOTS, second)
        if first != second:
            break
    assert admitted(table.get(first), failed=True)  # a run of 1
    assert admitted(table.get(second), failed=True)  # from the slot (1), then 2
    assert admitted(table.get(first), failed=False)  # second spilled: the slot is shared
    assert admitted(table.get(second), failed=True)  # first dropped; second back at 2: 3
    assert table.get(second).state is brace.CircuitState.OPEN


def test_open_breaker_survives_eviction() -> None:
    """An open breaker pushed out by other hosts comes back open for the rest of its time."""
    clock = FakeClock()
    table = _BreakerTable(
        brace.CircuitBreaker(failure_threshold=1, recovery_time=10, clock=clock), 2
    )
    assert admitted(table.get("a"), failed=True)
    assert table.get("a").state is brace.CircuitState.OPEN
    clock.advance(4)
    for key in ("b", "c", "d"):
        assert admitted(table.get(key), failed=False)
    assert "a" not in table.held
    assert table.evictions == 1
    back = table.get("a")
    assert back.state is brace.CircuitState.OPEN
    assert back.statistics().time_until_half_open == pytest.approx(6.0)


def test_run_of_failures_survives_eviction() -> None:
    """Two failures of three, evicted and back: one more failure opens the circuit."""
    clock = FakeClock()
    table = _BreakerTable(brace.CircuitBreaker(failure_threshold=3, clock=clock), 1)
    assert admitted(table.get("a"), failed=True)
    assert admitted(table.get("a"), failed=True)
    assert admitted(table.get("b"), failed=False)
    assert admitted(table.get("a"), failed=True)
    assert table.get("a").state is brace.CircuitState.OPEN


def test_breakers_at_rest_are_dropped() -> None:
    """Closed breakers with no failure in a row are dropped without a sketch."""
    table = _BreakerTable(brace.CircuitBreaker(), 3)
    for index in range(100):
        admitted(table.get(f"h{index}"), failed=False)
    assert len(table.held) == 3
    assert table.evictions == 0
    assert table._until is None


def test_least_recently_used_goes_first() -> None:
    """A key used again moves to the back of the line."""
    table = _BreakerTable(brace.CircuitBreaker(), 2)
    table.get("a")
    table.get("b")
    table.get("a")
    table.get("c")
    assert list(table.held) == ["a", "c"]


def test_replica_copies_every_argument() -> None:
    """A replica has the template's arguments (all of them: a new CircuitBreaker argument
    fails this test until replica copies it) and none of its state."""
    hooks: list[object] = []
    clock = FakeClock()
    template = brace.CircuitBreaker(
        failure_threshold=4,
        recovery_time=7.0,
        half_open_max_calls=2,
        failure_rate=0.5,
        minimum_calls=3,
        window=12.0,
        slow_call_duration=2.0,
        exceptions=(OSError,),
        exclude=(FileNotFoundError,),
        window_buckets=4,
        slow_call_rate=0.9,
        success_threshold=2,
        recovery_backoff=2.0,
        max_recovery_time=60.0,
        recovery_jitter=0.1,
        is_failure=bool,
        failure_result=bool,
        on_state_change=hooks.append,
        clock=clock,
        random=FixedRandom(0.5),
        name="api",
    )
    template.force_open()
    copy = template.replica(name="api a:80")
    assert copy.state is brace.CircuitState.CLOSED
    assert copy.name == "api a:80"
    core, original = copy._core, template._core
    for name in (
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
        "random",
    ):
        assert getattr(core, name) == getattr(original, name), name
    for name in ("_exceptions", "_exclude", "_is_failure", "_failure_result", "_hooks", "_clock"):
        assert getattr(copy, name) == getattr(template, name), name
    assert isinstance(core.window, type(original.window))
    counted = brace.CircuitBreaker(failure_rate=0.5, window_calls=20).replica()
    assert counted._core.window.size == 20  # type: ignore[union-attr]
