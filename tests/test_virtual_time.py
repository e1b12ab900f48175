"""The test harness itself: async tests run on both backends with virtual time."""

from __future__ import annotations

import time

import anyio


async def test_sleep_is_virtual(anyio_backend_name: str) -> None:
    """An hour of anyio.sleep passes instantly in wall time but fully on the loop's clock."""
    wall = time.monotonic()
    start = anyio.current_time()
    await anyio.sleep(3600)
    assert anyio.current_time() - start >= 3600
    assert time.monotonic() - wall < 5
    assert anyio_backend_name in {"asyncio", "trio"}
