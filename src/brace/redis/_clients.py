"""The calls `brace.redis.RedisStore` makes, over redis-py or coredis, and `from_url`'s client.

A `ScriptClient` runs a script by SHA1 and loads one. The adapters below return the
client's own coroutine instead of wrapping it in one more, so a decision costs one frame
less. Neither client library is imported until it is needed: an adapter is chosen by
the module the client's class comes from.

Coalesced decisions (``evalsha_batch``) go to Redis as ONE call of the `BATCH` script
(one command, one string reply) instead of a pipeline of one command each: the client
library then packs and parses one command, not a hundred. A cluster client cannot run a
script over keys of several slots, so there the calls are grouped by hash slot and the
groups sent concurrently, each to its node (redis-py's ``RedisCluster`` also refuses
``EVALSHA`` in a pipeline).

`UrlClient` is what `RedisStore.from_url` makes: it reads the URL at once (a bad one is a
``ValueError`` at construction) and builds redis-py's client on asyncio (uvloop too) or
coredis's on trio, when first used, since the backend is known only then.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote

import anyio

from ._errors import RedisBackendError, ResponseError, reply_code, slot_retries_ran_out
from ._scripts import BATCH, SCRIPTS

logger = logging.getLogger("brace.redis")
#: seconds a store's startup steps wait: `UrlClient.open` for a cluster's nodes, and
#: ``RedisStore.check()`` by default
STARTUP_TIMEOUT = 5.0

__all__ = (
    "Batch",
    "ScriptCall",
    "ScriptClient",
    "Target",
    "UrlClient",
    "adapt_client",
    "current_backend",
    "eval_script",
    "is_noscript",
    "key_slot",
    "parse_url",
)

Key = str | bytes
Argument = str | bytes | int | float
ScriptCall = tuple[str, Sequence[Key], Sequence[Argument]]
"""``(sha, keys, args)`` of one EVALSHA."""
Batch = Callable[[Sequence[ScriptCall]], Awaitable[Sequence[object]]]
"""Send many EVALSHAs together; each reply, or the exception it raised, in order."""


@runtime_checkable
class ScriptClient(Protocol):
    """The part of a Redis client a `brace.redis.RedisStore` uses.

    ``evalsha`` raises when the server does not know the script (redis-py and coredis
    raise their ``NoScriptError``; any exception named so, or whose message says
    ``NOSCRIPT``, is recognised) and the store then calls ``script_load`` and retries.

    A client may also offer ``evalsha_batch(calls)`` (see `Batch`): many EVALSHAs sent
    together, each reply or the exception it raised, in order. The store then coalesces
    the decisions asked while one is in flight.
    """

    def evalsha(self, sha: str, keys: Sequence[Key], args: Sequence[Argument]) -> Awaitable[object]:
        """``EVALSHA sha len(keys) *keys *args``: the script's reply."""
        ...

    def script_load(self, script: str) -> Awaitable[object]:
        """``SCRIPT LOAD script`` (on every primary, for a cluster client)."""
        ...


def is_noscript(exc: BaseException) -> bool:
    """Whether ``exc`` says the server does not know the script (NOSCRIPT)."""
    if any(cls.__name__ == "NoScriptError" for cls in type(exc).__mro__):
        return True
    return "NOSCRIPT" in str(exc)


async def eval_script(
    client: ScriptClient, script: Any, keys: Sequence[Key], args: Sequence[Argument]
) -> object:
    """``EVALSHA`` of ``script`` (a `brace.redis._scripts.Script`), loading it first if the
    server does not know it (NOSCRIPT), then once more."""
    try:
        return await client.evalsha(script.sha, keys, args)
    except Exception as exc:
        if not is_noscript(exc):
            raise
    await client.script_load(script.text)
    return await client.evalsha(script.sha, keys, args)


def current_backend() -> str:
    """``"asyncio"`` (uvloop included) or ``"trio"``: the async library running this task."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    raise RedisBackendError("no async backend is running (asyncio or trio)")


# -- hash slots -------------------------------------------------------------------------


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def key_slot(key: Key) -> int:
    """The Redis Cluster hash slot of ``key`` (CRC16-XMODEM mod 16384, with hash tags)."""
    data = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]
    return crc % 16384


# -- adapters ---------------------------------------------------------------------------


# Slot groups of one batch sent at once on a cluster: each takes a connection, and a
# burst of new connections to cold nodes can outlast the store's timeout.
_CLUSTER_SENDS = 8

# A slot that answered a batch "TRYAGAIN" (it is migrating, and the batch's keys are split
# between two nodes) gets its calls sent one by one, each following ASK, for this long;
# at most this many slots are remembered (the oldest mark is dropped first).
_MOVING_SECONDS = 10.0
_MAX_MOVING = 1024


def _slot_moving(exc: BaseException) -> bool:
    """Whether a batch over several keys of one slot failed because the slot moves:
    ``TRYAGAIN`` (or a redirect), or the cluster client giving up on those."""
    return slot_retries_ran_out(exc) or reply_code(exc) in ("TRYAGAIN", "ASK", "MOVED")


class _Adapter(ABC):
    """A library's client as a `ScriptClient`; batches run as `BATCH` calls, by slot."""

    __slots__ = ("_moving", "client", "cluster")

    library = ""
    backends: tuple[str, ...] = ()

    def __init__(self, client: Any, *, cluster: bool) -> None:
        self.client = client
        self.cluster = cluster
        self._moving: dict[int, float] = {}  # slot -> until when its calls go one by one

    @abstractmethod
    def evalsha(self, sha: str, keys: Sequence[Key], args: Sequence[Argument]) -> Awaitable[object]:
        """``EVALSHA``, in the client library's own call form."""

    def script_load(self, script: str) -> Awaitable[object]:
        return self.client.script_load(script)  # type: ignore[no-any-return]

    async def evalsha_batch(self, calls: Sequence[ScriptCall]) -> Sequence[object]:
        """The calls as `BATCH` calls: one per slot group (one in all off a cluster)."""
        if not self.cluster or len(calls) == 1:
            return await self._batch(calls)
        groups: dict[int, list[int]] = {}
        for index, (_, keys, _) in enumerate(calls):
            groups.setdefault(key_slot(keys[0]), []).append(index)
        if len(groups) == 1:
            return await self._slot_batch(next(iter(groups)), calls)
        replies: list[object] = [None] * len(calls)
        sending = anyio.Semaphore(_CLUSTER_SENDS)

        async def send(slot: int, indices: list[int]) -> None:
            async with sending:
                answers = await self._slot_batch(slot, [calls[i] for i in indices])
            for index, answer in zip(indices, answers, strict=True):
                replies[index] = answer

        async with anyio.create_task_group() as group:
            for slot, indices in groups.items():
                group.start_soon(send, slot, indices)
        return replies

    async def _slot_batch(self, slot: int, calls: Sequence[ScriptCall]) -> Sequence[object]:
        """The calls of one slot as one `BATCH` call, or one by one while it migrates.

        While a slot migrates, a script over several of its keys gets ``TRYAGAIN`` when
        some of them have moved and others not (Redis cannot run it on either node); a
        call with one key follows the ``ASK`` redirect. So a batch that fails so is sent
        again call by call, and so are the slot's next batches for `_MOVING_SECONDS`.
        """
        if len(calls) == 1:  # its own script: alone anyway
            return await self._batch(calls)
        moving = self._moving
        if moving:
            until = moving.get(slot)
            if until is not None:
                if time.monotonic() < until:
                    return await self._alone(calls)
                del moving[slot]
        try:
            replies = await self._batch(calls)
        except BaseException:
            # Cancelled, most likely by the store's timeout: the client may have been
            # retrying TRYAGAIN (redis-py and coredis retry for about 0.4 s), so the next
            # batches of this slot go call by call for a while. (A slot of a slow node
            # loses its batching as long, nothing else.)
            self._mark_moving(slot)
            raise
        first = replies[0]
        if isinstance(first, Exception) and _slot_moving(first):
            self._mark_moving(slot)
            return await self._alone(calls)
        return replies

    def _mark_moving(self, slot: int) -> None:
        moving = self._moving
        moving.pop(slot, None)
        if len(moving) >= _MAX_MOVING:
            del moving[next(iter(moving))]
        moving[slot] = time.monotonic() + _MOVING_SECONDS

    async def _batch(self, calls: Sequence[ScriptCall]) -> list[object]:
        """One `BATCH` call; never raises: an error is every call's reply."""
        if len(calls) == 1:  # its own script: a plain reply, no array to parse
            try:
                return [await self.evalsha(*calls[0])]
            except Exception as exc:
                return [exc]
        keys: list[Key] = []
        lines: list[str] = []
        for sha, call_keys, call_args in calls:
            script = SCRIPTS.get(sha)
            if script is None or len(call_keys) != 1 or not 3 <= len(call_args) <= 5:
                return await self._alone(calls)  # not one of the store's scripts
            keys.append(call_keys[0])
            mode, cost, at, *params = call_args
            words = (script.name, mode, cost, at or "-", *params)
            lines.append(" ".join([str(word) for word in words]))
        args = ("\n".join(lines),)
        reply: Any
        try:
            reply = await eval_script(self, BATCH, keys, args)
        except Exception as exc:
            return [exc] * len(calls)
        text = reply if isinstance(reply, bytes) else str(reply).encode()
        lines_back = text.split(b"\n")
        if len(lines_back) != len(calls):  # pragma: no cover - the script answers each call
            error = ResponseError(
                f"the batch script gave {len(lines_back)} answers, not {len(calls)}"
            )
            return [error] * len(calls)
        return [
            ResponseError(line[2:].decode(errors="replace")) if line.startswith(b"E ") else line
            for line in lines_back
        ]

    async def _alone(self, calls: Sequence[ScriptCall]) -> list[object]:
        """Each call on its own, concurrently: each reply or its own error."""
        replies: list[object] = [None] * len(calls)

        async def send(index: int, call: ScriptCall) -> None:
            try:
                replies[index] = await self.evalsha(*call)
            except Exception as exc:
                replies[index] = exc

        async with anyio.create_task_group() as group:
            for index, call in enumerate(calls):
                group.start_soon(send, index, call)
        return replies

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client!r})"


class RedisPyClient(_Adapter):
    """A redis-py ``redis.asyncio.Redis`` or ``RedisCluster`` (asyncio only, uvloop too)."""

    __slots__ = ()

    library = "redis-py"
    backends = ("asyncio",)

    def evalsha(self, sha: str, keys: Sequence[Key], args: Sequence[Argument]) -> Awaitable[object]:
        return self.client.evalsha(sha, len(keys), *keys, *args)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        # redis-py's own repr spells out every connection option (about 1,000 characters
        # in each log line): the address is enough, and never the password.
        return f"RedisPyClient({_redis_py_address(self.client)})"


def _redis_py_address(client: Any) -> str:
    """``Redis<host:port/db>``, ``Redis<unix:path/db>``, ``Redis<sentinel:service>`` or
    ``RedisCluster<host:port,...>`` for a redis-py client."""
    name = type(client).__name__
    pool = getattr(client, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if isinstance(service, str):
        return f"{name}<sentinel:{service}>"
    options = getattr(pool, "connection_kwargs", None)
    if isinstance(options, dict):
        db = options.get("db", 0)
        if options.get("path"):
            return f"{name}<unix:{options['path']}/{db}>"
        return f"{name}<{options.get('host', '?')}:{options.get('port', '?')}/{db}>"
    nodes = getattr(getattr(client, "nodes_manager", None), "startup_nodes", None)
    if isinstance(nodes, dict) and nodes:
        return f"{name}<{','.join(sorted(map(str, nodes)))}>"
    return f"{name}<?>"


class CorediscClient(_Adapter):
    """A coredis ``Redis`` or ``RedisCluster`` (asyncio and trio; enter it first)."""

    __slots__ = ()

    library = "coredis"
    backends = ("asyncio", "trio")

    def evalsha(self, sha: str, keys: Sequence[Key], args: Sequence[Argument]) -> Awaitable[object]:
        return self.client.evalsha(sha, keys=keys, args=args)  # type: ignore[no-any-return]


def _is_cluster(client: object) -> bool:
    """A redis-py or coredis ``RedisCluster`` (or a subclass): redis-py's plain ``Redis``
    has cluster *commands* among its bases, so only the client class itself counts."""
    return any(cls.__name__ == "RedisCluster" for cls in type(client).__mro__)


def adapt_client(client: object) -> ScriptClient:
    """A `ScriptClient` for a redis-py asyncio or coredis client, or one already."""
    if isinstance(client, (_Adapter, UrlClient)):
        return client
    module = type(client).__module__
    if module.startswith("redis.asyncio"):
        return RedisPyClient(client, cluster=_is_cluster(client))
    if module == "redis" or module.startswith("redis."):
        raise TypeError(
            f"client must be an asyncio Redis client (redis.asyncio.Redis), got the "
            f"synchronous {type(client).__qualname__} from {module}"
        )
    if module == "coredis" or module.startswith("coredis."):
        return CorediscClient(client, cluster=_is_cluster(client))
    if isinstance(client, ScriptClient):
        return client
    raise TypeError(
        "client must be a redis.asyncio.Redis, a coredis.Redis (or their cluster clients) "
        f"or a brace.redis.ScriptClient, got {type(client).__name__}"
    )


# -- URLs -------------------------------------------------------------------------------

_SENTINEL_PORT = 26379
_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")


@dataclass(frozen=True, slots=True)
class Target:
    """What a URL names: a server (``url``) or, for Sentinel, sentinels and a service."""

    scheme: str
    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int | None = None
    username: str | None = None
    password: str | None = None


def _host_port(text: str, url: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"url names a sentinel without a host: {url!r}")
    if not port_text:
        return host, _SENTINEL_PORT
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"url has a bad sentinel port {port_text!r}: {url!r}")
    return host, int(port_text)


def parse_url(url: str) -> Target:
    """Read a ``redis://``, ``rediss://``, ``unix://`` or ``redis+sentinel://`` URL.

    The Sentinel form is ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]
    /service_name[/db]``: the sentinels (port 26379 by default), the name of the
    monitored primary, and its database; the credentials are the primary's.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in _SCHEMES:
        raise ValueError(
            f"url must start with redis://, rediss://, unix:// or redis+sentinel://, got {url!r}"
        )
    if scheme != "redis+sentinel":
        return Target(scheme, url)
    if "?" in rest or "#" in rest:
        raise ValueError(f"a redis+sentinel:// url takes no query or fragment: {url!r}")
    location, _, path = rest.partition("/")
    userinfo, at, hosts = location.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_host_port(part, url) for part in hosts.split(","))
    service, _, db_text = path.partition("/")
    if not service:
        raise ValueError(
            f"a redis+sentinel:// url needs the service name after the hosts "
            f"(redis+sentinel://host:26379/mymaster): {url!r}"
        )
    db = None
    if db_text:
        if not (db_text.isascii() and db_text.isdigit()):
            raise ValueError(f"url has a bad database number {db_text!r}: {url!r}")
        db = int(db_text)
    return Target(scheme, url, sentinels, unquote(service), db, username, password)


class UrlClient:
    """The client `RedisStore.from_url` makes: redis-py on asyncio, coredis on trio.

    On asyncio (uvloop too) it builds ``redis.asyncio.Redis`` (``RedisCluster`` with
    ``cluster=True``; through ``redis.asyncio.sentinel.Sentinel`` for a Sentinel URL)
    when first used. On trio it builds the coredis equivalent, which keeps its
    connections in a task group: it must be opened, by `open` (what ``async with
    store:`` does), in the task that later closes it.
    """

    __slots__ = ("_client", "_close", "cluster", "options", "target")

    def __init__(self, url: str, *, cluster: bool, options: dict[str, Any]) -> None:
        self.target = parse_url(url)
        if not isinstance(cluster, bool):
            raise TypeError(f"cluster must be a bool, got {type(cluster).__name__}")
        if cluster and self.target.scheme in ("unix", "redis+sentinel"):
            raise ValueError(f"cluster=True needs a redis:// or rediss:// url, got {url!r}")
        if cluster and options.get("db"):
            raise ValueError("a Redis Cluster has only database 0: db must be 0 with cluster=True")
        self.cluster = cluster
        self.options = options
        self._client: _Adapter | None = None
        self._close: Callable[[], Awaitable[object]] | None = None

    @property
    def library(self) -> str:
        """The library in use (``"redis-py"`` or ``"coredis"``), ``""`` before first use."""
        return "" if self._client is None else self._client.library

    def _adapter(self) -> _Adapter:
        client = self._client
        if client is not None:
            return client
        backend = current_backend()
        if backend != "asyncio":
            raise RedisBackendError(
                f"on {backend}, a RedisStore made by from_url uses coredis, whose "
                "connections live in a task group: open the store first, with "
                "'async with store:' (or 'await store.open()'), in the task that closes it"
            )
        self._build_redis_py()
        assert self._client is not None
        return self._client

    def evalsha(self, sha: str, keys: Sequence[Key], args: Sequence[Argument]) -> Awaitable[object]:
        return (self._client or self._adapter()).evalsha(sha, keys, args)

    def script_load(self, script: str) -> Awaitable[object]:
        return (self._client or self._adapter()).script_load(script)

    def evalsha_batch(self, calls: Sequence[ScriptCall]) -> Awaitable[Sequence[object]]:
        return (self._client or self._adapter()).evalsha_batch(calls)

    def _build_redis_py(self) -> None:
        import redis.asyncio

        target, options = self.target, self.options
        client: Any
        also: list[Any] = []  # more clients to close with it: the Sentinels'
        if target.scheme == "redis+sentinel":
            from redis.asyncio.sentinel import Sentinel

            sentinel = Sentinel(list(target.sentinels))  # type: ignore[no-untyped-call, unused-ignore]
            client = sentinel.master_for(
                target.service,
                **{**_sentinel_credentials(target), **options},
            )
            also = list(sentinel.sentinels)
        elif self.cluster:
            client = redis.asyncio.RedisCluster.from_url(target.url, **options)
        else:
            client = redis.asyncio.from_url(target.url, **options)

        async def close() -> None:
            for each in (client, *also):
                await each.aclose()

        self._client = RedisPyClient(client, cluster=self.cluster)
        self._close = close

    async def open(self) -> None:
        """Build the client for the running backend; on trio, enter coredis's client."""
        if self._client is not None:
            return
        if current_backend() == "asyncio":
            self._build_redis_py()
            if self.cluster:
                await self._discover()
            return
        import coredis

        target, options = self.target, _coredis_options(self.options)
        stack = AsyncExitStack()
        client: Any
        try:
            if target.scheme == "redis+sentinel":
                from coredis.connection import TCPLocation

                sentinel = await stack.enter_async_context(
                    coredis.Sentinel([TCPLocation(host, port) for host, port in target.sentinels])
                )
                client = sentinel.primary_for(
                    target.service, **{**_sentinel_credentials(target), **options}
                )
            elif self.cluster:
                with warnings.catch_warnings():
                    # coredis' own from_url passes its startup node the way it deprecates
                    warnings.filterwarnings("ignore", "Use coredis.connection.TCPLocation")
                    client = coredis.RedisCluster.from_url(target.url, **options)
            else:
                client = coredis.Redis.from_url(target.url, **options)
            await stack.enter_async_context(client)
        except BaseException:
            await stack.aclose()
            raise
        self._client = CorediscClient(client, cluster=self.cluster)
        self._close = stack.aclose

    async def _discover(self) -> None:
        """Learn a redis-py cluster's topology now, before the first burst of commands.

        Left to the first commands, a burst of them into a client that has not found
        its nodes yet sometimes closes connections other commands are using ("the
        handler is closed") on a loaded machine, and those decisions fail. A cluster
        that cannot be reached now, or does not answer within `STARTUP_TIMEOUT`, is not
        an error here: the first command finds the nodes as it would have (and its
        failure is the store's to handle).
        """
        assert self._client is not None
        try:
            with anyio.move_on_after(STARTUP_TIMEOUT):
                await self._client.client.initialize()
        except Exception:  # unreachable now: its nodes are found on first use
            logger.debug("could not discover the cluster's nodes at open", exc_info=True)

    async def aclose(self) -> None:
        """Close the client (on trio: in the task that opened it); a later use reopens."""
        close, self._close, self._client = self._close, None, None
        if close is not None:
            await close()

    def __repr__(self) -> str:
        cluster = ", cluster=True" if self.cluster else ""
        return f"UrlClient({_redacted(self.target.url)!r}{cluster})"


def _coredis_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options for coredis: its connections take an ``ssl_context``, not file paths."""
    files = {name: options.get(name) for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")}
    if not any(files.values()):
        return options
    context = ssl.create_default_context(cafile=files["ssl_ca_certs"])
    if files["ssl_certfile"]:
        context.load_cert_chain(files["ssl_certfile"], files["ssl_keyfile"])
    rest = {name: value for name, value in options.items() if name not in files}
    return {**rest, "ssl_context": context}


def _sentinel_credentials(target: Target) -> dict[str, Any]:
    credentials: dict[str, Any] = {}
    if target.db is not None:
        credentials["db"] = target.db
    if target.username is not None:
        credentials["username"] = target.username
    if target.password is not None:
        credentials["password"] = target.password
    return credentials


def _redacted(url: str) -> str:
    """The URL without its password (for reprs and logs)."""
    scheme, separator, rest = url.partition("://")
    location, slash, path = rest.partition("/")
    userinfo, at, hosts = location.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}{separator}{user}:***@{hosts}{slash}{path}"
