"""TokenBucket: one local token bucket, on anyio."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from typing_extensions import Self

from ._core._inline import inline_steps
from ._core.gcra import GCRA, TokenBucketCore, gcra_step
from ._events import EventHook, refusals
from ._waiters import LimiterShell

__all__ = ("TokenBucket", "TokenBucketStatistics")


@dataclass(frozen=True, slots=True)
class TokenBucketStatistics:
    """A snapshot of a `TokenBucket`, from `TokenBucket.statistics()`.

    Attributes:
        rate: tokens added every ``per`` seconds.
        per: the period of ``rate``, in seconds.
        burst: the capacity: the most tokens taken at once after a rest.
        available: tokens in the bucket now (fractional; waiters have not taken them).
        waiting: callers waiting in ``acquire`` now.
        waiting_cost: tokens those callers ask for.
        acquired: tokens taken since creation (by all calls together).
        rejected: ``try_acquire`` calls refused since creation.
        waited: ``acquire`` calls that had to wait, since creation.
        refusals: refusals by reason since creation: ``{"rate_limited": rejected}``.
        cancelled: waiting calls that left without their tokens (cancelled), since creation.
    """

    rate: float
    per: float
    burst: int
    available: float
    waiting: int
    waiting_cost: int
    acquired: int
    rejected: int
    waited: int
    cancelled: int
    refusals: Mapping[str, int]


class TokenBucket(LimiterShell[TokenBucketCore]):
    """A token bucket: at most ``burst`` at once, ``rate`` per ``per`` seconds on average.

    The bucket holds up to ``burst`` tokens and gains ``rate`` tokens every ``per``
    seconds (continuously: one every ``per / rate`` seconds). A request takes ``cost``
    tokens, or waits until they are back. It starts full. Internally it is the GCRA form of
    the bucket, a single float (see `brace._core.gcra`).

    Non-blocking calls are sync, waiting is async and first come, first served:

    ```python
    bucket = TokenBucket(10, per=60.0)   # 10 per minute, 10 at once
    decision = bucket.try_acquire()      # a Decision; takes a token if allowed
    await bucket.acquire(2)              # waits its turn for 2 tokens
    async with bucket: ...               # acquire(1)

    @bucket                              # acquire(1) before every call
    async def fetch(url: str) -> bytes: ...
    ```

    When tokens are available and nobody waits, ``try_acquire``, ``acquire`` and
    ``async with`` complete without reaching the event loop. Waiting is cancel-safe: a
    cancelled waiter has taken nothing. While anyone waits, nobody jumps the queue:
    ``try_acquire`` is refused with an exact estimate of the wait behind the queue.

    Args:
        rate: tokens added every ``per`` seconds, a number > 0.
        per: the period of ``rate`` in seconds, a number > 0 (default 1).
        burst: the capacity, an int >= 1 (default: ``rate`` rounded down, at least 1).
        clock: a zero-argument callable returning monotonic seconds (default
            ``time.monotonic``; pass ``anyio.current_time`` on a virtual-time loop).
        name: a name for events and log records (default ``None``).
        on_event: a hook, or hooks, called with a `brace.events.Refused` (reason
            ``"rate_limited"``) for each refusal of ``try_acquire``; see ``docs/events.md``.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range.
    """

    __slots__ = ()

    _source: ClassVar[str] = "token_bucket"
    _logger: ClassVar[logging.Logger] = logging.getLogger("brace.bucket")

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        burst: int | None = None,
        clock: Callable[[], float] | None = None,
        name: str | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
    ) -> None:
        super().__init__(TokenBucketCore(GCRA(rate, per, burst)), clock, name, on_event)

    @inline_steps
    async def __aenter__(self) -> None:
        """``acquire(1)``, building no decision (the fastest way to take a token)."""
        # The GCRA step is inlined here (a call is a sixth of the time of an uncontended
        # ``async with``, which is measured against asyncio.Semaphore).
        if not self._waiters:
            core = self._core
            now = self._clock()
            new_tat = gcra_step(core.tat, now, 1, core.interval, core.reach)
            if new_tat is not None:
                core.tat = new_tat
                self._acquired += 1
                return
        await self._queue.wait(1, self._grant, self._retry_after)

    @classmethod
    def from_rate(
        cls,
        rate: str,
        *,
        burst: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Self:
        """A bucket from a rate string: ``TokenBucket.from_rate("10/minute")``.

        ``"N/period"`` gives ``rate=N``, ``per=period`` and, by default, ``burst=N``.
        """
        from ._rate import parse_rate

        parsed = parse_rate(rate)
        return cls(parsed.limit, parsed.period, burst=burst, clock=clock)

    @property
    def policy(self) -> GCRA:
        """The immutable parameters and decision function (what a keyed limiter reuses)."""
        return self._core.policy

    @property
    def rate(self) -> float:
        """Tokens added every ``per`` seconds."""
        return self._core.policy.rate

    @property
    def per(self) -> float:
        """The period of ``rate``, in seconds."""
        return self._core.policy.per

    @property
    def burst(self) -> int:
        """The capacity: the most tokens available at once."""
        return self._core.policy.burst

    def available(self) -> float:
        """Tokens in the bucket now (fractional), waiters or not."""
        return self._core.available(self._clock())

    def statistics(self) -> TokenBucketStatistics:
        """A snapshot of the bucket's parameters, state and counters."""
        policy = self._core.policy
        queue = self._queue
        return TokenBucketStatistics(
            rate=policy.rate,
            per=policy.per,
            burst=policy.burst,
            available=self._core.available(self._clock()),
            waiting=queue.live,
            waiting_cost=queue.cost,
            acquired=self._acquired,
            rejected=self._rejected,
            waited=queue.waited,
            cancelled=queue.cancelled,
            refusals=refusals(rate_limited=self._rejected),
        )

    def __repr__(self) -> str:
        policy = self._core.policy
        return (
            f"TokenBucket(rate={policy.rate!r}, per={policy.per!r}, burst={policy.burst!r}, "
            f"waiting={self._queue.live})"
        )
