"""An awaitable that is already done, for ``__aenter__`` / ``__aexit__`` fast paths.

Awaiting `DONE` returns ``None`` without reaching any event loop (asyncio's or trio's: it
never yields, so it works on both). A context manager whose ``__aenter__`` and
``__aexit__`` are plain methods returning it on their fast path costs about half of one
running two coroutines; on a slow path they return a coroutine instead.
"""

from __future__ import annotations

import asyncio

__all__ = ("DONE",)


class _NoLoop:
    """Enough of an event loop to build a future that is finished from the start."""

    def get_debug(self) -> bool:
        return False


DONE: asyncio.Future[None] = asyncio.Future(loop=_NoLoop())  # type: ignore[arg-type]
DONE.set_result(None)
