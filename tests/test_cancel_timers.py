"""The shared deadline timers of one asyncio loop (``brace._cancel.Timers``) against a
reference model: every entry added and not dropped fires once, when the loop's clock
reaches it, in the order of its time (then of its addition); a dropped entry never fires;
the loop holds one timer at most; and the heap stays bounded by the live entries."""

from __future__ import annotations

import asyncio
import functools
import gc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from brace._cancel import _MIN_SWEEP, Timers, _timers, timers_of


class Handle:
    def __init__(self, when: float, callback: Any) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """The part of an asyncio loop `Timers` uses: ``time`` and ``call_at``."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> Handle:
        handle = Handle(when, callback)
        self.handles.append(handle)
        return handle

    def armed(self) -> list[Handle]:
        return [handle for handle in self.handles if not handle.cancelled]

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, running each timer at its time."""
        end = self.now + seconds
        while due := [h for h in self.armed() if h.when <= end]:
            handle = min(due, key=lambda h: h.when)
            self.now = max(self.now, handle.when)
            handle.cancel()  # run once
            handle.callback()
        self.now = end


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 50)),
        st.tuples(st.just("drop"), st.integers(0, 10_000)),
        st.tuples(st.just("advance"), st.integers(0, 20)),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_timers_fire_as_the_model_says(operations: list[tuple[str, int]]) -> None:
    loop = Loop()
    timers = Timers(loop)  # type: ignore[arg-type]
    fired: list[int] = []
    entries: list[list[Any]] = []
    live: dict[int, float] = {}  # the model: entry number -> when, while it may fire
    expected: list[int] = []
    for op, value in operations:
        if op == "add":
            number = len(entries)
            when = loop.now + value
            entries.append(timers.add(when, functools.partial(fired.append, number)))
            live[number] = when
        elif op == "drop" and entries:
            number = value % len(entries)
            timers.drop(entries[number])
            live.pop(number, None)
        elif op == "advance":
            loop.advance(value)
            due = sorted((when, number) for number, when in live.items() if when <= loop.now)
            for _, number in due:
                expected.append(number)
                del live[number]
        assert fired == expected
        assert len(loop.armed()) <= 1
        if live:  # the loop's timer is set no later than the earliest live entry
            assert loop.armed()
            assert loop.armed()[0].when <= min(live.values())
        assert len(timers) <= 2 * len(live) + _MIN_SWEEP + 1


def test_a_loop_has_one_timers_and_drops_it_with_the_loop() -> None:
    async def main() -> Timers:
        loop = asyncio.get_running_loop()
        timers = timers_of(loop)
        assert timers_of(loop) is timers
        return timers

    first = asyncio.run(main())
    second = asyncio.run(main())
    assert first is not second
    gc.collect()
    assert first._loop() is None  # the map of Timers kept no closed loop alive
    assert second in _timers.values()


def test_a_fired_callback_may_add_again() -> None:
    """A deadline held off by a shield polls again from inside its own firing."""
    loop = Loop()
    timers = Timers(loop)  # type: ignore[arg-type]
    calls: list[float] = []

    def poll() -> None:
        calls.append(loop.now)
        if len(calls) < 3:
            timers.add(loop.now + 1, poll)

    timers.add(1, poll)
    loop.advance(10)
    assert calls == [1, 2, 3]
    assert not loop.armed()
    assert len(timers) == 0


def test_dropped_entries_do_not_pile_up() -> None:
    """Requests that finish before their timeout (the usual case) leave their entries
    dropped far from the heap's head: the heap is rebuilt without them, so it stays
    bounded by the live entries rather than by every request of the last timeout."""
    loop = Loop()
    timers = Timers(loop)  # type: ignore[arg-type]
    keep = timers.add(30.0, lambda: None)
    for step in range(10_000):
        loop.now = step / 1000
        timers.drop(timers.add(loop.now + 30.0, lambda: None))
        assert len(timers) <= 2 * _MIN_SWEEP + 2
    timers.drop(keep)
    assert len(timers) <= 2 * _MIN_SWEEP + 2
