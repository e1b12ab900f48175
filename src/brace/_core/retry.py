"""Retry planning: after a failed attempt, how long to sleep before the next, or stop.

Theory of operation
-------------------
After attempt ``number`` (1 for the first) failed with a retryable outcome, the next attempt
is planned in this order, the first reason to stop winning:

1. **Attempts.** ``number >= attempts`` stops (``EXHAUSTED``).
2. **Sleep.** The backoff's ``delay`` for this attempt (drawn only now, so a stopped retry
   draws no randomness), raised to the failure's
   ``retry_after`` when that is a larger number (a server's ``Retry-After``; ``NaN``,
   ``bool`` and non-numbers are ignored). A test mode may zero it.
3. **Deadline.** With a ``deadline`` (seconds since the first attempt started), a retry whose
   sleep would end at or after it stops (``DEADLINE``): it could only fail late.
4. **Budget.** With a retry budget, a retry it refuses stops (``BUDGET``); asked last, so a
   retry stopped for another reason takes nothing from the budget.

:func:`plan_retry` is that decision, pure given ``now``; the ``Retry`` shell only sleeps,
counts and calls its hook.
"""

from __future__ import annotations

import enum

from .backoff import Backoff, RandomSource
from .budget import RetryBudgetCore

__all__ = ("RetryStop", "plan_retry", "retry_sleep")


class RetryStop(enum.Enum):
    """Why retrying stops."""

    EXHAUSTED = "exhausted"
    DEADLINE = "deadline"
    BUDGET = "budget"


def retry_sleep(delay: float, retry_after: object) -> float:
    """The backoff ``delay``, raised to a larger numeric ``retry_after`` (``Retry-After``)."""
    if (
        isinstance(retry_after, int | float)
        and not isinstance(retry_after, bool)
        and retry_after > delay  # also false for NaN
    ):
        return float(retry_after)
    return delay


def plan_retry(
    number: int,
    previous: float,
    *,
    attempts: int,
    backoff: Backoff,
    random: RandomSource,
    retry_after: object,
    elapsed: float,
    deadline: float | None,
    budget: RetryBudgetCore | None,
    now: float,
    sleeps: bool = True,
) -> tuple[float, float] | RetryStop:
    """``(sleep, delay)`` before attempt ``number + 1``, or why retrying stops.

    ``previous`` is the backoff delay drawn before attempt ``number`` (0 after the first),
    ``retry_after`` the failure's ``retry_after`` attribute (``None`` for a retried result),
    ``elapsed`` the seconds since the first attempt started, ``budget`` a retry budget's
    core (asked at ``now``, and charged, only when everything else allows the retry).
    ``sleeps=False`` (a test mode) plans no sleep.
    """
    if number >= attempts:
        return RetryStop.EXHAUSTED
    delay = backoff.delay(number, previous, random)
    sleep = retry_sleep(delay, retry_after) if sleeps else 0.0
    if deadline is not None and elapsed + sleep >= deadline:
        return RetryStop.DEADLINE
    if budget is not None and not budget.try_retry(now):
        return RetryStop.BUDGET
    return sleep, delay
