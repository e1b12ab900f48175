"""Conformance, end to end: the same protected app (tests/conformance_apps.py) on Starlette,
FastAPI, Litestar, Quart and aiohttp, under uvicorn (asyncio and uvloop), hypercorn
(asyncio and trio) and aiohttp's runner, each on a free 127.0.0.1 port, passes the same
checks over real HTTP (#13's acceptance list).

Real servers, real time: each server is started once per module (in a thread) and every
check waits a few tenths of a second at most.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import anyio
import anyio.to_thread
import httpx
import pytest
from websockets.sync.client import connect as websocket_connect

from conformance_apps import FRAMEWORKS, TICKS, Protected, starlette_app
from test_headers import parse_list

ASGI_SERVERS = ("uvicorn-asyncio", "uvicorn-uvloop", "hypercorn-asyncio", "hypercorn-trio")
COMBINATIONS = [
    (framework, server)
    for framework in ("starlette", "fastapi", "litestar", "quart")
    for server in ASGI_SERVERS
    if not (framework == "quart" and server == "hypercorn-trio")  # Quart is asyncio only
] + [("aiohttp", "aiohttp-runner")]


@dataclass
class Running:
    """A server in a thread: where it listens, the app, and how to stop it."""

    url: str
    protected: Protected
    stop: Callable[[], None]
    uds: str | None = None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_listening(port: int | None, uds: str | None, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert thread.is_alive(), "the server exited"
        try:
            if uds is not None:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(uds)
            else:
                assert port is not None
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.02)
            continue
        return
    raise AssertionError("the server did not start listening")


def _serve(protected: Protected, server: str, uds: str | None = None) -> Running:
    port = None if uds is not None else _free_port()
    stop = threading.Event()
    app = protected.app
    if server.startswith("uvicorn"):
        import uvicorn

        loop = server.split("-")[1]
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port or 0,
            uds=uds,
            loop=loop,
            lifespan="on",
            log_level="warning",
        )
        instance = uvicorn.Server(config)
        thread = threading.Thread(target=instance.run, daemon=True)

        def halt() -> None:
            instance.should_exit = True

    elif server.startswith("hypercorn"):
        from hypercorn.config import Config

        config_h = Config()
        config_h.bind = [f"unix:{uds}" if uds else f"127.0.0.1:{port}"]
        config_h.loglevel = "WARNING"
        config_h.graceful_timeout = 1.0

        async def trigger() -> None:
            await anyio.to_thread.run_sync(stop.wait)  # set by the test's thread

        if server.endswith("trio"):
            import hypercorn.trio
            import trio

            def run() -> None:
                trio.run(
                    functools.partial(hypercorn.trio.serve, app, config_h, shutdown_trigger=trigger)
                )

        else:
            import hypercorn.asyncio

            def run() -> None:
                asyncio.run(hypercorn.asyncio.serve(app, config_h, shutdown_trigger=trigger))

        thread = threading.Thread(target=run, daemon=True)
        halt = stop.set
    else:
        from aiohttp import web

        def run() -> None:
            async def main() -> None:
                runner = web.AppRunner(app)
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", port)
                await site.start()
                await asyncio.to_thread(stop.wait)  # set by the test's thread
                await runner.cleanup()

            asyncio.run(main())

        thread = threading.Thread(target=run, daemon=True)
        halt = stop.set
    thread.start()
    _wait_listening(port, uds, thread)

    def shutdown() -> None:
        halt()
        thread.join(15)
        assert not thread.is_alive(), f"{server} did not stop"

    url = "http://conformance" if uds else f"http://127.0.0.1:{port}"
    return Running(url, protected, shutdown, uds)


@pytest.fixture(scope="module", params=COMBINATIONS, ids=lambda pair: "-".join(pair))
def server(request: pytest.FixtureRequest) -> Iterator[Running]:
    """One framework under one server, for every check of this module."""
    framework, kind = request.param
    running = _serve(FRAMEWORKS[framework](), kind)
    try:
        yield running
    finally:
        running.stop()
    assert running.protected.executor.draining, "the lifespan shutdown drains the executor"


def _client(running: Running) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=running.uds) if running.uds else None
    return httpx.Client(base_url=running.url, timeout=10, transport=transport)


def _from(address: str) -> dict[str, str]:
    return {"x-forwarded-for": address}  # believed: the peer 127.0.0.1 is trusted


def test_lifespan_intact(server: Running) -> None:
    """The app's own startup hook ran under brace's lifespan."""
    with _client(server) as http:
        assert http.get("/lifespan").json() == {"started": True}


def test_429_with_retry_after_and_structured_fields(server: Running) -> None:
    """Three per client a minute: 200s carry RateLimit fields counting down, the fourth is
    a 429 with Retry-After and valid RateLimit / RateLimit-Policy structured fields."""
    with _client(server) as http:
        for left in (2, 1, 0):
            answer = http.get("/items", headers=_from("198.51.100.10"))
            assert answer.status_code == 200
            (name, parameters), *_ = parse_list(answer.headers["ratelimit"])
            assert (name, parameters["r"]) == ("items", left)
        refused = http.get("/items", headers=_from("198.51.100.10"))
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert parse_list(refused.headers["ratelimit-policy"]) == [("items", {"q": 3, "w": 60})]
    (name, parameters), *_ = parse_list(refused.headers["ratelimit"])
    assert name == "items"
    assert parameters["r"] == 0
    assert 1 <= parameters["t"] <= 120
    assert refused.json()["error"] == "rate_limited"


def test_users_and_addresses_are_isolated(server: Running) -> None:
    """One user's or one address's spent budget leaves the others' whole."""
    with _client(server) as http:
        alice = [http.get("/items", headers={"x-user": "alice"}).status_code for _ in range(4)]
        assert alice == [200, 200, 200, 429]
        assert http.get("/items", headers={"x-user": "bob"}).status_code == 200
        first = [http.get("/items", headers=_from("198.51.100.20")).status_code for _ in range(4)]
        assert first == [200, 200, 200, 429]
        assert http.get("/items", headers=_from("198.51.100.21")).status_code == 200


def test_cors_preflight_not_counted(server: Running) -> None:
    """Preflights never spend the budget: three of them, then three GETs admitted."""
    preflight = {"origin": "https://app.example", "access-control-request-method": "GET"}
    with _client(server) as http:
        for _ in range(3):
            answer = http.options("/items", headers={**preflight, **_from("198.51.100.30")})
            assert answer.status_code != 429
        codes = [http.get("/items", headers=_from("198.51.100.30")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_queue_full_is_503(server: Running) -> None:
    """With the one slot and the one queue place taken, another request gets 503
    queue_full with Retry-After; the two it waited behind are served."""
    executor = server.protected.executor
    with _client(server) as http, ThreadPoolExecutor(2) as pool:
        busy = [pool.submit(http.get, "/slow", params={"seconds": "0.5"}) for _ in range(2)]
        deadline = time.monotonic() + 5
        while (executor.statistics().running, executor.statistics().pending) != (1, 1):
            assert time.monotonic() < deadline, executor.statistics()
            time.sleep(0.01)
        refused = http.get("/items", headers=_from("198.51.100.40"))
        assert [future.result().status_code for future in busy] == [200, 200]
    assert refused.status_code == 503
    assert refused.json()["error"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1


def test_timeout_is_504(server: Running) -> None:
    """A handler that has not answered by the rule's timeout gets a 504."""
    with _client(server) as http:
        started = time.monotonic()
        answer = http.get("/slow", params={"seconds": "3"})
        elapsed = time.monotonic() - started
    assert (answer.status_code, answer.json()["error"]) == (504, "timeout"), answer.text
    assert elapsed < 2.5, f"answered after {elapsed:.2f} s, not at the 0.6 s timeout"


def test_breaker_open_is_503(server: Running) -> None:
    """Two 500s open the route's breaker: the third request gets 503 circuit_open."""
    with _client(server) as http:
        codes = [http.get("/fail").status_code for _ in range(3)]
        refused = http.get("/fail")
    assert codes[:2] == [500, 500]
    assert refused.status_code == 503
    assert refused.json()["error"] == "circuit_open"


def test_server_sent_events_intact(server: Running) -> None:
    """A 0.5 s event stream under a 0.3 s rule timeout arrives whole: the timeout bounds
    the start of the response, not the stream."""
    with _client(server) as http, http.stream("GET", "/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events == [f"data: {n}" for n in range(TICKS)]


def test_websocket_echo_intact_and_slot_free(server: Running) -> None:
    """An open WebSocket echoes past every timeout and holds no executor slot: with one
    slot, HTTP requests are still served while it is open."""
    port = server.url.rsplit(":", 1)[1]
    with websocket_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as socket_:
        socket_.send("one")
        assert socket_.recv(timeout=5) == "echo one"
        with _client(server) as http:  # would wait in the queue if the socket held the slot
            answer = http.get("/items", headers=_from("198.51.100.50"), timeout=2)
            assert answer.status_code == 200
        time.sleep(0.7)  # past the rules' timeouts
        socket_.send("two")
        assert socket_.recv(timeout=5) == "echo two"
    assert server.protected.executor.statistics().running == 0


@pytest.fixture(scope="module", params=["uvicorn-asyncio", "hypercorn-asyncio"])
def unix_server(request: pytest.FixtureRequest) -> Iterator[Running]:
    """The Starlette app on a Unix socket, as behind nginx with ``--uds``."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "app.sock")
        running = _serve(starlette_app(), request.param, uds=path)
        try:
            yield running
        finally:
            running.stop()


def test_unix_socket_proxy_keys_distinct(unix_server: Running) -> None:
    """Behind a proxy on a Unix socket (no peer address), six clients with distinct
    X-Forwarded-For get six budgets ("unix" is trusted), and one client's is still spent."""
    with _client(unix_server) as http:
        six = [http.get("/items", headers=_from(f"198.51.100.{n}")).status_code for n in range(6)]
        assert six == [200] * 6
        again = [http.get("/items", headers=_from("198.51.100.0")).status_code for _ in range(3)]
    assert again == [200, 200, 429]
