"""A virtual-time asyncio loop for Python 3.10, where looptime 0.7 can stall.

Every async test runs on asyncio with looptime (0.9, which needs Python 3.11). On 3.10
only looptime 0.7 installs, and its clock can stop for good: in the randomised
cancellation tests the loop was seen spinning with its next timer a fraction of a
nanosecond ahead, never coming due (eight test modules hung). This loop does what
trio's ``MockClock(autojump_threshold=0)`` does: when nothing is ready to run and no I/O
is pending, it jumps its clock to the next timer instead of sleeping. Real I/O is still
polled first, and a loop with no timer at all waits for I/O for real.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """``loop.time()`` starts at 0 and moves only by jumping to the next due timer."""

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


def new_event_loop() -> VirtualTimeLoop:
    return VirtualTimeLoop()
