"""Quota leases: how big a lease of tokens to take, and a GCRA bucket's state after a return.

Theory of operation
-------------------
A process sharing a limit through a remote store can take ``n`` tokens at once (one
remote decision of cost ``n``) and spend them locally, one request at a time, without a
round trip: this is a *lease* (Google's Doorman, Envoy's rate-limit quota). The tokens
are consumed in the shared state when the lease is taken, so the shared limit's own
bound still holds for leases *granted*; admissions lag grants by the time a lease takes
to be spent. A process holds at most one lease per key at a time, of at most
``max_lease`` tokens, so over any interval

    admitted <= (what the exact limit admits over the interval) + processes * max_lease

(the tokens already held when the interval starts). With ``max_lease == 1`` every
request is its own remote decision: exactly the shared store.

`next_lease_size` adapts a key's lease size to its recent rate: a lease used up within
half its lifetime doubles the next one, a lease that lapsed with half or more left
halves it (never below 1, never above ``max_lease``). `give_back` is what returning
``tokens`` unspent tokens does to a GCRA bucket's theoretical arrival time: it moves back
by ``tokens * interval``, and a bucket moved back to ``now`` or before is at rest.
"""

from __future__ import annotations

import math

__all__ = ("give_back", "next_lease_size")


def next_lease_size(
    size: int, *, granted: int, left: int, age: float, lease_time: float, max_lease: int
) -> int:
    """The size of the next lease of a key whose last lease of ``granted`` tokens ended
    ``age`` seconds after it was taken with ``left`` tokens unspent."""
    if left == 0 and age < lease_time / 2:
        return min(max_lease, max(size, granted) * 2)
    if 2 * left >= granted:
        return max(1, min(size, granted) // 2)
    return max(1, min(size, max_lease))


def give_back(tat: float, now: float, tokens: int, interval: float) -> float:
    """A GCRA bucket's ``tat`` once ``tokens`` unspent tokens are returned at ``now``;
    ``-inf`` when the bucket is then at rest (full)."""
    moved = tat - tokens * interval
    return moved if moved > now else -math.inf
