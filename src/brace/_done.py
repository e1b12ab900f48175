"""An awaitable that is already done, for ``__aenter__`` / ``__aexit__`` fast paths.

Awaiting `DONE` returns ``None`` without reaching any event loop (asyncio's or trio's: it
never yields, so it works on both). A context manager whose ``__aenter__`` and
``__aexit__`` are plain methods returning it on their fast path costs about half of one
running two coroutines; on a slow path they return a coroutine instead.

Which object is cheapest to await depends on the interpreter
(``python -m benchmarks.breakdown done`` times both):

- up to 3.11, a finished ``asyncio.Future``: the ``await`` asks its iterator with
  ``am_send``, which hands back the result without raising anything;
- from 3.12, ``await`` asks a non-coroutine iterator with ``tp_iternext``, and a finished
  future's iterator answers by raising ``StopIteration`` (about three times the cost of
  3.11's). `_Done` answers with an iterator that is already exhausted: it returns nothing
  and raises nothing, which the awaiting frame takes as the value ``None`` (about half
  the future's cost there, a little more than the future's before 3.12).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Awaitable
from typing import cast

__all__ = ("DONE",)


class _NoLoop:
    """Enough of an event loop to build a future that is finished from the start."""

    def get_debug(self) -> bool:
        return False


class _Done:
    """Awaitable, finished: ``await`` gets one shared, empty iterator and so ``None``."""

    __slots__ = ()

    # Looked up on the type and called without an argument (a bound C method, not a
    # function): no frame, no allocation. An exhausted tuple iterator stays exhausted.
    __await__ = itertools.repeat(iter(())).__next__

    def __repr__(self) -> str:
        return "brace._done.DONE"


def _future() -> Awaitable[None]:
    future: asyncio.Future[None] = asyncio.Future(loop=_NoLoop())  # type: ignore[arg-type]
    future.set_result(None)
    return future


DONE: Awaitable[None] = (
    cast("Awaitable[None]", _Done()) if sys.version_info >= (3, 12) else _future()
)
