"""The memory-level core: thresholds, hysteresis and garbage-collection scheduling.

The reference model recomputes the level from the thresholds with the transition rules
written out one by one; a state machine drives model and core with the same samples.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from brace._core.memory import MemoryLevel, MemoryLevelsCore, resolve_threshold

NORMAL, HIGH, CRITICAL = MemoryLevel.NORMAL, MemoryLevel.HIGH, MemoryLevel.CRITICAL
MB = 2**20


def test_levels_rise_at_thresholds_and_fall_below_low() -> None:
    """Usage at ``high`` gives HIGH, at ``critical`` CRITICAL; HIGH persists down to ``low``."""
    core = MemoryLevelsCore(100 * MB, critical=150 * MB, low=80 * MB)
    assert core.update(99 * MB, None, 0.0) is NORMAL
    assert core.update(100 * MB, None, 1.0) is HIGH
    assert core.update(85 * MB, None, 2.0) is HIGH  # inside the band: stays
    assert core.update(79 * MB, None, 3.0) is NORMAL
    assert core.update(150 * MB, None, 4.0) is CRITICAL
    assert core.changes == 3


def test_critical_has_its_own_band() -> None:
    """CRITICAL ends below ``critical - (high - low)``, and never above ``high``."""
    core = MemoryLevelsCore(100, critical=200, low=80)
    core.update(200, None, 0.0)
    assert core.update(181, None, 1.0) is CRITICAL
    assert core.update(179, None, 2.0) is HIGH
    core.update(200, None, 3.0)
    assert core.update(50, None, 4.0) is NORMAL  # straight down below low


def test_low_defaults_to_ninety_percent_of_high() -> None:
    """Without ``low``, HIGH ends below 90 % of ``high``."""
    core = MemoryLevelsCore(1000)
    core.update(1000, None, 0.0)
    assert core.update(901, None, 1.0) is HIGH
    assert core.update(899, None, 2.0) is NORMAL


def test_fractions_resolve_against_each_samples_limit() -> None:
    """A fraction threshold follows the limit; with no limit it never triggers."""
    core = MemoryLevelsCore(0.5, critical=0.9)
    assert core.update(10**12, None, 0.0) is NORMAL
    assert core.update(600, 1000, 1.0) is HIGH
    assert core.update(600, 2000, 2.0) is NORMAL  # the container grew
    assert core.update(1900, 2000, 3.0) is CRITICAL
    assert resolve_threshold(0.25, 400) == 100
    assert resolve_threshold(300, None) == 300


def test_one_byte_is_bytes_not_a_fraction() -> None:
    """An int threshold of 1 means one byte; a float above 1 means bytes too."""
    core = MemoryLevelsCore(10, low=1)
    assert core.update(10, 10**9, 0.0) is HIGH
    assert core.update(1, 10**9, 1.0) is HIGH
    assert core.update(0, 10**9, 2.0) is NORMAL
    assert MemoryLevelsCore(300.0).update(300, None, 0.0) is HIGH


def test_pressure_holds_high_until_it_halves() -> None:
    """Pressure at ``pressure_high`` means at least HIGH, until it falls below half."""
    core = MemoryLevelsCore(1000, pressure_high=20.0)
    assert core.update(0, None, 0.0, pressure=25.0) is HIGH
    assert core.update(0, None, 1.0, pressure=15.0) is HIGH
    assert core.update(0, None, 2.0, pressure=9.0) is NORMAL
    assert core.update(0, None, 3.0) is NORMAL  # no pressure reading: no change of hold


def test_collect_on_entering_high_is_rate_limited() -> None:
    """Entering HIGH collects at most once per ``collect_on_high`` seconds."""
    core = MemoryLevelsCore(100, collect_on_high=60.0)
    core.update(100, None, 0.0)
    assert core.should_collect(NORMAL, 0.0)
    core.update(10, None, 1.0)
    core.update(100, None, 2.0)
    assert not core.should_collect(NORMAL, 2.0)
    assert not core.should_collect(HIGH, 70.0)  # not an entry
    assert core.should_collect(NORMAL, 70.0)


def test_periodic_collection() -> None:
    """With ``collect_interval`` the core asks for a collection every interval."""
    core = MemoryLevelsCore(100, collect_interval=300.0)
    core.start(0.0)
    assert not core.should_collect(NORMAL, 299.0)
    assert core.should_collect(NORMAL, 300.0)
    assert not core.should_collect(NORMAL, 599.0)
    assert core.should_collect(NORMAL, 600.0)


def test_collection_is_off_by_default() -> None:
    """Without the options the core never asks for a collection."""
    core = MemoryLevelsCore(100)
    core.update(1000, None, 0.0)
    assert not core.should_collect(NORMAL, 1e9)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"high": "1"}, TypeError),
        ({"high": True}, TypeError),
        ({"high": 0}, ValueError),
        ({"high": float("inf")}, ValueError),
        ({"high": 100, "critical": 100}, ValueError),
        ({"high": 100, "low": 100}, ValueError),
        ({"high": 0.5, "critical": 1000}, ValueError),
        ({"high": 100, "low": 0.5}, ValueError),
        ({"high": 100, "pressure_high": 0}, ValueError),
        ({"high": 100, "pressure_high": "x"}, TypeError),
        ({"high": 100, "collect_on_high": -1}, ValueError),
        ({"high": 100, "collect_interval": "5"}, TypeError),
    ],
)
def test_bad_configuration_raises(kwargs: dict[str, object], error: type[Exception]) -> None:
    """Out-of-range or mistyped thresholds fail at construction."""
    with pytest.raises(error):
        MemoryLevelsCore(**kwargs)  # type: ignore[arg-type]


class LevelModel:
    """The level rules, spelled out: up at a threshold, down below its band.

    Thresholds are bytes, or fractions multiplied by each sample's limit.
    """

    def __init__(self, high: float, critical: float | None, low: float, fractions: bool) -> None:
        self.high, self.critical, self.low = high, critical, low
        self.fractions = fractions
        self.level = NORMAL

    def update(self, usage: int, limit: int) -> MemoryLevel:
        scale = limit if self.fractions else 1
        high, low = self.high * scale, self.low * scale
        critical = None if self.critical is None else self.critical * scale
        critical_low = None if critical is None else max(high, critical - (high - low))
        if critical is not None and usage >= critical:
            self.level = CRITICAL
        elif usage < low:
            self.level = NORMAL
        elif self.level == CRITICAL:
            assert critical_low is not None
            if usage < critical_low:
                self.level = HIGH
        elif usage >= high:
            self.level = HIGH
        return self.level


class LevelMachine(RuleBasedStateMachine):
    """Core and model see the same samples (and limits) and always agree on the level."""

    @initialize(
        high=st.integers(10, 1000),
        band=st.integers(1, 9),
        extra=st.none() | st.integers(1, 1000),
        fractions=st.booleans(),
    )
    def setup(self, high: int, band: int, extra: int | None, fractions: bool) -> None:
        low = high - band * high // 10 or 1
        critical = None if extra is None else high + extra
        if fractions:  # the same thresholds as shares of a limit of about 2200
            self.core = MemoryLevelsCore(
                high / 2200,
                critical=None if critical is None else min(critical / 2200, 1.0),
                low=low / 2200,
            )
            self.model = LevelModel(
                high / 2200,
                None if critical is None else min(critical / 2200, 1.0),
                low / 2200,
                fractions=True,
            )
        else:
            self.core = MemoryLevelsCore(high, critical=critical, low=low)
            self.model = LevelModel(high, critical, low, fractions=False)
        self.now = 0.0

    @rule(usage=st.integers(0, 2200), limit=st.integers(1800, 2600))
    def sample(self, usage: int, limit: int) -> None:
        self.now += 1.0
        got = self.core.update(usage, limit if self.model.fractions else None, self.now)
        assert got == self.model.update(usage, limit)

    @invariant()
    def levels_agree(self) -> None:
        if hasattr(self, "core"):
            assert self.core.level == self.model.level


TestLevelMachine = LevelMachine.TestCase
TestLevelMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
