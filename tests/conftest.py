"""Every async test runs twice: on asyncio and on trio, both with virtual time.

trio gets ``MockClock(autojump_threshold=0)``: whenever every task is blocked, time jumps
to the next deadline. asyncio gets a ``looptime`` loop, which does the same. Both clocks
are made fresh for each test inside the fixture. Code under test reads the loop's clock
through ``anyio.current_time`` so its arithmetic and its sleeps agree.
"""

from __future__ import annotations

import inspect
from typing import Any

import looptime
import pytest
import trio.testing


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """The backend and its virtual-time options, built anew for each test."""
    if request.param == "trio":
        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
    return ("asyncio", {"loop_factory": looptime.new_event_loop})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every ``async def`` test to run under anyio's plugin."""
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.add_marker(pytest.mark.anyio)
