"""Helpers for testing code that uses brace: a fake clock you move by hand, and
virtual time for async tests.

Every brace primitive takes ``clock=``, a zero-argument callable returning seconds.
Pass a :class:`FakeClock` to drive it deterministically in synchronous tests, or
``anyio.current_time`` when the test runs on a virtual-time event loop
(:func:`virtual_time`: trio's ``MockClock``, ``looptime`` on asyncio) so that the
primitive's clock and its sleeps agree.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import _retry
from ._core._validate import shown

__all__ = (
    "FakeClock",
    "FixedRandom",
    "VirtualTimeLoop",
    "disable_retry_sleep",
    "is_retry_testing",
    "set_retry_testing",
    "virtual_time",
)


class FixedRandom:
    """A source of "random" floats that draws the given values in turn, then the last again.

    Every primitive with randomness takes ``random=`` (a ``random.Random``, or anything
    with a ``random()`` method); this one makes a jittered delay or a shedding draw exact:

    ```python
    draws = FixedRandom(0.25, 0.5)
    assert [draws.random() for _ in range(3)] == [0.25, 0.5, 0.5]
    ```
    """

    __slots__ = ("_index", "_values")

    def __init__(self, *values: float) -> None:
        if not values:
            raise TypeError("FixedRandom needs at least one value")
        for value in values:
            if not (isinstance(value, int | float) and 0.0 <= value < 1.0):
                raise ValueError(f"values must be floats in [0, 1), got {value!r}")
        self._values = tuple(float(value) for value in values)
        self._index = 0

    def random(self) -> float:
        """The next value (the last one once all were drawn)."""
        values = self._values
        value = values[min(self._index, len(values) - 1)]
        self._index += 1
        return value

    def __repr__(self) -> str:
        return f"FixedRandom{self._values!r}"


class FakeClock:
    """A monotonic clock that only moves when told to.

    >>> clock = FakeClock()
    >>> clock.advance(1.5)
    >>> clock()
    1.5
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = _check_time(start, "start")

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        """The current reading, in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0); going backwards is a ``ValueError``."""
        seconds = _check_time(seconds, "seconds")
        if seconds < 0:
            raise ValueError(
                f"seconds must be >= 0 (a clock never goes backwards), got {seconds!r}"
            )
        now = self._now + seconds
        if now == math.inf:
            raise ValueError(
                f"seconds must keep the clock finite: {self._now!r} + {seconds!r} overflows"
            )
        self._now = now

    def set(self, now: float) -> None:
        """Jump to ``now``, which must not be earlier than the current reading."""
        now = _check_time(now, "now")
        if now < self._now:
            raise ValueError(
                f"now must be >= the current time {self._now!r} (a clock never goes backwards)"
            )
        self._now = now

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"


def _check_time(value: float, name: str) -> float:
    """A finite number of seconds as a float; an int too large for a float is named, not
    an ``OverflowError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond the largest float
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ValueError(f"{name} must be finite (a number of seconds), got {shown(value)}")
    return seconds


# --- virtual time for async tests ---


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop in virtual time: ``time()`` starts at 0 and moves only by jumping
    to the next timer, whenever nothing is ready to run and no I/O is pending (what trio's
    ``MockClock(autojump_threshold=0)`` does). Real I/O is still polled first, and a loop
    with no timer at all waits for I/O for real.

    :func:`virtual_time` gives it on Python 3.10, where only looptime 0.7 installs and its
    clock can stop for good: rounded to the microsecond, a timer a fraction of a
    microsecond ahead never comes due and the loop spins.
    """

    def __init__(self) -> None:
        super().__init__()
        self._virtual_now = 0.0
        selector = self._selector  # type: ignore[attr-defined]
        real_select = selector.select

        def select(timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            events: list[Any] = real_select(0)
            if events or timeout == 0:
                return events
            if timeout is None:  # no timer at all: only I/O (or a thread) can wake us
                return real_select(None)  # type: ignore[no-any-return]
            self._virtual_now += timeout
            return events

        selector.select = select

    def time(self) -> float:
        return self._virtual_now


def virtual_time(backend: str = "asyncio") -> dict[str, Any]:
    """The ``backend_options`` that run ``backend`` in virtual time, for ``anyio.run``
    or as the second item of an ``anyio_backend`` fixture: a sleep or a timeout of an hour
    passes at once whenever every task waits.

    - ``"trio"``: a fresh ``trio.testing.MockClock(autojump_threshold=0)``;
    - ``"asyncio"``: a looptime loop on Python 3.11+ where looptime is installed (its
      clock is rounded to the microsecond: compare times with a tolerance), else a
      :class:`VirtualTimeLoop` (always on 3.10, where looptime 0.7 can stall).

    ```python
    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(request):
        return request.param, brace.testing.virtual_time(request.param)
    ```
    """
    if backend == "trio":
        import trio.testing

        return {"clock": trio.testing.MockClock(autojump_threshold=0)}
    if backend != "asyncio":
        raise ValueError(f"backend must be 'asyncio' or 'trio', got {shown(backend)}")
    if sys.version_info >= (3, 11):
        try:
            import looptime
        except ImportError:
            pass
        else:
            return {"loop_factory": looptime.new_event_loop}
    return {"loop_factory": VirtualTimeLoop}


# --- retry testing switch (issue 3) ---


def set_retry_testing(enabled: bool, *, attempts: int | None = None) -> None:
    """Make every :class:`brace.Retry` skip its sleeps (``enabled=True``) or restore them.

    With ``attempts`` set, every retry also makes at most that many attempts (1: no
    retries at all). Meant for a test suite's setup, like stamina's ``set_testing``:

    ```python
    @pytest.fixture(autouse=True)
    def no_retry_sleep():
        brace.testing.set_retry_testing(True, attempts=2)
        yield
        brace.testing.set_retry_testing(False)
    ```
    """
    _retry.set_testing(enabled, attempts=attempts)


def is_retry_testing() -> bool:
    """True while retries skip their sleeps."""
    return _retry.testing_mode() is not None


@contextmanager
def disable_retry_sleep(*, attempts: int | None = None) -> Iterator[None]:
    """Within the block every :class:`brace.Retry` retries without sleeping.

    ``attempts`` optionally caps the attempts of every retry. The previous setting is
    restored on exit, so blocks nest.
    """
    previous = _retry.testing_mode()
    _retry.set_testing(True, attempts=attempts)
    try:
        yield
    finally:
        _retry.restore_testing(previous)


# --- end retry testing switch ---
