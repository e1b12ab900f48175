"""DistributedLimit: at most ``limit`` calls at once across every process sharing a Redis.

Theory of operation
-------------------
The permits live in Redis, in four keys sharing one hash tag (one slot of a Cluster):
a sorted set of holders scored by the end of their lease, a sorted set of waiters
scored by ticket (their order of arrival), a sorted set of the same waiters scored by
the time they must poll again by, and the ticket counter. One Lua script (`SEMAPHORE`)
does every operation atomically on the server's clock; its logic is
`brace._core.semaphore.LeaseSemaphoreCore` (held together by a differential test).

A holder's permit is a lease of ``lease`` seconds; a task keeps it while the call runs
by renewing it every ``lease / 3`` seconds from a background task, so a process killed
mid-call loses its permits within ``lease`` seconds. A waiter polls: the first
``limit`` waiters of the queue every ``poll_interval`` seconds, those behind less often
(up to ``max_poll_interval``), and a release in the same process wakes its local
waiters at once. At most 32 waiters of a process (``limit``, if fewer) are in the Redis
queue at a time; the others wait in a local FIFO queue in front of it. Waiting is first
come, first served among the waiters in Redis and within each process, bounded by
``max_wait`` seconds and by ``max_waiters`` queued in Redis.

When Redis fails, an acquisition follows the store's ``on_error``: ``fail_closed``
refuses (`brace.QueueFull`), ``fail_open`` runs the call without a permit, and
``fallback`` takes a permit of a local semaphore of ``limit // nodes`` permits. A
release that fails is left to the lease's expiry. Whether to ask Redis at all is the
store's rule, `brace._core.outage.OutageCore` (one of its own per limit): after a
failure of the server (`brace.redis._errors.error_scope`) Redis is left alone for the
store's ``recovery_time``, every acquisition and release meanwhile decided at once; then
one call probes it while the others keep away. Renewals are the exception: they always
try (a lost lease is worse than one call every ``lease / 3``), and their outcome counts.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, TypeVar

import anyio
from typing_extensions import ParamSpec

from .._core._validate import check_int, check_seconds
from .._core.outage import OutageCore
from .._exceptions import QueueFull, QueueTimeout
from ._clients import ScriptClient, is_noscript
from ._errors import describe_error, error_scope
from ._scripts import NOW, Script
from ._store import OnError, RedisStore

__all__ = ("SEMAPHORE", "DistributedLimit", "DistributedLimitStatistics", "Permit")

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("brace.redis")

_SEMAPHORE = (
    """
local holders, queue, alive, ticket = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local mode = ARGV[1]
local holder = ARGV[2]
"""
    + NOW
    + """local limit = tonumber(ARGV[4])
local lease = tonumber(ARGV[5])
local wait_ttl = tonumber(ARGV[6])
local max_waiters = tonumber(ARGV[7])
local function f(x) return string.format('%.17g', x) end
local function ms(seconds)
  local m = math.ceil(seconds * 1000)
  if m < 1 then m = 1 end
  return string.format('%d', m + extra_ms)
end
-- drop the expired leases and waiters
local at = f(now)
redis.call('ZREMRANGEBYSCORE', holders, '-inf', at)
local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', at)
for i = 1, #dead do redis.call('ZREM', queue, dead[i]) end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', alive, '-inf', at) end
local function finish(acquired, position)
  local waiting = redis.call('ZCARD', queue)
  if waiting == 0 then
    redis.call('DEL', queue, alive, ticket)
  else
    local last = redis.call('ZRANGE', alive, -1, -1, 'WITHSCORES')
    local ttl = ms(tonumber(last[2]) - now)
    redis.call('PEXPIRE', queue, ttl)
    redis.call('PEXPIRE', alive, ttl)
    redis.call('PEXPIRE', ticket, ttl)
  end
  local count = redis.call('ZCARD', holders)
  if count > 0 then
    local last = redis.call('ZRANGE', holders, -1, -1, 'WITHSCORES')
    redis.call('PEXPIRE', holders, ms(tonumber(last[2]) - now))
  end
  return string.format('%d %d %d', acquired, count, position)
end
if redis.call('ZCARD', queue) == 0 then redis.call('DEL', ticket) end
if mode == 'release' then
  local held = redis.call('ZREM', holders, holder)
  redis.call('ZREM', queue, holder)
  redis.call('ZREM', alive, holder)
  return finish(held, 0)
end
if redis.call('ZSCORE', holders, holder) then
  redis.call('ZADD', holders, f(now + lease), holder)
  return finish(1, 0)
end
if mode == 'renew' then return finish(0, 0) end
local free = limit - redis.call('ZCARD', holders)
local rank = redis.call('ZRANK', queue, holder)
local ahead = rank
if not rank then ahead = redis.call('ZCARD', queue) end
if ahead < free then
  redis.call('ZREM', queue, holder)
  redis.call('ZREM', alive, holder)
  redis.call('ZADD', holders, f(now + lease), holder)
  return finish(1, 0)
end
if mode == 'try' then return finish(0, 0) end
if not rank then
  local waiting = redis.call('ZCARD', queue)
  if waiting >= max_waiters then return finish(0, -1) end
  local number = redis.call('INCR', ticket)
  redis.call('ZADD', queue, number, holder)
  redis.call('ZADD', alive, f(now + wait_ttl), holder)
  return finish(0, waiting + 1)
end
redis.call('ZADD', alive, f(now + wait_ttl), holder)
return finish(0, rank + 1)
"""
)

SEMAPHORE = Script("semaphore", _SEMAPHORE)
"""The script of every `DistributedLimit` operation (see the module's documentation).

``KEYS``: holders, queue, alive, ticket. ``ARGV``: mode (``acquire``, ``try``,
``renew``, ``release``), holder id, time (``""``: the server's ``TIME``), limit, lease,
wait_ttl, max_waiters. Answers ``"acquired holders position"``.
"""

Source = Literal["redis", "fallback", "open"]

# The most waiters of one process polling Redis at once; the others queue locally.
_MAX_POLLERS = 32


class Permit:
    """One permit of a `DistributedLimit`, held by the task that acquired it.

    ``holder``: its id in Redis; ``source``: ``"redis"`` (a lease in Redis),
    ``"fallback"`` (the local semaphore of ``on_error="fallback"``) or ``"open"`` (no
    permit: Redis failed under ``on_error="fail_open"``); ``lost``: the lease ran out
    before it could be renewed (another call may have its permit now).
    """

    __slots__ = ("holder", "lost", "released", "source")

    def __init__(self, holder: str, source: Source) -> None:
        self.holder = holder
        self.source: Source = source
        self.lost = False
        self.released = False

    def __repr__(self) -> str:
        return f"Permit({self.holder!r}, source={self.source!r}, lost={self.lost})"


@dataclass(frozen=True, slots=True)
class DistributedLimitStatistics:
    """A snapshot of a `DistributedLimit` (this process's view).

    ``holding`` / ``waiting``: tasks of this process holding a permit / waiting for
    one; ``fleet_holders``: holders in Redis at the last answer (all processes);
    ``acquired``, ``released``: permits taken from Redis and given back; ``refused``:
    acquisitions refused because the queue was full; ``timed_out``: waits longer than
    ``max_wait``; ``renewals``: leases extended; ``lost``: leases that ran out while
    held; ``fallbacks``: acquisitions decided by ``on_error``; ``errors``: Redis calls
    that failed; ``round_trips``: Redis calls made; ``available``: False while Redis is
    left alone after a failure.
    """

    limit: int
    holding: int
    waiting: int
    fleet_holders: int
    acquired: int
    released: int
    refused: int
    timed_out: int
    renewals: int
    lost: int
    fallbacks: int
    errors: int
    round_trips: int
    available: bool


class _Unavailable(Exception):
    """Redis failed (or gave no answer in time): the caller follows ``on_error``."""


class DistributedLimit:
    """At most ``limit`` concurrent calls over every process sharing ``store``'s Redis.

    Use ``async with limit:``, ``async with limit.slot() as permit:``, ``await
    limit.call(fn, *args)``, the decorator ``@limit``, or put it in `brace.compose`.

    Args:
        store: the `RedisStore` whose client, ``prefix``, ``on_error``, ``nodes``,
            ``timeout``, ``recovery_time`` and ``fail_closed_retry_after`` are used.
        name: the limit's name; every process using the same name (and prefix) shares
            its permits. Any text without ``{`` or ``}``, at most 200 characters.
        limit: the number of permits (an int >= 1). Every process must give the same.
        lease: seconds a permit is held without renewal (> 0); a dead holder's permit
            comes back within this time.
        renew: renew the lease every ``lease / 3`` seconds while a call runs (a
            background task per permit); ``False``: every call must end within
            ``lease`` or its permit may be given to another.
        max_wait: seconds to wait for a permit before `brace.QueueTimeout` (>= 0;
            0: take a free permit or be refused at once), or ``None``: no bound.
        max_waiters: the most waiters in the queue, across the fleet, before
            `brace.QueueFull` (an int >= 1).
        poll_interval: seconds between the polls of a waiter among the first ``limit``
            of the queue (> 0).
        max_poll_interval: the longest time between two polls of any waiter (>=
            ``poll_interval``).
        clock: zero-argument callable returning monotonic seconds; default
            `time.monotonic`.
    """

    __slots__ = (
        "_acquired",
        "_args",
        "_client",
        "_clock",
        "_closed_retry_after",
        "_counter",
        "_entered",
        "_errors",
        "_fallback",
        "_fallback_size",
        "_fallbacks",
        "_fleet_holders",
        "_gate",
        "_holding",
        "_id",
        "_keys",
        "_lease",
        "_logged",
        "_lost",
        "_max_poll_interval",
        "_max_wait",
        "_on_error",
        "_outage",
        "_poll_interval",
        "_pollers",
        "_recovery_time",
        "_refused",
        "_released",
        "_renew",
        "_renewals",
        "_round_trips",
        "_timed_out",
        "_timeout",
        "_waiting",
        "_wake",
        "limit",
        "name",
        "store",
    )

    def __init__(
        self,
        store: RedisStore,
        name: str,
        limit: int,
        *,
        lease: float = 30.0,
        renew: bool = True,
        max_wait: float | None = 30.0,
        max_waiters: int = 10_000,
        poll_interval: float = 0.02,
        max_poll_interval: float = 0.5,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(store, RedisStore):
            raise TypeError(f"store must be a brace.redis.RedisStore, got {type(store).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if not name or len(name) > 200 or "{" in name or "}" in name:
            raise ValueError(f"name must be 1 to 200 characters without '{{' or '}}', got {name!r}")
        if not isinstance(renew, bool):
            raise TypeError(f"renew must be a bool, got {type(renew).__name__}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        self.store = store
        self.name = name
        self.limit = check_int(limit, "limit", minimum=1)
        self._lease = check_seconds(lease, "lease")
        self._renew = renew
        self._max_wait = None if max_wait is None else _check_wait(max_wait)
        max_waiters = check_int(max_waiters, "max_waiters", minimum=1)
        self._poll_interval = check_seconds(poll_interval, "poll_interval")
        self._max_poll_interval = check_seconds(max_poll_interval, "max_poll_interval")
        if self._max_poll_interval < self._poll_interval:
            raise ValueError(
                f"max_poll_interval must be >= poll_interval ({poll_interval!r}), "
                f"got {max_poll_interval!r}"
            )
        self._clock: Callable[[], float] = time.monotonic if clock is None else clock
        self._client: ScriptClient = store.client
        self._on_error: OnError = store.on_error
        # The store's failure settings (read once).
        timeout: float | None = store.timeout
        self._timeout = timeout
        self._recovery_time: float = store.recovery_time
        self._closed_retry_after: float = store.fail_closed_retry_after
        nodes: int = store.nodes
        self._fallback: anyio.Semaphore | None = None
        self._fallback_size = max(1, self.limit // nodes)
        tag = f"{store.prefix}:limit:{name}"
        self._keys = tuple(f"{{{tag}}}:{part}".encode() for part in ("h", "q", "a", "t"))
        # A waiter must poll again within wait_ttl or lose its place: the longest gap
        # between two polls plus a Redis call's timeout, with room to spare.
        wait_ttl = 3 * self._max_poll_interval + 2 * (timeout or 1.0)
        self._args = (str(self.limit), repr(self._lease), repr(wait_ttl), str(max_waiters))
        self._id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._counter = 0
        self._outage = OutageCore(self._recovery_time)
        self._wake: anyio.Event | None = None
        self._gate: anyio.Semaphore | None = None
        self._pollers = min(self.limit, _MAX_POLLERS)
        self._entered: dict[object, list[AbstractAsyncContextManager[Permit]]] = {}
        self._logged: set[str] = set()
        self._holding = self._waiting = self._fleet_holders = 0
        self._acquired = self._released = self._refused = self._timed_out = 0
        self._renewals = self._lost = self._fallbacks = self._errors = self._round_trips = 0

    # -- using it ---------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self, priority: int | None = None) -> AsyncIterator[Permit]:
        """Hold a permit (renewed while the block runs) for the block; FIFO wait.

        Raises `brace.QueueFull` (the fleet's queue is full, or Redis failed under
        ``fail_closed``) or `brace.QueueTimeout` (no permit within ``max_wait``).
        ``priority`` is accepted for the executor's signature and not used: the queue is
        first come, first served.
        """
        permit = await self.acquire()
        try:
            if permit.source == "redis" and self._renew:
                async with anyio.create_task_group() as group:
                    group.start_soon(self._keep, permit)
                    try:
                        yield permit
                    finally:
                        group.cancel_scope.cancel()
            else:
                yield permit
        finally:
            await self.release(permit)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args, **kwargs)`` holding a permit."""
        async with self.slot():
            return await fn(*args, **kwargs)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an ``async def``: each call holds a permit."""

        @functools.wraps(fn)
        async def limited(*args: P.args, **kwargs: P.kwargs) -> T:
            async with self.slot():
                return await fn(*args, **kwargs)

        return limited

    async def __aenter__(self) -> Permit:
        manager = self.slot()
        permit = await manager.__aenter__()
        task = anyio.get_current_task().id
        self._entered.setdefault(task, []).append(manager)
        return permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        task = anyio.get_current_task().id
        stack = self._entered[task]
        manager = stack.pop()
        if not stack:
            del self._entered[task]
        return await manager.__aexit__(exc_type, exc, traceback)

    # -- the steps --------------------------------------------------------------------

    async def acquire(self) -> Permit:
        """Wait for a permit (FIFO, at most ``max_wait``); not renewed.

        The caller must `release` it, and renew it (`renew`) if the call may outlast
        the lease; `slot` does both.
        """
        self._counter += 1
        holder = f"{self._id}-{self._counter}"
        outage = self._outage
        if not outage.up and not outage.available(self._clock()):
            return await self._on_failure(holder)
        max_wait = self._max_wait
        if max_wait == 0:
            return await self._poll(holder, "try", 0.0)
        deadline = math.inf if max_wait is None else self._clock() + max_wait
        # The local queue: at most `_pollers` waiters of this process poll Redis at once
        # (no process could take more permits at a time); the others wait here, FIFO.
        gate = self._gate
        if gate is None:
            gate = self._gate = anyio.Semaphore(self._pollers)
        self._waiting += 1
        try:
            admitted = False
            with anyio.move_on_after(deadline - self._clock()):
                await gate.acquire()
                admitted = True
            if not admitted:
                self._timed_out += 1
                raise QueueTimeout(
                    f"{self.name}: no permit within {max_wait} s",
                    retry_after=self._poll_interval,
                )
            try:
                return await self._poll(holder, "acquire", deadline)
            finally:
                gate.release()
        finally:
            self._waiting -= 1

    async def _poll(self, holder: str, mode: str, deadline: float) -> Permit:
        """Ask Redis until ``holder`` has a permit (or is refused, or out of time)."""
        clock = self._clock
        queued = False  # whether Redis may hold this waiter (its queue or its holders)
        try:
            while True:
                queued = True  # a call cancelled in flight may have queued it, or admitted it
                try:
                    acquired, position = await self._call(mode, holder)
                except _Unavailable:
                    queued = False  # left to expire (wait_ttl)
                    return await self._on_failure(holder)
                queued = position > 0
                if acquired:
                    self._acquired += 1
                    self._holding += 1
                    return Permit(holder, "redis")
                if position < 0 or mode == "try":
                    self._refused += 1
                    raise QueueFull(  # noqa: TRY301 (the waiter leaves the queue below)
                        f"{self.name}: every permit is taken"
                        if position >= 0
                        else f"{self.name}: the fleet's queue is full",
                        retry_after=self._poll_interval,
                    )
                remaining = deadline - clock()
                if remaining <= 0:
                    self._timed_out += 1
                    raise QueueTimeout(  # noqa: TRY301
                        f"{self.name}: no permit within {self._max_wait} s",
                        retry_after=self._poll_interval,
                    )
                await self._pause(min(remaining, self._poll_delay(position)), position)
        except BaseException:
            if queued:
                with anyio.CancelScope(shield=True):
                    await self._forget(holder)
            raise

    async def renew(self, permit: Permit) -> bool:
        """Extend ``permit``'s lease by ``lease`` seconds from now; False once it is lost.

        Raises nothing: when Redis fails the lease is left as it is (True).
        """
        if permit.source != "redis" or permit.released:
            return not permit.lost
        try:
            held, _ = await self._call("renew", permit.holder, always=True)
        except _Unavailable:
            return True
        if held:
            self._renewals += 1
        elif not permit.lost:
            permit.lost = True
            self._lost += 1
            logger.warning("%r: the lease of %r ran out before it was renewed", self, permit)
        return held

    async def release(self, permit: Permit) -> None:
        """Give ``permit`` back (once; shielded from cancellation, bounded by timeout)."""
        if permit.released:
            return
        permit.released = True
        if permit.source == "fallback":
            assert self._fallback is not None
            self._fallback.release()
            return
        if permit.source == "open":
            return
        self._holding -= 1
        with anyio.CancelScope(shield=True):
            if await self._forget(permit.holder):
                self._released += 1
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.set()

    async def _forget(self, holder: str) -> bool:
        """Drop ``holder`` from Redis (holders and queue); a failure leaves it to expire."""
        try:
            held, _ = await self._call("release", holder)
        except _Unavailable:
            return False
        return held

    async def _keep(self, permit: Permit) -> None:
        """Renew ``permit`` every ``lease / 3`` seconds until cancelled or lost."""
        period = self._lease / 3
        while not permit.lost:
            await anyio.sleep(period)
            await self.renew(permit)

    def _poll_delay(self, position: int) -> float:
        """The first ``limit`` waiters poll often; the others less, by their distance."""
        rounds = (position - 1) // self.limit + 1
        delay = min(self._max_poll_interval, self._poll_interval * rounds)
        return delay * (0.5 + 0.5 * random.random())

    async def _pause(self, delay: float, position: int) -> None:
        """Sleep ``delay`` seconds; a waiter among the first ``limit`` of the queue also
        wakes when a permit of this process is released (the others could not take it)."""
        if position > self.limit:
            await anyio.sleep(delay)
            return
        wake = self._wake
        if wake is None:
            wake = self._wake = anyio.Event()
        with anyio.move_on_after(delay):
            await wake.wait()

    async def _call(self, mode: str, holder: str, *, always: bool = False) -> tuple[bool, int]:
        """Run the script; ``(acquired or held, position)``. Raises `_Unavailable` when
        Redis fails, or without calling it while the outage core keeps callers away
        (unless ``always``: a renewal)."""
        outage = self._outage
        probing = False
        if not outage.up:
            now = self._clock()
            if not always:
                if not outage.available(now):
                    raise _Unavailable("Redis is left alone after a failure")
                probing = outage.start(now)  # the others keep away until it is done
        client = self._client
        keys = self._keys
        args = (mode, holder, "", *self._args)
        try:
            with anyio.fail_after(self._timeout):
                self._round_trips += 1
                try:
                    reply = await client.evalsha(SEMAPHORE.sha, keys, args)
                except Exception as exc:
                    if not is_noscript(exc):
                        raise
                    self._round_trips += 2
                    await client.script_load(SEMAPHORE.text)
                    reply = await client.evalsha(SEMAPHORE.sha, keys, args)
        except Exception as exc:  # every client failure (and the timeout) goes to on_error
            self._errors += 1
            scope = error_scope(exc)
            if scope == "server":
                outage.server_failed(self._clock())
            else:  # an error of this call says nothing about Redis
                outage.call_failed(probing, self._clock())
            self._record(exc, scope)
            raise _Unavailable(str(exc)) from exc
        outage.answered()
        data = reply if isinstance(reply, bytes) else str(reply).encode()
        acquired, holders, position = data.split(b" ")
        self._fleet_holders = int(holders)
        return acquired == b"1", int(position)

    def _record(self, exc: BaseException, scope: str) -> None:
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}:{scope}"
        if kind in self._logged or len(self._logged) >= 64:
            return
        self._logged.add(kind)
        logger.error(
            "%r: Redis failed (%s); %s on_error=%r (logged once for this kind of error)",
            self,
            describe_error(exc),
            f"acquisitions for {self._recovery_time} s follow"
            if scope == "server"
            else "that call (an error of its own) follows",
            self._on_error,
        )

    async def _on_failure(self, holder: str) -> Permit:
        self._fallbacks += 1
        on_error = self._on_error
        if on_error == "fail_open":
            return Permit(holder, "open")
        if on_error == "fallback":
            fallback = self._fallback
            if fallback is None:
                fallback = self._fallback = anyio.Semaphore(self._fallback_size)
            max_wait = self._max_wait
            if max_wait == 0:
                try:
                    fallback.acquire_nowait()
                except anyio.WouldBlock:
                    raise QueueFull(
                        f"{self.name}: every local permit is taken (Redis is unavailable)",
                        retry_after=self._poll_interval,
                    ) from None
            else:
                with anyio.move_on_after(max_wait) as scope:
                    await fallback.acquire()
                if scope.cancelled_caught:
                    self._timed_out += 1
                    raise QueueTimeout(
                        f"{self.name}: no local permit within {max_wait} s (Redis is unavailable)",
                        retry_after=self._poll_interval,
                    )
            return Permit(holder, "fallback")
        raise QueueFull(
            f"{self.name}: Redis is unavailable (on_error='fail_closed')",
            retry_after=self._closed_retry_after,
        )

    def statistics(self) -> DistributedLimitStatistics:
        """A snapshot of this process's counters."""
        return DistributedLimitStatistics(
            limit=self.limit,
            holding=self._holding,
            waiting=self._waiting,
            fleet_holders=self._fleet_holders,
            acquired=self._acquired,
            released=self._released,
            refused=self._refused,
            timed_out=self._timed_out,
            renewals=self._renewals,
            lost=self._lost,
            fallbacks=self._fallbacks,
            errors=self._errors,
            round_trips=self._round_trips,
            available=self._outage.available(self._clock()),
        )

    def __repr__(self) -> str:
        return f"DistributedLimit({self.name!r}, limit={self.limit}, lease={self._lease})"


def _check_wait(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return 0.0
    return check_seconds(value, "max_wait")
