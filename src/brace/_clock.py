"""The one check of an injected clock (every shell takes ``clock=``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

__all__ = ("check_clock",)


def check_clock(clock: object) -> Callable[[], float]:
    """``time.monotonic`` for ``None``, the clock itself if callable, else a ``TypeError``."""
    if clock is None:
        return time.monotonic
    if not callable(clock):
        raise TypeError(
            "clock must be a zero-argument callable returning monotonic seconds "
            f"(such as time.monotonic or anyio.current_time), got {type(clock).__name__}"
        )
    return cast("Callable[[], float]", clock)  # that it returns seconds is the caller's part
