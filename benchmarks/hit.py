"""Issue 2: keyed limiting, ``await RateLimiter.hit(key)`` on the in-memory store.

Each operation hits the next of 1,000 keys (``user:0`` ... ``user:999``, cycling), with a
limit so high (a billion per second) that every hit is admitted, so what is timed is the
per-request price of keyed limiting on a server that is not overloaded: find or create the
key's state, decide, store.

At a billion per second a GCRA key is back at rest (full) a nanosecond after each hit,
so a store that drops keys at rest (brace's, to stay bounded) re-creates the key on every
hit; the extra ``bucket_kept`` case (one token a second, burst a billion) shows the cost
when keys keep live state, as they do under a real limit.

- brace: ``RateLimiter`` over ``TokenBucket`` (GCRA: one float per key), over
  ``SlidingWindow`` (counter) and over ``SlidingWindow(exact=True)`` (log);
- limits 5 (``MemoryStorage``): ``FixedWindowRateLimiter``,
  ``SlidingWindowCounterRateLimiter``, ``MovingWindowRateLimiter``, ``hit(item, key)``; the
  sync API (usable from any loop: it never blocks) and the ``limits.aio`` one (asyncio
  only: ``asyncio.Lock`` and an asyncio expiry task);
- pyrate-limiter 4: a ``Limiter`` over a per-key ``BucketFactory`` written as its README's
  "Custom routing with BucketFactory" shows, with ``InMemoryBucket`` (log) or
  ``StateBucket`` + ``TokenBucket`` (GCRA) buckets; ``try_acquire(key, blocking=False)``
  (sync) and ``try_acquire_async`` (asyncio only: takes an ``asyncio.Lock``);
- throttled-py 3: ``Throttled(using=..., quota=per_sec(...), store=MemoryStore())``,
  ``limit(key)``, token bucket and sliding window, sync and ``throttled.asyncio``
  (asyncio only: ``asyncio.Lock``).

Sync peers are called directly from the async loop (that is how one would use them in an
async service: they never block); brace's ``hit`` is a coroutine and is awaited.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from ._harness import Case, Op, Role, Target, brace_attr, import_optional

KEYS = tuple(f"user:{i}" for i in range(1000))
HUGE_RATE = 1e9
HUGE_LIMIT = 10**9
ASYNCIO = frozenset({"asyncio"})


def _keys() -> Iterator[str]:
    return itertools.cycle(KEYS)


# --- brace ---------------------------------------------------------------------------


def _brace_limiter(kind: str) -> Any:
    if kind == "bucket":
        template: Any = brace_attr("TokenBucket")(rate=HUGE_RATE, per=1.0, burst=HUGE_LIMIT)
    elif kind == "bucket_kept":
        # One token a second, a burst of a billion: never refuses here, and a key's state
        # never comes back to rest, so the store updates it in place (no drop / re-insert).
        template = brace_attr("TokenBucket")(rate=1.0, per=1.0, burst=HUGE_LIMIT)
    elif kind == "window":
        template = brace_attr("SlidingWindow")(limit=HUGE_LIMIT, window=1.0)
    else:
        template = brace_attr("SlidingWindow")(limit=HUGE_LIMIT, window=1.0, exact=True)
    return brace_attr("RateLimiter")(template, max_keys=100_000)


def _brace_case(kind: str) -> Any:
    @asynccontextmanager
    async def setup() -> AsyncIterator[Op]:
        limiter = _brace_limiter(kind)
        for key in KEYS:
            decision = await limiter.hit(key)
            if not decision.allowed:
                raise AssertionError("brace refused a hit")
        keys = _keys()

        async def op(n: int) -> None:
            hit = limiter.hit
            for key in itertools.islice(keys, n):
                await hit(key)

        yield op

    return setup


# --- limits --------------------------------------------------------------------------


def _limits_case(strategy: str, *, aio: bool) -> Any:
    @asynccontextmanager
    async def setup() -> AsyncIterator[Op]:
        limits = import_optional("limits")
        item = limits.RateLimitItemPerSecond(HUGE_LIMIT)
        keys = _keys()
        if aio:
            storage = limits.aio.storage.MemoryStorage()
            limiter = getattr(limits.aio.strategies, strategy)(storage)
            for key in KEYS:
                if not await limiter.hit(item, key):
                    raise AssertionError("limits refused a hit")

            async def op(n: int) -> None:
                hit = limiter.hit
                for key in itertools.islice(keys, n):
                    await hit(item, key)

            try:
                yield op
            finally:
                timer = storage.timer
                if timer is not None and not timer.done():
                    timer.cancel()
        else:
            storage = limits.storage.MemoryStorage()
            limiter = getattr(limits.strategies, strategy)(storage)
            for key in KEYS:
                if not limiter.hit(item, key):
                    raise AssertionError("limits refused a hit")

            async def sync_op(n: int) -> None:
                hit = limiter.hit
                for key in itertools.islice(keys, n):
                    hit(item, key)

            try:
                yield sync_op
            finally:
                storage.timer.cancel()

    return setup


# --- pyrate-limiter ------------------------------------------------------------------


def _pyrate_limiter(kind: str) -> Any:
    pyrate = import_optional("pyrate_limiter")

    def make_bucket() -> Any:
        rates = [pyrate.Rate(HUGE_LIMIT, pyrate.Duration.SECOND)]
        if kind == "log":
            return pyrate.InMemoryBucket, (rates,), {}
        return pyrate.StateBucket, (rates,), {"algorithm": pyrate.TokenBucket()}

    class PerNameFactory(pyrate.BucketFactory):  # type: ignore[misc,name-defined]
        """The per-key routing factory of pyrate-limiter's README."""

        def __init__(self) -> None:
            self.clock = pyrate.MonotonicClock()
            self.buckets: dict[str, Any] = {}

        def wrap_item(self, name: str, weight: int = 1) -> Any:
            return pyrate.RateItem(name, self.clock.now(), weight=weight)

        def get(self, item: Any) -> Any:
            if item.name not in self.buckets:
                bucket_class, args, kwargs = make_bucket()
                self.buckets[item.name] = self.create(bucket_class, *args, **kwargs)
            return self.buckets[item.name]

    return pyrate.Limiter(PerNameFactory())


def _pyrate_case(kind: str, *, aio: bool) -> Any:
    @asynccontextmanager
    async def setup() -> AsyncIterator[Op]:
        limiter = _pyrate_limiter(kind)
        keys = _keys()
        try:
            if aio:
                for key in KEYS:
                    if not await limiter.try_acquire_async(key, blocking=False):
                        raise AssertionError("pyrate-limiter refused a hit")

                async def op(n: int) -> None:
                    try_acquire = limiter.try_acquire_async
                    for key in itertools.islice(keys, n):
                        await try_acquire(key, blocking=False)

                yield op
            else:
                for key in KEYS:
                    if not limiter.try_acquire(key, blocking=False):
                        raise AssertionError("pyrate-limiter refused a hit")

                async def sync_op(n: int) -> None:
                    try_acquire = limiter.try_acquire
                    for key in itertools.islice(keys, n):
                        try_acquire(key, blocking=False)

                yield sync_op
        finally:
            limiter.close()

    return setup


# --- throttled-py --------------------------------------------------------------------


def _throttled_case(using: str, *, aio: bool) -> Any:
    @asynccontextmanager
    async def setup() -> AsyncIterator[Op]:
        throttled = import_optional("throttled")
        package = throttled.asyncio if aio else throttled
        limiter = package.Throttled(
            using=using,
            quota=throttled.rate_limiter.per_sec(HUGE_LIMIT, burst=HUGE_LIMIT),
            store=package.MemoryStore(options={"MAX_SIZE": 10_000}),
        )
        keys = _keys()
        if aio:
            for key in KEYS:
                if (await limiter.limit(key)).limited:
                    raise AssertionError("throttled-py refused a hit")

            async def op(n: int) -> None:
                limit = limiter.limit
                for key in itertools.islice(keys, n):
                    await limit(key)

            yield op
        else:
            for key in KEYS:
                if limiter.limit(key).limited:
                    raise AssertionError("throttled-py refused a hit")

            async def sync_op(n: int) -> None:
                limit = limiter.limit
                for key in itertools.islice(keys, n):
                    limit(key)

            yield sync_op

    return setup


def _case(key: str, label: str, setup: Any, **kwargs: Any) -> Case:
    role: Role = "brace" if key.startswith("hit.brace") else "peer"
    return Case("hit", key, label, role, setup, **kwargs)


CASES = (
    _case(
        "hit.brace.bucket",
        "brace: await RateLimiter(TokenBucket).hit(key)",
        _brace_case("bucket"),
        brace=("RateLimiter", "TokenBucket"),
    ),
    _case(
        "hit.brace.bucket_kept",
        "brace: same, TokenBucket(rate=1/s, burst=1e9): key state kept",
        _brace_case("bucket_kept"),
        brace=("RateLimiter", "TokenBucket"),
    ),
    _case(
        "hit.brace.window",
        "brace: await RateLimiter(SlidingWindow).hit(key)",
        _brace_case("window"),
        brace=("RateLimiter", "SlidingWindow"),
    ),
    _case(
        "hit.brace.window_exact",
        "brace: await RateLimiter(SlidingWindow(exact=True)).hit(key)",
        _brace_case("exact"),
        brace=("RateLimiter", "SlidingWindow"),
    ),
    *(
        _case(
            f"hit.limits.{short}",
            f"limits: {strategy}.hit (sync)",
            _limits_case(strategy, aio=False),
            requires=("limits",),
            settle=0.03,
        )
        for short, strategy in (
            ("fixed", "FixedWindowRateLimiter"),
            ("counter", "SlidingWindowCounterRateLimiter"),
            ("moving", "MovingWindowRateLimiter"),
        )
    ),
    *(
        _case(
            f"hit.limits_aio.{short}",
            f"limits.aio: await {strategy}.hit",
            _limits_case(strategy, aio=True),
            requires=("limits",),
            backends=ASYNCIO,
            settle=0.2 if short == "moving" else 0.03,
        )
        for short, strategy in (
            ("fixed", "FixedWindowRateLimiter"),
            ("counter", "SlidingWindowCounterRateLimiter"),
            ("moving", "MovingWindowRateLimiter"),
        )
    ),
    _case(
        "hit.pyrate.log",
        "pyrate-limiter: InMemoryBucket try_acquire (sync)",
        _pyrate_case("log", aio=False),
        requires=("pyrate_limiter",),
    ),
    _case(
        "hit.pyrate.gcra",
        "pyrate-limiter: StateBucket(TokenBucket) try_acquire (sync)",
        _pyrate_case("gcra", aio=False),
        requires=("pyrate_limiter",),
    ),
    _case(
        "hit.pyrate_aio.log",
        "pyrate-limiter: InMemoryBucket await try_acquire_async",
        _pyrate_case("log", aio=True),
        requires=("pyrate_limiter",),
        backends=ASYNCIO,
    ),
    _case(
        "hit.pyrate_aio.gcra",
        "pyrate-limiter: StateBucket(TokenBucket) await try_acquire_async",
        _pyrate_case("gcra", aio=True),
        requires=("pyrate_limiter",),
        backends=ASYNCIO,
    ),
    *(
        _case(
            f"hit.throttled.{using}",
            f"throttled-py: Throttled({using}).limit (sync)",
            _throttled_case(using, aio=False),
            requires=("throttled",),
        )
        for using in ("token_bucket", "sliding_window")
    ),
    *(
        _case(
            f"hit.throttled_aio.{using}",
            f"throttled-py: await throttled.asyncio.Throttled({using}).limit",
            _throttled_case(using, aio=True),
            requires=("throttled",),
            backends=ASYNCIO,
        )
        for using in ("token_bucket", "sliding_window")
    ),
)

FLOORS = ("floor.await",)

PEERS = tuple(case.key for case in CASES if case.role == "peer")
ASYNC_PEERS = tuple(key for key in PEERS if "_aio." in key)

TARGETS = tuple(
    Target(
        "hit",
        f"RateLimiter({template}).hit <= 1/3 x the fastest keyed peer",
        f"hit.brace.{kind}",
        PEERS,
        1 / 3,
    )
    for kind, template in (("bucket", "TokenBucket"), ("window", "SlidingWindow"))
) + tuple(
    Target(
        "hit",
        f"(informative) RateLimiter({template}).hit <= 1/3 x the fastest async keyed peer",
        f"hit.brace.{kind}",
        ASYNC_PEERS,
        1 / 3,
        backends=ASYNCIO,
    )
    for kind, template in (("bucket", "TokenBucket"), ("window", "SlidingWindow"))
)
