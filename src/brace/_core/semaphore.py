"""A counting semaphore whose permits are leases, with a FIFO queue of waiters.

Theory of operation
-------------------
This is the state machine of `brace.redis.DistributedLimit`, the one copy in Python of
what its Lua script does on the Redis server (a differential test holds the two
together). Many processes share ``limit`` permits; none of them can be trusted to give
a permit back (a process may die at any time), so a permit is a *lease*: the holder
``id`` owns it until ``now + lease``, and must renew it before then to keep it. An
expired lease is taken back by the next operation, whoever asks.

Waiters queue in the order they first asked (a ticket each, strictly increasing). A
waiter must ask again (poll) before its ``deadline`` (``now + wait_ttl`` at its last
ask) or it is dropped from the queue, so a waiter that died (or stopped waiting) holds
no place for long. With ``free = limit - holders`` permits free, the first ``free``
waiters of the queue may take one; a newcomer is admitted at once only when the queue is
shorter than ``free``. This is FIFO across processes for every waiter that polls; a
free permit can stay unused until the waiter it is reserved for polls again.

Every operation first drops the expired leases and waiters (``expiry <= now``,
``deadline <= now``). The queue holds at most ``max_waiters``; a waiter asking when it
is full is refused (``position == -1``).

`acquire` returns ``(acquired, holders, position)``: whether ``id`` holds a permit now,
the number of holders after the call, and ``id``'s 1-based place in the queue (0 when
it holds a permit, -1 when the queue was full). Asking again while holding renews the
lease. `try_acquire` is the same without queueing. `release` and `renew` say whether
``id`` held a permit.
"""

from __future__ import annotations

__all__ = ("LeaseSemaphoreCore",)


class LeaseSemaphoreCore:
    """``limit`` leased permits and a bounded FIFO queue of polling waiters."""

    __slots__ = ("holders", "limit", "max_waiters", "ticket", "waiters")

    def __init__(self, limit: int, max_waiters: int) -> None:
        self.limit = limit
        self.max_waiters = max_waiters
        self.holders: dict[str, float] = {}  # id -> lease expiry
        # id -> [ticket, deadline]; insertion order is ticket order (tickets only grow)
        self.waiters: dict[str, list[float]] = {}
        self.ticket = 0

    def expire(self, now: float) -> None:
        """Drop the leases and waiters whose time is up (``<= now``)."""
        holders = self.holders
        for holder in [h for h, expiry in holders.items() if expiry <= now]:
            del holders[holder]
        waiters = self.waiters
        for waiter in [w for w, (_, deadline) in waiters.items() if deadline <= now]:
            del waiters[waiter]
        if not waiters:
            self.ticket = 0

    def acquire(
        self, holder: str, now: float, lease: float, wait_ttl: float, *, queue: bool = True
    ) -> tuple[bool, int, int]:
        """Take a permit for ``holder`` if its turn has come, else queue it (or renew)."""
        self.expire(now)
        holders = self.holders
        if holder in holders:
            holders[holder] = now + lease
            return True, len(holders), 0
        waiters = self.waiters
        free = self.limit - len(holders)
        rank = _index(waiters, holder)
        ahead = len(waiters) if rank < 0 else rank
        if ahead < free:
            waiters.pop(holder, None)
            if not waiters:
                self.ticket = 0
            holders[holder] = now + lease
            return True, len(holders), 0
        if not queue:
            return False, len(holders), 0
        if rank < 0:
            if len(waiters) >= self.max_waiters:
                return False, len(holders), -1
            self.ticket += 1
            waiters[holder] = [float(self.ticket), now + wait_ttl]
            return False, len(holders), len(waiters)
        waiters[holder][1] = now + wait_ttl
        return False, len(holders), rank + 1

    def try_acquire(self, holder: str, now: float, lease: float) -> tuple[bool, int, int]:
        """`acquire` without queueing: a permit now, or nothing."""
        return self.acquire(holder, now, lease, 0.0, queue=False)

    def renew(self, holder: str, now: float, lease: float) -> bool:
        """Extend ``holder``'s lease to ``now + lease``; False if it holds none (lost)."""
        self.expire(now)
        if holder not in self.holders:
            return False
        self.holders[holder] = now + lease
        return True

    def release(self, holder: str, now: float) -> bool:
        """Give ``holder``'s permit back and drop it from the queue; whether it held one."""
        self.expire(now)
        held = self.holders.pop(holder, None) is not None
        self.waiters.pop(holder, None)
        if not self.waiters:
            self.ticket = 0
        return held


def _index(waiters: dict[str, list[float]], holder: str) -> int:
    if holder not in waiters:
        return -1
    for index, waiter in enumerate(waiters):
        if waiter == holder:
            return index
    return -1  # pragma: no cover - found above
