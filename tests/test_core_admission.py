"""The pure admission core: priority order, aging, full-queue policies, disciplines."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from brace._core.admission import (
    CLASS_STEP,
    EPSILON,
    AdmissionCore,
    Reservoir,
    Ticket,
    TicketState,
)

# -- the reference model ---------------------------------------------------------------


@dataclass
class Waiter:
    seq: int
    priority: int
    enqueued_at: float


@dataclass
class Model:
    """Admission done the obvious way: a list, sorted afresh by aged priority on each grant."""

    concurrency: int
    max_queue: int
    aging: float | None
    policy: str
    queue_timeout: float | None
    discipline: str = "fifo"
    reserved: int = 0
    reserved_for: int = 0
    target: float = 0.1
    interval: float = 0.3
    running: int = 0
    queue: list[Waiter] = field(default_factory=list)
    seq: int = 0
    # CoDel: the smallest delay seen in the current interval, and the verdict of the last
    interval_end: float = -1e300
    min_delay: float = 0.0
    overloaded: bool = False

    def observe(self, delay: float, now: float) -> bool:
        """True when a waiter with this queueing delay is to be shed."""
        if now > self.interval_end:
            self.interval_end = now + self.interval
            self.overloaded = self.min_delay > self.target
            self.min_delay = delay
            return False
        self.min_delay = min(self.min_delay, delay)
        return self.overloaded and delay > 2 * self.target

    def effective(self, waiter: Waiter, now: float) -> float:
        if self.aging is None:
            return waiter.priority
        return waiter.priority - CLASS_STEP * (now - waiter.enqueued_at) / self.aging

    @property
    def open_limit(self) -> int:
        return max(1, self.concurrency - self.reserved)

    def may_run(self, priority: int) -> bool:
        """A free slot this priority may take: any of them for urgent work, else an open one."""
        if priority <= self.reserved_for:
            return self.running < self.concurrency
        return self.running < self.open_limit

    def try_acquire(self, now: float, priority: int) -> bool:
        if self.may_run(priority) and not self.queue:
            self.running += 1
            if self.discipline != "fifo":
                self.observe(0.0, now)
            return True
        return False

    def arrive(self, priority: int, now: float) -> tuple[int | None, list[tuple[int, str]]]:
        """Return the newcomer's seq (None if refused) and the (seq, outcome) of others."""
        changed: list[tuple[int, str]] = []
        if len(self.queue) >= self.max_queue:
            victim = None
            if self.policy != "reject" and self.queue:
                worst = max(w.priority for w in self.queue)
                victim = min((w for w in self.queue if w.priority == worst), key=lambda w: w.seq)
                if self.policy == "drop_less_important" and victim.priority <= priority:
                    victim = None
            if victim is None:
                return None, []
            self.queue.remove(victim)
            changed.append((victim.seq, "dropped"))
        self.seq += 1
        self.queue.append(Waiter(self.seq, priority, now))
        return self.seq, changed + self.grant(now)

    def grant(self, now: float) -> list[tuple[int, str]]:
        changed = []
        while self.running < self.concurrency and self.queue:
            allowed = [w for w in self.queue if self.may_run(w.priority)]
            if not allowed:
                break  # the free slots are reserved and nobody urgent waits
            best = min(allowed, key=lambda w: (self.effective(w, now), w.seq))
            delay = now - best.enqueued_at
            if self.queue_timeout is not None and delay >= self.queue_timeout - EPSILON:
                self.queue.remove(best)
                changed.append((best.seq, "timed_out"))
                continue
            if self.discipline != "fifo":
                shed = self.observe(delay, now)
                if self.discipline == "codel" and shed:
                    self.queue.remove(best)
                    changed.append((best.seq, "dropped"))
                    continue
                if self.discipline == "adaptive_lifo" and self.overloaded:
                    # the newest waiter of the same priority as the FIFO choice
                    best = max(
                        (w for w in self.queue if w.priority == best.priority), key=lambda w: w.seq
                    )
            self.queue.remove(best)
            self.running += 1
            changed.append((best.seq, "granted"))
        return changed

    def expire(self, now: float) -> list[tuple[int, str]]:
        if self.queue_timeout is None:
            return []
        timeout = self.queue_timeout
        gone = [w for w in self.queue if w.enqueued_at <= now - timeout + EPSILON]
        for waiter in gone:
            self.queue.remove(waiter)
        return sorted((w.seq, "timed_out") for w in gone)


class _FirstHolder:
    """Stands in for ``st.data()`` when a rule calls another: always picks index 0."""

    def draw(self, strategy: object) -> int:
        return 0


def _outcomes(tickets: tuple[Ticket, ...]) -> list[tuple[int, str]]:
    return [(t.seq, t.state.value) for t in tickets]


class AdmissionMachine(RuleBasedStateMachine):
    """Drive the core and the model with the same arrivals, releases, cancels and times."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.tickets: dict[int, Ticket] = {}
        self.ended: dict[int, str] = {}  # seq -> how it ended (each at most once)
        self.running_fast = 0  # slots held by fast-path acquisitions
        self.running_granted: list[int] = []  # slots held by granted tickets

    @initialize(
        concurrency=st.integers(1, 4),
        max_queue=st.integers(0, 6),
        aging=st.sampled_from([None, 0.5, 1.0, 4.0]),
        policy=st.sampled_from(["reject", "drop_oldest", "drop_less_important"]),
        queue_timeout=st.sampled_from([None, 1.0, 2.5]),
        discipline=st.sampled_from(["fifo", "codel", "adaptive_lifo"]),
        reserved=st.sampled_from([0, 0, 1, 2]),
        reserved_for=st.sampled_from([0, 5, 10]),
    )
    def setup(
        self,
        concurrency: int,
        max_queue: int,
        aging: float | None,
        policy: str,
        queue_timeout: float | None,
        discipline: str,
        reserved: int,
        reserved_for: int,
    ) -> None:
        reserved = min(reserved, concurrency - 1)
        self.core = AdmissionCore(
            concurrency,
            max_queue,
            aging=aging,
            on_full=policy,  # type: ignore[arg-type]
            queue_timeout=queue_timeout,
            discipline=discipline,  # type: ignore[arg-type]
            codel_target=0.1,
            codel_interval=0.3,
            reserved=reserved,
            reserved_for=reserved_for,
        )
        self.model = Model(
            concurrency,
            max_queue,
            aging,
            policy,
            queue_timeout,
            discipline,
            reserved=reserved,
            reserved_for=reserved_for,
        )

    def _record(self, changed: list[tuple[int, str]]) -> None:
        for seq, outcome in changed:
            assert seq not in self.ended, f"waiter {seq} ended twice"
            if outcome == "granted":
                self.running_granted.append(seq)
            self.ended[seq] = outcome

    @rule(priority=st.sampled_from([0, 0, 10, 10, 20, 20, 5, -3, 35]))
    def arrive(self, priority: int) -> None:
        fast = self.core.try_acquire(self.now, priority)
        assert fast == self.model.try_acquire(self.now, priority)
        if fast:
            self.running_fast += 1
            return
        ticket, changed = self.core.arrive(priority, self.now)
        seq, expected = self.model.arrive(priority, self.now)
        assert (ticket.seq if ticket is not None else None) == seq
        assert _outcomes(changed) == expected
        if ticket is not None:
            self.tickets[ticket.seq] = ticket
        self._record(expected)

    @precondition(lambda self: self.running_fast or self.running_granted)
    @rule(data=st.data(), completed=st.booleans())
    def release(self, data: st.DataObject | _FirstHolder, completed: bool) -> None:
        holders = self.running_fast + len(self.running_granted)
        index = data.draw(st.integers(0, holders - 1))
        if index < self.running_fast:
            self.running_fast -= 1
        else:
            self.running_granted.pop(index - self.running_fast)
        changed = self.core.release(self.now, completed=completed)
        self.model.running -= 1
        expected = self.model.grant(self.now)
        assert _outcomes(changed) == expected
        self._record(expected)

    @rule(count=st.integers(2, 6), priority=st.sampled_from([0, 10, 20]))
    def arrive_many(self, count: int, priority: int) -> None:
        for _ in range(count):
            self.arrive(priority)

    @rule(priority=st.sampled_from([0, 10]))
    def standing_queue(self, priority: int) -> None:
        """Keep a queue standing for a while: what makes CoDel and adaptive LIFO kick in."""
        for _ in range(4):
            self.arrive_many(3, priority)
            self.advance(0.25)
            if self.running_fast or self.running_granted:
                self.release(data=_FirstHolder(), completed=True)

    @precondition(lambda self: self.running_fast or self.running_granted)
    @rule()
    def release_every_holder(self) -> None:
        """Everyone running finishes at this instant (grants, sheds and LIFO all at once)."""
        for _ in range(self.running_fast + len(self.running_granted)):
            if self.running_fast:
                self.running_fast -= 1
            elif self.running_granted:
                self.running_granted.pop(0)
            else:
                break
            changed = self.core.release(self.now)
            self.model.running -= 1
            expected = self.model.grant(self.now)
            assert _outcomes(changed) == expected
            self._record(expected)

    @precondition(lambda self: self.model.queue)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        waiter = data.draw(st.sampled_from(self.model.queue))
        assert self.core.leave(self.tickets[waiter.seq], self.now)
        self.model.queue.remove(waiter)
        self._record([(waiter.seq, "cancelled")])

    @precondition(lambda self: self.ended)
    @rule(data=st.data())
    def cancel_after_end_is_refused(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.ended)))
        assert not self.core.leave(self.tickets[seq], self.now)

    @rule(dt=st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def expire(self) -> None:
        changed = self.core.expire(self.now)
        expected = self.model.expire(self.now)
        assert sorted(_outcomes(changed)) == expected
        self._record(expected)

    @rule(concurrency=st.integers(1, 5))
    def set_concurrency(self, concurrency: int) -> None:
        changed = self.core.set_concurrency(concurrency, self.now)
        self.model.concurrency = concurrency
        expected = self.model.grant(self.now)
        assert _outcomes(changed) == expected
        self._record(expected)

    @invariant()
    def agree(self) -> None:
        if not hasattr(self, "core"):
            return
        core, model = self.core, self.model
        assert core.running == model.running == self.running_fast + len(self.running_granted)
        assert core.pending == len(model.queue) <= core.max_queue
        expected = sorted(model.queue, key=lambda w: (model.effective(w, self.now), w.seq))
        assert [t.seq for t in core.queued()] == [w.seq for w in expected]

    @invariant()
    def every_waiter_ends_exactly_one_way(self) -> None:
        if not hasattr(self, "core"):
            return
        core = self.core
        for seq, ticket in self.tickets.items():
            if seq in self.ended:
                assert ticket.state.value == self.ended[seq]
            else:
                assert ticket.state is TicketState.QUEUED
        assert core.tickets == (
            core.granted + core.dropped + core.timed_out + core.cancelled + core.pending
        )


AdmissionMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestAdmissionAgainstModel = AdmissionMachine.TestCase


# -- examples --------------------------------------------------------------------------


def test_lower_priority_values_are_served_first_and_fifo_within_a_priority() -> None:
    """With one slot busy, waiters are granted by priority, then by arrival."""
    core = AdmissionCore(1, 10, aging=None)
    assert core.try_acquire(0.0)
    arrivals = [(20, "low-1"), (0, "high-1"), (10, "mid"), (0, "high-2"), (20, "low-2")]
    names = {}
    for priority, name in arrivals:
        ticket, _ = core.arrive(priority, 0.0)
        assert ticket is not None
        names[ticket.seq] = name
    order = []
    for _ in arrivals:
        (granted,) = core.release(1.0)
        order.append(names[granted.seq])
    assert order == ["high-1", "high-2", "mid", "low-1", "low-2"]


def test_aging_lets_an_old_low_waiter_overtake_new_high_ones() -> None:
    """A LOW waiter is served before HIGH waiters that arrived more than 2 x aging after it."""
    core = AdmissionCore(1, 10, aging=1.0)
    core.try_acquire(0.0)
    low, _ = core.arrive(20, 0.0)
    early_high, _ = core.arrive(0, 1.5)  # within 2 x aging: still ahead of LOW
    late_high, _ = core.arrive(0, 2.5)  # beyond 2 x aging: behind LOW
    assert low is not None
    assert early_high is not None
    assert late_high is not None
    assert [t.seq for t in core.queued()] == [early_high.seq, low.seq, late_high.seq]


def test_reserved_slots_keep_a_free_slot_for_urgent_work() -> None:
    """With 2 of 3 slots reserved, less urgent work runs in one slot and waits even while
    two are free; an urgent newcomer takes a free slot at once, ahead of the waiters, and
    a released slot goes to the less urgent waiter only when it is open to it."""
    core = AdmissionCore(3, 10, aging=None, reserved=2, reserved_for=0)
    assert core.open_limit == 1
    assert core.try_acquire(0.0, 10)  # MEDIUM takes the one open slot
    assert not core.try_acquire(0.0, 10)  # the other two are reserved
    medium, changed = core.arrive(10, 0.0)
    assert medium is not None
    assert changed == ()  # waits although two slots are free
    assert not core.try_acquire(0.0, 10)
    assert not core.try_acquire(0.0)  # no priority: not urgent
    high, changed = core.arrive(0, 0.0)  # urgent: granted at once past the waiter
    assert changed == (high,)
    assert core.running == 2
    assert core.try_acquire(0.0, 0) is False  # (someone waits: no barging, even urgent)
    assert core.release(1.0) == ()  # the HIGH finished: its slot is reserved again
    assert core.release(1.0) == (medium,)  # the open slot freed: the MEDIUM waiter runs
    assert AdmissionCore(3, 10, reserved=2).set_concurrency(1, 0.0) == ()


def test_reserved_must_leave_an_open_slot() -> None:
    """``reserved`` at or above ``concurrency`` is refused, naming the parameter."""
    with pytest.raises(ValueError, match="reserved"):
        AdmissionCore(2, 10, reserved=2)
    with pytest.raises(ValueError, match="reserved"):
        AdmissionCore(2, 10, reserved=-1)


def test_reject_policy_refuses_the_newcomer_when_full() -> None:
    """A full queue refuses the newcomer and counts it as rejected."""
    core = AdmissionCore(1, 1)
    core.try_acquire(0.0)
    first, _ = core.arrive(20, 0.0)
    second, changed = core.arrive(0, 0.0)
    assert first is not None
    assert second is None
    assert changed == ()
    assert core.rejected == 1


def test_drop_oldest_evicts_the_oldest_least_important_waiter() -> None:
    """drop_oldest evicts the oldest waiter of the largest priority value, even for LOW."""
    core = AdmissionCore(1, 3, on_full="drop_oldest")
    core.try_acquire(0.0)
    low_1, _ = core.arrive(20, 0.0)
    core.arrive(20, 0.1)
    core.arrive(0, 0.2)
    newcomer, changed = core.arrive(20, 0.3)
    assert newcomer is not None
    assert changed == (low_1,)
    assert low_1 is not None
    assert low_1.state is TicketState.DROPPED


def test_drop_less_important_only_evicts_for_a_more_important_newcomer() -> None:
    """drop_less_important refuses an equally important newcomer and evicts for a better one."""
    core = AdmissionCore(1, 1, on_full="drop_less_important")
    core.try_acquire(0.0)
    low, _ = core.arrive(20, 0.0)
    refused, _ = core.arrive(20, 0.0)
    assert refused is None
    high, changed = core.arrive(0, 0.0)
    assert high is not None
    assert changed == (low,)


def test_queue_timeout_ends_a_waiter_instead_of_granting_it() -> None:
    """A waiter queued for queue_timeout seconds is timed out, never granted."""
    core = AdmissionCore(1, 5, queue_timeout=1.0)
    core.try_acquire(0.0)
    old, _ = core.arrive(0, 0.0)
    young, _ = core.arrive(0, 0.5)
    changed = core.release(1.0)
    assert [(t.seq, t.state) for t in changed] == [
        (old.seq, TicketState.TIMED_OUT),  # type: ignore[union-attr]
        (young.seq, TicketState.GRANTED),  # type: ignore[union-attr]
    ]


def test_codel_sheds_old_waiters_only_while_the_queue_stands() -> None:
    """Under CoDel, waiters older than 2 x target are shed once delay stayed above target."""
    core = AdmissionCore(1, 100, discipline="codel", codel_target=0.005, codel_interval=0.1)
    assert core.try_acquire(0.0)
    for i in range(50):
        core.arrive(0, i * 0.001)
    now = 0.0
    outcomes: list[TicketState] = []
    # serve one every 20 ms: every waiter has waited far more than the 5 ms target
    while core.running:
        now += 0.02
        outcomes.extend(t.state for t in core.release(now))
    assert TicketState.DROPPED in outcomes
    assert core.overloaded
    # once the queue is empty, a short delay clears the overload at the next interval
    core2 = AdmissionCore(1, 10, discipline="codel")
    for t in range(1, 40):
        core2.try_acquire(t * 0.01)
        core2.release(t * 0.01 + 0.001)
    assert not core2.overloaded


def test_codel_never_sheds_when_delays_stay_below_target() -> None:
    """A queue that drains within the target is never shed."""
    core = AdmissionCore(1, 100, discipline="codel")
    now = 0.0
    for _ in range(200):
        assert core.try_acquire(now)
        ticket, _ = core.arrive(0, now)
        now += 0.001
        (granted,) = core.release(now)
        assert granted is ticket
        assert granted.state is TicketState.GRANTED
        now += 0.001
        core.release(now)
    assert core.dropped == 0


def test_adaptive_lifo_serves_the_newest_first_while_overloaded() -> None:
    """adaptive_lifo is FIFO normally and serves the newest waiter once the queue stands."""
    core = AdmissionCore(1, 1000, discipline="adaptive_lifo", aging=None)
    core.try_acquire(0.0)
    seqs = []
    for i in range(300):
        ticket, _ = core.arrive(0, i * 0.001)
        assert ticket is not None
        seqs.append(ticket.seq)
    granted: list[int] = []
    now = 0.3
    for _ in range(60):
        now += 0.01
        granted.extend(t.seq for t in core.release(now) if t.state is TicketState.GRANTED)
    assert granted[0] == seqs[0]  # not overloaded yet: FIFO
    assert core.overloaded
    assert seqs[-1] in granted  # overloaded: the newest jumped the queue...
    assert granted[-1] < granted[-2]  # ...and service goes newest first
    assert core.dropped == 0


def test_retry_after_comes_from_measured_throughput() -> None:
    """retry_after is the backlog times the measured mean service time over the slots."""
    core = AdmissionCore(2, 10)
    assert core.retry_after() is None
    for start in (0.0, 1.0, 2.0):
        core.try_acquire(start)
        core.try_acquire(start)
        core.release(start + 0.5)
        core.release(start + 0.5)
    assert core.service_time() == pytest.approx(0.5)
    core.try_acquire(3.0)
    core.try_acquire(3.0)
    for _ in range(3):
        core.arrive(0, 3.0)
    assert core.retry_after() == pytest.approx((3 + 1) * 0.5 / 2)


def test_lazy_deletion_stays_bounded() -> None:
    """Arrivals cancelled while a slot is stuck do not grow the queue's memory."""
    core = AdmissionCore(1, 5)
    core.try_acquire(0.0)
    for i in range(10_000):
        ticket, _ = core.arrive(0, float(i))
        assert ticket is not None
        core.leave(ticket, float(i))
    stored = sum(len(q) for q in core._classes.values())
    assert stored <= 2 * core.max_queue + 40


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"concurrency": 0}, ValueError),
        ({"concurrency": 1.5}, TypeError),
        ({"max_queue": -1}, ValueError),
        ({"aging": 0}, ValueError),
        ({"on_full": "drop_newest"}, ValueError),
        ({"discipline": "random"}, ValueError),
        ({"queue_timeout": -1.0}, ValueError),
        ({"codel_target": 0}, ValueError),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object], error: type[Exception]) -> None:
    """Out-of-range or wrongly typed parameters raise at construction, naming the parameter."""
    with pytest.raises(error, match=next(iter(kwargs))):
        AdmissionCore(**kwargs)  # type: ignore[arg-type]


def test_release_without_acquire_is_an_error() -> None:
    """Releasing more slots than were taken is a bug and raises."""
    with pytest.raises(RuntimeError):
        AdmissionCore().release(0.0)


@given(
    size=st.integers(1, 8),
    operations=st.lists(st.one_of(st.floats(0.001, 100.0), st.integers(1, 12)), max_size=60),
    quantile=st.sampled_from([0.01, 0.5, 0.9, 0.99, 1.0]),
)
def test_reservoir_matches_a_bounded_deque(
    size: int, operations: list[float | int], quantile: float
) -> None:
    """Samples and batched fast-path zeros give the percentiles of the last `size` values."""
    reservoir = Reservoir(size)
    reference: deque[float] = deque(maxlen=size)
    for operation in operations:
        if isinstance(operation, int):  # that many zero waits from the fast path
            reservoir.zeros += operation
            reference.extend([0.0] * operation)
        else:
            reservoir.add(operation)
            reference.append(operation)
    (value,) = reservoir.percentiles(quantile)
    if not reference:
        assert value == 0.0
        return
    ordered = sorted(reference)
    rank = max(1, math.ceil(quantile * len(ordered) - EPSILON))
    assert value == ordered[rank - 1]
    assert len(reservoir) == len(reference)


def test_reservoir_keeps_the_most_recent_samples() -> None:
    """The reservoir holds the last `size` samples and gives nearest-rank percentiles."""
    reservoir = Reservoir(4)
    assert reservoir.percentiles(0.5) == (0.0,)
    for value in (100.0, 1.0, 2.0, 3.0, 4.0):
        reservoir.add(value)
    assert len(reservoir) == 4
    assert reservoir.percentiles(0.5, 1.0) == (2.0, 4.0)
    reservoir.zeros += 3
    assert reservoir.percentiles(0.25, 0.75, 1.0) == (0.0, 0.0, 4.0)
