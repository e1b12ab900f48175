"""The calls `brace.redis.RedisStore` makes: over brace's `LeanClient`, redis-py or coredis.

A `ScriptClient` runs a script by SHA1 and loads one. Its methods return awaitables: the
adapters below return the client's own coroutine instead of wrapping it in one more, so
a decision costs one frame less. Neither client library is imported here: an adapter is
chosen by the module the client's class comes from. `LeanClient` (brace's own, on the
RESP connection of ``brace._resp``) is a `ScriptClient` itself, with the optional
``evalsha_batch`` and ``evalsha_within``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import anyio
from typing_extensions import Self

from ._resp import Argument as RespArgument
from ._resp import (
    Connection,
    ConnectionOptions,
    ResponseError,
    encode,
    open_connection,
    parse_url,
)

__all__ = (
    "Batch",
    "LeanClient",
    "ScriptCall",
    "ScriptClient",
    "Within",
    "adapt_client",
    "is_noscript",
)

Argument = str | int | float
ScriptCall = tuple[str, Sequence[str], Sequence[Argument]]
"""``(sha, keys, args)`` of one EVALSHA."""
Batch = Callable[[Sequence[ScriptCall]], Awaitable[Sequence[object]]]
"""Send many EVALSHAs in one round trip; each reply, or the exception it raised."""
Within = Callable[[float, str, Sequence[str], Sequence[Argument]], Awaitable[object]]
"""``evalsha_within(timeout, sha, keys, args)``: EVALSHA or ``TimeoutError``."""


@runtime_checkable
class ScriptClient(Protocol):
    """The part of a Redis client a `brace.redis.RedisStore` uses.

    ``evalsha`` raises when the server does not know the script (redis-py and coredis
    raise their ``NoScriptError``; any exception named so, or whose message says
    ``NOSCRIPT``, is recognised) and the store then calls ``script_load`` and retries.

    A client may also offer ``evalsha_batch(calls)`` (see `Batch`): many EVALSHAs in one
    round trip (a pipeline), each reply or the exception it raised, in order. The store
    then coalesces the decisions asked while one is in flight. And it may offer
    ``evalsha_within(timeout, sha, keys, args)``: ``evalsha`` raising ``TimeoutError``
    when no reply comes within ``timeout`` seconds, which the store then uses instead of
    a cancel scope of its own (`LeanClient` does).
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


class LeanClient:
    """brace's own Redis client: one pipelined connection, on anyio (asyncio and trio).

    Made for `brace.redis.RedisStore`'s one job (``EVALSHA``, ``SCRIPT LOAD`` and
    pipelines of them), with plain `execute` and `pipeline` for anything else. Requests
    of concurrent tasks share one socket, pipelined in order; a task cancelled while
    its reply is on the way leaves the connection in step (the reply is read and
    dropped). The connection opens on the first request, and again on the next one
    after it failed: no ``async with`` is needed, but `aclose` (or ``async with``)
    closes the socket. Errors: `brace.redis.ResponseError` for an error reply,
    `brace.redis.RedisConnectionError` (a `ConnectionError`) when the connection fails.

    Args:
        host: the server's host name or address.
        port: the server's TCP port.
        path: a unix socket's path instead of ``host`` and ``port``.
        username: the ``AUTH`` user on connecting (needs ``password``).
        password: the ``AUTH`` password on connecting.
        db: the database to ``SELECT`` on connecting (an int >= 0).
        stale_after: seconds after which a connection whose oldest abandoned request
            (its task cancelled, as by a timeout) still has no reply is dropped and a
            new one opened (> 0): a server that went silent does not hold every later
            request behind it.
    """

    __slots__ = ("_connecting", "_connection", "options", "stale_after")

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        stale_after: float = 5.0,
    ) -> None:
        self.options = ConnectionOptions(
            host, port, path=path, username=username, password=password, db=db
        )
        if isinstance(stale_after, bool) or not isinstance(stale_after, (int, float)):
            raise TypeError(f"stale_after must be a number of seconds, got {stale_after!r}")
        if not stale_after > 0:
            raise ValueError(f"stale_after must be > 0 seconds, got {stale_after!r}")
        self.stale_after = float(stale_after)
        self._connection: Connection | None = None
        self._connecting: anyio.Event | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        db: int | None = None,
        stale_after: float = 5.0,
    ) -> Self:
        """A client for ``redis://[[user]:password@]host[:port][/db]`` or ``unix:///path``.

        ``username``, ``password`` and ``db`` given here win over the URL's.
        """
        options = parse_url(url)
        return cls(
            options.host,
            options.port,
            path=options.path,
            username=options.username if username is None else username,
            password=options.password if password is None else password,
            db=options.db if db is None else db,
            stale_after=stale_after,
        )

    async def _connect(self) -> Connection:
        while True:
            connection = self._connection
            if connection is not None:
                if connection.broken is None and not connection.stale(
                    time.monotonic(), self.stale_after
                ):
                    return connection
                connection.close()
                self._connection = None
            connecting = self._connecting
            if connecting is not None:  # another task is connecting: use its connection
                await connecting.wait()
                continue
            self._connecting = event = anyio.Event()
            try:
                self._connection = await open_connection(self.options)
            finally:
                self._connecting = None
                event.set()

    async def execute(self, *args: RespArgument) -> object:
        """One command's reply; an error reply raises `brace.redis.ResponseError`."""
        connection = self._connection
        if connection is None or connection.broken is not None or connection.waiting:
            connection = await self._connect()
        reply = (await connection.request(encode(args), 1))[0]
        if reply.__class__ is ResponseError:
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Sequence[RespArgument]]) -> list[object]:
        """Many commands in one write; each reply in order (an error reply as a value)."""
        if not commands:
            return []
        connection = self._connection
        if connection is None or connection.broken is not None or connection.waiting:
            connection = await self._connect()
        return await connection.request(b"".join(map(encode, commands)), len(commands))

    def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Argument]) -> Awaitable[object]:
        """``EVALSHA``; ``NOSCRIPT`` raises a `brace.redis.ResponseError`."""
        return self.execute("EVALSHA", sha, len(keys), *keys, *args)

    def script_load(self, script: str) -> Awaitable[object]:
        """``SCRIPT LOAD``: the script's SHA1."""
        return self.execute("SCRIPT", "LOAD", script)

    async def evalsha_within(
        self, timeout: float, sha: str, keys: Sequence[str], args: Sequence[Argument]
    ) -> object:
        """`evalsha`, raising ``TimeoutError`` if no reply comes within ``timeout`` s.

        The store calls this instead of wrapping `evalsha` in a cancel scope: on asyncio
        a timer costs less. The abandoned reply is read and dropped when it comes.
        """
        connection = self._connection
        if connection is None or connection.broken is not None or connection.waiting:
            connection = await self._connect()
        payload = encode(("EVALSHA", sha, len(keys), *keys, *args))
        reply = (await connection.request(payload, 1, timeout))[0]
        if reply.__class__ is ResponseError:
            raise reply
        return reply

    def evalsha_batch(self, calls: Sequence[ScriptCall]) -> Awaitable[Sequence[object]]:
        """Many EVALSHAs in one write (one round trip); each reply or error, in order."""
        return self.pipeline(
            [("EVALSHA", sha, len(keys), *keys, *args) for sha, keys, args in calls]
        )

    async def aclose(self) -> None:
        """Close the connection (a later request opens a new one)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"LeanClient({self.options!r})"


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
