"""FleetBreaker: replicas' circuit breakers that open together, by a shared rule or a quorum.

Theory of operation
-------------------
Each replica keeps its own `brace.CircuitBreaker` (calls go through it as usual) and runs
`FleetBreaker.run` in the background: every ``sync_interval`` seconds one script call
(`BREAKER_SYNC`, on the server's clock) reports whether the replica's breaker is open on
its own account and reads the fleet's state (see `brace._core.fleet`). When enough
replicas report open (one with ``quorum=None``; else a share of the live ones), the
fleet opens for ``recovery_time``: each replica opens its breaker until then at its
next sync. A trip reaches every replica within two sync intervals (the reporting
replica's, then each reader's) plus the round trips.

Half-open probes are limited fleet-wide: a call admitted while the replica's breaker
is half-open must also take one of ``half_open_max_calls`` probe permits of a leased
semaphore in Redis (the `DistributedLimit` script); without one it is refused with
`brace.CircuitOpen`. One good probe closes the fleet: the other replicas see the close
at their next sync and close their breakers (those open on the fleet's account only).

When Redis fails, each replica's breaker goes on alone: a failed call is logged once,
and a half-open replica probes under its own ``half_open_max_calls`` without asking
Redis for a permit while the store's rule, `brace._core.outage.OutageCore` (one of its
own per fleet breaker), leaves Redis alone: for the store's ``recovery_time`` after a
failure of the server (`brace.redis._errors.error_scope`), then one permit call probes
it while the others keep away. Syncs always try (they are the fleet's news), and one
that answers ends the outage.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import anyio
from typing_extensions import ParamSpec

from .._breaker import CircuitBreaker
from .._core._validate import check_int, check_seconds
from .._core.breaker import CircuitState
from .._core.fleet import ReplicaSync
from .._core.outage import OutageCore
from .._exceptions import CircuitOpen
from ._clients import ScriptClient, eval_script
from ._errors import describe_error, error_scope
from ._scripts import Script
from ._semaphore import SEMAPHORE
from ._store import RedisStore

__all__ = ("BREAKER_SYNC", "FleetBreaker", "FleetBreakerStatistics")

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("brace.redis")

_SYNC = """
local reports, opens, fleet, closes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local replica = ARGV[1]
local own_open = ARGV[2] == '1'
local closed = ARGV[3] == '1'
local ttl = tonumber(ARGV[4])
local quorum = ARGV[5]
local recovery = tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local at = string.format('%.17g', now)
redis.call('ZREMRANGEBYSCORE', reports, '-inf', at)
redis.call('ZREMRANGEBYSCORE', opens, '-inf', at)
local expires = string.format('%.17g', now + ttl)
redis.call('ZADD', reports, expires, replica)
if own_open then
  redis.call('ZADD', opens, expires, replica)
else
  redis.call('ZREM', opens, replica)
end
local live = redis.call('ZCARD', reports)
local opened = redis.call('ZCARD', opens)
local need = 1
if quorum ~= '' then
  need = math.max(1, math.ceil(tonumber(quorum) * live - 1e-9))
end
local ms = string.format('%d', math.ceil((ttl + recovery) * 1000))
local untils = tonumber(redis.call('GET', fleet) or '0')
if opened >= need and untils <= now then
  untils = now + recovery
  redis.call('SET', fleet, string.format('%.17g', untils), 'PX', ms)
end
if closed and opened < need then
  redis.call('INCR', closes)
end
redis.call('PEXPIRE', closes, ms)
redis.call('PEXPIRE', reports, ms)
redis.call('PEXPIRE', opens, ms)
local remaining = untils - now
if remaining < 0 then remaining = 0 end
local count = tonumber(redis.call('GET', closes) or '0')
return string.format('%.17g %d %d %d', remaining, opened, live, count)
"""

BREAKER_SYNC = Script("breaker_sync", _SYNC)
"""One replica's sync: ``KEYS`` reports, opens, fleet, closes; ``ARGV`` replica id, own
open (0/1), closed since last (0/1), report TTL, quorum (``""``: one replica), recovery
time. Answers ``"fleet_open_remaining opened live closes"``."""


@dataclass(frozen=True, slots=True)
class FleetBreakerStatistics:
    """A snapshot of a `FleetBreaker` (this replica's view at its last sync).

    ``state``: the local breaker's; ``own_open``: open on its own account; ``fleet_open``:
    seconds the fleet stays open (0 when not); ``opened`` / ``live``: replicas open on
    their own account / reporting; ``syncs``, ``sync_errors``: syncs done / failed;
    ``fleet_opens``, ``fleet_closes``: times the fleet opened / closed this breaker;
    ``probes``, ``probes_refused``: fleet probe permits taken / refused.
    """

    state: CircuitState
    own_open: bool
    fleet_open: float
    opened: int
    live: int
    syncs: int
    sync_errors: int
    fleet_opens: int
    fleet_closes: int
    probes: int
    probes_refused: int


class _LeftAlone(Exception):
    """Redis is left alone after a failure (the outage core said so): nothing was sent."""


class FleetBreaker:
    """A replica's `brace.CircuitBreaker` that opens and closes with the fleet's.

    Run `run` in the background (a task group, the app's lifespan), and guard calls with
    ``async with fleet:``, ``await fleet.call(fn, *args)`` or ``@fleet``.

    Args:
        store: the `RedisStore` whose client, ``prefix``, ``timeout`` and
            ``recovery_time`` are used.
        name: the fleet breaker's name (every replica uses the same); text without
            ``{`` or ``}``, at most 200 characters.
        breaker: this replica's own breaker (its rules decide when it trips).
        quorum: ``None``: one replica open on its own account opens the fleet; a share
            in (0, 1]: that share of the live replicas must be.
        sync_interval: seconds between two syncs (> 0).
        half_open_max_calls: probes at a time across the fleet (an int >= 1).
        probe_lease: seconds a probe permit is held at most (> 0): a replica that dies
            mid-probe frees it then.
        report_ttl: seconds a replica counts as live after its last sync (> 0); default
            3 sync intervals.
    """

    __slots__ = (
        "_args",
        "_client",
        "_closes",
        "_counter",
        "_entered",
        "_fleet_opens",
        "_id",
        "_keys",
        "_last",
        "_logged",
        "_outage",
        "_probe_args",
        "_probe_keys",
        "_probes",
        "_probes_refused",
        "_sync",
        "_sync_errors",
        "_syncs",
        "_timeout",
        "breaker",
        "name",
        "quorum",
        "store",
        "sync_interval",
    )

    def __init__(
        self,
        store: RedisStore,
        name: str,
        breaker: CircuitBreaker,
        *,
        quorum: float | None = None,
        sync_interval: float = 0.5,
        half_open_max_calls: int = 1,
        probe_lease: float = 30.0,
        report_ttl: float | None = None,
    ) -> None:
        if not isinstance(store, RedisStore):
            raise TypeError(f"store must be a brace.redis.RedisStore, got {type(store).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if not name or len(name) > 200 or "{" in name or "}" in name:
            raise ValueError(f"name must be 1 to 200 characters without '{{' or '}}', got {name!r}")
        if not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a brace.CircuitBreaker, got {type(breaker).__name__}")
        if quorum is not None and (
            isinstance(quorum, bool) or not isinstance(quorum, (int, float)) or not 0 < quorum <= 1
        ):
            raise ValueError(f"quorum must be None or a share in (0, 1], got {quorum!r}")
        self.store = store
        self.name = name
        self.breaker = breaker
        self.quorum = quorum
        self.sync_interval = check_seconds(sync_interval, "sync_interval")
        probes = check_int(half_open_max_calls, "half_open_max_calls", minimum=1)
        lease = check_seconds(probe_lease, "probe_lease")
        ttl = (
            3 * self.sync_interval
            if report_ttl is None
            else check_seconds(report_ttl, "report_ttl")
        )
        recovery = float(breaker.recovery_time)
        self._client: ScriptClient = store.client
        tag = f"{store.prefix}:breaker:{name}"
        self._keys = tuple(f"{{{tag}}}:{part}".encode() for part in ("r", "o", "f", "c"))
        self._probe_keys = tuple(f"{{{tag}}}:{part}".encode() for part in ("ph", "pq", "pa", "pt"))
        self._args = (repr(ttl), "" if quorum is None else repr(float(quorum)), repr(recovery))
        self._probe_args = (str(probes), repr(lease), "1.0", "1")
        self._id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._counter = 0
        self._sync = ReplicaSync(shared=quorum is None)
        self._last = (0.0, 0, 0)
        self._timeout = store.timeout or 1.0
        self._outage = OutageCore(store.recovery_time)
        self._entered: dict[object, list[AbstractAsyncContextManager[None]]] = {}
        self._logged: set[str] = set()
        self._syncs = self._sync_errors = self._fleet_opens = self._closes = 0
        self._probes = self._probes_refused = 0

    # -- syncing ----------------------------------------------------------------------

    async def run(self) -> None:
        """Sync every ``sync_interval`` seconds, forever (cancel it to stop)."""
        while True:
            await self.sync()
            await anyio.sleep(self.sync_interval)

    async def sync(self) -> None:
        """Report this replica's state and take the fleet's (one round trip); a Redis
        failure is logged once and leaves the local breaker as it is."""
        breaker = self.breaker
        statistics = breaker.statistics()
        own, closed = self._sync.report(statistics.state, statistics.opened_count)
        args = (self._id, "1" if own else "0", "1" if closed else "0", *self._args)
        try:
            reply = await self._eval(BREAKER_SYNC, self._keys, args, always=True)
        except Exception as exc:  # probes go by the local breaker alone meanwhile
            self._sync_errors += 1
            self._record(exc)
            return
        self._syncs += 1
        data = reply if isinstance(reply, bytes) else str(reply).encode()
        remaining_text, opened, live, closes = data.split(b" ")
        remaining = float(remaining_text)
        self._last = (remaining, int(opened), int(live))
        state = breaker.state
        own = self._sync.own_open(state, breaker.statistics().opened_count)
        action = self._sync.react(state, own, remaining, int(closes))
        if action == "open":
            breaker.open_for(remaining)  # the server's deadline, re-read at each sync
            self._sync.opened_by_fleet(breaker.statistics().opened_count)
            if state is not CircuitState.OPEN:
                self._fleet_opens += 1
        elif action == "close":
            breaker.force_close()
            self._closes += 1

    async def _eval(
        self,
        script: Script,
        keys: tuple[bytes, ...],
        args: tuple[str, ...],
        *,
        always: bool = False,
    ) -> object:
        """Run ``script`` within the store's timeout; the outcome goes to the outage core.

        Raises the client's error, or `_LeftAlone` without calling Redis while the core
        keeps callers away (unless ``always``: a sync).
        """
        outage = self._outage
        probing = False
        if not outage.up:
            now = time.monotonic()
            if not always:
                if not outage.available(now):
                    raise _LeftAlone
                probing = outage.start(now)  # the others keep away until it is done
        client = self._client
        try:
            with anyio.fail_after(self._timeout):
                reply = await eval_script(client, script, keys, args)
        except Exception as exc:
            if error_scope(exc) == "server":
                outage.server_failed(time.monotonic())
            else:  # an error of this call says nothing about Redis
                outage.call_failed(probing, time.monotonic())
            raise
        outage.answered()
        return reply

    def _record(self, exc: BaseException) -> None:
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        if kind in self._logged or len(self._logged) >= 64:
            return
        self._logged.add(kind)
        logger.error(
            "%r: Redis failed (%s); this replica's breaker goes on alone until Redis "
            "answers again (logged once for this kind of error)",
            self,
            describe_error(exc),
        )

    # -- guarding calls ---------------------------------------------------------------

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run the block through the breaker; a half-open probe also needs a fleet permit."""
        breaker = self.breaker
        if breaker.state is not CircuitState.HALF_OPEN or not self._outage.available(
            time.monotonic()
        ):
            async with breaker:
                yield
            return
        probe = await self._take_probe()
        try:
            async with breaker:
                yield
        finally:
            if probe is not None:
                with anyio.CancelScope(shield=True):
                    await self._give_probe(probe)

    async def _take_probe(self) -> str | None:
        """A fleet probe permit (its holder id), ``None`` when Redis fails (go local), or
        `brace.CircuitOpen` when every permit is taken."""
        self._counter += 1
        holder = f"{self._id}-{self._counter}"
        try:
            reply = await self._eval(
                SEMAPHORE, self._probe_keys, ("try", holder, "", *self._probe_args)
            )
        except _LeftAlone:
            return None
        except Exception as exc:
            self._record(exc)
            return None
        data = reply if isinstance(reply, bytes) else str(reply).encode()
        if not data.startswith(b"1"):
            self._probes_refused += 1
            raise CircuitOpen(
                f"fleet breaker {self.name!r} is half-open and every probe of the fleet is taken",
                retry_after=None,
                name=self.breaker.name,
                state=CircuitState.HALF_OPEN,
            )
        self._probes += 1
        return holder

    async def _give_probe(self, holder: str) -> None:
        try:
            await self._eval(
                SEMAPHORE, self._probe_keys, ("release", holder, "", *self._probe_args)
            )
        except _LeftAlone:  # the permit's lease frees it
            pass
        except Exception as exc:  # the permit's lease frees it
            self._record(exc)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args, **kwargs)`` through the breaker."""
        async with self.guard():
            return await fn(*args, **kwargs)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an ``async def``: each call goes through the breaker."""

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            async with self.guard():
                return await fn(*args, **kwargs)

        return guarded

    async def __aenter__(self) -> None:
        manager = self.guard()
        await manager.__aenter__()
        task = anyio.get_current_task().id
        self._entered.setdefault(task, []).append(manager)

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

    def statistics(self) -> FleetBreakerStatistics:
        """This replica's view of the fleet, as of its last sync."""
        breaker = self.breaker
        statistics = breaker.statistics()
        remaining, opened, live = self._last
        return FleetBreakerStatistics(
            state=statistics.state,
            own_open=self._sync.own_open(statistics.state, statistics.opened_count),
            fleet_open=remaining,
            opened=opened,
            live=live,
            syncs=self._syncs,
            sync_errors=self._sync_errors,
            fleet_opens=self._fleet_opens,
            fleet_closes=self._closes,
            probes=self._probes,
            probes_refused=self._probes_refused,
        )

    def __repr__(self) -> str:
        return f"FleetBreaker({self.name!r}, quorum={self.quorum!r})"
