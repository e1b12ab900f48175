"""The leased semaphore's core against a plain reference model, over random operations.

Holders acquire, renew, release and crash (stop acting, holding what they held) at
random times; the core must answer as the model does, never hold more than ``limit``
permits, give a crashed holder's permit back within its lease, and admit waiters in
the order they queued.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from brace._core.semaphore import LeaseSemaphoreCore

IDS = st.sampled_from(["a", "b", "c", "d", "e", "f", "g"])


class Model:
    """The state as two plain lists, filtered by time on every operation."""

    def __init__(self, limit: int, max_waiters: int) -> None:
        self.limit = limit
        self.max_waiters = max_waiters
        self.holders: list[tuple[str, float]] = []  # (id, expiry)
        self.waiters: list[tuple[str, float]] = []  # (id, deadline), in order of arrival

    def live(self, now: float) -> None:
        self.holders = [(h, end) for h, end in self.holders if end > now]
        self.waiters = [(w, end) for w, end in self.waiters if end > now]

    def acquire(
        self, who: str, now: float, lease: float, wait_ttl: float, queue: bool
    ) -> tuple[bool, int, int]:
        self.live(now)
        names = [h for h, _ in self.holders]
        if who in names:
            self.holders[names.index(who)] = (who, now + lease)
            return True, len(self.holders), 0
        queued = [w for w, _ in self.waiters]
        ahead = queued.index(who) if who in queued else len(queued)
        if ahead < self.limit - len(self.holders):
            self.waiters = [(w, end) for w, end in self.waiters if w != who]
            self.holders.append((who, now + lease))
            return True, len(self.holders), 0
        if not queue:
            return False, len(self.holders), 0
        if who in queued:
            self.waiters[ahead] = (who, now + wait_ttl)
            return False, len(self.holders), ahead + 1
        if len(queued) >= self.max_waiters:
            return False, len(self.holders), -1
        self.waiters.append((who, now + wait_ttl))
        return False, len(self.holders), len(self.waiters)

    def renew(self, who: str, now: float, lease: float) -> bool:
        self.live(now)
        names = [h for h, _ in self.holders]
        if who not in names:
            return False
        self.holders[names.index(who)] = (who, now + lease)
        return True

    def release(self, who: str, now: float) -> bool:
        self.live(now)
        held = any(h == who for h, _ in self.holders)
        self.holders = [(h, end) for h, end in self.holders if h != who]
        self.waiters = [(w, end) for w, end in self.waiters if w != who]
        return held


class SemaphoreMachine(RuleBasedStateMachine):
    """Core and model driven by the same operations at the same non-decreasing times."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.core = LeaseSemaphoreCore(1, 1)
        self.model = Model(1, 1)
        self.lease = self.wait_ttl = 1.0
        self.crashed: dict[str, float] = {}  # id -> time it crashed

    @initialize(
        limit=st.integers(min_value=1, max_value=4),
        max_waiters=st.integers(min_value=1, max_value=5),
        lease=st.sampled_from([0.5, 1.0, 3.0]),
        wait_ttl=st.sampled_from([0.25, 1.0, 2.0]),
        start=st.floats(min_value=0.0, max_value=1e6),
    )
    def configure(
        self, limit: int, max_waiters: int, lease: float, wait_ttl: float, start: float
    ) -> None:
        self.core = LeaseSemaphoreCore(limit, max_waiters)
        self.model = Model(limit, max_waiters)
        self.lease, self.wait_ttl, self.now = lease, wait_ttl, start

    @rule(dt=st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=2.0)))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(who=IDS, queue=st.booleans())
    def acquire(self, who: str, queue: bool) -> None:
        if who in self.crashed:
            return
        before = [w for w, end in self.model.waiters if end > self.now]
        answer = self.core.acquire(who, self.now, self.lease, self.wait_ttl, queue=queue)
        assert answer == self.model.acquire(who, self.now, self.lease, self.wait_ttl, queue)
        acquired, holders, _ = answer
        assert holders == len(self.core.holders)
        if acquired and who in before:
            # FIFO: every live waiter ahead of it may take a permit too
            ahead = before.index(who)
            assert ahead < self.core.limit - (holders - 1)

    @rule(who=IDS)
    def try_acquire(self, who: str) -> None:
        if who in self.crashed:
            return
        answer = self.core.try_acquire(who, self.now, self.lease)
        assert answer == self.model.acquire(who, self.now, self.lease, 0.0, False)

    @rule(who=IDS)
    def renew(self, who: str) -> None:
        if who in self.crashed:
            return
        assert self.core.renew(who, self.now, self.lease) == self.model.renew(
            who, self.now, self.lease
        )

    @rule(who=IDS)
    def release(self, who: str) -> None:
        if who in self.crashed:
            return
        assert self.core.release(who, self.now) == self.model.release(who, self.now)

    @rule(who=IDS)
    def crash(self, who: str) -> None:
        self.crashed.setdefault(who, self.now)

    @invariant()
    def never_over_the_limit(self) -> None:
        assert len(self.core.holders) <= self.core.limit
        assert len(self.core.waiters) <= self.core.max_waiters

    @invariant()
    def crashed_holders_come_back_within_the_lease(self) -> None:
        self.core.expire(self.now)
        for who, when in self.crashed.items():
            if self.now >= when + self.lease:
                assert who not in self.core.holders
            if self.now >= when + self.wait_ttl:
                assert who not in self.core.waiters

    @invariant()
    def a_free_permit_goes_to_the_queue_first(self) -> None:
        # Whenever a permit is free, the waiters ahead may take it: with nobody queued
        # a newcomer is admitted at once.
        core = self.core
        core.expire(self.now)
        if len(core.holders) < core.limit and not core.waiters:
            probe = LeaseSemaphoreCore(core.limit, core.max_waiters)
            probe.holders = dict(core.holders)
            assert probe.try_acquire("newcomer", self.now, self.lease)[0]


SemaphoreMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60)
TestSemaphore = SemaphoreMachine.TestCase


def test_a_queued_waiter_is_served_before_a_newcomer() -> None:
    """With one permit held and one waiter queued, a release admits the waiter, not a newcomer."""
    core = LeaseSemaphoreCore(1, 10)
    assert core.acquire("holder", 0.0, 10.0, 1.0) == (True, 1, 0)
    assert core.acquire("first", 0.0, 10.0, 1.0) == (False, 1, 1)
    assert core.release("holder", 0.1)
    assert core.acquire("newcomer", 0.2, 10.0, 1.0) == (False, 0, 2)
    assert core.acquire("first", 0.3, 10.0, 1.0) == (True, 1, 0)
    assert core.acquire("newcomer", 0.4, 10.0, 1.0) == (False, 1, 1)


def test_a_waiter_that_stops_polling_loses_its_place() -> None:
    """A waiter silent for wait_ttl is dropped, and the next one moves up."""
    core = LeaseSemaphoreCore(1, 10)
    core.acquire("holder", 0.0, 10.0, 1.0)
    core.acquire("gone", 0.0, 10.0, 1.0)
    assert core.acquire("next", 0.5, 10.0, 1.0) == (False, 1, 2)
    assert core.acquire("next", 1.0, 10.0, 1.0) == (False, 1, 1)
    core.release("holder", 1.2)
    assert core.acquire("next", 1.3, 10.0, 1.0) == (True, 1, 0)
