"""The breaker's pure state machine: transition table, rules, and a reference model."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from brace._core._validate import MAX_RING
from brace._core.breaker import (
    TRANSITIONS,
    CircuitBreakerCore,
    CircuitEvent,
    CircuitState,
    CircuitStateChange,
    state_diagram,
)

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
DOC = Path(__file__).resolve().parent.parent / "docs" / "circuit-breaker.md"


# -- the table and the diagram ----------------------------------------------------------


def test_table_covers_every_manual_event_from_every_state() -> None:
    """force_open, open_for, force_close and reset are allowed in every state."""
    for state in CircuitState:
        assert TRANSITIONS[state, CircuitEvent.FORCE_OPEN] is OPEN
        assert TRANSITIONS[state, CircuitEvent.OPEN_FOR] is OPEN
        assert TRANSITIONS[state, CircuitEvent.FORCE_CLOSE] is CLOSED
        assert TRANSITIONS[state, CircuitEvent.RESET] is CLOSED


def test_table_automatic_moves_follow_the_cycle() -> None:
    """Automatic events only move closed -> open -> half-open -> closed or back to open."""
    automatic = {
        key: new
        for key, new in TRANSITIONS.items()
        if key[1]
        not in {
            CircuitEvent.FORCE_OPEN,
            CircuitEvent.OPEN_FOR,
            CircuitEvent.FORCE_CLOSE,
            CircuitEvent.RESET,
        }
    }
    assert {(old, new) for (old, _), new in automatic.items()} == {
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
        (HALF_OPEN, OPEN),
    }


def test_diagram_draws_every_move_of_the_table() -> None:
    """Each state change of the table appears as an arrow of the mermaid diagram."""
    diagram = state_diagram()
    arrows = dict(re.findall(r"^\s+(\w+ --> \w+): (.*)$", diagram, flags=re.MULTILINE))
    for (old, cause), new in TRANSITIONS.items():
        if old is not new:
            label = arrows[f"{old.name} --> {new.name}"]
            assert cause.value in label.replace("()", "")


def test_docs_diagram_is_generated_from_the_table() -> None:
    """The mermaid block of docs/circuit-breaker.md is exactly state_diagram()."""
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"^```mermaid\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    assert blocks == [state_diagram()], "run: python docs/gen_breaker_diagram.py"


# -- direct checks ----------------------------------------------------------------------


def _core(**options: Any) -> tuple[CircuitBreakerCore, list[CircuitStateChange]]:
    changes: list[CircuitStateChange] = []
    return CircuitBreakerCore(listener=changes.append, **options), changes


def test_consecutive_failures_trip_and_success_resets_the_count() -> None:
    """Three failures in a row open the circuit; a success in between starts over."""
    core, changes = _core(failure_threshold=3, recovery_time=5.0)
    for outcome in (False, False, True, False, False):
        ticket = core.admit(0.0)
        assert ticket == 0
        (core.failure if not outcome else core.success)(ticket, 0.0)
    assert core.state is CLOSED
    core.failure(core.admit(1.0) or 0, 1.0)
    assert core.state is OPEN
    assert changes == [
        CircuitStateChange(None, CLOSED, OPEN, CircuitEvent.FAILURE_THRESHOLD, 1.0, 5.0)
    ]
    assert core.admit(5.9) is None
    assert core.retry_after(5.5) == pytest.approx(0.5)


def test_half_open_admits_max_calls_then_refuses() -> None:
    """Half-open hands out exactly half_open_max_calls permits; a release frees one."""
    core, _ = _core(failure_threshold=1, recovery_time=1.0, half_open_max_calls=2)
    core.failure(0, 0.0)
    first, second, third = core.admit(1.0), core.admit(1.0), core.admit(1.0)
    assert first is not None
    assert first > 0
    assert second == first
    assert third is None
    core.release(first)
    assert core.admit(1.0) == first


def test_stale_outcomes_are_dropped() -> None:
    """A closed call ending while half-open neither frees a permit nor counts as a probe."""
    core, _ = _core(failure_threshold=1, recovery_time=1.0)
    slow_call = core.admit(0.0)
    core.failure(core.admit(0.0) or 0, 0.0)
    probe = core.admit(1.0)
    assert probe
    assert core.admit(1.0) is None
    assert slow_call == 0
    core.success(slow_call, 2.0)
    core.release(slow_call)
    assert core.state is HALF_OPEN
    assert core.admit(2.0) is None
    core.success(probe, 2.0)
    assert core.state is CLOSED
    core.failure(probe, 3.0)  # the same probe reporting twice is stale now
    assert core.state is CLOSED


def test_slow_probe_reopens() -> None:
    """With a slow-call rule, a probe that took slow_call_duration or longer reopens."""
    core, changes = _core(failure_threshold=1, recovery_time=1.0, slow_call_duration=2.0)
    core.failure(0, 0.0, 0.0)
    probe = core.admit(1.0)
    assert probe
    core.success(probe, 3.0, 2.0)
    assert core.state is OPEN
    assert changes[-1].reason is CircuitEvent.PROBE_FAILED


def test_half_open_that_does_not_close_in_time_opens_again() -> None:
    """With max_half_open_wait, a probe still running at the bound leaves the circuit open."""
    core, changes = _core(
        failure_threshold=1, recovery_time=1.0, recovery_backoff=2.0, max_half_open_wait=5.0
    )
    core.failure(0, 0.0)
    probe = core.admit(1.0)
    assert probe
    assert core.poll(5.9) is HALF_OPEN
    assert core.admit(5.9) is None  # the permit is taken
    assert core.poll(6.0) is OPEN
    assert changes[-1] == CircuitStateChange(
        None, HALF_OPEN, OPEN, CircuitEvent.MAX_HALF_OPEN_WAIT, 6.0, 2.0
    )
    core.success(probe, 6.5)  # the hung probe finally answers: stale
    assert core.state is OPEN
    late = core.admit(8.0)
    assert late
    core.success(late, 20.0)  # after its own half-open period's bound
    assert core.state is OPEN
    assert changes[-1].reason is CircuitEvent.MAX_HALF_OPEN_WAIT


def test_without_max_half_open_wait_half_open_lasts() -> None:
    """By default a half-open period is unbounded: a probe may take as long as it takes."""
    core, _ = _core(failure_threshold=1, recovery_time=1.0)
    core.failure(0, 0.0)
    probe = core.admit(1.0)
    assert probe
    assert core.poll(1e9) is HALF_OPEN
    core.success(probe, 1e9)
    assert core.state is CLOSED


def test_a_released_probe_neither_closes_nor_opens() -> None:
    """An ignored outcome (release) frees the probe's permit and leaves half-open as is."""
    core, changes = _core(failure_threshold=1, recovery_time=1.0, success_threshold=2)
    core.failure(0, 0.0)
    probe = core.admit(1.0)
    assert probe
    core.success(probe, 1.0)
    probe = core.admit(1.0)
    assert probe
    core.release(probe)
    assert core.state is HALF_OPEN
    assert core.probe_successes == 1
    assert core.half_open_calls == 0
    assert core.ignored == 1
    assert changes[-1].new is HALF_OPEN


def test_backoff_grows_caps_and_resets_on_close() -> None:
    """Trips in a row multiply the open period by recovery_backoff up to the cap."""
    core, changes = _core(
        failure_threshold=1, recovery_time=1.0, recovery_backoff=2.0, max_recovery_time=5.0
    )
    now = 0.0
    core.failure(0, now)
    for _ in range(4):
        now = core.open_until
        probe = core.admit(now)
        assert probe
        core.failure(probe, now)
    assert [c.retry_after for c in changes if c.new is OPEN] == [1.0, 2.0, 4.0, 5.0, 5.0]
    now = core.open_until
    core.success(core.admit(now) or 0, now)
    core.failure(0, now)
    assert changes[-1].retry_after == 1.0


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.999999])
def test_jitter_shortens_within_bounds(draw: float) -> None:
    """Jitter draws the open period from (d * (1 - jitter), d]."""
    core, changes = _core(
        failure_threshold=1, recovery_time=10.0, recovery_jitter=0.5, random=lambda: draw
    )
    core.failure(0, 0.0)
    duration = changes[-1].retry_after
    assert duration == pytest.approx(10.0 * (1 - 0.5 * draw))
    assert 5.0 < duration <= 10.0  # type: ignore[operator]


def test_time_window_forgets_old_buckets() -> None:
    """Failures older than the window no longer count toward the failure rate."""
    core, _ = _core(
        failure_threshold=None, failure_rate=0.5, minimum_calls=4, window=10.0, window_buckets=10
    )
    for _ in range(3):
        core.failure(0, 0.0)
    for t in (10.0, 10.5, 11.0):
        core.success(0, t)
    assert core.state is CLOSED  # the t=0 bucket left the window at t=10
    core.failure(0, 11.0)
    core.failure(0, 11.0)
    assert core.state is CLOSED  # 2 of 5
    core.failure(0, 11.0)
    assert core.state is OPEN  # 3 of 6


def test_rate_rule_waits_for_minimum_calls() -> None:
    """A 100 % failure rate does not trip before minimum_calls calls are in the window."""
    core, changes = _core(failure_threshold=None, failure_rate=1.0, minimum_calls=3, window_calls=5)
    core.failure(0, 0.0)
    core.failure(0, 0.0)
    assert core.state is CLOSED
    core.failure(0, 0.0)
    assert changes[-1].reason is CircuitEvent.FAILURE_RATE


def test_statistics_are_a_frozen_snapshot() -> None:
    """statistics() reports counters, rates and the time until half-open."""
    core, _ = _core(failure_threshold=2, recovery_time=4.0, failure_rate=0.9, window_calls=10)
    core.success(0, 0.0)
    core.failure(0, 0.0)
    stats = core.statistics(1.0)
    assert (stats.successes, stats.failures, stats.window_calls) == (1, 1, 2)
    assert stats.failure_rate == 0.5
    assert stats.state is CLOSED
    core.failure(0, 1.0)
    assert core.statistics(2.0).time_until_half_open == 3.0
    with pytest.raises(AttributeError):
        stats.failures = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "error", "name"),
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold"),
        ({"failure_threshold": -3}, ValueError, "failure_threshold"),
        ({"failure_threshold": 1.5}, TypeError, "failure_threshold"),
        ({"recovery_time": 0}, ValueError, "recovery_time"),
        ({"recovery_time": -1.0}, ValueError, "recovery_time"),
        ({"recovery_time": math.inf}, ValueError, "recovery_time"),
        ({"half_open_max_calls": 0}, ValueError, "half_open_max_calls"),
        ({"failure_rate": 0.0}, ValueError, "failure_rate"),
        ({"failure_rate": 1.5}, ValueError, "failure_rate"),
        ({"failure_rate": "half"}, TypeError, "failure_rate"),
        ({"minimum_calls": 0}, ValueError, "minimum_calls"),
        ({"window": -60.0}, ValueError, "window"),
        ({"window_calls": 0}, ValueError, "window_calls"),
        ({"failure_rate": 0.5, "window_calls": 5, "minimum_calls": 10}, ValueError, "window_calls"),
        ({"window_buckets": 0}, ValueError, "window_buckets"),
        # allocated at once: bounded (a hostile size once asked for 30 GB)
        ({"failure_rate": 0.5, "window_calls": MAX_RING + 1}, ValueError, "window_calls"),
        ({"failure_rate": 0.5, "window_buckets": MAX_RING + 1}, ValueError, "window_buckets"),
        ({"slow_call_duration": 0}, ValueError, "slow_call_duration"),
        ({"slow_call_rate": 0}, ValueError, "slow_call_rate"),
        ({"slow_call_rate": 1.01}, ValueError, "slow_call_rate"),
        ({"success_threshold": 0}, ValueError, "success_threshold"),
        ({"recovery_backoff": 0.5}, ValueError, "recovery_backoff"),
        ({"max_recovery_time": 1.0, "recovery_time": 2.0}, ValueError, "max_recovery_time"),
        ({"recovery_jitter": 1.0}, ValueError, "recovery_jitter"),
        ({"recovery_jitter": -0.1}, ValueError, "recovery_jitter"),
        ({"random": 0.5}, TypeError, "random"),
        ({"name": 3}, TypeError, "name"),
        ({"max_half_open_wait": 0}, ValueError, "max_half_open_wait"),
        ({"max_half_open_wait": math.inf}, ValueError, "max_half_open_wait"),
        ({"max_half_open_wait": "1"}, TypeError, "max_half_open_wait"),
    ],
)
def test_bad_configuration_names_the_parameter(
    options: dict[str, Any], error: type[Exception], name: str
) -> None:
    """A bad value fails at construction with the parameter's name in the message."""
    with pytest.raises(error, match=name):
        CircuitBreakerCore(**options)


def test_open_for_checks_its_argument() -> None:
    """open_for refuses negative, infinite and non-number durations."""
    core, _ = _core()
    for bad, error in ((-1.0, ValueError), (math.inf, ValueError), ("5", TypeError)):
        with pytest.raises(error, match="seconds"):
            core.open_for(bad, 0.0)  # type: ignore[arg-type]


# -- the reference model ----------------------------------------------------------------


@dataclass
class Model:
    """The rules written the plain way: a list of outcomes, recomputed on every call."""

    config: dict[str, Any]
    randoms: list[float]
    state: CircuitState = CLOSED
    open_until: float = -math.inf
    half_open_until: float = math.inf
    trips: int = 0
    period: int = 0  # which half-open period this is
    probes: int = 0
    probe_successes: int = 0
    outcomes: list[tuple[float, bool, bool]] = field(default_factory=list)  # (t, failed, slow)
    log: list[CircuitStateChange] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("successes", "failures", "ignored", "rejected", "slow_calls", "opened_count"), 0
        )
    )
    draws: int = 0

    def option(self, name: str, default: Any) -> Any:
        return self.config.get(name, default)

    def move(self, new: CircuitState, reason: CircuitEvent, now: float, wait: float = 0.0) -> None:
        old = self.state
        retry_after = None
        if new is OPEN:
            if reason is CircuitEvent.FORCE_OPEN:
                self.open_until = math.inf
            elif reason is CircuitEvent.OPEN_FOR:
                self.open_until = now + wait
                retry_after = wait
            else:
                self.trips += 1
                retry_after = self.open_duration()
                self.open_until = now + retry_after
        elif new is HALF_OPEN:
            self.period += 1
            self.probes = self.probe_successes = 0
            wait = self.option("max_half_open_wait", None)
            self.half_open_until = math.inf if wait is None else now + wait
        else:
            self.outcomes = []
            self.trips = 0
        if old is not new:
            self.state = new
            self.counts["opened_count"] += new is OPEN
            self.log.append(
                CircuitStateChange(self.option("name", None), old, new, reason, now, retry_after)
            )

    def open_duration(self) -> float:
        base = self.option("recovery_time", 30.0)
        duration: float
        try:
            duration = base * self.option("recovery_backoff", 1.0) ** (self.trips - 1)
        except OverflowError:
            duration = math.inf
        cap = self.option("max_recovery_time", None)
        if cap is not None:
            duration = min(duration, cap)
        jitter = self.option("recovery_jitter", 0.0)
        if jitter:
            duration *= 1.0 - jitter * self.randoms[self.draws % len(self.randoms)]
            self.draws += 1
        return duration

    def poll(self, now: float) -> None:
        if self.state is OPEN and now >= self.open_until:
            self.move(HALF_OPEN, CircuitEvent.RECOVERY_TIME_ELAPSED, now)
        elif self.state is HALF_OPEN and now >= self.half_open_until:
            self.move(OPEN, CircuitEvent.MAX_HALF_OPEN_WAIT, now)

    def admit(self, now: float) -> tuple[str, int] | None:
        self.poll(now)
        if self.state is CLOSED:
            return ("closed", 0)
        if self.state is HALF_OPEN and self.probes < self.option("half_open_max_calls", 1):
            self.probes += 1
            return ("probe", self.period)
        self.counts["rejected"] += 1
        return None

    def live_probe(self, ticket: tuple[str, int]) -> bool:
        return ticket[0] == "probe" and self.state is HALF_OPEN and ticket[1] == self.period

    def window(self, now: float) -> list[tuple[float, bool, bool]]:
        size = self.option("window_calls", None)
        if size is not None:
            return self.outcomes[-size:]
        buckets = self.option("window_buckets", 10)
        width = self.option("window", 60.0) / buckets
        newest = math.floor(now / width)
        return [o for o in self.outcomes if math.floor(o[0] / width) > newest - buckets]

    def rated(self) -> bool:
        return (
            self.option("failure_rate", None) is not None
            or self.option("slow_call_duration", None) is not None
        )

    def outcome(self, ticket: tuple[str, int], now: float, duration: float, failed: bool) -> None:
        limit = self.option("slow_call_duration", None)
        slow = limit is not None and duration >= limit
        self.counts["failures" if failed else "successes"] += 1
        self.counts["slow_calls"] += slow
        if ticket[0] == "closed" and self.state is CLOSED:
            self.outcomes.append((now, failed, slow))
            self.check_rules(now)
        elif self.live_probe(ticket):
            if now >= self.half_open_until:  # too late: the half-open period is over
                self.move(OPEN, CircuitEvent.MAX_HALF_OPEN_WAIT, now)
                return
            self.probes -= 1
            if failed or slow:
                self.move(OPEN, CircuitEvent.PROBE_FAILED, now)
            else:
                self.probe_successes += 1
                if self.probe_successes >= self.option("success_threshold", 1):
                    self.move(CLOSED, CircuitEvent.PROBES_SUCCEEDED, now)

    def consecutive_failures(self) -> int:
        count = 0
        for _, failed, _ in reversed(self.outcomes):
            if not failed:
                break
            count += 1
        return count

    def check_rules(self, now: float) -> None:
        threshold = self.option("failure_threshold", 15)
        if threshold is not None and self.consecutive_failures() >= threshold:
            self.move(OPEN, CircuitEvent.FAILURE_THRESHOLD, now)
            return
        if not self.rated():
            return
        window = self.window(now)
        calls = len(window)
        if calls < self.option("minimum_calls", 10):
            return
        rate = self.option("failure_rate", None)
        if rate is not None and sum(o[1] for o in window) / calls >= rate:
            self.move(OPEN, CircuitEvent.FAILURE_RATE, now)
        elif self.option("slow_call_duration", None) is not None and sum(
            o[2] for o in window
        ) / calls >= self.option("slow_call_rate", 1.0):
            self.move(OPEN, CircuitEvent.SLOW_CALL_RATE, now)

    def release(self, ticket: tuple[str, int]) -> None:
        self.counts["ignored"] += 1
        if self.live_probe(ticket):
            self.probes -= 1


quarters = st.integers(0, 48).map(lambda k: k / 4)

configs = st.fixed_dictionaries(
    {
        "failure_threshold": st.none() | st.integers(1, 5),
        "recovery_time": st.integers(1, 12).map(lambda k: k / 2),
        "half_open_max_calls": st.integers(1, 3),
        "success_threshold": st.integers(1, 3),
        "recovery_backoff": st.sampled_from([1.0, 1.5, 2.0]),
        "recovery_jitter": st.sampled_from([0.0, 0.0, 0.5]),
    },
    optional={
        "failure_rate": st.sampled_from([0.25, 0.5, 2 / 3, 1.0]),
        "minimum_calls": st.integers(1, 4),
        "window_calls": st.integers(4, 8),
        "window": st.integers(1, 20).map(float),
        "window_buckets": st.integers(1, 5),
        "slow_call_duration": st.sampled_from([0.5, 1.0, 2.5]),
        "slow_call_rate": st.sampled_from([0.5, 1.0]),
        "max_recovery_time": st.sampled_from([8.0, 20.0]),
        "max_half_open_wait": st.sampled_from([0.25, 1.0, 3.0]),
    },
)


@dataclass
class Call:
    """A call admitted by both: the core's ticket, the model's, and the start time."""

    core: int
    model: tuple[str, int]
    start: float


class BreakerAgreesWithModel(RuleBasedStateMachine):
    """Core and model get the same operations at the same times; they must agree."""

    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.changes: list[CircuitStateChange] = []
        self.reported = 0

    @initialize(config=configs, randoms=st.lists(st.floats(0, 0.99), min_size=1, max_size=5))
    def build(self, config: dict[str, Any], randoms: list[float]) -> None:
        if config.get("window_calls", 10) < config.get("minimum_calls", 10):
            config["window_calls"] = config.get("minimum_calls", 10)
        if config.get("max_recovery_time", math.inf) < config["recovery_time"]:
            del config["max_recovery_time"]
        draws = iter(randoms * 1000)
        self.core = CircuitBreakerCore(
            **config, random=draws.__next__, listener=self.changes.append
        )
        self.model = Model(config, randoms)

    @rule(dt=quarters)
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(target=calls)
    def admit(self) -> Any:
        ticket = self.core.admit(self.now)
        expected = self.model.admit(self.now)
        assert (ticket is None) == (expected is None)
        if ticket is None or expected is None:
            return multiple()
        assert (ticket == 0) == (expected[0] == "closed")
        return Call(ticket, expected, self.now)

    @rule(outcomes=st.lists(st.tuples(st.booleans(), quarters, quarters), max_size=12))
    def burst(self, outcomes: list[tuple[bool, float, float]]) -> None:
        """Many whole calls: admit, run for a while, report; a pause after each."""
        for failed, duration, pause in outcomes:
            call = self.admit()
            self.now += duration
            if isinstance(call, Call):
                self.finish(call, failed)
            self.now += pause

    @rule(call=consumes(calls), failed=st.booleans())
    def finish(self, call: Call, failed: bool) -> None:
        duration = self.now - call.start
        if failed:
            self.core.failure(call.core, self.now, duration)
        elif call.core == 0 and not self.core.needs_duration:
            self.core.closed_success(self.now)  # the shell's hot path
        else:
            self.core.success(call.core, self.now, duration)
        self.model.outcome(call.model, self.now, duration, failed)

    @rule(call=consumes(calls))
    def cancel(self, call: Call) -> None:
        self.core.release(call.core)
        self.model.release(call.model)

    @rule(data=st.data())
    def manual(self, data: st.DataObject) -> None:
        if data.draw(st.integers(0, 3)):  # rarer than the other rules: each one clears a lot
            return
        event = data.draw(
            st.sampled_from(
                [
                    CircuitEvent.FORCE_OPEN,
                    CircuitEvent.OPEN_FOR,
                    CircuitEvent.FORCE_CLOSE,
                    CircuitEvent.RESET,
                ]
            )
        )
        if event is CircuitEvent.FORCE_OPEN:
            self.core.force_open(self.now)
            self.model.move(OPEN, event, self.now)
        elif event is CircuitEvent.OPEN_FOR:
            seconds = data.draw(quarters)
            self.core.open_for(seconds, self.now)
            self.model.move(OPEN, event, self.now, seconds)
        elif event is CircuitEvent.FORCE_CLOSE:
            self.core.force_close(self.now)
            self.model.move(CLOSED, event, self.now)
        else:
            self.core.reset(self.now)
            self.model.move(CLOSED, event, self.now)
            for name in self.model.counts:
                self.model.counts[name] = 0

    @rule()
    def observe(self) -> None:
        stats = self.core.statistics(self.now)
        self.model.poll(self.now)
        assert stats.state is self.model.state
        window = self.model.window(self.now) if self.model.rated() else []
        assert stats.window_calls == len(window)
        if window and self.model.option("failure_rate", None) is not None:
            assert stats.failure_rate == sum(o[1] for o in window) / len(window)
        assert stats.consecutive_failures == self.model.consecutive_failures()
        if self.model.state is OPEN:
            expected = self.model.open_until - self.now
            assert stats.time_until_half_open == (None if math.isinf(expected) else expected)
        else:
            assert stats.time_until_half_open == 0.0

    @invariant()
    def agree(self) -> None:
        assert self.core.state is self.model.state
        assert self.changes == self.model.log
        for change in self.changes[self.reported :]:
            event(f"{change.old.value} -> {change.new.value} ({change.reason.value})")
        self.reported = len(self.changes)
        assert self.core.trips_in_a_row == self.model.trips
        if self.core.state is CLOSED:
            assert self.core.consecutive_failures == self.model.consecutive_failures()
        if self.core.state is HALF_OPEN:
            assert self.core.half_open_calls == self.model.probes
            assert self.core.half_open_calls <= self.core.half_open_max_calls
        for name, value in self.model.counts.items():
            assert getattr(self.core, name) == value, name


BreakerAgreesWithModel.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBreakerAgreesWithModel = BreakerAgreesWithModel.TestCase
