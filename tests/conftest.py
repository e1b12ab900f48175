"""Every async test runs twice: on asyncio and on trio, both with virtual time.

trio gets ``MockClock(autojump_threshold=0)``: whenever every task is blocked, time jumps
to the next deadline. asyncio gets a ``looptime`` loop, which does the same (on Python
3.10, where only looptime 0.7 installs and can stall, the equivalent
``brace.testing.VirtualTimeLoop``); ``brace.testing.virtual_time`` gives either. Both
clocks are made fresh for each test inside the fixture. ``anyio_mode = "auto"`` (pyproject)
runs every ``async def`` test under anyio's plugin without a marker. Code under test
reads the loop's clock through ``anyio.current_time`` so its arithmetic and its sleeps
agree.
"""

from __future__ import annotations

from typing import Any

import pytest

from brace.testing import virtual_time


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """The backend and its virtual-time options, built anew for each test."""
    return (request.param, virtual_time(request.param))
