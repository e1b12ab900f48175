"""Key text is data: no key, and no error of one call, changes another key's decisions.

A key an attacker chooses (a lone surrogate, NUL, a megabyte) must be decided like any
other and must never make the Redis store behave as if Redis were down: that would lift
every limit (``fail_open``) or refuse everyone (``fail_closed``). An error that belongs to
one call is that call's alone; only transport and server errors make the store
unavailable.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import brace
from brace._core.window import SlidingWindowCounter
from brace._keys import MAX_KEY_LENGTH
from brace.redis import OnError, RedisStore
from brace.redis._clients import key_slot
from brace.redis._errors import check_error, describe_error, error_scope, reply_code
from redis_server import BACKENDS, COREDIS_LEAK, command, open_client, run

pytest_plugins = ("redis_fixtures",)
pytestmark = [
    pytest.mark.filterwarnings(COREDIS_LEAK),
    pytest.mark.usefixtures("collect_coredis_garbage"),
]

MEGABYTE_KEY = "k" * (1 << 20)
ON_ERRORS: list[OnError] = ["fail_closed", "fail_open", "fallback"]


@pytest.mark.parametrize("on_error", ON_ERRORS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_surrogate_and_a_megabyte_key_leave_bob_alone(
    backend: str, on_error: OnError, redis_port: int
) -> None:
    """After a lone surrogate and a 1 MB key, bob's 3/minute gives 3 True then 3 False."""

    async def main() -> None:
        async with RedisStore.from_url(
            f"redis://127.0.0.1:{redis_port}/0", on_error=on_error
        ) as store:
            limiter = brace.RateLimiter(brace.SlidingWindow(limit=3, window=60.0), store=store)
            assert (await limiter.hit("\ud800")).allowed
            assert (await limiter.hit(MEGABYTE_KEY)).allowed
            assert [(await limiter.hit("bob")).allowed for _ in range(6)] == [True] * 3 + [
                False
            ] * 3
            stats = store.statistics()
            assert stats.errors == stats.fallbacks == 0, stats
            assert stats.available

    run(backend, main)
    # Bounded in Redis: the megabyte key is held as a digest of MAX_KEY_LENGTH characters.
    sizes = [len(key) for key in command(redis_port, "KEYS", "*").split(b"\r\n") if b":" in key]
    assert sizes
    assert max(sizes) < MAX_KEY_LENGTH + 64


class _Faulty:
    """A client that fails the calls of one Redis key with ``error``; others go through."""

    def __init__(self, inner: Any, bad: bytes, error: Exception) -> None:
        self.inner = inner
        self.bad = bad
        self.error = error

    async def evalsha(self, sha: str, keys: Sequence[Any], args: Sequence[Any]) -> object:
        if self.bad in keys:
            raise self.error
        return await self.inner.evalsha(sha, keys, args)

    def script_load(self, script: str) -> Any:
        return self.inner.script_load(script)


CALL_ERRORS = [
    pytest.param(TypeError("unsupported argument"), id="TypeError"),
    pytest.param(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates"), id="encoding"),
]


@pytest.mark.parametrize("on_error", ON_ERRORS)
@pytest.mark.parametrize("error", CALL_ERRORS)
def test_an_error_of_one_call_is_that_calls_alone(
    error: Exception, on_error: OnError, redis_port: int
) -> None:
    """A call's own error follows on_error for it alone: bob's decisions stay exact."""

    async def main() -> None:
        async with open_client("redis-py", redis_port) as client:
            probe = RedisStore(client)
            policy = SlidingWindowCounter(3, 60.0)
            bad = probe.key(policy, "mallory").encode()
            from brace.redis._clients import adapt_client

            store = RedisStore(
                _Faulty(adapt_client(client), bad, error),
                on_error=on_error,
                recovery_time=60.0,
            )
            limiter = brace.RateLimiter(brace.SlidingWindow(limit=3, window=60.0), store=store)
            for _ in range(3):
                await limiter.hit("mallory")
            assert [(await limiter.hit("bob")).allowed for _ in range(6)] == [True] * 3 + [
                False
            ] * 3
            stats = store.statistics()
            assert stats.call_errors == stats.errors == stats.fallbacks == 3
            assert stats.available
            assert store._outage.up  # no outage: the errors were the calls' own

    run("asyncio", main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_error_reply_on_one_key_spares_the_batch(backend: str, redis_port: int) -> None:
    """A key holding the wrong type (WRONGTYPE) fails alone, coalesced or not."""
    policy = SlidingWindowCounter(1, 60.0)

    async def main() -> None:
        async with RedisStore.from_url(
            f"redis://127.0.0.1:{redis_port}/0", on_error="fail_open", recovery_time=60.0
        ) as store:
            bad = store.key(policy, "bad")
            assert command(redis_port, "RPUSH", bad, "x").startswith(b":1")
            decisions: dict[str, brace.Decision] = {}

            async def decide(key: str) -> None:
                decisions[key] = await store.hit(policy, key)

            async with anyio.create_task_group() as group:
                for i in range(30):
                    group.start_soon(decide, f"k{i}")
                group.start_soon(decide, "bad")
            assert decisions["bad"].allowed  # fail_open, for that call
            assert all(decisions[f"k{i}"].allowed for i in range(30))
            assert not any([(await store.hit(policy, f"k{i}")).allowed for i in range(30)])
            stats = store.statistics()
            assert stats.call_errors == 1, stats
            assert stats.available
            assert "WRONGTYPE" in (stats.last_error or "")

    run(backend, main)


def test_only_transport_and_server_errors_make_redis_unavailable() -> None:
    """Errors are sorted: one call's (arguments, encoding, WRONGTYPE) or the server's."""
    import redis.exceptions

    assert error_scope(TypeError("x")) == "call"
    assert error_scope(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "x")) == "call"
    assert error_scope(redis.exceptions.ResponseError("WRONGTYPE Operation")) == "call"
    assert error_scope(redis.exceptions.DataError("Invalid input")) == "call"
    assert error_scope(redis.exceptions.ConnectionError("refused")) == "server"
    assert error_scope(redis.exceptions.TimeoutError("slow")) == "server"
    assert error_scope(redis.exceptions.AuthenticationError("invalid")) == "server"
    assert error_scope(redis.exceptions.ResponseError("WRONGPASS invalid")) == "server"
    assert error_scope(redis.exceptions.ResponseError("LOADING dataset")) == "server"
    assert error_scope(redis.exceptions.ResponseError("OOM command not allowed")) == "server"
    assert error_scope(redis.exceptions.ReadOnlyError("READONLY replica")) == "server"
    assert error_scope(OSError("unreachable")) == "server"
    assert error_scope(RuntimeError("no running event loop")) == "server"


# Error replies as a server sends them (after the leading "-"), and where each belongs.
_REPLIES = [
    ("WRONGTYPE Operation against a key holding the wrong kind of value", "call"),
    ("ERR Error running script (call to f_x): @user_script:1: bad", "call"),
    ("EXECABORT Transaction discarded because of previous errors.", "call"),
    ("NOSCRIPT No matching script. Please use EVAL.", "server"),
    ("LOADING Redis is loading the dataset in memory", "server"),
    ("BUSY Redis is busy running a script.", "server"),
    ("OOM command not allowed when used memory > 'maxmemory'.", "server"),
    ("READONLY You can't write against a read only replica.", "server"),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", "server"),
    ("CLUSTERDOWN The cluster is down", "server"),
    ("TRYAGAIN Multiple keys request during rehashing of slot", "server"),
    ("MOVED 3999 127.0.0.1:6381", "server"),
    ("ASK 3999 127.0.0.1:6381", "server"),
    ("CROSSSLOT Keys in request don't hash to the same slot", "server"),
    ("MISCONF Redis is configured to save RDB snapshots, but it's not able to persist", "server"),
    ("NOAUTH Authentication required.", "server"),
    ("WRONGPASS invalid username-password pair or user is disabled.", "server"),
    ("NOPERM User default has no permissions to run the 'evalsha' command", "server"),
]


def _parsed(library: str, reply: str) -> BaseException:
    """The exception ``library``'s own parser makes of the error reply ``reply``."""
    if library == "redis-py":
        from redis._parsers.base import BaseParser

        error: BaseException = BaseParser.parse_error(reply)  # type: ignore[no-untyped-call]
        return error
    from coredis.parser import Parser

    return Parser().parse_error(reply)


@pytest.mark.parametrize("library", ["redis-py", "coredis"])
@pytest.mark.parametrize(("reply", "scope"), _REPLIES, ids=[r.split()[0] for r, _ in _REPLIES])
def test_each_clients_errors_are_sorted_by_the_servers_reply(
    library: str, reply: str, scope: str
) -> None:
    """The clients turn some replies into classes and drop the reply's first word
    (coredis' ``WrongTypeError("Operation against...")``, redis-py's ``ReadOnlyError``):
    an error is still sorted by that word, and its text still names it."""
    error = _parsed(library, reply)
    assert error_scope(error) == scope, (type(error), str(error))
    code = reply.split()[0]
    assert reply_code(error) == code
    text = describe_error(error)
    assert text.startswith(f"{type(error).__name__}: {code} "), text
    assert text.endswith(reply.split(maxsplit=1)[1]), text
    assert check_error(error, backend="asyncio").args[0].count(code) == 1


_CHARACTERS = st.one_of(
    st.sampled_from(["\x00", "\ud800", "\udfff", "{", "}", ":", "é", "\U0001f600"]),
    st.characters(codec=None, categories=["Cs", "Cc", "L", "N", "P"]),
)
_KEYS = st.one_of(
    st.text(_CHARACTERS, max_size=20),
    st.text(_CHARACTERS, min_size=MAX_KEY_LENGTH - 2, max_size=MAX_KEY_LENGTH + 2),
    st.builds(lambda tail: MEGABYTE_KEY + tail, st.text(_CHARACTERS, max_size=3)),
)


async def _pattern(store: brace.RateLimitStore, hostile: list[str], normal: str) -> list[bool]:
    limiter = brace.RateLimiter(brace.SlidingWindow(limit=3, window=60.0), store=store)
    allowed = [(await limiter.hit(key)).allowed for key in hostile]
    return allowed + [(await limiter.hit(normal)).allowed for _ in range(4)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzzed_keys_decide_as_in_memory(backend: str, redis_port: int) -> None:
    """Any text keys on a real Redis decide exactly as on the memory store, bob's too."""

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(hostile=st.lists(_KEYS, min_size=1, max_size=6))
    def check(hostile: list[str]) -> None:
        async def main() -> tuple[list[bool], list[bool]]:
            prefix = uuid.uuid4().hex
            async with RedisStore.from_url(
                f"redis://127.0.0.1:{redis_port}/0", prefix=prefix, on_error="fail_open"
            ) as store:
                remote = await _pattern(store, hostile, "bob")
                stats = store.statistics()
                assert stats.errors == stats.fallbacks == 0, stats
            local = await _pattern(brace.MemoryStore(), hostile, "bob")
            return remote, local

        remote, local = run(backend, main)
        assert remote == local
        assert remote[-4:] == [True, True, True, False]

    check()


class _MigratingCluster:
    """A cluster client whose node answers a script over several keys ``TRYAGAIN`` while
    ``moving`` (as during a slot migration), and any one-key script; it records calls."""

    def __init__(self) -> None:
        self.moving = True
        self.hold: anyio.Event | None = None
        self.calls: list[int] = []  # the keys of each EVALSHA

    async def evalsha(self, sha: str, keys: Sequence[Any], args: Sequence[Any]) -> object:
        self.calls.append(len(keys))
        if self.hold is not None:
            await self.hold.wait()
        if len(keys) > 1 and self.moving:
            from coredis.parser import Parser

            raise Parser().parse_error("TRYAGAIN Multiple keys request during rehashing of slot")
        if len(keys) > 1:
            return "\n".join("1 5 0 0" for _ in keys)
        return b"1 5 0 0"

    async def script_load(self, script: str) -> object:
        return "sha"


async def test_a_migrating_slot_gets_its_calls_one_by_one() -> None:
    """A batch of several keys of one slot answered ``TRYAGAIN`` is sent again call by
    call, and so are that slot's next batches for a while; a batch cancelled (the store's
    timeout, while the client retried) marks its slot too; the marks are bounded."""
    from brace.redis import _clients
    from brace.redis._clients import CorediscClient
    from brace.redis._scripts import COUNTER

    fake = _MigratingCluster()
    adapter = CorediscClient(fake, cluster=True)
    calls = [(COUNTER.sha, [f"{{t}}k{i}".encode()], ["hit", "1", "", "5", "60"]) for i in range(3)]
    replies = await adapter.evalsha_batch(calls)
    assert replies == [b"1 5 0 0"] * 3  # each call alone, after the batch's TRYAGAIN
    assert fake.calls == [3, 1, 1, 1]
    fake.calls.clear()
    fake.moving = False
    await adapter.evalsha_batch(calls)
    assert fake.calls == [1, 1, 1]  # the slot is still marked: no batch is tried
    adapter._moving.clear()
    await adapter.evalsha_batch(calls)
    assert fake.calls == [1, 1, 1, 3]  # unmarked: one batch again
    fake.hold = anyio.Event()
    with anyio.move_on_after(1):
        await adapter.evalsha_batch(calls)
    assert list(adapter._moving) == [key_slot(b"{t}k0")]  # cancelled: marked
    fake.hold = None
    adapter._moving.clear()
    for slot in range(_clients._MAX_MOVING + 5):
        adapter._mark_moving(slot)
    assert len(adapter._moving) == _clients._MAX_MOVING
    assert min(adapter._moving) == 5  # the oldest marks went first
