"""The two calls `brace.redis.RedisStore` makes, over redis-py's asyncio client or coredis.

A `ScriptClient` runs a script by SHA1 and loads one. Its methods return awaitables: the
adapters below return the client's own coroutine instead of wrapping it in one more, so
a decision costs one frame less. Neither client library is imported here: an adapter is
chosen by the module the client's class comes from.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ("Batch", "ScriptCall", "ScriptClient", "adapt_client", "is_noscript")

Argument = str | int | float
ScriptCall = tuple[str, Sequence[str], Sequence[Argument]]
"""``(sha, keys, args)`` of one EVALSHA."""
Batch = Callable[[Sequence[ScriptCall]], Awaitable[Sequence[object]]]
"""Send many EVALSHAs in one round trip; each reply, or the exception it raised."""


@runtime_checkable
class ScriptClient(Protocol):
    """The part of a Redis client a `brace.redis.RedisStore` uses.

    ``evalsha`` raises when the server does not know the script (redis-py and coredis
    raise their ``NoScriptError``; any exception named so, or whose message says
    ``NOSCRIPT``, is recognised) and the store then calls ``script_load`` and retries.

    A client may also offer ``evalsha_batch(calls)`` (see `Batch`): many EVALSHAs in one
    round trip (a pipeline), each reply or the exception it raised, in order. The store
    then coalesces the decisions asked while one is in flight.
    """

    def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Argument]) -> Awaitable[object]:
        """``EVALSHA sha len(keys) *keys *args``: the script's reply."""
        ...

    def script_load(self, script: str) -> Awaitable[object]:
        """``SCRIPT LOAD script`` (on every primary, for a cluster client)."""
        ...


class RedisPyClient:
    """A redis-py ``redis.asyncio.Redis`` / ``RedisCluster`` as a `ScriptClient` (asyncio only)."""

    __slots__ = ("client",)

    def __init__(self, client: Any) -> None:
        self.client = client

    def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Argument]) -> Awaitable[object]:
        return self.client.evalsha(sha, len(keys), *keys, *args)  # type: ignore[no-any-return]

    def script_load(self, script: str) -> Awaitable[object]:
        return self.client.script_load(script)  # type: ignore[no-any-return]

    async def evalsha_batch(self, calls: Sequence[ScriptCall]) -> Sequence[object]:
        """One pipeline (no MULTI): one round trip for every call."""
        pipe = self.client.pipeline(transaction=False)
        for sha, keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        replies: Sequence[object] = await pipe.execute(raise_on_error=False)
        return replies

    def __repr__(self) -> str:
        return f"RedisPyClient({self.client!r})"


class CorediscClient:
    """A coredis ``Redis`` / ``RedisCluster`` as a `ScriptClient` (asyncio and trio).

    coredis wants its client entered (``async with client:``) before use.
    """

    __slots__ = ("client",)

    def __init__(self, client: Any) -> None:
        self.client = client

    def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Argument]) -> Awaitable[object]:
        return self.client.evalsha(sha, keys=keys, args=args)  # type: ignore[no-any-return]

    def script_load(self, script: str) -> Awaitable[object]:
        return self.client.script_load(script)  # type: ignore[no-any-return]

    async def evalsha_batch(self, calls: Sequence[ScriptCall]) -> Sequence[object]:
        """One pipeline (no MULTI): one round trip for every call."""
        async with self.client.pipeline(transaction=False, raise_on_error=False) as pipe:
            for sha, keys, args in calls:
                pipe.evalsha(sha, keys=keys, args=args)
        replies: Sequence[object] = pipe.results
        return replies

    def __repr__(self) -> str:
        return f"CorediscClient({self.client!r})"


def adapt_client(client: object) -> ScriptClient:
    """A `ScriptClient` for a redis-py asyncio or coredis client, or one already."""
    module = type(client).__module__
    if module.startswith("redis.asyncio"):
        return RedisPyClient(client)
    if module == "redis" or module.startswith("redis."):
        raise TypeError(
            f"client must be an asyncio Redis client (redis.asyncio.Redis), got the "
            f"synchronous {type(client).__qualname__} from {module}"
        )
    if module == "coredis" or module.startswith("coredis."):
        return CorediscClient(client)
    if isinstance(client, ScriptClient):
        return client
    raise TypeError(
        "client must be a redis.asyncio.Redis, a coredis.Redis (or their cluster clients) "
        f"or a brace.redis.ScriptClient, got {type(client).__name__}"
    )


def is_noscript(exc: BaseException) -> bool:
    """Whether ``exc`` says the server does not know the script (NOSCRIPT)."""
    if any(cls.__name__ == "NoScriptError" for cls in type(exc).__mro__):
        return True
    return "NOSCRIPT" in str(exc)
