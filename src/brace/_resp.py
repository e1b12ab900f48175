"""A lean Redis connection for `brace.redis.RedisStore`: RESP2 over a socket, on anyio.

Theory of operation
-------------------
The store asks Redis one thing: run a script (``EVALSHA``), now and then ``SCRIPT
LOAD``, and under load many of them at once. General clients spend most of a decision
in their own machinery (pools, locks, stream objects, response callbacks); this module
does the few things needed and nothing else, on anyio (asyncio and trio alike).

- **The protocol is data.** `encode` turns a command into a RESP array of bulk strings;
  `ReplyParser` is fed bytes in any chunking and hands back whole replies (simple
  strings as ``str``, bulk strings as ``bytes``, integers, arrays as lists, nil as
  ``None``, errors as `ResponseError` values). No I/O in either.
- **One socket, requests in FIFO order.** Every request is written at once, in full,
  into the connection's outgoing buffer and the socket (a non-blocking ``send``, no
  await): requests of many tasks are pipelined on one connection, and Redis answers
  them in the order sent. The replies are matched to the requests by that order.
- **No background task.** On trio (any anyio backend: `SocketConnection`) the first
  task waiting for a reply reads the socket (``anyio.wait_readable``), hands each reply
  to the request at the head of the queue and wakes its task; when its own reply has
  come it passes the reading on to the next waiting task. On asyncio
  (`AsyncioConnection`) the loop's protocol callback does that as the bytes arrive, and
  a task waits on a future (with a timer when given a ``timeout``: cheaper than a
  cancel scope). Either way one task pays one send, one wait and one ``recv`` per
  request, and nothing else.
- **Cancellation-safe.** Awaits happen only while waiting for the socket or a reply;
  sending, reading and parsing are synchronous, so a cancelled task never leaves half a
  request or half a reply behind. A request whose task was cancelled (or timed out)
  stays in the queue, marked abandoned: its reply is read and dropped when it comes,
  so the stream never goes out of step. A connection whose oldest abandoned request has had no
  reply for ``stale_after`` seconds (a server gone silent) is closed; so is one that
  fails; the next request opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio

__all__ = (
    "Argument",
    "AsyncioConnection",
    "Connection",
    "ConnectionOptions",
    "ProtocolError",
    "RedisConnectionError",
    "RedisError",
    "ReplyParser",
    "ResponseError",
    "SocketConnection",
    "encode",
    "open_connection",
    "parse_url",
)

Argument = str | bytes | int | float
Reply = object


class RedisError(Exception):
    """An error talking to Redis."""


class ResponseError(RedisError):
    """An error reply from the server (``-ERR ...``, ``-NOSCRIPT ...``): its message."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))


class RedisConnectionError(RedisError, ConnectionError):
    """The connection failed or closed; the next request opens a new one."""


class ProtocolError(RedisConnectionError):
    """The server sent bytes that are not RESP2; the connection is closed."""


# --- the protocol: bytes in, replies out ------------------------------------------------

_CRLF = b"\r\n"


def encode(args: Sequence[Argument]) -> bytes:
    """A command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        kind = arg.__class__  # exact types first: the common case, without isinstance
        if kind is str:
            data = arg.encode()  # type: ignore[union-attr]
        elif kind is int:
            data = b"%d" % arg  # type: ignore[str-format]
        else:
            data = _encode_other(arg)
        append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _encode_other(arg: object) -> bytes:
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, int) and not isinstance(arg, bool):
        return b"%d" % arg
    if isinstance(arg, float):
        return repr(float(arg)).encode()
    raise TypeError(f"a Redis argument must be str, bytes, int or float, got {type(arg).__name__}")


_INCOMPLETE = -1
_IN_PROGRESS = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN)


def _parse(buffer: bytes, pos: int) -> tuple[Reply, int]:
    """One reply starting at ``pos``: ``(reply, end)``, or ``(None, -1)`` if incomplete."""
    end = buffer.find(_CRLF, pos)
    if end < 0:
        return None, _INCOMPLETE
    kind = buffer[pos]
    if kind == 36:  # $ bulk string
        length = int(buffer[pos + 1 : end])
        if length < 0:
            return None, end + 2
        start = end + 2
        stop = start + length
        if len(buffer) < stop + 2:
            return None, _INCOMPLETE
        return buffer[start:stop], stop + 2
    if kind == 43:  # + simple string
        return buffer[pos + 1 : end].decode(errors="replace"), end + 2
    if kind == 58:  # : integer
        return int(buffer[pos + 1 : end]), end + 2
    if kind == 45:  # - error
        return ResponseError(buffer[pos + 1 : end].decode(errors="replace")), end + 2
    if kind == 42:  # * array
        count = int(buffer[pos + 1 : end])
        if count < 0:
            return None, end + 2
        items: list[Reply] = []
        pos = end + 2
        for _ in range(count):
            item, pos = _parse(buffer, pos)
            if pos < 0:
                return None, _INCOMPLETE
            items.append(item)
        return items, pos
    raise ProtocolError(f"not a RESP2 reply: {buffer[pos : pos + 20]!r}")


class ReplyParser:
    """Whole replies out of bytes fed in any chunking (no I/O)."""

    __slots__ = ("_buffer", "_pos")

    def __init__(self) -> None:
        self._buffer = b""
        self._pos = 0

    def feed(self, data: bytes) -> None:
        """Add bytes received from the server."""
        if self._pos:
            self._buffer = self._buffer[self._pos :] + data
            self._pos = 0
        elif self._buffer:
            self._buffer += data
        else:
            self._buffer = data

    def replies(self) -> list[Reply]:
        """Every whole reply received so far, in order (an empty list if none)."""
        buffer = self._buffer
        pos = self._pos
        size = len(buffer)
        out: list[Reply] = []
        while pos < size:
            reply, end = _parse(buffer, pos)
            if end < 0:
                break
            out.append(reply)
            pos = end
        if pos >= size:
            self._buffer = b""
            self._pos = 0
        else:
            self._pos = pos
        return out

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a whole reply."""
        return len(self._buffer) - self._pos


# --- connection options ---------------------------------------------------------------


class ConnectionOptions:
    """Where and how to connect: TCP host and port or a unix socket path, auth, db."""

    __slots__ = ("db", "host", "password", "path", "port", "username")

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
    ) -> None:
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, got {type(host).__name__}")
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"port must be an int, got {type(port).__name__}")
        if not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        if path is not None and not isinstance(path, str):
            raise TypeError(f"path must be a str or None, got {type(path).__name__}")
        for name, value in (("username", username), ("password", password)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
        if username is not None and password is None:
            raise ValueError("username needs a password")
        if isinstance(db, bool) or not isinstance(db, int):
            raise TypeError(f"db must be an int, got {type(db).__name__}")
        if db < 0:
            raise ValueError(f"db must be >= 0, got {db}")
        self.host = host
        self.port = port
        self.path = path
        self.username = username
        self.password = password
        self.db = db

    def __repr__(self) -> str:
        where = f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"
        return f"<{where} db={self.db}>"


def parse_url(url: str) -> ConnectionOptions:
    """``redis://[[user]:password@]host[:port][/db]`` or ``unix:///path[?db=n]``."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    parts = urlsplit(url)
    query = dict(item.split("=", 1) for item in parts.query.split("&") if "=" in item)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is None and "password" in query:
        password = unquote(query["password"])
    if username is not None and password is None:  # redis://password@host
        username, password = None, username
    try:
        db = int(query.get("db", "0"))
        if parts.scheme == "redis":
            path = parts.path.strip("/")
            if path:
                db = int(path)
    except ValueError:
        raise ValueError(f"url must name the db as an integer, got {url!r}") from None
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"url must give the socket's path, got {url!r}")
        return ConnectionOptions(path=parts.path, username=username, password=password, db=db)
    if parts.scheme == "rediss":
        raise ValueError("rediss:// (TLS) is not supported by brace's client; use redis-py")
    if parts.scheme != "redis":
        raise ValueError(f"url must start with redis:// or unix://, got {url!r}")
    return ConnectionOptions(
        parts.hostname or "127.0.0.1",
        parts.port or 6379,
        username=username,
        password=password,
        db=db,
    )


# --- the connection -------------------------------------------------------------------


class _Request:
    """Replies awaited by one task: ``count`` of them, in order."""

    __slots__ = ("abandoned", "count", "error", "replies", "sent_at", "waiter")

    def __init__(self, count: int, sent_at: float) -> None:
        self.count = count
        self.replies: list[Reply] = []
        self.abandoned = False
        self.error: BaseException | None = None
        self.waiter: Any = None  # what wakes its task: an anyio.Event or asyncio future
        self.sent_at = sent_at


class Connection:
    """One connection to Redis with requests pipelined in FIFO order (see the module's docs).

    The queue of requests, the matching of replies and the failure handling are here;
    the two subclasses read the socket: `SocketConnection` on any anyio backend,
    `AsyncioConnection` through an asyncio protocol (fewer system calls per reply).
    """

    __slots__ = ("_parser", "_pending", "broken")

    def __init__(self) -> None:
        self._parser = ReplyParser()
        self._pending: deque[_Request] = deque()
        self.broken: BaseException | None = None

    @property
    def waiting(self) -> bool:
        """Whether requests wait for replies (then check `stale` before another)."""
        return bool(self._pending)

    def stale(self, now: float, stale_after: float) -> bool:
        """Whether an abandoned request has waited for its reply over ``stale_after`` s."""
        pending = self._pending
        return bool(pending) and pending[0].abandoned and now - pending[0].sent_at > stale_after

    async def request(
        self, payload: bytes, count: int, timeout: float | None = None
    ) -> list[Reply]:
        """Send ``payload`` (``count`` commands); their ``count`` replies in order.

        ``TimeoutError`` if they have not all come within ``timeout`` seconds (the
        request is then abandoned like a cancelled one: its replies will be dropped).
        """
        raise NotImplementedError

    def _dispatch(self, replies: list[Reply]) -> None:
        pending = self._pending
        for reply in replies:
            if not pending:
                raise ProtocolError(f"a reply nobody asked for: {reply!r}")
            head = pending[0]
            head.replies.append(reply)
            if len(head.replies) == head.count:
                pending.popleft()
                waiter = head.waiter
                if waiter is not None:
                    head.waiter = None
                    self._wake(waiter)

    def _wake(self, waiter: Any) -> None:
        raise NotImplementedError

    def _close_transport(self) -> None:
        raise NotImplementedError

    def _fail(self, error: BaseException) -> None:
        """Give ``error`` to every waiting request and close the transport."""
        if self.broken is None:
            self.broken = error
        for request in self._pending:
            request.error = error
            waiter = request.waiter
            if waiter is not None:
                request.waiter = None
                self._wake(waiter)
        self._pending.clear()
        self._close_transport()

    def close(self) -> None:
        """Close the connection; waiting requests get `RedisConnectionError`."""
        self._fail(RedisConnectionError("connection closed by the client"))

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"<{name} pending={len(self._pending)} broken={self.broken is not None}>"


class SocketConnection(Connection):
    """A non-blocking socket read by one waiting task at a time, on any anyio backend."""

    __slots__ = ("_out", "_reading", "_socket")

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._socket = sock
        self._reading = False
        self._out = b""  # written, not yet taken by the socket

    async def request(
        self, payload: bytes, count: int, timeout: float | None = None
    ) -> list[Reply]:
        if timeout is not None:
            with anyio.fail_after(timeout):
                return await self.request(payload, count)
        if self.broken is not None:
            raise RedisConnectionError(f"connection closed: {self.broken!r}")
        request = _Request(count, time.monotonic())
        self._pending.append(request)
        self._write(payload)
        try:
            while request.error is None and len(request.replies) < request.count:
                if self._reading:
                    event = request.waiter = anyio.Event()
                    await event.wait()
                else:
                    await self._read_until(request)
        except BaseException:
            if request.error is None and len(request.replies) < request.count:
                request.abandoned = True  # its reply will be read and dropped
                request.waiter = None
                if not self._reading:
                    # It may have been handed the reading as it was cancelled: pass it on.
                    self._hand_over()
            raise
        if request.error is not None:
            raise request.error
        return request.replies

    def _write(self, payload: bytes) -> None:
        if self._out:
            self._out += payload  # behind bytes the socket has not taken yet
            return
        try:
            sent = self._socket.send(payload)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._fail(RedisConnectionError(repr(exc)))
            return
        if sent < len(payload):
            self._out = payload[sent:]

    async def _flush(self) -> None:
        while self._out:
            await anyio.wait_writable(self._socket)
            try:
                sent = self._socket.send(self._out)
            except BlockingIOError:
                continue
            self._out = self._out[sent:]

    async def _read_until(self, request: _Request) -> None:
        """Read replies, giving each to its request, until ``request`` is answered."""
        self._reading = True
        sock = self._socket
        parser = self._parser
        try:
            while request.error is None and len(request.replies) < request.count:
                if self._out:
                    await self._flush()
                try:
                    data = sock.recv(262144)
                except BlockingIOError:
                    await anyio.wait_readable(sock)
                    continue
                if not data:
                    raise RedisConnectionError("connection closed by the server")
                parser.feed(data)
                self._dispatch(parser.replies())
        except RedisError as exc:
            self._fail(exc)
            raise
        except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            error = RedisConnectionError(repr(exc))
            self._fail(error)
            raise error from exc
        finally:
            self._reading = False
            self._hand_over()

    def _hand_over(self) -> None:
        """Wake the first task still waiting, so that it reads next."""
        for request in self._pending:
            if request.waiter is not None:
                event = request.waiter
                request.waiter = None
                event.set()
                return

    def _wake(self, waiter: Any) -> None:
        waiter.set()

    def _close_transport(self) -> None:
        self._out = b""
        sock = self._socket
        if sock.fileno() >= 0:
            with contextlib.suppress(RuntimeError):  # no event loop (from a finalizer)
                anyio.notify_closing(sock)
            sock.close()


class AsyncioConnection(Connection, asyncio.Protocol):
    """An asyncio transport whose protocol callback hands each reply to its request.

    The reply is parsed and matched as the data arrives, in the event loop's callback:
    a waiting task only waits on a future (no reader to hand over, no registration of
    the socket per wait).
    """

    __slots__ = ("_loop", "_transport")

    def __init__(self) -> None:
        super().__init__()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        try:
            self._dispatch(parser.replies())
        except ProtocolError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = "connection closed by the server" if exc is None else repr(exc)
        self._fail(RedisConnectionError(reason))

    async def request(
        self, payload: bytes, count: int, timeout: float | None = None
    ) -> list[Reply]:
        transport = self._transport
        if self.broken is not None or transport is None:
            raise RedisConnectionError(f"connection closed: {self.broken!r}")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a client kept from an earlier asyncio.run
            self._fail(RedisConnectionError("connection made in another event loop"))
            raise RedisConnectionError(
                "the connection was made in another event loop; the next request opens one"
            )
        request = _Request(count, time.monotonic())
        self._pending.append(request)
        transport.write(payload)
        if request.error is None and len(request.replies) < count:
            future = request.waiter = loop.create_future()
            # A timer, cheaper than a cancel scope; the store times out every decision.
            timer = None if timeout is None else loop.call_later(timeout, _expire, future)
            try:
                await future
            except BaseException:
                if request.error is None and len(request.replies) < count:
                    request.abandoned = True  # its reply will be read and dropped
                    request.waiter = None
                raise
            finally:
                if timer is not None:
                    timer.cancel()
        if request.error is not None:
            raise request.error
        return request.replies

    def _wake(self, waiter: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)

    def _close_transport(self) -> None:
        transport = self._transport
        if transport is not None and not self._loop.is_closed():
            transport.abort()


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("no reply in time"))


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _check_connected(code: int, address: object) -> None:
    if code:
        raise OSError(code, f"connect to {address!r} failed: {os.strerror(code)}")


async def _connect_socket(options: ConnectionOptions) -> socket.socket:
    candidates: list[tuple[int, Any]]
    if options.path is not None:
        candidates = [(socket.AF_UNIX, options.path)]
    else:
        infos = await anyio.getaddrinfo(options.host, options.port, type=socket.SOCK_STREAM)
        candidates = [(family, address) for family, _, _, _, address in infos]
    last: OSError | None = None
    for family, address in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(address)
            if code in _IN_PROGRESS:
                await anyio.wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            _check_connected(code, address)
        except OSError as exc:
            sock.close()
            last = exc
        except BaseException:
            sock.close()
            raise
        else:
            return sock
    raise RedisConnectionError(f"cannot connect to {options!r}: {last!r}")


def _check_replies(replies: list[Reply]) -> None:
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply


async def _connect_asyncio(options: ConnectionOptions) -> AsyncioConnection:
    loop = asyncio.get_running_loop()
    connection = AsyncioConnection()
    try:
        if options.path is not None:
            await loop.create_unix_connection(lambda: connection, options.path)
        else:
            await loop.create_connection(lambda: connection, options.host, options.port)
    except OSError as exc:
        raise RedisConnectionError(f"cannot connect to {options!r}: {exc!r}") from exc
    return connection


async def open_connection(options: ConnectionOptions) -> Connection:
    """A connected, authenticated `Connection` with its db selected.

    On asyncio an `AsyncioConnection`, elsewhere (trio) a `SocketConnection`.
    """
    connection: Connection
    if _on_asyncio():
        connection = await _connect_asyncio(options)
    else:
        connection = SocketConnection(await _connect_socket(options))
    try:
        setup: list[Sequence[Argument]] = []
        if options.password is not None:
            if options.username is not None:
                setup.append(("AUTH", options.username, options.password))
            else:
                setup.append(("AUTH", options.password))
        if options.db:
            setup.append(("SELECT", options.db))
        if setup:
            _check_replies(await connection.request(b"".join(map(encode, setup)), len(setup)))
    except BaseException:
        connection.close()
        raise
    return connection
