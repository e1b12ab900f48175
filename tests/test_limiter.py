"""RateLimiter: per-key decisions, RateLimited refusals, FIFO cancel-safe waiting, stats."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
import random

import anyio
import pytest

import brace
from brace._core.decision import Decision
from brace._core.gcra import GCRA
from brace._core.window import SlidingLog, SlidingWindowCounter
from brace._store import Policy
from brace.testing import FakeClock


class RemoteStore:
    """A stand-in for a Redis store: only the async protocol, and a checkpoint per call."""

    def __init__(self) -> None:
        self.inner = brace.MemoryStore(clock=anyio.current_time)
        self.calls = 0
        self.closed = False

    async def hit(self, policy: Policy, key: str, cost: int) -> Decision:
        self.calls += 1
        await anyio.sleep(0.001)  # the round trip
        return await self.inner.hit(policy, key, cost)

    async def peek(self, policy: Policy, key: str, cost: int) -> Decision:
        return await self.inner.peek(policy, key, cost)

    async def reset(self, policy: Policy, key: str) -> None:
        await self.inner.reset(policy, key)

    async def aclose(self) -> None:
        self.closed = True


def test_policy_forms() -> None:
    """Shells, core policies, Rates and rate strings are all accepted as the policy."""
    bucket = brace.TokenBucket(rate=10, per=60.0, burst=5)
    assert brace.RateLimiter(bucket).policy is bucket.policy
    window = brace.SlidingWindow(limit=20, window=900)
    assert brace.RateLimiter(window).policy is window.policy
    exact = brace.SlidingWindow(limit=20, window=900, exact=True)
    assert isinstance(brace.RateLimiter(exact).policy, SlidingLog)
    gcra = GCRA(1, 1.0)
    assert brace.RateLimiter(gcra).policy is gcra
    counter = brace.RateLimiter("5/min").policy
    assert isinstance(counter, SlidingWindowCounter)
    assert (counter.limit, counter.window) == (5, 60.0)
    counter = brace.RateLimiter(brace.Rate(3, 2.0)).policy
    assert isinstance(counter, SlidingWindowCounter)
    assert (counter.limit, counter.window) == (3, 2.0)


def test_bad_configuration() -> None:
    """Bad policy, store, clock or max_keys fail at construction, naming the parameter."""
    with pytest.raises(TypeError, match="policy must be"):
        brace.RateLimiter(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid rate 'often'"):
        brace.RateLimiter("often")
    with pytest.raises(TypeError, match=r"store must implement brace\.RateLimitStore"):
        brace.RateLimiter("1/s", store=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_keys configures the default MemoryStore"):
        brace.RateLimiter("1/s", store=brace.MemoryStore(), max_keys=10)
    with pytest.raises(ValueError, match="max_keys must be an int >= 1"):
        brace.RateLimiter("1/s", max_keys=0)
    with pytest.raises(TypeError, match="max_keys must be an int"):
        brace.RateLimiter("1/s", max_keys="many")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock must be a zero-argument callable"):
        brace.RateLimiter("1/s", clock=3.0)  # type: ignore[arg-type]


async def test_bad_calls() -> None:
    """A non-str key is a TypeError; a cost of the wrong type or range names cost."""
    limiter = brace.RateLimiter(GCRA(5, 1.0))
    with pytest.raises(TypeError, match="key must be a str"):
        await limiter.hit(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cost must be an int"):
        await limiter.hit("k", 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cost must be an int"):
        limiter.try_hit("k", True)
    with pytest.raises(ValueError, match="cost must be >= 0"):
        await limiter.hit("k", -1)
    with pytest.raises(ValueError, match="cost must be <= the limit 5"):
        await limiter.hit("k", 6)
    with pytest.raises(ValueError, match="cost must be <= the limit 5"):
        limiter.limit("k", 6)
    with pytest.raises(TypeError, match="key must be a str"):
        limiter.limit(b"k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cost must be >= 0"):
        await limiter.acquire("k", -2)
    with pytest.raises(TypeError, match="key must be a str"):
        await limiter.peek(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be a callable"):
        limiter.limited(key="user")  # type: ignore[arg-type]
    assert limiter.statistics().hits == 0


async def test_hit_is_per_key_and_never_raises() -> None:
    """Each key has its own budget; refusals come back as decisions, not exceptions."""
    limiter = brace.RateLimiter("2/minute", clock=anyio.current_time)
    first = await limiter.hit("alice")
    assert first == Decision(True, 2, 1, 0.0, first.reset_after)
    assert (await limiter.hit("alice")).allowed
    refused = await limiter.hit("alice")
    assert not refused.allowed
    assert refused.retry_after > 0
    assert (await limiter.hit("bob", 2)).allowed
    statistics = limiter.statistics()
    assert (statistics.hits, statistics.allowed, statistics.rejected) == (4, 3, 1)
    assert statistics.keys == 2


def test_try_hit_is_synchronous() -> None:
    """try_hit decides without an event loop when the store is local."""
    clock = FakeClock()
    limiter = brace.RateLimiter(GCRA(1, 10.0), clock=clock)
    assert limiter.try_hit("k").allowed
    refused = limiter.try_hit("k")
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(10.0)
    clock.advance(10.0)
    assert limiter.try_hit("k").allowed


async def test_hit_does_not_yield_to_the_loop() -> None:
    """With a memory store, await hit() completes without a checkpoint (no other task runs)."""
    limiter = brace.RateLimiter(GCRA(1000, 1.0), clock=anyio.current_time)
    ran = False

    async def other() -> None:
        nonlocal ran
        ran = True

    async with anyio.create_task_group() as group:
        group.start_soon(other)
        for index in range(100):
            await limiter.hit(f"k{index}")
        assert not ran


async def test_limit_raises_rate_limited() -> None:
    """limit(key) admits on entry and raises RateLimited with retry_after, decision, key."""
    limiter = brace.RateLimiter(GCRA(1, 30.0), clock=anyio.current_time)
    guard = limiter.limit("user:1")
    async with guard as decision:
        assert decision.allowed
    with pytest.raises(brace.RateLimited) as raised:
        async with guard:
            pytest.fail("entered although refused")
    error = raised.value
    assert error.key == "user:1"
    assert error.decision is not None
    assert not error.decision.allowed
    assert error.retry_after == error.decision.retry_after == pytest.approx(30.0)
    assert isinstance(error, brace.Rejected)
    assert "user:1" in str(error)
    await anyio.sleep(30.0)
    async with guard:  # reusable: each entry is a new hit
        pass


async def test_limit_call_and_compose() -> None:
    """limit(key).call runs the function when admitted and works inside brace.compose."""
    limiter = brace.RateLimiter(GCRA(2, 60.0), clock=anyio.current_time)

    async def double(value: int, *, extra: int = 0) -> int:
        return 2 * value + extra

    assert await limiter.limit("k").call(double, 3, extra=1) == 7
    assert await brace.compose(limiter.limit("k")).run(double, 4) == 8
    with pytest.raises(brace.RateLimited):
        await limiter.limit("k").call(double, 5)


async def test_acquire_waits_in_virtual_time() -> None:
    """acquire() returns as soon as the bucket has the tokens, not earlier, not later."""
    limiter = brace.RateLimiter(GCRA(1, 2.0, burst=1), clock=anyio.current_time)
    start = anyio.current_time()
    times = []
    for _ in range(4):
        decision = await limiter.acquire("k")
        assert decision.allowed
        times.append(anyio.current_time() - start)
    assert times == pytest.approx([0.0, 2.0, 4.0, 6.0], abs=1e-6)
    assert limiter.statistics().waiters == 0


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["gcra", "counter", "log"])
async def test_acquire_is_fifo_per_key(kind: str) -> None:
    """Waiters on one key are admitted in arrival order, even a larger cost at the head."""
    policies: dict[str, Policy] = {
        "gcra": GCRA(1, 1.0, burst=3),
        "counter": SlidingWindowCounter(3, 3.0),
        "log": SlidingLog(3, 3.0),
    }
    policy = policies[kind]
    limiter = brace.RateLimiter(policy, clock=anyio.current_time)
    assert (await limiter.hit("k", 3)).allowed
    order: list[int] = []

    async def waiter(index: int, cost: int) -> None:
        await limiter.acquire("k", cost)
        order.append(index)

    async with anyio.create_task_group() as group:
        for index, cost in enumerate([3, 1, 2, 1, 1]):
            group.start_soon(waiter, index, cost)
            await anyio.sleep(0.01)
        assert limiter.statistics().waiters == 5
        assert limiter.statistics().waiting_keys == 1
    assert order == [0, 1, 2, 3, 4]
    statistics = limiter.statistics()
    assert (statistics.waiters, statistics.waiting_keys) == (0, 0)


async def test_other_keys_do_not_wait() -> None:
    """A queue on one key does not delay another key."""
    limiter = brace.RateLimiter(GCRA(1, 100.0, burst=1), clock=anyio.current_time)
    await limiter.hit("busy")
    async with anyio.create_task_group() as group:
        group.start_soon(limiter.acquire, "busy")
        await anyio.sleep(0.01)
        start = anyio.current_time()
        await limiter.acquire("idle")
        assert anyio.current_time() == start
        group.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize("remote", [False, True], ids=["memory", "remote"])
async def test_acquire_cancel_safe(remote: bool) -> None:
    """Waiters cancelled at random points consume nothing: the store's books balance."""
    rng = random.Random(2)
    store = RemoteStore() if remote else None
    policy = GCRA(2, 1.0, burst=2)
    limiter = brace.RateLimiter(policy, store=store, clock=anyio.current_time)
    admitted = {"a": 0, "b": 0}
    successes = 0
    cancelled = 0
    start = anyio.current_time()

    async def waiter(key: str, cost: int, patience: float) -> None:
        nonlocal successes, cancelled
        with anyio.move_on_after(patience):
            try:
                await limiter.acquire(key, cost)
            except anyio.get_cancelled_exc_class():
                cancelled += 1
                raise
            admitted[key] += cost
            successes += 1

    async with anyio.create_task_group() as group:
        for _ in range(300):
            key = rng.choice(["a", "b"])
            patience = rng.choice([0.0, 0.1, 0.5, 1.7, 3.0])
            group.start_soon(waiter, key, rng.randint(1, 2), patience)
            if rng.random() < 0.3:
                await anyio.sleep(rng.random() * 0.5)
    elapsed = anyio.current_time() - start
    statistics = limiter.statistics()
    assert cancelled > 20
    assert successes > 20
    assert (statistics.waiters, statistics.waiting_keys) == (0, 0)
    # Every admission the store made was handed to a waiter that returned, and no more.
    assert statistics.allowed == successes
    if store is not None:
        assert store.inner.statistics().allowed == successes
    for key in ("a", "b"):
        assert admitted[key] <= policy.burst + elapsed * policy.rate / policy.per + 1e-6


async def test_acquire_cancelled_head_wakes_the_next() -> None:
    """Cancelling the head waiter hands the turn to the next one, which is then admitted."""
    limiter = brace.RateLimiter(GCRA(1, 10.0, burst=1), clock=anyio.current_time)
    await limiter.hit("k")
    done: list[str] = []

    async def head() -> None:
        with anyio.move_on_after(1.0):
            await limiter.acquire("k")
            done.append("head")

    async def second() -> None:
        await limiter.acquire("k")
        done.append("second")

    start = anyio.current_time()
    async with anyio.create_task_group() as group:
        group.start_soon(head)
        await anyio.sleep(0.1)
        group.start_soon(second)
    assert done == ["second"]
    assert anyio.current_time() - start == pytest.approx(10.0)
    assert limiter.statistics().allowed == 2


async def test_limited_decorator() -> None:
    """@limited keeps the signature, keys each call, raises RateLimited or waits."""
    limiter = brace.RateLimiter(GCRA(1, 5.0, burst=1), clock=anyio.current_time)

    @limiter.limited(key=lambda user, *args, **kwargs: f"user:{user}")
    async def fetch(user: str, page: int = 1) -> str:
        """Fetch a page."""
        return f"{user}/{page}"

    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch a page."
    assert list(inspect.signature(fetch).parameters) == ["user", "page"]
    assert await fetch("ann", page=2) == "ann/2"
    assert await fetch("bob") == "bob/1"
    with pytest.raises(brace.RateLimited) as raised:
        await fetch("ann")
    assert raised.value.key == "user:ann"

    @limiter.limited(key=lambda user: f"user:{user}", wait=True)
    async def patient(user: str) -> str:
        return user

    start = anyio.current_time()
    assert await patient("ann") == "ann"
    assert anyio.current_time() - start == pytest.approx(5.0)


async def test_peek_and_reset() -> None:
    """peek consumes nothing; reset gives a key a fresh budget."""
    limiter = brace.RateLimiter(SlidingLog(2, 10.0), clock=anyio.current_time)
    assert (await limiter.peek("k", 2)).allowed
    assert (await limiter.hit("k", 2)).allowed
    peeked = await limiter.peek("k")
    assert not peeked.allowed
    assert peeked.retry_after == pytest.approx(10.0)
    await limiter.reset("k")
    assert (await limiter.hit("k", 2)).allowed
    assert limiter.statistics().hits == 2


async def test_remote_store() -> None:
    """A store without the local fast path is awaited; try_hit refuses it with TypeError."""
    store = RemoteStore()
    limiter = brace.RateLimiter(GCRA(1, 10.0), store=store)
    assert limiter.store is store
    assert (await limiter.hit("k")).allowed
    assert not (await limiter.hit("k")).allowed
    assert store.calls == 2
    assert not (await limiter.peek("k")).allowed
    await limiter.reset("k")
    assert (await limiter.hit("k")).allowed
    with pytest.raises(TypeError, match="try_hit needs a local store"):
        limiter.try_hit("k")
    with pytest.raises(TypeError, match="key must be a str"):
        await limiter.hit(1)  # type: ignore[arg-type]
    statistics = limiter.statistics()
    assert statistics.keys is None
    assert (statistics.hits, statistics.allowed, statistics.rejected) == (3, 2, 1)
    async with limiter.limit("other"):
        pass
    assert "RateLimiter(GCRA" in repr(limiter)


def test_statistics_is_frozen_and_slotted() -> None:
    """statistics() is a frozen, slotted dataclass snapshot."""
    limiter = brace.RateLimiter("1/s", clock=FakeClock())
    limiter.try_hit("k")
    statistics = limiter.statistics()
    assert statistics == brace.RateLimiterStatistics(
        1, 1, 1, 0, 0, 0, 0, 0, refusals={"rate_limited": 0}
    )
    assert not hasattr(statistics, "__dict__")
    with pytest.raises(AttributeError):
        statistics.hits = 3  # type: ignore[misc]


def test_decisions_are_genuine() -> None:
    """Decisions from the fast path are real, frozen Decisions equal to the core's."""
    clock = FakeClock(1.0)
    limiter = brace.RateLimiter(GCRA(1, 1.0, burst=2), clock=clock)
    decision = limiter.try_hit("k")
    assert type(decision) is Decision
    assert decision == GCRA(1, 1.0, burst=2).decide(-1.0, 1.0)[0]
    with pytest.raises(AttributeError):
        decision.allowed = False  # type: ignore[misc]
    assert hash(decision) == hash(Decision(True, 2, 1, 0.0, 1.0))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_decisions_copy_and_pickle_as_the_frozen_dataclass_they_are(protocol: int) -> None:
    """A Decision (its slots held by its base, `Draft`, so that a draft is retyped cheaply)
    is still a frozen dataclass: fields, replace, copies and pickles of every protocol, and
    a RateLimited carrying one pickles too."""
    decision = brace.RateLimiter("2/s", clock=FakeClock(1.0)).try_hit("k")
    assert type(decision) is Decision
    assert [field.name for field in dataclasses.fields(decision)] == [
        "allowed",
        "limit",
        "remaining",
        "retry_after",
        "reset_after",
    ]
    reset = decision.reset_after
    assert dataclasses.astuple(decision) == (True, 2, 1, 0.0, reset)
    assert dataclasses.replace(decision, remaining=0) == Decision(True, 2, 0, 0.0, reset)
    for other in (copy.copy(decision), copy.deepcopy(decision)):
        assert other == decision
        assert type(other) is Decision
    again = pickle.loads(pickle.dumps(decision, protocol=protocol))
    assert again == decision
    assert type(again) is Decision
    with pytest.raises(dataclasses.FrozenInstanceError):
        again.remaining = 5  # type: ignore[misc]
    assert not hasattr(decision, "__dict__")
    refused = brace.RateLimited("no", retry_after=1.0, decision=decision, key="k")
    assert pickle.loads(pickle.dumps(refused, protocol=protocol)).decision == decision


POLICIES: list[Policy] = [GCRA(3, 2.0, burst=4), SlidingWindowCounter(4, 2.0), SlidingLog(4, 2.0)]


@pytest.mark.parametrize("policy", POLICIES, ids=["gcra", "counter", "log"])
async def test_hit_is_the_tables_twin_and_decides_as_try_hit(policy: Policy) -> None:
    """With a memory store and no hook, ``limiter.hit`` is the table's coroutine twin of
    its hit function (one frame): the same decisions, costs and counts as ``try_hit``."""
    clock = FakeClock(5.0)
    twin = brace.RateLimiter(policy, clock=clock)
    sync = brace.RateLimiter(policy, clock=clock)
    assert "hit" in vars(twin)  # the method is shadowed for this instance
    assert inspect.iscoroutinefunction(twin.hit)
    rng = random.Random(7)
    for step in range(200):
        key, cost = rng.choice(["a", "b", "c" * 300]), rng.choice([1, 1, 2, 0])
        mine, theirs = await twin.hit(key, cost), sync.try_hit(key, cost)
        assert mine == theirs, step
        assert type(mine) is Decision
        clock.advance(rng.choice([0.0, 0.1, 0.7]))
    assert twin.statistics() == sync.statistics()
    assert twin.statistics().hits == 200
    # the method itself (what a limiter with a hook, or a remote store, runs) agrees
    assert await twin.hit("a") == await brace.RateLimiter.hit(sync, "a")


async def test_the_twin_shares_the_store_with_other_limiters() -> None:
    """Two limiters with one policy share the store's table: the twin of each sees the
    other's hits, and the store counts them all."""
    clock = FakeClock()
    store = brace.MemoryStore(clock=clock)
    first = brace.RateLimiter(GCRA(2, 10.0), store=store, clock=clock)
    second = brace.RateLimiter(GCRA(2, 10.0), store=store, clock=clock)
    assert (await first.hit("k")).allowed
    assert (await second.hit("k")).allowed
    assert not (await first.hit("k")).allowed
    statistics = store.statistics()
    assert (statistics.allowed, statistics.rejected) == (2, 1)


def test_no_twin_where_the_method_must_run() -> None:
    """A hook, a subclass overriding ``hit``, or a remote store keep the method."""
    hooked = brace.RateLimiter("1/s", on_event=lambda event: None)
    assert "hit" not in vars(hooked)

    class Counting(brace.RateLimiter):
        async def hit(self, key: str, cost: int = 1) -> Decision:
            return await super().hit(key, cost)

    assert "hit" not in vars(Counting("1/s"))
    assert "hit" not in vars(brace.RateLimiter("1/s", store=RemoteStore()))


def test_a_table_builds_a_bounded_number_of_twins() -> None:
    """One twin per clock, at most eight per table; a limiter past them keeps the method
    (a store shared by limiters with ever new clocks does not grow without bound)."""
    store = brace.MemoryStore()
    clocks = [FakeClock() for _ in range(10)]
    limiters = [brace.RateLimiter("5/s", store=store, clock=clock) for clock in clocks]
    assert [("hit" in vars(limiter)) for limiter in limiters] == [True] * 8 + [False] * 2
    again = brace.RateLimiter("5/s", store=store, clock=clocks[0])
    assert vars(again)["hit"] is vars(limiters[0])["hit"]  # the same clock: the same twin


def test_an_unhashable_clock_keeps_the_method() -> None:
    """A clock that cannot be a dict key (a callable object with ``__hash__ = None``, a
    non-frozen dataclass) is accepted: the limiter keeps the method, with the same
    decisions."""

    class Clock:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self) -> float:
            return 1.0

    limiter = brace.RateLimiter(GCRA(1, 10.0), clock=Clock())
    assert "hit" not in vars(limiter)
    assert limiter.try_hit("k").allowed
    assert not limiter.try_hit("k").allowed
