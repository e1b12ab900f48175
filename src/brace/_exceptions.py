"""The one exception hierarchy of brace.

Every refusal is a :class:`Rejected` carrying ``retry_after`` (seconds, or ``None`` when
no estimate exists), so an adapter can map any of them to an HTTP status and a
``Retry-After`` header without knowing which primitive refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._core.breaker import CircuitState
    from ._core.decision import Decision

__all__ = (
    "BraceError",
    "CircuitOpen",
    "Dropped",
    "MemoryPressure",
    "Overloaded",
    "QueueFull",
    "QueueTimeout",
    "RateLimited",
    "Rejected",
    "ShuttingDown",
    "TimeoutExceeded",
)


class BraceError(Exception):
    """Base class of every exception brace raises on purpose."""


class Rejected(BraceError):
    """Work was refused before it started; try again after ``retry_after`` seconds."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[Rejected], args: tuple[object, ...], state: dict[str, object]) -> Rejected:
    instance = cls.__new__(cls)
    Exception.__init__(instance, *args)
    instance.__dict__.update(state)
    return instance


class RateLimited(Rejected):
    """A rate limit refused the call; ``decision`` holds the limiter's answer."""

    def __init__(
        self,
        message: str = "",
        *,
        retry_after: float | None = None,
        decision: Decision | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.decision = decision
        self.key = key


class QueueFull(Rejected):
    """The executor's queue is full (or the waiter was dropped to make room)."""


class Dropped(QueueFull):
    """A queued waiter was evicted to make room for more important work, or shed by CoDel."""


class QueueTimeout(Rejected):
    """The waiter spent longer than allowed in the executor's queue."""


class CircuitOpen(Rejected):
    """The circuit breaker is open (or half-open with every probe taken).

    ``name`` is the breaker's name, ``state`` the state that refused the call.
    """

    def __init__(
        self,
        message: str = "",
        *,
        retry_after: float | None = None,
        name: str | None = None,
        state: CircuitState | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.name = name
        self.state = state


class MemoryPressure(Rejected):
    """The process is short of memory and sheds new work."""


class Overloaded(Rejected):
    """The event loop is falling behind and this piece of work was shed."""


class ShuttingDown(Rejected):
    """The primitive is draining and admits no new work."""


class TimeoutExceeded(BraceError, TimeoutError):
    """The work ran longer than its timeout and was cancelled."""

    def __init__(self, message: str = "", *, timeout: float | None = None) -> None:
        super().__init__(message or f"timed out after {timeout} s")
        self.timeout = timeout
