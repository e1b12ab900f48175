"""RedisStore: rate limits shared by many processes and hosts through one Redis.

Give a `brace.RateLimiter` a ``RedisStore`` and every process using the same Redis (and
the same ``prefix``) shares each key's limit::

    from brace import RateLimiter, SlidingWindow
    from brace.redis import RedisStore

    store = RedisStore.from_url("redis://127.0.0.1:6379/0", on_error="fallback", nodes=4)
    limiter = RateLimiter(SlidingWindow(limit=60, window=60.0), store=store)
    decision = await limiter.hit("user:42")

``from_url`` builds redis-py's client on asyncio (uvloop too) and coredis's on trio; a
``redis.asyncio.Redis`` or ``coredis.Redis`` client (or their cluster clients) can be
given instead.

Each decision is ONE script call (``EVALSHA``; the script is loaded on ``NOSCRIPT``, as
after a server restart): the script reads the key's state, decides with the arithmetic
of the Python core, writes the new state with an expiry of ``reset_after`` (idle keys
vanish) and answers, atomically. The clock is the server's ``TIME``, so the hosts'
clocks do not matter. Each script touches one key, so the layout is Redis Cluster safe.
Decisions asked while one is in flight ride together in one call (per hash slot on a
cluster).

When Redis fails (a transport or server error, or no answer within ``timeout``), the
decision follows ``on_error``:

- ``"fail_closed"`` (default): refused, ``retry_after=fail_closed_retry_after``;
- ``"fail_open"``: allowed;
- ``"fallback"``: decided by a local store (a `brace.MemoryStore` unless ``fallback=``
  gives one) under the policy divided by ``nodes``, the number of processes sharing
  the limit, so that together they stay near it.

After such a failure the store does not ask Redis for ``recovery_time`` seconds (every
decision meanwhile follows ``on_error`` at once, instead of waiting for a timeout each),
then tries again: the store recovers by itself when Redis is back. An error that belongs
to one call (see ``brace.redis._errors``) is that decision's alone: it follows
``on_error`` and the other keys are not affected. No exception from the client reaches
the caller; cancellation always does. The first error of each kind is logged (logger
``brace.redis``) with its cause; `RedisStore.check` raises it at startup instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol

import anyio
from typing_extensions import Self

from .._cancel import running_loop
from .._clock import check_clock
from .._core._validate import check_int, check_positive
from .._core.decision import Decision, drafted
from .._core.gcra import GCRA
from .._core.outage import OutageCore
from .._core.window import SlidingLog, SlidingWindowCounter
from .._keys import bound_key, encode_key
from .._metrics import REDIS_BUCKETS, Histogram
from .._store import MemoryStore, Policy, RateLimitStore, _policy_identity, check_key
from ._clients import (
    STARTUP_TIMEOUT,
    Batch,
    ScriptClient,
    UrlClient,
    adapt_client,
    current_backend,
    is_noscript,
)
from ._errors import RedisBackendError, RedisError, check_error, describe_error, error_scope
from ._scripts import BATCH, COUNTER, GCRA_SCRIPT, LOG, Script

__all__ = ("RedisStore", "RedisStoreStatistics")

logger = logging.getLogger("brace.redis")

# asyncio.timeout (Python 3.11+, else None)
_asyncio_timeout = getattr(asyncio, "timeout", None)

OnError = Literal["fail_closed", "fail_open", "fallback"]

_ON_ERROR = ("fail_closed", "fail_open", "fallback")
# Weight of the newest sample in the latency average.
_EWMA_ALPHA = 0.1
# Plans are cached per policy object; a program making policies on the fly is bounded.
_MAX_PLANS = 1024
# Kinds of error logged once each; a bound, should a client raise endless new types.
_MAX_LOGGED = 64


@dataclass(frozen=True, slots=True)
class RedisStoreStatistics:
    """A snapshot of a `RedisStore`.

    ``decisions``: answered by Redis; ``errors``: client calls that raised (timeouts not
    included); ``timeouts``: calls given up after ``timeout``; ``fallbacks``: decisions
    made by the ``on_error`` policy instead of Redis (refused, allowed or local);
    ``script_loads``: scripts (re)loaded after ``NOSCRIPT``; ``round_trips``: requests
    sent to Redis (a pipeline of coalesced decisions is one); ``latency``: moving
    average of a Redis call's duration in seconds (0.0 before the first);
    ``available``: False while the store waits ``recovery_time`` after a failure;
    ``last_error``: the last failure (``"Type: message"``), or ``None``; ``call_errors``: errors
    that belonged to one call (counted in ``errors`` too; they never make the store
    unavailable).
    """

    decisions: int
    errors: int
    timeouts: int
    fallbacks: int
    script_loads: int
    round_trips: int
    latency: float
    available: bool
    last_error: str | None
    call_errors: int = 0


class _TimedOut(Exception):
    """Redis gave no answer within the store's timeout."""


class _Event(Protocol):
    def set(self) -> object: ...
    def wait(self) -> Awaitable[object]: ...


class _FutureEvent:
    """A one-waiter event on asyncio: a bare future, set at most once.

    Cheaper than ``asyncio.Event`` (no waiter list, no loop look-up on wait) and than
    ``anyio.Event`` (which looks the running library up on creation), a cost paid per
    coalesced call. A waiter cancelled while waiting cancels the future; a later `set`
    then does nothing, which is all the call needs (nobody waits on it any more).
    """

    __slots__ = ("_future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self._future = future

    def set(self) -> None:
        future = self._future
        if not future.done():
            future.set_result(None)

    def wait(self) -> asyncio.Future[None]:
        return self._future


def _new_event() -> _Event:
    """A `_FutureEvent` on asyncio, an ``anyio.Event`` on any other backend (trio)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return anyio.Event()
    return _FutureEvent(loop.create_future())


class _Call:
    """One script call waiting to ride in a batch (see ``RedisStore._join``)."""

    __slots__ = ("args", "done", "error", "key", "leads", "reply", "script", "taken")

    def __init__(self, script: Script, key: bytes, args: Sequence[str | int], done: _Event) -> None:
        self.script = script
        self.key = key
        self.args = args
        self.done = done
        self.taken = False  # out of the queue, into a batch
        self.leads: list[_Call] | None = None  # the batch, when this call is to send it
        self.reply: object = None
        self.error: Exception | None = None


class _Plan:
    """What a store needs per policy: script, key prefix, arguments and local policy."""

    __slots__ = ("limit", "local", "params", "policy", "prefix", "raw_prefix", "script")

    def __init__(self, policy: Policy, prefix: str, nodes: int) -> None:
        self.policy = policy
        identity = _policy_identity(policy)
        self.prefix = f"{prefix}:{'/'.join(map(str, identity))}:"
        self.raw_prefix = encode_key(self.prefix)
        self.script: Script
        self.params: tuple[str, ...]
        self.local: Policy
        if isinstance(policy, GCRA):
            self.script = GCRA_SCRIPT
            self.params = (repr(policy.interval), repr(policy.tolerance))
            self.limit = policy.burst
            self.local = GCRA(policy.rate / nodes, policy.per, burst=max(1, policy.burst // nodes))
        elif isinstance(policy, SlidingWindowCounter):
            self.script = COUNTER
            self.params = (repr(policy.limit), repr(policy.window))
            self.limit = policy.limit
            self.local = SlidingWindowCounter(max(1, policy.limit // nodes), policy.window)
        else:
            self.script = LOG
            self.params = (repr(policy.limit), repr(policy.window))
            self.limit = policy.limit
            self.local = SlidingLog(max(1, policy.limit // nodes), policy.window)


def _parse(reply: object, limit: int) -> Decision:
    # int() and float() read ASCII bytes as they are: no decode
    data = reply if type(reply) is bytes else str(reply).encode()
    allowed, remaining, retry_after, reset_after, _now = data.split(b" ")
    return drafted(allowed == b"1", limit, int(remaining), float(retry_after), float(reset_after))


def _check_seconds(value: object, name: str, *, zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if zero and value == 0:
        return 0.0
    return check_positive(value, name)


class RedisStore:
    """A `brace.RateLimitStore` in Redis: one atomic Lua script call per decision.

    Works with GCRA (`brace.TokenBucket`), the sliding-window counter and the exact
    sliding log (`brace.SlidingWindow`, ``exact=True``; O(limit) per call). See the
    module's documentation for the failure policies.

    Args:
        client: a ``redis.asyncio.Redis`` (asyncio and uvloop), a ``coredis.Redis``
            (asyncio and trio; enter it with ``async with`` first), their cluster
            clients, or any `ScriptClient`; or use `from_url`. The caller keeps
            ownership: `aclose` does not close it.
        prefix: starts every key (``prefix:policy:key``); stores sharing a prefix share
            their counts.
        on_error: ``"fail_closed"``, ``"fail_open"`` or ``"fallback"``.
        fallback: the local store for ``on_error="fallback"``; default a new
            `brace.MemoryStore`.
        nodes: the number of processes sharing the limit (an int >= 1); the fallback
            store applies each policy divided by it.
        timeout: seconds to wait for Redis per decision (> 0), or ``None``.
        recovery_time: seconds during which Redis is not asked after a failure (>= 0).
        fail_closed_retry_after: the ``retry_after`` of a ``fail_closed`` refusal (> 0).
        coalesce: send the decisions asked while one is in flight together, in one
            call (one per hash slot on a cluster), when the client supports it (redis-py
            and coredis do).
        clock: zero-argument callable returning monotonic seconds (recovery time,
            latency and the fallback store); default `time.monotonic`.
    """

    __slots__ = (
        "_batches",
        "_call_errors",
        "_clock",
        "_closed_retry_after",
        "_decisions",
        "_errors",
        "_fallback",
        "_fallbacks",
        "_in_flight",
        "_last_error",
        "_latencies",
        "_logged",
        "_nodes",
        "_on_error",
        "_outage",
        "_owns_client",
        "_plans",
        "_prefix",
        "_queue",
        "_recovery_time",
        "_round_trips",
        "_script_loads",
        "_timeout",
        "_timeouts",
        "client",
    )

    def __init__(
        self,
        client: object,
        *,
        prefix: str = "brace",
        on_error: OnError = "fail_closed",
        fallback: RateLimitStore | None = None,
        nodes: int = 1,
        timeout: float | None = 0.25,
        recovery_time: float = 1.0,
        fail_closed_retry_after: float = 1.0,
        coalesce: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.client: ScriptClient = adapt_client(client)
        if not isinstance(coalesce, bool):
            raise TypeError(f"coalesce must be a bool, got {type(coalesce).__name__}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(_ON_ERROR)}; got {on_error!r}")
        if fallback is not None:
            if on_error != "fallback":
                raise ValueError("fallback= is used only with on_error='fallback'")
            if not isinstance(fallback, RateLimitStore):
                raise TypeError(
                    f"fallback must be a brace.RateLimitStore, got {type(fallback).__name__}"
                )
        clock = check_clock(clock)
        self._clock: Callable[[], float] = time.monotonic if clock is None else clock
        self._prefix = prefix
        self._on_error: OnError = on_error
        self._nodes = check_int(nodes, "nodes", minimum=1)
        self._timeout = None if timeout is None else _check_seconds(timeout, "timeout", zero=False)
        self._recovery_time = _check_seconds(recovery_time, "recovery_time", zero=True)
        self._closed_retry_after = _check_seconds(
            fail_closed_retry_after, "fail_closed_retry_after", zero=False
        )
        if on_error == "fallback" and fallback is None:
            fallback = MemoryStore(clock=self._clock)
        self._fallback = fallback
        self._plans: dict[Policy, _Plan] = {}
        self._batches: Batch | None = (
            getattr(self.client, "evalsha_batch", None) if coalesce else None
        )
        self._in_flight = False
        self._queue: list[_Call] = []
        self._outage = OutageCore(self._recovery_time, latency_alpha=_EWMA_ALPHA)
        self._decisions = 0
        self._errors = 0
        self._call_errors = 0
        self._timeouts = 0
        self._fallbacks = 0
        self._script_loads = 0
        self._round_trips = 0
        self._latencies = Histogram(REDIS_BUCKETS)  # exported by the metric exporters
        self._last_error: str | None = None
        self._logged: set[str] = set()
        self._owns_client = False

    @classmethod
    def from_url(
        cls,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        cluster: bool = False,
        username: str | None = None,
        password: str | None = None,
        db: int | None = None,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        client_options: dict[str, Any] | None = None,
        prefix: str = "brace",
        on_error: OnError = "fail_closed",
        fallback: RateLimitStore | None = None,
        nodes: int = 1,
        timeout: float | None = 0.25,
        recovery_time: float = 1.0,
        fail_closed_retry_after: float = 1.0,
        coalesce: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> RedisStore:
        """A store over a client it makes and owns: redis-py on asyncio, coredis on trio.

        ``url`` is ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...``
        (TLS), ``unix:///path[?db=n]`` or ``redis+sentinel://[[user]:password@]host
        [:port][,host[:port]...]/service_name[/db]`` (the sentinels, port 26379 by
        default, and the name of the primary they monitor); the library reads it (see
        docs/redis.md). ``cluster=True`` makes a Redis Cluster client (the URL names any
        node). ``username``, ``password`` and ``db`` win over the URL's; the ``ssl_*``
        paths (a CA bundle, a client certificate and key) go to a ``rediss://``
        connection; ``client_options`` go as they are to the library's client (its own
        option names). The rest go to the store.

        On asyncio the client is made at the first decision (or `open`); on trio,
        coredis keeps its connections in a task group, so open the store first: ``async
        with store:`` in the task that also closes it. `aclose` closes the client.
        """
        options: dict[str, Any] = {}
        for name, value in (
            ("username", username),
            ("password", password),
            ("db", db),
            ("ssl_ca_certs", ssl_ca_certs),
            ("ssl_certfile", ssl_certfile),
            ("ssl_keyfile", ssl_keyfile),
        ):
            if value is not None:
                if name == "db":
                    check_int(value, "db", minimum=0)
                elif not isinstance(value, str):
                    raise TypeError(f"{name} must be a str, got {type(value).__name__}")
                options[name] = value
        if client_options is not None:
            if not isinstance(client_options, dict):
                raise TypeError(
                    f"client_options must be a dict, got {type(client_options).__name__}"
                )
            options.update(client_options)
        client = UrlClient(url, cluster=cluster, options=options)
        store = cls(
            client,
            prefix=prefix,
            on_error=on_error,
            fallback=fallback,
            nodes=nodes,
            timeout=timeout,
            recovery_time=recovery_time,
            fail_closed_retry_after=fail_closed_retry_after,
            coalesce=coalesce,
            clock=clock,
        )
        store._owns_client = True
        return store

    @property
    def prefix(self) -> str:
        """The start of every key this store writes."""
        return self._prefix

    @property
    def on_error(self) -> OnError:
        """What a decision does when Redis fails."""
        return self._on_error

    @property
    def timeout(self) -> float | None:
        """Seconds one call to Redis may take (None: no limit)."""
        return self._timeout

    @property
    def recovery_time(self) -> float:
        """Seconds the store keeps away from Redis after it failed."""
        return self._recovery_time

    @property
    def fail_closed_retry_after(self) -> float:
        """The ``retry_after`` of a refusal under ``on_error="fail_closed"``."""
        return self._closed_retry_after

    @property
    def nodes(self) -> int:
        """How many processes share the limits (the local fallback divides by it)."""
        return self._nodes

    def key(self, policy: Policy, key: str) -> str:
        """The Redis key holding ``key``'s state under ``policy``.

        A key of `brace._keys.MAX_KEY_LENGTH` characters or more is stored as its
        digest; the bytes sent are the text in UTF-8, lone surrogates kept.
        """
        return self._plan(policy).prefix + bound_key(check_key(key))

    def _plan(self, policy: Policy) -> _Plan:
        plan = self._plans.get(policy)
        if plan is None:
            plan = _Plan(policy, self._prefix, self._nodes)
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            self._plans[policy] = plan
        return plan

    async def hit(self, policy: Policy, key: str, cost: int = 1) -> Decision:
        """Admit ``cost`` for ``key`` if ``policy`` allows, consuming it; never raises."""
        return await self._decide(policy, key, cost, "hit")

    async def peek(self, policy: Policy, key: str, cost: int = 1) -> Decision:
        """The decision `hit` would return now, consuming nothing."""
        return await self._decide(policy, key, cost, "peek")

    async def reset(self, policy: Policy, key: str) -> None:
        """Forget ``key`` (in the fallback store too); best effort when Redis fails."""
        plan = self._plan(policy)
        check_key(key)
        if self._fallback is not None:
            await self._fallback.reset(plan.local, key)
        if self._outage.available(self._clock()):
            await self._guarded(plan, self._redis_key(plan, key), ("reset", 0, ""))

    async def open(self) -> None:
        """Make the client `from_url` owns, for the running backend (see `from_url`).

        Needed on trio (coredis keeps its connections in a task group: open and close
        the store in the same task); optional on asyncio. ``async with store:`` calls
        this and, on leaving, `aclose`.
        """
        if self._owns_client and isinstance(self.client, UrlClient):
            await self.client.open()

    async def aclose(self) -> None:
        """Close the fallback store; the client stays open unless `from_url` made it."""
        if self._fallback is not None:
            await self._fallback.aclose()
        if self._owns_client and isinstance(self.client, UrlClient):
            await self.client.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def check(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Raise a `brace.redis.RedisError` unless this store can decide through Redis.

        Loads the scripts (on every primary of a cluster) and runs a decision that
        consumes nothing, within ``timeout`` seconds (5 by default). Raises
        `brace.redis.RedisAuthenticationError` when the server refuses the credentials,
        `brace.redis.RedisConnectionError` when it cannot be reached (or does not answer
        in time), `brace.redis.RedisBackendError` when the client does not run on the
        running backend (redis-py under trio) or must be opened first, and
        `brace.redis.ResponseError` / `brace.redis.RedisError` for anything else; the
        message names the cause. Call it at startup (the ASGI middleware's lifespan
        does) so that a misconfiguration stops the service instead of refusing every
        request. On success the store is available again at once.
        """
        timeout = _check_seconds(timeout, "timeout", zero=False)
        backend = current_backend()
        client = self.client
        backends: tuple[str, ...] | None = getattr(client, "backends", None)
        if backends is not None and backend not in backends:
            library = getattr(client, "library", type(client).__name__)
            raise RedisBackendError(
                f"the {library} client does not run on {backend} (it needs "
                f"{' or '.join(backends)}): use coredis on trio, or RedisStore.from_url, "
                "which picks the client for the running backend"
            )
        plan = self._plan(GCRA(1, 1.0))
        try:
            with anyio.fail_after(timeout):
                for script in (GCRA_SCRIPT, COUNTER, LOG, BATCH):
                    self._round_trips += 1
                    await client.script_load(script.text)
                self._script_loads += 4
                self._round_trips += 1
                reply = await client.evalsha(
                    plan.script.sha,
                    (plan.raw_prefix + b"brace-check",),
                    ("peek", 1, "", *plan.params),
                )
                _parse(reply, plan.limit)
        except TimeoutError as exc:
            error = check_error(TimeoutError(f"no answer within {timeout} s"), backend=backend)
            self._last_error = _text(error)  # raised, not logged: the caller sees it
            raise error from exc
        except Exception as exc:
            error = check_error(exc, backend=backend)
            self._last_error = _text(exc)
            raise error from exc
        self._outage.answered()

    def _redis_key(self, plan: _Plan, key: str) -> bytes:
        if len(key) < 128 and key.isascii():
            return plan.raw_prefix + key.encode()
        return plan.raw_prefix + encode_key(bound_key(key))

    async def _decide(self, policy: Policy, key: str, cost: int, mode: str) -> Decision:
        plan = self._plans.get(policy)
        if plan is None:
            plan = self._plan(policy)
        if key.__class__ is not str:
            check_key(key)
        if cost.__class__ is not int or cost < 0 or cost > plan.limit:
            policy.check_cost(cost)
        outage = self._outage
        if not outage.up and not outage.available(self._clock()):
            return await self._on_failure(plan, key, cost, mode)
        reply = await self._guarded(
            plan, self._redis_key(plan, key), (mode, cost, "", *plan.params)
        )
        if reply is None:
            return await self._on_failure(plan, key, cost, mode)
        return _parse(reply, plan.limit)

    async def _guarded(self, plan: _Plan, redis_key: bytes, args: Sequence[str | int]) -> object:
        """Run the plan's script within ``timeout``; ``None`` (counted) when Redis fails."""
        clock = self._clock
        started = clock()
        outage = self._outage
        probing = outage.start(started)  # a probe: the others keep away until it is done
        try:
            if self._in_flight and self._batches:
                reply = await self._join(_Call(plan.script, redis_key, args, _new_event()))
            elif self._batches:
                reply = await self._lead_alone(plan.script, redis_key, args)
            else:
                reply = await self._evaluate_in_time(plan.script, redis_key, args)
        except _TimedOut as exc:
            self._timeouts += 1
            self._failed(clock(), exc, "server")
            return None
        except Exception as exc:  # every client failure goes to on_error
            self._errors += 1
            scope = error_scope(exc)
            if scope == "call":
                self._call_errors += 1
                outage.call_failed(probing, clock())  # says nothing about Redis
            self._failed(clock(), exc, scope)
            return None
        finished = clock()
        outage.succeeded(started, finished)
        self._latencies.observe(finished - started)
        self._decisions += 1
        return reply

    # Coalescing. While one call is in flight, the calls made meanwhile queue up; when it
    # returns, the first of them leads them all to Redis as ONE call (one round trip),
    # while the next calls queue up behind. A lone call goes straight out, so a single
    # task pays nothing for this.

    async def _lead_alone(
        self, script: Script, redis_key: bytes, args: Sequence[str | int]
    ) -> object:
        self._in_flight = True
        try:
            return await self._evaluate_in_time(script, redis_key, args)
        finally:
            self._hand_over()

    async def _join(self, call: _Call) -> object:
        self._queue.append(call)
        try:
            await call.done.wait()
        except BaseException:
            if not call.taken:  # still queued: withdraw, nothing was sent
                self._queue.remove(call)
            elif call.leads is not None:  # the others depend on it: lead them anyway
                with anyio.CancelScope(shield=True):
                    await self._lead(call.leads)
            raise
        if call.leads is not None:  # woken to lead the calls queued behind the last batch
            await self._lead(call.leads)
        if call.error is not None:
            raise call.error
        return call.reply

    async def _lead(self, batch: list[_Call]) -> None:
        """Send a batch in one call, answer every call, hand over to the next batch."""
        try:
            # Shielded: the calls of other tasks ride on this one; bounded by timeout.
            replies: list[object] | None = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
                replies = await self._evaluate_batch(batch)
            if replies is None:  # the timeout cut it short
                error: Exception = _TimedOut(f"no answer within {self._timeout} s")
                for call in batch:
                    call.error = error
            else:
                for call, reply in zip(batch, replies, strict=True):
                    if isinstance(reply, Exception):
                        call.error = reply
                    else:
                        call.reply = reply
        except Exception as exc:
            for call in batch:
                call.error = exc
        finally:
            for call in batch:
                call.done.set()
            self._hand_over()

    def _hand_over(self) -> None:
        queue = self._queue
        if queue:
            self._queue = []
            for call in queue:
                call.taken = True
            queue[0].leads = queue
            queue[0].done.set()
        else:
            self._in_flight = False

    async def _evaluate_batch(self, batch: list[_Call]) -> list[object]:
        batches = self._batches
        assert batches is not None
        self._round_trips += 1
        replies = list(await batches([(call.script.sha, (call.key,), call.args) for call in batch]))
        missing = [
            i
            for i, reply in enumerate(replies)
            if isinstance(reply, Exception) and is_noscript(reply)
        ]
        if missing:
            for script in {batch[i].script for i in missing}:
                self._round_trips += 1
                await self.client.script_load(script.text)
                self._script_loads += 1
            self._round_trips += 1
            again = await batches(
                [(batch[i].script.sha, (batch[i].key,), batch[i].args) for i in missing]
            )
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    def _failed(self, now: float, exc: BaseException, scope: str) -> None:
        """Count a failure; a server failure makes Redis unavailable for a while."""
        if scope == "server":
            self._outage.server_failed(now)
        self._record(exc, scope)

    def _record(self, exc: BaseException, scope: str) -> None:
        """Keep ``exc`` as the last error; log the first of each kind, with its cause."""
        self._last_error = _text(exc)
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}:{scope}"
        if kind in self._logged or len(self._logged) >= _MAX_LOGGED:
            return
        self._logged.add(kind)
        cause = _describe(exc, self.client)
        if scope == "call":
            logger.warning(
                "%r: one decision failed (%s); it follows on_error=%r, other keys are "
                "not affected (logged once for this kind of error)",
                self,
                cause,
                self._on_error,
                exc_info=exc,
            )
        else:
            logger.error(
                "%r: Redis failed (%s); decisions follow on_error=%r for %s s, then Redis "
                "is tried again (logged once for this kind of error; see statistics())",
                self,
                cause,
                self._on_error,
                self._recovery_time,
                exc_info=None if isinstance(exc, _TimedOut) else exc,
            )

    async def _evaluate_in_time(
        self, script: Script, redis_key: bytes, args: Sequence[str | int]
    ) -> object:
        timeout = self._timeout
        if timeout is None:
            return await self._evaluate(script, redis_key, args)
        if _asyncio_timeout is not None and running_loop() is not None:
            # On asyncio (uvloop too), asyncio.timeout is a timer handle: it costs a
            # decision about 16 us where a cancel scope costs 40 (measured around a
            # redis-py PING). It nests with anyio's scopes (Python 3.11's uncancel()).
            deadline = _asyncio_timeout(timeout)
            try:
                async with deadline:
                    return await self._evaluate(script, redis_key, args)
            except TimeoutError:
                if deadline.expired():
                    raise _TimedOut(f"no answer within {timeout} s") from None
                raise
        with anyio.move_on_after(timeout):  # swallows only its own deadline
            return await self._evaluate(script, redis_key, args)
        raise _TimedOut(f"no answer within {timeout} s")

    async def _evaluate(
        self, script: Script, redis_key: bytes, args: Sequence[str | int]
    ) -> object:
        client = self.client
        keys = (redis_key,)
        self._round_trips += 1
        try:
            return await client.evalsha(script.sha, keys, args)
        except Exception as exc:
            if not is_noscript(exc):
                raise
        return await self._reload_and_run(script, keys, args)

    async def _reload_and_run(
        self, script: Script, keys: Sequence[bytes], args: Sequence[str | int]
    ) -> object:
        """After NOSCRIPT: ``SCRIPT LOAD``, then the ``EVALSHA`` again (two round trips)."""
        self._round_trips += 2
        await self.client.script_load(script.text)
        self._script_loads += 1
        return await self.client.evalsha(script.sha, keys, args)

    async def _on_failure(self, plan: _Plan, key: str, cost: int, mode: str) -> Decision:
        self._fallbacks += 1
        on_error = self._on_error
        if on_error == "fail_open":
            return Decision(True, plan.limit, plan.limit, 0.0, 0.0)
        if on_error == "fallback" and self._fallback is not None:
            local = plan.local
            local_limit = local.burst if isinstance(local, GCRA) else local.limit
            if cost <= local_limit:
                if mode == "hit":
                    return await self._fallback.hit(local, key, cost)
                return await self._fallback.peek(local, key, cost)
            limit = local_limit
        else:
            limit = plan.limit
        wait = self._closed_retry_after
        return Decision(False, limit, 0, wait, wait)

    async def _decide_at(
        self,
        policy: Policy,
        key: str,
        cost: int,
        now: float | None,
        *,
        mode: str = "hit",
        coalesce: bool = False,
    ) -> tuple[Decision, float]:
        """Test hook: run the script at time ``now`` (``None``: the server's ``TIME``).

        Returns the decision and the time the script used. Errors are raised, not
        handled by ``on_error``: this is for the differential and concurrency tests.
        ``coalesce=True`` (with ``now=None``) takes the path of a decision, batches
        included; a failure raises a ``RuntimeError`` naming the last error.
        """
        plan = self._plan(policy)
        check_key(key)
        policy.check_cost(cost)
        if mode not in ("hit", "peek"):
            raise ValueError(f"mode must be 'hit' or 'peek', got {mode!r}")
        at = "" if now is None else repr(float(now))
        redis_key = self._redis_key(plan, key)
        reply: object
        if coalesce and now is None:
            reply = await self._guarded(plan, redis_key, (mode, cost, at, *plan.params))
            if reply is None:
                raise RuntimeError(f"the decision failed: {self._last_error}")
        else:
            reply = await self._evaluate(plan.script, redis_key, (mode, cost, at, *plan.params))
        used = reply if type(reply) is bytes else str(reply).encode()
        return _parse(reply, plan.limit), float(used.rsplit(b" ", 1)[1])

    def statistics(self) -> RedisStoreStatistics:
        """A snapshot of the store's counters."""
        return RedisStoreStatistics(
            decisions=self._decisions,
            errors=self._errors,
            timeouts=self._timeouts,
            fallbacks=self._fallbacks,
            script_loads=self._script_loads,
            round_trips=self._round_trips,
            latency=self._outage.latency,
            available=self._outage.available(self._clock()),
            last_error=self._last_error,
            call_errors=self._call_errors,
        )

    def __repr__(self) -> str:
        return (
            f"RedisStore({self.client!r}, prefix={self._prefix!r}, "
            f"on_error={self._on_error!r}, nodes={self._nodes!r})"
        )


def _text(exc: BaseException) -> str:
    """``Type: message`` (some clients' ``repr`` leaves the message out)."""
    if isinstance(exc, _TimedOut):
        return str(exc)
    return describe_error(exc)


def _describe(exc: BaseException, client: object) -> str:
    """The cause of ``exc`` in words, with a hint when the backend is the likely cause."""
    text = _text(exc)
    backends: tuple[str, ...] | None = getattr(client, "backends", None)
    try:
        backend = current_backend()
    except RedisError:
        return text
    if backends is not None and backend not in backends:
        library = getattr(client, "library", "the client")
        text += f"; {library} does not run on {backend} (use coredis, or from_url)"
    return text
