"""A fleet of circuit breakers: when the fleet opens, and what one replica does about it.

Theory of operation
-------------------
Every replica keeps its own `CircuitBreaker` and, every ``sync_interval``, reports to a
shared place whether it is *open on its own account*: its breaker is open because of a
trip or a failed probe of its own, not because the fleet told it to open (a half-open
breaker is probing: it does not count as open). The
shared place counts the live replicas (those that reported within a TTL) and the ones
open on their own account; when ``quorum_needed(quorum, live)`` of them are open, the
fleet opens for ``recovery_time``: every replica's breaker is opened until then. With
``quorum=None`` one replica is enough (a shared breaker: one trip opens every replica);
with a share, one replica with a bad network path cannot cut the others off.

After the fleet's open period, the replicas' breakers turn half-open on their own
clocks; probes are limited fleet-wide elsewhere (a leased semaphore). A replica whose
probes close its breaker reports the close; the shared place counts closes, and a
replica that sees the count grow closes its breaker too (with a quorum, unless it is
open on its own account): one good probe closes the fleet, not one per replica.

`ReplicaSync` is one replica's side of that, as data in and actions out.
"""

from __future__ import annotations

import math
from typing import Literal

from .breaker import CircuitState

__all__ = ("ReplicaSync", "quorum_needed")

Action = Literal["open", "close", "none"]


def quorum_needed(quorum: float | None, live: int) -> int:
    """Replicas open on their own account that open the fleet of ``live`` replicas."""
    if quorum is None:
        return 1
    return max(1, math.ceil(quorum * live - 1e-9))


class ReplicaSync:
    """One replica's bookkeeping between syncs: what to report, what to do with the answer."""

    __slots__ = ("closed_seen", "fleet_opens", "shared", "was_closed")

    def __init__(self, *, shared: bool = True) -> None:
        self.shared = shared  # one state for the fleet (quorum None): a close closes all
        # the breaker's opened_count right after the fleet last opened it
        self.fleet_opens = -1
        self.was_closed = True
        self.closed_seen: int | None = None

    def own_open(self, state: CircuitState, opened_count: int) -> bool:
        """Whether the breaker is open on its own account (a trip or a failed probe of its
        own, not the fleet's say); half-open is probing, not open."""
        return state is CircuitState.OPEN and opened_count != self.fleet_opens

    def report(self, state: CircuitState, opened_count: int) -> tuple[bool, bool]:
        """``(own_open, closed_since_last)`` to send with this sync."""
        closed = state is CircuitState.CLOSED
        closed_since = closed and not self.was_closed
        self.was_closed = closed
        return self.own_open(state, opened_count), closed_since

    def react(self, state: CircuitState, own: bool, remaining: float, closes: int) -> Action:
        """What to do with the fleet's answer: ``remaining`` seconds of fleet-open, and
        the count of closes reported so far."""
        seen, self.closed_seen = self.closed_seen, closes
        if remaining > 0:
            return "none" if own else "open"
        closing = seen is not None and closes > seen
        if closing and state is not CircuitState.CLOSED and (self.shared or not own):
            return "close"
        return "none"

    def opened_by_fleet(self, opened_count: int) -> None:
        """Record the breaker's opened_count after the fleet opened it."""
        self.fleet_opens = opened_count
