"""Priority admission: who gets a slot, who waits, who is turned away.

Theory of operation
-------------------
An executor has ``concurrency`` slots and, in front of them, a queue of at most
``max_queue`` waiters. A newcomer takes a free slot at once when no one is waiting
(the fast path); otherwise it joins the queue, or is refused when the queue is full.
When a slot is released it goes to the next waiter; a waiter cancelled after its slot
was granted but before it resumed simply releases the slot again, which passes it on.

**Order.** Lower priority values are served first, first come first served within a
priority. With ``aging`` set, a waiter gains one class step (``CLASS_STEP`` priority
units, the distance between ``Priority.HIGH`` and ``Priority.MEDIUM``) for every
``aging`` seconds it waits. Every waiter ages at the same rate, so the relative order of
two waiters never changes and can be fixed at arrival::

    key = priority + CLASS_STEP * enqueued_at / aging      (smaller key first, then seq)

A LOW waiter (two steps behind HIGH) is therefore served before every HIGH waiter that
arrives more than ``2 * aging`` seconds after it: LOW work moves under a steady HIGH load.

**Storage.** One FIFO deque per priority value; within one priority both arrival order and
key order agree, so the next waiter is the best of the deque heads (a handful of classes).
Cancelled waiters are only marked and skipped later (lazy deletion); the deques are
compacted when the dead outnumber the living, so memory stays bounded by ``max_queue``.

**Full queue.** ``"reject"`` (default) refuses the newcomer. ``"drop_oldest"`` evicts the
oldest waiter of the least important priority present and admits the newcomer.
``"drop_less_important"`` does the same only when that victim is strictly less important
than the newcomer, and refuses the newcomer otherwise. Priorities here are the raw values,
not aged ones.

**Disciplines.** ``"fifo"`` serves as above. ``"codel"`` watches the queueing delay of the
waiters it serves: when the smallest delay seen during an ``interval`` (100 ms) stayed above
``target`` (5 ms) the queue is standing, and while it is, any waiter older than
``2 * target`` that comes up for service is shed instead (the variant of CoDel that
Facebook's folly uses for request queues). ``"adaptive_lifo"`` uses the same detector but
sheds nobody: while overloaded it serves the newest waiter of the chosen priority class
first, since it is the one whose client is most likely still waiting.

**Reserved slots.** With ``reserved`` set, that many of the slots are kept for urgent work
(priority values at most ``reserved_for``, ``Priority.HIGH`` by default): less urgent work
runs in at most ``concurrency - reserved`` slots (``open_limit``) and, when it has them all,
waits even though a slot is free, so that an urgent newcomer finds one free at once rather
than waiting for a long request to finish. When the best waiter may not take the free
slot, the best urgent waiter takes it. At least one slot always stays open to all.

**Time in queue.** With ``queue_timeout`` a waiter that has waited that long is never granted
a slot: :meth:`AdmissionCore.expire` (and every grant) ends it as ``TIMED_OUT``.

**Retry estimate.** The core integrates ``running`` over time (``busy_time``: by Little's law
the total time slots were held) and counts completions. Their ratio over the last one or two
``estimate_window`` periods is the mean service time, and
``retry_after = (pending + 1) * service_time / concurrency`` is the time the present backlog
needs to clear at the measured throughput, or ``None`` before anything completed. No
per-slot timestamp is needed, which keeps the shell's fast path allocation-free.

Every waiter ends exactly one way: its ticket's ``state`` leaves ``QUEUED`` once, to
``GRANTED``, ``DROPPED``, ``TIMED_OUT`` or ``CANCELLED``; a refused newcomer never gets a ticket.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from typing import Literal, overload

from ._inline import inline_steps, step
from ._validate import MAX_RING, check_int, check_positive

__all__ = (
    "CLASS_STEP",
    "EPSILON",
    "AdmissionCore",
    "Discipline",
    "FullPolicy",
    "Reservoir",
    "Ticket",
    "TicketState",
    "admit_now",
    "release_idle",
)

EPSILON = 1e-9
CLASS_STEP = 10
"""Priority units between two neighbouring :class:`brace.Priority` classes."""

Discipline = Literal["fifo", "codel", "adaptive_lifo"]
FullPolicy = Literal["reject", "drop_oldest", "drop_less_important"]

_DISCIPLINES = ("fifo", "codel", "adaptive_lifo")
_FULL_POLICIES = ("reject", "drop_oldest", "drop_less_important")


class TicketState(enum.Enum):
    """Where a waiter is; it leaves ``QUEUED`` exactly once."""

    QUEUED = "queued"
    GRANTED = "granted"
    DROPPED = "dropped"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


_QUEUED = TicketState.QUEUED
_GRANTED = TicketState.GRANTED


@step
def admit_now(core: AdmissionCore, now: float, priority: int | None) -> bool:
    """Take a free slot if one is free to ``priority`` (see ``reserved``; ``None``: not
    urgent) and nobody waits; never queues (the fast path).

    The executor's ``slot()`` inlines this step (and :func:`release_idle`): the core's one
    copy of the admission order is also the shell's fast path.
    """
    running = core.running
    if (
        (
            running < core.open_limit  # (== concurrency unless slots are reserved)
            or (
                running < core.concurrency
                and priority is not None
                and priority <= core.reserved_for
            )
        )
        and not core.pending
        and not core.closed
    ):
        core.busy_time += running * (now - core._last_change)
        core._last_change = now
        core.running = running + 1
        core.acquired_immediately += 1
        if core._detector:
            core._observe(0.0, now)
        admitted = True
    else:
        admitted = False
    return admitted


@step
def release_idle(core: AdmissionCore, now: float) -> bool:
    """Free the slot of completed work if nobody waits; False when :meth:`release` must."""
    running = core.running
    if not core.pending and running > 0:
        core.busy_time += running * (now - core._last_change)
        core._last_change = now
        core.running = running - 1
        core.completions += 1
        if now - core._epoch_start >= core.estimate_window:
            core.roll_epoch(now)
        released = True
    else:
        released = False
    return released


class Ticket:
    """One waiter in the queue. ``owner`` is free for the shell to hang its own state on."""

    __slots__ = ("enqueued_at", "key", "owner", "priority", "seq", "state")

    def __init__(self, seq: int, priority: int, key: float, enqueued_at: float) -> None:
        self.seq = seq
        self.priority = priority
        self.key = key
        self.enqueued_at = enqueued_at
        self.state = _QUEUED
        self.owner: object = None

    def __repr__(self) -> str:
        return f"Ticket(seq={self.seq}, priority={self.priority}, state={self.state.value})"


_NOTHING: tuple[Ticket, ...] = ()


class AdmissionCore:
    """Slots, the priority queue in front of them, and every admission decision.

    :meth:`try_acquire` is the fast path; :meth:`arrive` queues or refuses; :meth:`release`,
    :meth:`expire`, :meth:`set_concurrency` and :meth:`cancel_all` return the tickets whose
    state they changed, for the shell to wake.
    """

    __slots__ = (
        "_classes",
        "_codel_interval_end",
        "_codel_min_delay",
        "_dead",
        "_detector",
        "_epoch_marks",
        "_epoch_start",
        "_last_change",
        "_seq",
        "acquired_immediately",
        "aging",
        "busy_time",
        "cancelled",
        "closed",
        "codel_interval",
        "codel_target",
        "completions",
        "concurrency",
        "discipline",
        "dropped",
        "estimate_window",
        "granted",
        "max_queue",
        "on_full",
        "open_limit",
        "overloaded",
        "pending",
        "queue_timeout",
        "rejected",
        "rejected_closed",
        "reserved",
        "reserved_for",
        "running",
        "tickets",
        "timed_out",
    )

    def __init__(
        self,
        concurrency: int = 10,
        max_queue: int = 1000,
        *,
        aging: float | None = 10.0,
        on_full: FullPolicy = "reject",
        discipline: Discipline = "fifo",
        codel_target: float = 0.005,
        codel_interval: float = 0.1,
        queue_timeout: float | None = None,
        estimate_window: float = 10.0,
        reserved: int = 0,
        reserved_for: int = 0,
    ) -> None:
        self.concurrency = check_int(concurrency, "concurrency", minimum=1)
        self.reserved = check_int(reserved, "reserved", minimum=0)
        if reserved and reserved >= concurrency:
            raise ValueError(
                f"reserved must be less than concurrency ({concurrency}), got {reserved!r}"
            )
        self.reserved_for = check_int(reserved_for, "reserved_for", minimum=-(10**9))
        # the slots less urgent work may hold (at least one, whatever the concurrency)
        self.open_limit = max(1, self.concurrency - self.reserved)
        self.max_queue = check_int(max_queue, "max_queue", minimum=0)
        self.aging = None if aging is None else check_positive(aging, "aging")
        if on_full not in _FULL_POLICIES:
            raise ValueError(f"on_full must be one of {_FULL_POLICIES}, got {on_full!r}")
        self.on_full = on_full
        if discipline not in _DISCIPLINES:
            raise ValueError(f"discipline must be one of {_DISCIPLINES}, got {discipline!r}")
        self.discipline = discipline
        self._detector = discipline != "fifo"
        self.codel_target = check_positive(codel_target, "codel_target")
        self.codel_interval = check_positive(codel_interval, "codel_interval")
        self.queue_timeout = (
            None if queue_timeout is None else check_positive(queue_timeout, "queue_timeout")
        )
        self.estimate_window = check_positive(estimate_window, "estimate_window")
        self._classes: dict[int, deque[Ticket]] = {}
        self._dead = 0
        self._seq = 0
        self.running = 0
        self.pending = 0
        self.closed = False
        self.overloaded = False
        self._codel_interval_end = -1.0e300
        self._codel_min_delay = 0.0
        self.busy_time = 0.0  # integral of running over time, up to _last_change
        self.completions = 0
        self._last_change = 0.0  # running is 0 until then, so any start value works
        self._epoch_start = 0.0
        # (busy_time, completions) at the start of the previous and the current epoch
        self._epoch_marks = ((0.0, 0), (0.0, 0))
        self.acquired_immediately = 0  # slots taken on the fast path
        self.tickets = 0  # waiters ever queued; each ends in exactly one of these four:
        self.granted = 0
        self.dropped = 0
        self.timed_out = 0
        self.cancelled = 0
        # newcomers refused without a ticket
        self.rejected = 0
        self.rejected_closed = 0

    # -- arrivals ------------------------------------------------------------------------

    @inline_steps
    def try_acquire(self, now: float, priority: int | None = None) -> bool:
        """Take a free slot if one is free to ``priority`` (see ``reserved``; None: not
        urgent) and nobody waits; never queues (:func:`admit_now`)."""
        admitted = admit_now(self, now, priority)
        return admitted

    def arrive(self, priority: int, now: float) -> tuple[Ticket | None, tuple[Ticket, ...]]:
        """Queue a newcomer that found no free slot (call :meth:`try_acquire` first).

        Returns ``(ticket, evicted)``: ``ticket`` is None when the newcomer is refused (see
        :attr:`closed` to tell "shutting down" from "queue full"); ``evicted`` holds a waiter
        dropped to make room. A newcomer that finds a slot free is granted at once.
        """
        if self.closed:
            self.rejected_closed += 1
            return None, _NOTHING
        aging = self.aging
        # The key first: should it fail, no count has moved for a waiter never queued.
        key = priority if aging is None else priority + CLASS_STEP * now / aging
        evicted: tuple[Ticket, ...] = _NOTHING
        if self.pending >= self.max_queue:
            victim = self._victim(priority)
            if victim is None:
                self.rejected += 1
                return None, _NOTHING
            self._remove(victim, TicketState.DROPPED)
            self.dropped += 1
            evicted = (victim,)
        self._seq += 1
        self.tickets += 1
        ticket = Ticket(self._seq, priority, key, now)
        queue = self._classes.get(priority)
        if queue is None:
            queue = self._classes[priority] = deque()
        queue.append(ticket)
        self.pending += 1
        if self.running < self.concurrency:  # a slot is free although someone waited
            return ticket, evicted + self._grant(now)
        return ticket, evicted

    def _victim(self, priority: int) -> Ticket | None:
        if self.on_full == "reject" or not self.pending:
            return None
        worst = max(p for p, q in self._classes.items() if self._clean_head(q) is not None)
        if self.on_full == "drop_less_important" and worst <= priority:
            return None
        return self._clean_head(self._classes[worst])

    # -- leaving -------------------------------------------------------------------------

    @inline_steps
    def release(self, now: float, completed: bool = True) -> tuple[Ticket, ...]:
        """A slot is free again; ``completed`` is False when no work ran in it.

        Returns the tickets that changed state: the next waiter(s) granted, and any shed or
        expired on the way.
        """
        if completed:
            released = release_idle(self, now)
            if released:
                return _NOTHING
        running = self.running
        if running <= 0:
            raise RuntimeError("release() without a matching acquisition")
        self.busy_time += running * (now - self._last_change)
        self._last_change = now
        self.running = running - 1
        if completed:
            self.completions += 1
            if now - self._epoch_start >= self.estimate_window:
                self.roll_epoch(now)
        if self.pending:
            return self._grant(now)
        return _NOTHING

    def roll_epoch(self, now: float) -> None:
        """Start a new estimate window: the service time is measured over the last two."""
        self._epoch_start = now
        self._epoch_marks = (self._epoch_marks[1], (self.busy_time, self.completions))

    def leave(self, ticket: Ticket, now: float) -> bool:
        """A queued waiter gave up (cancelled); False if it had already left the queue."""
        if ticket.state is not _QUEUED:
            return False
        self._remove(ticket, TicketState.CANCELLED)
        self.cancelled += 1
        return True

    def expire(self, now: float) -> tuple[Ticket, ...]:
        """End every waiter that has been queued ``queue_timeout`` seconds or more."""
        timeout = self.queue_timeout
        if timeout is None or not self.pending:
            return _NOTHING
        limit = now - timeout + EPSILON
        expired: list[Ticket] = []
        for queue in self._classes.values():
            while queue:
                head = queue[0]
                if head.state is not _QUEUED:
                    queue.popleft()
                    self._dead -= 1
                elif head.enqueued_at <= limit:
                    queue.popleft()
                    head.state = TicketState.TIMED_OUT
                    self.pending -= 1
                    self.timed_out += 1
                    expired.append(head)
                else:
                    break
        self._prune()
        return tuple(expired)

    def deadline(self, ticket: Ticket) -> float | None:
        """When ``ticket`` times out in the queue (None without ``queue_timeout``)."""
        timeout = self.queue_timeout
        return None if timeout is None else ticket.enqueued_at + timeout

    def cancel_all(self, now: float) -> tuple[Ticket, ...]:
        """End every queued waiter as ``CANCELLED`` (a drain that ran out of time)."""
        ended: list[Ticket] = []
        for queue in self._classes.values():
            for ticket in queue:
                if ticket.state is _QUEUED:
                    ticket.state = TicketState.CANCELLED
                    ended.append(ticket)
        self._classes.clear()
        self._dead = 0
        self.pending = 0
        self.cancelled += len(ended)
        return tuple(ended)

    # -- configuration -------------------------------------------------------------------

    def set_concurrency(self, concurrency: int, now: float) -> tuple[Ticket, ...]:
        """Change the number of slots; more slots are granted at once to waiters. The
        reserved slots stay reserved while at least one slot stays open to all."""
        self.concurrency = check_int(concurrency, "concurrency", minimum=1)
        self.open_limit = max(1, self.concurrency - self.reserved)
        if self.pending and self.running < self.concurrency:
            return self._grant(now)
        return _NOTHING

    def close(self) -> None:
        """Admit nobody new from now on; waiters already queued keep their place."""
        self.closed = True

    # -- reading -------------------------------------------------------------------------

    def service_time(self) -> float | None:
        """Mean seconds a slot is held, over the last one or two estimate windows."""
        busy, done = self._epoch_marks[0]
        # busy_time sums ``running * elapsed``: a clock that stepped back takes some off.
        if self.completions > done:
            return max(0.0, (self.busy_time - busy) / (self.completions - done))
        if self.completions:
            return max(0.0, self.busy_time / self.completions)
        return None

    def retry_after(self) -> float | None:
        """Seconds the present backlog needs to clear, or None with no completion yet."""
        service = self.service_time()
        if service is None:
            return None
        return (self.pending + 1) * service / self.concurrency

    def pending_by_priority(self) -> dict[int, int]:
        """Live waiters per priority value."""
        counts: dict[int, int] = {}
        for priority, queue in self._classes.items():
            live = sum(1 for ticket in queue if ticket.state is _QUEUED)
            if live:
                counts[priority] = live
        return counts

    def queued(self) -> list[Ticket]:
        """Live waiters in the order FIFO service would grant them (for tests and debugging)."""
        live = [t for q in self._classes.values() for t in q if t.state is _QUEUED]
        live.sort(key=lambda t: (t.key, t.seq))
        return live

    # -- internals -----------------------------------------------------------------------

    def _grant(self, now: float) -> tuple[Ticket, ...]:
        changed: list[Ticket] = []
        timeout = self.queue_timeout
        discipline = self.discipline
        while self.running < self.concurrency and self.pending:
            queue = self._best_class()
            ticket = queue[0]
            if ticket.priority > self.reserved_for and self.running >= self.open_limit:
                # the free slot is reserved: the best urgent waiter takes it, if any
                urgent = self._best_class(self.reserved_for)
                if urgent is None:
                    break
                queue = urgent
                ticket = queue[0]
            delay = now - ticket.enqueued_at
            if delay < 0.0:  # the clock stepped back
                delay = 0.0
            if timeout is not None and delay >= timeout - EPSILON:
                queue.popleft()
                self.pending -= 1
                ticket.state = TicketState.TIMED_OUT
                self.timed_out += 1
                changed.append(ticket)
                continue
            if self._detector:
                shed = self._observe(delay, now)
                if discipline == "codel":
                    if shed:
                        queue.popleft()
                        self.pending -= 1
                        ticket.state = TicketState.DROPPED
                        self.dropped += 1
                        changed.append(ticket)
                        continue
                elif self.overloaded:
                    ticket = self._clean_tail(queue)
            if ticket is queue[0]:
                queue.popleft()
            else:
                queue.pop()
            self.pending -= 1
            ticket.state = _GRANTED
            self.busy_time += self.running * (now - self._last_change)
            self._last_change = now
            self.running += 1
            self.granted += 1
            changed.append(ticket)
        self._prune()
        return tuple(changed)

    @overload
    def _best_class(self) -> deque[Ticket]: ...
    @overload
    def _best_class(self, at_most: int) -> deque[Ticket] | None: ...
    def _best_class(self, at_most: int | None = None) -> deque[Ticket] | None:
        """The class whose head is served next (among priorities ``<= at_most``: None
        when none of them waits)."""
        classes = self._classes
        if len(classes) == 1 and at_most is None:
            for queue in classes.values():
                if self._clean_head(queue) is not None:
                    return queue
        best: deque[Ticket] | None = None
        best_head: Ticket | None = None
        for priority, queue in classes.items():
            if at_most is not None and priority > at_most:
                continue
            head = self._clean_head(queue)
            if head is None:
                continue
            if (
                best_head is None
                or head.key < best_head.key
                or (head.key == best_head.key and head.seq < best_head.seq)
            ):
                best, best_head = queue, head
        assert best is not None or at_most is not None, "pending > 0 but no live waiter"
        return best

    def _clean_head(self, queue: deque[Ticket]) -> Ticket | None:
        while queue:
            head = queue[0]
            if head.state is _QUEUED:
                return head
            queue.popleft()
            self._dead -= 1
        return None

    def _clean_tail(self, queue: deque[Ticket]) -> Ticket:
        while queue[-1].state is not _QUEUED:
            queue.pop()
            self._dead -= 1
        return queue[-1]

    def _remove(self, ticket: Ticket, state: TicketState) -> None:
        ticket.state = state
        self.pending -= 1
        self._dead += 1
        if self._dead > 32 and self._dead > self.pending:
            self._compact()

    def _compact(self) -> None:
        classes = {}
        for priority, queue in self._classes.items():
            live = deque(t for t in queue if t.state is _QUEUED)
            if live:
                classes[priority] = live
        self._classes = classes
        self._dead = 0

    def _prune(self) -> None:
        if len(self._classes) > 1 or not self.pending:
            empty = [p for p, q in self._classes.items() if self._clean_head(q) is None]
            for priority in empty:
                del self._classes[priority]

    def _observe(self, delay: float, now: float) -> bool:
        """Feed one queueing delay to the CoDel detector; True means shed this waiter."""
        if now > self._codel_interval_end:
            self._codel_interval_end = now + self.codel_interval
            self.overloaded = self._codel_min_delay > self.codel_target
            self._codel_min_delay = delay
            return False  # the first sample of an interval is never shed
        if delay < self._codel_min_delay:
            self._codel_min_delay = delay
        return self.overloaded and delay > 2 * self.codel_target


class Reservoir:
    """The most recent ``size`` samples in a fixed ring: percentiles in O(1) memory.

    Zeros (waits on the fast path) are only counted in ``zeros`` and written into the
    ring when the next other sample arrives or percentiles are read: a fast path costs one
    increment.
    """

    __slots__ = ("_count", "_index", "_samples", "size", "zeros")

    def __init__(self, size: int = 1024) -> None:
        # the ring is allocated at once (8 bytes a slot)
        self.size = check_int(size, "reservoir_size", minimum=1, maximum=MAX_RING)
        self._samples: list[float] = [0.0] * self.size
        self._index = 0
        self._count = 0
        self.zeros = 0

    def add(self, value: float) -> None:
        """Record one sample, forgetting the oldest once full."""
        if self.zeros:
            self._flush()
        self._put(value)

    def _put(self, value: float) -> None:
        index = self._index
        self._samples[index] = value
        index += 1
        self._index = 0 if index == self.size else index
        if self._count < self.size:
            self._count += 1

    def _flush(self) -> None:
        zeros = min(self.zeros, self.size)
        self.zeros = 0
        for _ in range(zeros):
            self._put(0.0)

    def __len__(self) -> int:
        return min(self.size, self._count + self.zeros)

    def percentiles(self, *quantiles: float) -> tuple[float, ...]:
        """Nearest-rank percentiles (``0 < q <= 1``) of the kept samples; zeros when empty."""
        if self.zeros:
            self._flush()
        count = self._count
        if not count:
            return tuple(0.0 for _ in quantiles)
        ordered = sorted(self._samples[:count])
        result = []
        for q in quantiles:
            rank = max(1, min(count, math.ceil(q * count - EPSILON)))
            result.append(ordered[rank - 1])
        return tuple(result)
