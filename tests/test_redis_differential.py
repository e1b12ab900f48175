"""The Lua scripts decide exactly as the Python cores, fed the same operations and times.

Each example draws a policy and a sequence of (time step, cost, hit or peek), runs it
through the Redis script at those explicit times (``RedisStore._decide_at``) and through
the Python core (``GCRA.decide``, ``SlidingWindowCounter.decide``,
``SlidingLogCore.try_acquire``), and requires the same decisions: ``allowed``,
``remaining``, and ``retry_after`` / ``reset_after`` bit for bit (the scripts repeat the
core's float operations; Lua numbers are doubles).

One event loop and one client serve every example (an anyio blocking portal), since a
real server needs real time (see ``redis_fixtures``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from copy import deepcopy
from typing import Any

import anyio.from_thread
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from brace._core.decision import Decision
from brace._core.gcra import GCRA
from brace._core.window import CounterState, SlidingLog, SlidingLogCore, SlidingWindowCounter
from brace.redis import RedisStore
from brace.redis._store import _parse
from redis_server import RedisServer, open_client

Policy = GCRA | SlidingWindowCounter | SlidingLog

pytest_plugins = ("redis_fixtures",)


class _Remote:
    """A store and its client living in a portal's event loop."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, store: RedisStore) -> None:
        self.portal = portal
        self.store = store
        self.keys = itertools.count()

    def decide(self, policy: Policy, key: str, cost: int, now: float, mode: str) -> Decision:
        decision, used = self.portal.call(self._decide, policy, key, cost, now, mode)
        assert used == now
        return decision

    def decide_in_batch(
        self, policy: Policy, key: str, cost: int, now: float, mode: str
    ) -> Decision:
        """The decision made inside the batch script, beside a decision on another key."""
        return self.portal.call(self._decide_in_batch, policy, key, cost, now, mode)

    async def _decide_in_batch(
        self, policy: Policy, key: str, cost: int, now: float, mode: str
    ) -> Decision:
        store = self.store
        plan = store._plan(policy)
        at = repr(float(now))
        calls = [
            (plan.script.sha, (store._redis_key(plan, key),), (mode, cost, at, *plan.params)),
            (plan.script.sha, (store._redis_key(plan, key + "~"),), ("hit", 1, at, *plan.params)),
        ]
        batch = getattr(store.client, "evalsha_batch")  # noqa: B009 - optional in the protocol
        reply, _ = await batch(calls)
        if isinstance(reply, Exception):
            raise reply
        return _parse(reply, plan.limit)

    async def _decide(
        self, policy: Policy, key: str, cost: int, now: float, mode: str
    ) -> tuple[Decision, float]:
        return await self.store._decide_at(policy, key, cost, now, mode=mode)


@pytest.fixture(scope="module")
def remote(redis_server: RedisServer) -> Iterator[_Remote]:
    """A RedisStore on a redis-py client, in a uvloop loop running in a thread."""
    with anyio.from_thread.start_blocking_portal(
        "asyncio", backend_options={"use_uvloop": True}
    ) as portal:
        context = portal.wrap_async_context_manager(open_client("redis-py", redis_server.port))
        with context as client:
            yield _Remote(portal, RedisStore(client, prefix="differential"))


def _equal(python: Decision, lua: Decision) -> bool:
    return (
        python.allowed == lua.allowed
        and python.limit == lua.limit
        and python.remaining == lua.remaining
        and python.retry_after == lua.retry_after
        and python.reset_after == lua.reset_after
    )


class _Model:
    """The Python core for one key, answering hit and peek like the store."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.tat = -math.inf
        self.counter: CounterState | None = None
        self.log: SlidingLogCore | None = (
            SlidingLogCore(policy.limit, policy.window) if isinstance(policy, SlidingLog) else None
        )

    def decide(self, cost: int, now: float, mode: str) -> Decision:
        policy = self.policy
        if isinstance(policy, GCRA):
            decision, tat = policy.decide(self.tat, now, cost)
            if mode == "hit":
                self.tat = tat
            return decision
        if isinstance(policy, SlidingWindowCounter):
            decision, state = policy.decide(self.counter, now, cost)
            if mode == "hit":
                self.counter = state
            return decision
        assert self.log is not None
        log = self.log if mode == "hit" else deepcopy(self.log)
        return log.try_acquire(now, cost)


# Parameters whose floats are not round: intervals like 1/3, 7/60 exercise the rounding.
_rates = st.sampled_from([1, 2, 3, 5, 7, 10, 30, 100, 1000])
_periods = st.sampled_from([0.001, 0.1, 0.25, 1.0, 3.0, 60.0, 86400.0])


@st.composite
def _policies(draw: st.DrawFn) -> Policy:
    kind = draw(st.sampled_from(["gcra", "counter", "log"]))
    if kind == "gcra":
        rate = draw(_rates)
        return GCRA(rate, draw(_periods), burst=draw(st.integers(1, 12)))
    limit = draw(st.integers(1, 12))
    if kind == "counter":
        return SlidingWindowCounter(limit, draw(_periods))
    return SlidingLog(limit, draw(_periods))


# A time step: absolute seconds, or ("period", factor): that many of the policy's windows
# (or token intervals), near the edges too, where a slack of EPSILON decides.
_steps = st.one_of(
    st.just(0.0),
    st.floats(0.0, 2.0, allow_nan=False),
    st.sampled_from([1e-7, 1e-3, 0.1, 1 / 3, 0.5, 1.0, 60.0, 100000.0]),
    st.tuples(
        st.just("period"),
        st.sampled_from([0.5, 1.0, 1 - 1e-10, 1 + 1e-10, 1 - 1e-9, 2.0, 0.999, 3.0]),
    ),
)


Step = float | tuple[str, float]


def _operations() -> st.SearchStrategy[list[tuple[Step, int, str]]]:
    return st.lists(
        st.tuples(_steps, st.integers(0, 3), st.sampled_from(["hit", "hit", "hit", "peek"])),
        min_size=1,
        max_size=30,
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    policy=_policies(),
    start=st.sampled_from([0.0, 12.5, 1_000_000.0, 1_795_795_071.542955]),
    operations=_operations(),
)
@example(  # an entry a tenth of a nanosecond short of a window: expired, by EPSILON
    policy=SlidingLog(1, 1.0),
    start=0.0,
    operations=[(0.0, 1, "hit"), (("period", 1 - 1e-10), 1, "hit")],
)
@example(  # a token back a tenth of a nanosecond early: admitted, by EPSILON
    policy=GCRA(1, 1.0, burst=1),
    start=5.0,
    operations=[(0.0, 1, "hit"), (("period", 1 - 1e-10), 1, "hit")],
)
def test_lua_decides_as_the_python_core(
    remote: _Remote, policy: Policy, start: float, operations: list[tuple[Step, int, str]]
) -> None:
    """Same policy, operations and times: the script's decisions equal the core's exactly."""
    _compare(remote.decide, policy, start, operations, f"k{next(remote.keys)}")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    policy=_policies(),
    start=st.sampled_from([0.0, 12.5, 1_795_795_071.542955]),
    operations=_operations(),
)
def test_the_batch_script_decides_as_the_python_core(
    remote: _Remote, policy: Policy, start: float, operations: list[tuple[Step, int, str]]
) -> None:
    """Each decision made inside a batch (beside another key's) equals the core's exactly."""
    _compare(remote.decide_in_batch, policy, start, operations, f"b{next(remote.keys)}")


def _compare(
    decide: Any, policy: Policy, start: float, operations: list[tuple[Step, int, str]], key: str
) -> None:
    model = _Model(policy)
    limit = policy.burst if isinstance(policy, GCRA) else policy.limit
    period = policy.interval if isinstance(policy, GCRA) else policy.window
    now = start
    for step, cost, mode in operations:
        now += step if isinstance(step, float) else step[1] * period
        cost = min(cost, limit)
        expected = model.decide(cost, now, mode)
        actual = decide(policy, key, cost, now, mode)
        assert _equal(expected, actual), (now, cost, mode, expected, actual)


def test_differential_catches_a_difference(remote: _Remote) -> None:
    """The comparison is strict: a one-ulp change in retry_after is a difference."""
    policy = GCRA(3, 1.0, burst=1)
    actual = remote.decide(policy, "strict", 1, 10.0, "hit")
    refused = remote.decide(policy, "strict", 1, 10.0, "hit")
    expected, _ = policy.decide(10.0 + policy.interval, 10.0, 1)
    assert not refused.allowed
    assert _equal(expected, refused)
    nudged: dict[str, Any] = {
        "allowed": refused.allowed,
        "limit": refused.limit,
        "remaining": refused.remaining,
        "retry_after": math.nextafter(refused.retry_after, math.inf),
        "reset_after": refused.reset_after,
    }
    assert not _equal(expected, Decision(**nudged))
    assert actual.allowed
