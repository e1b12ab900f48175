"""brace's own Redis client: the RESP2 codec, and the pipelined connection on a real server.

The codec is checked without I/O (random replies in random chunkings parse back equal).
The connection tests talk to a real redis-server in real time on asyncio and trio (see
``redis_server`` for why they are synchronous tests calling ``anyio.run``): errors
surface as exceptions, cancelled requests never put replies out of step, a killed
server is reconnected to, a silent one is given up after ``stale_after``.
"""

from __future__ import annotations

import gc
import random
import time

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brace._core.window import SlidingWindowCounter
from brace._redis_clients import is_noscript
from brace._redis_scripts import COUNTER
from brace._resp import ReplyParser, encode, parse_url
from brace.redis import LeanClient, RedisConnectionError, RedisStore, ResponseError
from redis_server import RedisServer, run

pytest_plugins = ("redis_fixtures",)

BACKENDS = ["asyncio", "trio"]


# --- the codec, no I/O ----------------------------------------------------------------


def _encode_reply(reply: object) -> bytes:
    """The reference encoder of a RESP2 reply (the server's side)."""
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, ResponseError):
        return b"-%s\r\n" % str(reply).encode()
    if isinstance(reply, str):
        return b"+%s\r\n" % reply.encode()
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    assert isinstance(reply, list)
    return b"*%d\r\n" % len(reply) + b"".join(map(_encode_reply, reply))


_line = st.text(st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=12)
_replies = st.recursive(
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.binary(max_size=20)  # bulk strings may hold anything, CRLF included
    | _line
    | _line.map(lambda text: ResponseError("ERR " + text)),
    lambda children: st.lists(children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_replies, max_size=6), st.data())
def test_replies_parse_back_in_any_chunking(replies: list[object], data: st.DataObject) -> None:
    """Replies encoded and fed in random chunks come out equal, in order, and only whole."""
    stream = b"".join(map(_encode_reply, replies))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    parser = ReplyParser()
    parsed: list[object] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        parser.feed(stream[start:cut])
        start = cut
        parsed.extend(parser.replies())
        assert len(parsed) <= len(replies)
    assert parsed == replies
    assert parser.pending == 0


def test_a_partial_reply_waits_for_the_rest() -> None:
    """A bulk string cut before its CRLF is not a reply yet; the rest completes it."""
    parser = ReplyParser()
    parser.feed(b"$5\r\nhel")
    assert parser.replies() == []
    parser.feed(b"lo\r")
    assert parser.replies() == []
    parser.feed(b"\n:7\r\n*-1\r\n")
    assert parser.replies() == [b"hello", 7, None]


def test_commands_encode_as_arrays_of_bulk_strings() -> None:
    """Every argument is a bulk string: str as UTF-8, int in decimal, float as repr."""
    assert encode(("SET", "k\u00e9", 42, 0.1, b"\r\n")) == (
        b"*5\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n42\r\n$3\r\n0.1\r\n$2\r\n\r\n\r\n"
    )
    with pytest.raises(TypeError, match="argument"):
        encode(("SET", True))  # refused, though a bool is an int
    with pytest.raises(TypeError, match="argument"):
        encode(("SET", None))  # type: ignore[arg-type]


def test_urls_and_bad_configuration() -> None:
    """URLs give host, port, db and credentials; bad values raise naming the parameter."""
    options = parse_url("redis://alice:s%40cret@example.org:6380/3")
    assert (options.host, options.port, options.db) == ("example.org", 6380, 3)
    assert (options.username, options.password) == ("alice", "s@cret")
    options = parse_url("redis://:pw@localhost")
    assert (options.username, options.password, options.port, options.db) == (
        None,
        "pw",
        6379,
        0,
    )
    options = parse_url("unix:///run/redis.sock?db=2")
    assert (options.path, options.db) == ("/run/redis.sock", 2)
    client = LeanClient.from_url("redis://127.0.0.1/1", password="x", db=4)
    assert (client.options.password, client.options.db) == ("x", 4)
    with pytest.raises(ValueError, match="rediss"):
        parse_url("rediss://host")
    with pytest.raises(ValueError, match="url"):
        parse_url("http://host")
    with pytest.raises(ValueError, match="db"):
        parse_url("redis://host/x")
    with pytest.raises(ValueError, match="port"):
        LeanClient(port=0)
    with pytest.raises(ValueError, match="db"):
        LeanClient(db=-1)
    with pytest.raises(ValueError, match="username"):
        LeanClient(username="alice")
    with pytest.raises(TypeError, match="host"):
        LeanClient(host=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stale_after"):
        LeanClient(stale_after=0)


# --- on a real server -------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_commands_errors_and_pipelines(backend: str, redis_port: int) -> None:
    """Replies come typed; an error reply raises (or is a value in a pipeline) and the
    connection goes on."""

    async def main() -> None:
        async with LeanClient("127.0.0.1", redis_port) as client:
            assert await client.execute("PING") == "PONG"
            assert await client.execute("SET", "k", 1) == "OK"
            assert await client.execute("GET", "k") == b"1"
            assert await client.execute("GET", "missing") is None
            with pytest.raises(ResponseError, match="unknown command"):
                await client.execute("NO-SUCH-COMMAND")
            replies = await client.pipeline(
                [
                    ("INCR", "n"),
                    ("RPUSH", "l", "a", "b"),
                    ("LRANGE", "l", 0, -1),
                    ("INCR", "k", "x"),
                ]
            )
            assert replies[:3] == [1, 2, [b"a", b"b"]]
            assert isinstance(replies[3], ResponseError)
            assert await client.pipeline([]) == []
            assert await client.execute("ECHO", "still in step") == b"still in step"

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_noscript_raises_then_loads(backend: str, redis_port: int) -> None:
    """An unknown script raises NOSCRIPT (recognised by the store); loaded, it runs."""
    policy = SlidingWindowCounter(5, 60.0)

    async def main() -> None:
        async with LeanClient("127.0.0.1", redis_port) as client:
            args = ("hit", 1, "", "5", "60.0")
            with pytest.raises(ResponseError) as caught:
                await client.evalsha(COUNTER.sha, ("k",), args)
            assert is_noscript(caught.value)
            assert await client.script_load(COUNTER.text) == COUNTER.sha.encode()
            reply = await client.evalsha(COUNTER.sha, ("k",), args)
            assert isinstance(reply, bytes)
            assert reply.startswith(b"1 4 ")
            store = RedisStore(client)
            await client.execute("SCRIPT", "FLUSH")
            batch = await client.evalsha_batch([(COUNTER.sha, ("k",), args)] * 2)
            assert all(isinstance(reply, ResponseError) for reply in batch)
            assert (await store.hit(policy, "user")).remaining == 4
            assert store.statistics().script_loads == 1

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancellation_storm_keeps_replies_in_step(backend: str, redis_port: int) -> None:
    """Tasks cancelled at random moments mid-request: every reply later received is its
    own request's, and the connection stays one and usable."""
    rng = random.Random(11)

    async def main() -> None:
        async with LeanClient("127.0.0.1", redis_port) as client:
            answered = 0
            cancelled = 0
            mismatched: list[tuple[str, object]] = []

            async def task(n: int, delay: float) -> None:
                nonlocal answered, cancelled
                with anyio.move_on_after(delay) as scope:
                    for i in range(4):
                        payload = f"{n}:{i}:" + "x" * rng.randrange(0, 3000)
                        if i % 2:
                            reply = await client.execute("ECHO", payload)
                            expected: object = payload.encode()
                        else:
                            replies = await client.pipeline([("ECHO", payload), ("PING",)])
                            reply, expected = replies, [payload.encode(), "PONG"]
                        if reply != expected:
                            mismatched.append((payload, reply))
                        answered += 1
                if scope.cancelled_caught:
                    cancelled += 1

            with anyio.fail_after(20):
                for round_ in range(15):
                    async with anyio.create_task_group() as group:
                        for n in range(40):
                            group.start_soon(task, round_ * 100 + n, rng.uniform(0, 0.003))
            first = client._connection
            assert not mismatched, mismatched[:3]
            assert cancelled > 0
            assert answered > 0
            for n in range(20):  # the abandoned replies are drained, the rest in step
                assert await client.execute("ECHO", f"after:{n}") == f"after:{n}".encode()
            assert client._connection is first  # never needed a new connection
            assert first is not None
            assert not first.waiting

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeouts_storm_keeps_replies_in_step(backend: str, redis_port: int) -> None:
    """evalsha_within with tiny timeouts: each call returns its own payload or raises
    TimeoutError, and later calls still get their own replies."""
    rng = random.Random(5)
    echo = "return ARGV[1]"

    async def main() -> None:
        async with LeanClient("127.0.0.1", redis_port) as client:
            sha = await client.script_load(echo)
            assert isinstance(sha, bytes)
            outcomes = {"answered": 0, "timed out": 0}
            mismatched: list[tuple[str, object]] = []

            async def task(n: int) -> None:
                for i in range(5):
                    payload = f"{n}:{i}:" + "y" * rng.randrange(0, 2000)
                    try:
                        timeout = rng.choice((0.0, rng.uniform(0.0, 0.002)))
                        reply = await client.evalsha_within(timeout, sha.decode(), (), (payload,))
                    except TimeoutError:
                        outcomes["timed out"] += 1
                        continue
                    outcomes["answered"] += 1
                    if reply != payload.encode():
                        mismatched.append((payload, reply))

            with anyio.fail_after(20):
                for round_ in range(40):  # 10 rounds, more until both outcomes were seen
                    async with anyio.create_task_group() as group:
                        for n in range(30):
                            group.start_soon(task, round_ * 100 + n)
                    if round_ >= 9 and outcomes["timed out"] and outcomes["answered"]:
                        break
            assert not mismatched, mismatched[:3]
            assert outcomes["timed out"] > 0
            assert outcomes["answered"] > 0
            for n in range(10):
                reply = await client.evalsha_within(5.0, sha.decode(), (), (f"after:{n}",))
                assert reply == f"after:{n}".encode()

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_requests_larger_than_the_socket_buffers(backend: str, redis_port: int) -> None:
    """Megabytes each way, from several tasks at once, arrive whole and in order."""

    async def main() -> None:
        async with LeanClient("127.0.0.1", redis_port) as client:

            async def task(n: int) -> None:
                payload = bytes([65 + n]) * (3 * 2**20)
                replies = await client.pipeline([("ECHO", payload), ("ECHO", n)])
                assert replies == [payload, b"%d" % n]

            async with anyio.create_task_group() as group:
                for n in range(4):
                    group.start_soon(task, n)

    run(backend, main)


# The first loop ends with the client open (that is the point): asyncio then warns of
# its transport, collected here rather than in a later test.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_client_outlives_its_event_loop(backend: str, redis_port: int) -> None:
    """A client used in a second event loop answers there (at worst after one
    ConnectionError, on asyncio, for the connection of the first loop)."""
    client = LeanClient("127.0.0.1", redis_port)

    async def first() -> None:
        assert await client.execute("ECHO", "one") == b"one"

    async def second() -> None:
        try:
            reply = await client.execute("ECHO", "two")
        except ConnectionError:
            reply = await client.execute("ECHO", "two")
        assert reply == b"two"
        await client.aclose()

    run(backend, first)
    run(backend, second)
    gc.collect()


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_server_is_reconnected(backend: str, own_redis_server: RedisServer) -> None:
    """A killed server fails the requests with ConnectionError; restarted, the client
    reconnects on the next request by itself."""
    server = own_redis_server

    async def main() -> None:
        async with LeanClient("127.0.0.1", server.port) as client:
            assert await client.execute("INCR", "n") == 1
            outcomes: list[object] = []

            async def busy() -> None:
                for _ in range(200):
                    try:
                        outcomes.append(await client.execute("ECHO", "x"))
                    except RedisConnectionError as exc:
                        outcomes.append(exc)
                    await anyio.sleep(0.001)

            async with anyio.create_task_group() as group:
                for _ in range(5):
                    group.start_soon(busy)
                await anyio.sleep(0.05)
                server.kill()
            assert any(isinstance(o, ConnectionError) for o in outcomes)
            assert all(o == b"x" or isinstance(o, ConnectionError) for o in outcomes)
            with pytest.raises(ConnectionError):
                await client.execute("PING")
            server.start()
            assert await client.execute("INCR", "n") == 1  # a new, empty server
            assert await client.execute("ECHO", "back") == b"back"

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_silent_server_is_given_up_after_stale_after(
    backend: str, own_redis_server: RedisServer
) -> None:
    """A request abandoned on a frozen server for over ``stale_after`` makes the next
    request open a new connection, which answers once the server does."""
    server = own_redis_server

    async def main() -> None:
        async with LeanClient("127.0.0.1", server.port, stale_after=0.1) as client:
            assert await client.execute("PING") == "PONG"
            first = client._connection
            server.pause()
            try:
                with anyio.move_on_after(0.05) as scope:
                    await client.execute("INCR", "n")
                assert scope.cancelled_caught
                await anyio.sleep(0.15)
            finally:
                server.resume()
            started = time.monotonic()
            assert await client.execute("ECHO", "fresh") == b"fresh"
            assert client._connection is not first
            assert time.monotonic() - started < 1.0

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_password_and_db(backend: str, own_redis_server: RedisServer) -> None:
    """AUTH with a password (or user and password) and SELECT of the db on connecting."""
    server = own_redis_server
    assert server.call("CONFIG", "SET", "requirepass", "s3cret").startswith(b"+OK")

    async def main() -> None:
        async with LeanClient("127.0.0.1", server.port) as anonymous:
            with pytest.raises(ResponseError, match="NOAUTH"):
                await anonymous.execute("PING")
        with pytest.raises(ResponseError, match=r"WRONGPASS|invalid"):
            await LeanClient("127.0.0.1", server.port, password="wrong").execute("PING")
        url = f"redis://default:s3cret@127.0.0.1:{server.port}/3"
        async with (
            LeanClient.from_url(url) as three,
            LeanClient("127.0.0.1", server.port, password="s3cret") as zero,
        ):
            assert await three.execute("SET", "where", "three") == "OK"
            assert await zero.execute("GET", "where") is None
            assert await zero.execute("SELECT", 3) == "OK"
            assert await zero.execute("GET", "where") == b"three"

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_from_url_decides_and_closes_its_client(backend: str, redis_port: int) -> None:
    """RedisStore.from_url makes a store over its own LeanClient, closed by aclose."""
    policy = SlidingWindowCounter(3, 60.0)

    async def main() -> None:
        store = RedisStore.from_url(f"redis://127.0.0.1:{redis_port}/0", prefix="url")
        assert isinstance(store.client, LeanClient)
        decisions = [await store.hit(policy, "k") for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        connection = store.client._connection
        assert connection is not None
        await store.aclose()
        assert connection.broken is not None
        assert store.client._connection is None

    run(backend, main)
