"""The reference server's shutdown, memory and configuration items (issue 15).

In virtual time on asyncio and trio: the executor's drain bounds every request of the HTTP
pipeline (slot holders included), a memory-held request counts against the queue's bound
and its wait timeout, and the demo is configured as SEED.md says. Then real processes:
``python -m brace_demo serve`` started as subprocesses and stopped with SIGTERM, SIGINT,
SIGUSR2, a second signal and SIGKILL, with a 50 s request in flight (about 35 s, the
servers side by side).
"""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import anyio
import httpx
import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

import brace
from brace.asgi import BraceMiddleware, Rule
from brace_demo.app import create_app
from brace_demo.service import DemoSettings

MB = 2**20
Message = MutableMapping[str, Any]


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://demo")


async def sleepy_app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Answers 200 after 50 s."""
    await anyio.sleep(50)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"late"})


# -- the drain bounds every pipeline request ------------------------------------------


async def test_drain_cancels_requests_holding_a_slot_and_waiting_at_its_timeout() -> None:
    """At the drain's timeout a request holding a slot (with or without a rule timeout,
    the middleware having a shutdown) and one waiting for a slot are cancelled and
    answered 503 ``shutting_down`` with ``Retry-After`` and ``Connection: close``; the
    report counts them and nothing is left running; the rule's breaker does not count the
    drain as a failure."""
    executor = brace.PriorityExecutor(2, 10, clock=anyio.current_time)
    breaker = brace.CircuitBreaker(failure_threshold=1)
    middleware = BraceMiddleware(
        sleepy_app,
        rules=[Rule("/timed", timeout=120.0, breaker=breaker), Rule("/bare")],
        executor=executor,
        shutdown=brace.GracefulShutdown(clock=anyio.current_time),  # (never triggered)
    )
    answers: dict[str, tuple[httpx.Response, float]] = {}
    start = anyio.current_time()
    async with client(middleware) as http:

        async def get(path: str) -> None:
            answer = await http.get(path)
            answers[path] = (answer, anyio.current_time() - start)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(get, "/timed")
            tasks.start_soon(get, "/bare")
            await anyio.sleep(1)
            tasks.start_soon(get, "/bare/queued")  # waits: both slots are taken
            await anyio.sleep(1)
            report = await executor.drain(30.0)
    for path in ("/timed", "/bare", "/bare/queued"):
        answer, at = answers[path]
        assert answer.status_code == 503, path
        assert answer.json()["error"] == "shutting_down"
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.headers["connection"] == "close"
        assert at == pytest.approx(32.0)
    assert report.timed_out
    assert report.cancelled_running == 2
    assert report.cancelled_queued == 1
    assert report.still_running == 0
    assert report.duration == pytest.approx(30.0)
    assert breaker.state is brace.CircuitState.CLOSED
    assert breaker.statistics().failures == 0
    stats = executor.statistics()
    assert stats.running == 0
    assert stats.pending == 0
    assert middleware.statistics().shutting_down == 3


async def test_without_timeout_or_shutdown_a_request_is_not_cancelled() -> None:
    """A request whose rule has no timeout, through a middleware given no shutdown, has no
    cancel scope (it costs about 3 us): the drain reports it ``still_running``."""
    executor = brace.PriorityExecutor(1, 10, clock=anyio.current_time)
    middleware = BraceMiddleware(sleepy_app, rules=[Rule("/")], executor=executor)
    codes: list[int] = []
    async with client(middleware) as http:

        async def get() -> None:
            codes.append((await http.get("/")).status_code)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(get)
            await anyio.sleep(1)
            report = await executor.drain(30.0)
            assert report.still_running == 1
            assert report.cancelled_running == 0
    assert codes == [200]  # it ran its 50 s


async def test_drain_cuts_a_started_response_short_quietly() -> None:
    """A response already streaming at the drain's timeout is cut short: the middleware
    returns without raising, having sent what the application sent."""

    async def streaming(
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await anyio.sleep(50)
        await send({"type": "http.response.body", "body": b"last"})

    executor = brace.PriorityExecutor(1, 10, clock=anyio.current_time)
    middleware = BraceMiddleware(streaming, rules=[Rule("/", timeout=10.0)], executor=executor)
    sent: list[Message] = []

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError  # never reached

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Message = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": None}
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(middleware, scope, receive, send)
        await anyio.sleep(1)
        report = await executor.drain(30.0)
    assert [message.get("body") for message in sent] == [None, b"first"]
    assert report.cancelled_running == 1
    assert middleware.statistics().shutting_down == 1


async def test_a_cancelled_drain_cancels_what_is_left_at_once() -> None:
    """A drain cut short (a second signal) cancels the pipeline's requests at once."""
    executor = brace.PriorityExecutor(1, 10, clock=anyio.current_time)
    middleware = BraceMiddleware(sleepy_app, rules=[Rule("/", timeout=120.0)], executor=executor)
    answers: list[tuple[int, object]] = []
    start = anyio.current_time()
    async with client(middleware) as http:

        async def get() -> None:
            answer = await http.get("/")
            answers.append((answer.status_code, anyio.current_time() - start))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(get)
            await anyio.sleep(1)
            with anyio.move_on_after(4):
                await executor.drain(30.0)
    assert answers == [(503, pytest.approx(5.0))]
    assert executor.statistics().running == 0


async def test_requests_in_time_finish_and_a_rule_timeout_is_still_504() -> None:
    """A drain that ends in time cancels nothing, and a rule's own timeout passing is a
    504 (not mistaken for the drain)."""
    executor = brace.PriorityExecutor(2, 10, clock=anyio.current_time)
    middleware = BraceMiddleware(
        sleepy_app, rules=[Rule("/short", timeout=10.0), Rule("/")], executor=executor
    )
    codes: dict[str, int] = {}
    async with client(middleware) as http:

        async def get(path: str) -> None:
            codes[path] = (await http.get(path)).status_code

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(get, "/short")
            tasks.start_soon(get, "/")
            await anyio.sleep(1)
            report = await executor.drain(60.0)
    assert codes == {"/short": 504, "/": 200}
    assert not report.timed_out
    assert report.cancelled == 0


async def test_serve_while_draining_tells_the_server_after_the_drain() -> None:
    """With ``serve_while_draining=True`` the server's handler runs once the drain ended
    (the server keeps listening meanwhile); a second signal calls it at once."""
    calls: list[tuple[int, object]] = []
    start = anyio.current_time()

    def server_handler(signum: int, frame: FrameType | None) -> None:
        calls.append((signum, anyio.current_time() - start))

    class Slow:
        async def drain(self, timeout: float) -> None:
            await anyio.sleep(5)

    old = signal.signal(signal.SIGUSR2, server_handler)
    try:
        for second in (False, True):
            calls.clear()
            start = anyio.current_time()
            shutdown = brace.GracefulShutdown(
                timeout=30.0, signals=[signal.SIGUSR2], chain=True, serve_while_draining=True
            )
            shutdown.register(Slow())
            async with anyio.create_task_group() as tasks:
                await tasks.start(shutdown.wait)
                signal.raise_signal(signal.SIGUSR2)
                await anyio.sleep(1)
                assert calls == []
                assert not shutdown.ready
                if second:
                    signal.raise_signal(signal.SIGUSR2)
                    await anyio.sleep(0.5)
                    assert calls == [(signal.SIGUSR2, pytest.approx(1.0))]
            report = shutdown.report
            assert report is not None
            if second:
                assert report.timed_out  # cut short
                assert len(calls) == 1  # told once, by the second signal
            else:
                assert calls == [(signal.SIGUSR2, pytest.approx(5.0))]
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_serve_while_draining_needs_chain() -> None:
    """``serve_while_draining`` without ``chain`` (or not a bool) fails at construction."""
    with pytest.raises(ValueError, match="serve_while_draining"):
        brace.GracefulShutdown(serve_while_draining=True)
    with pytest.raises(TypeError, match="serve_while_draining"):
        brace.GracefulShutdown(chain=True, serve_while_draining=1)  # type: ignore[arg-type]


# -- memory: held work counts against the queue ---------------------------------------


class FakeMemory:
    """A memory probe whose reading the test sets."""

    def __init__(self, usage: int) -> None:
        self.usage = usage

    def __call__(self) -> int:
        return self.usage


async def test_memory_held_requests_fill_the_queue_then_get_503() -> None:
    """Above ``memory_high``, writes (LOW) are held at the door; once held work fills the
    queue's bound the next one is refused with 503 ``queue_full`` and ``Retry-After``,
    reads still run, and the held writes complete once memory is back."""
    memory = FakeMemory(400 * MB)
    settings = DemoSettings(max_queue=3, memory_probe=memory, clock=anyio.current_time)
    app = create_app(settings)
    executor = app.executor
    assert executor is not None
    answers: dict[str, httpx.Response] = {}
    async with client(app) as http:

        async def post(user: str) -> None:
            answers[user] = await http.post("/api/items", json={}, headers={"x-user": user})

        async with anyio.create_task_group() as tasks:
            for number in range(3):
                tasks.start_soon(post, f"held{number}")
            await anyio.sleep(1)
            assert executor.statistics().held == 3
            await post("refused")
            read = await http.get("/api/items", headers={"x-user": "reader"})
            assert read.status_code == 200  # MEDIUM is not held at HIGH
            memory.usage = 100 * MB
    refused = answers.pop("refused")
    assert refused.status_code == 503
    assert refused.json()["error"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1
    assert {answer.status_code for answer in answers.values()} == {201}
    assert executor.statistics().held == 0


async def test_memory_held_requests_are_refused_at_the_queue_timeout() -> None:
    """A held write waits at most ``queue_timeout``: then 503 ``memory_pressure`` with
    ``Retry-After``."""
    settings = DemoSettings(
        queue_timeout=5.0, memory_probe=FakeMemory(400 * MB), clock=anyio.current_time
    )
    start = anyio.current_time()
    async with client(create_app(settings)) as http:
        answer = await http.post("/api/items", json={}, headers={"x-user": "held"})
    assert anyio.current_time() - start == pytest.approx(5.0, abs=1.0)
    assert answer.status_code == 503
    assert answer.json()["error"] == "memory_pressure"
    assert int(answer.headers["retry-after"]) >= 1


async def test_memory_ceiling_refuses_every_request() -> None:
    """Above the 1024 MB ceiling (``critical``) every request is refused with 503
    ``memory_pressure``."""
    settings = DemoSettings(memory_probe=FakeMemory(1100 * MB), clock=anyio.current_time)
    async with client(create_app(settings)) as http:
        answer = await http.get("/api/items", headers={"x-user": "reader"})
    assert answer.status_code == 503
    assert answer.json()["error"] == "memory_pressure"
    assert int(answer.headers["retry-after"]) >= 1


# -- configured as SEED.md says -------------------------------------------------------


async def test_demo_is_configured_as_the_specification_says() -> None:
    """Forced collection every 5 minutes, a 1024 MB ceiling, the guard given to the
    executor, every limiter and the breaker registered (rate-limit section of the health
    JSON), and a token bucket that refuses the 11th request of a burst."""
    app = create_app(DemoSettings(memory_probe=FakeMemory(100 * MB), clock=anyio.current_time))
    executor = app.executor
    memory = app.memory
    assert executor is not None
    assert memory is not None
    assert executor.guard is memory
    assert memory._core._collect_interval == 300.0
    assert memory.statistics().critical == 1024 * MB
    async with client(app) as http:
        codes = [
            (await http.get("/api/items", headers={"x-user": "burst"})).status_code
            for _ in range(11)
        ]
        assert codes == [200] * 10 + [429]
        refused = await http.get("/api/items", headers={"x-user": "burst"})
        assert refused.json()["limit"] == "burst"
        queue = (await http.get("/api/health/queue")).json()
    assert {"ai", "auth", "upload", "api", "burst"} <= set(queue["rateLimiters"])
    assert queue["rateLimiters"]["burst"]["activeKeys"] >= 1
    assert queue["rateLimit"]["activeBuckets"] >= 1
    assert "ai_upstream" in queue["circuitBreakers"]


# -- real servers, real signals -------------------------------------------------------

_LISTENING = re.compile(r"listening on (http://[0-9.]+:\d+)")


@dataclass
class Run:
    """What one ``brace-demo serve`` process did from its signal(s) to its exit."""

    signals: tuple[int, ...]
    loop: str = "auto"  # uvloop when installed, as ``serve`` runs by default
    url: str = ""
    children: list[int] = field(default_factory=list)
    health_before: int | None = None
    health_draining: int | None = None
    health_after: int | None = None
    answer: tuple[int, dict[str, Any]] | None = None
    answered_after: float | None = None
    exit_status: int | None = None
    exited_after: float | None = None
    orphans: list[int] = field(default_factory=list)
    error: str | None = None


def _status(url: str) -> int | None:
    try:
        return httpx.get(url + "/health", timeout=5.0).status_code
    except httpx.HTTPError:
        return None


def _serve(run: Run) -> None:
    """Start a server with a 50 s AI upstream, put one 50 s request in flight, send the
    run's signals (one a second), and record what happens until it exits."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "brace_demo", "serve", "--port", "0"),
                *("--upstream-latency", "50", "--log-level", "warning", "--loop", run.loop),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            _exercise(process, run)
        except Exception as error:  # reported by the test, with the server's log
            log.seek(0)
            run.error = f"{error!r}\n{log.read().decode(errors='replace')[-3000:]}"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def _exercise(process: subprocess.Popen[str], run: Run) -> None:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 60.0)
    assert ready, "the server did not start within 60 s"
    found = _LISTENING.search(process.stdout.readline())
    assert found is not None
    run.url = url = found[1]
    run.children = [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
    run.health_before = _status(url)
    began: list[float] = []

    def slow_request() -> None:
        try:
            answer = httpx.post(url + "/api/ai", json={"prompt": "hold"}, timeout=80.0)
        except httpx.HTTPError:  # SIGKILL: the connection drops without an answer
            return
        run.answer = (answer.status_code, answer.json())
        run.answered_after = time.monotonic() - began[0]

    request = threading.Thread(target=slow_request)
    request.start()
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:  # until the AI request holds a slot
        queue = httpx.get(url + "/api/health/queue", timeout=5.0).json()
        if queue["queue"]["stats"]["running"] >= 2:  # it, and this check
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the AI request never started")
    began.append(time.monotonic())
    for number, signum in enumerate(run.signals):
        if signum == signal.SIGKILL:
            process.kill()
            break
        process.send_signal(signum)
        time.sleep(1.0)
        if number == 0:
            run.health_draining = _status(url)
    run.exit_status = process.wait(45.0)
    run.exited_after = time.monotonic() - began[0]
    run.health_after = _status(url)
    request.join(45.0)
    give_up = time.monotonic() + 5.0
    while time.monotonic() < give_up:
        run.orphans = [pid for pid in run.children if _alive(pid)]
        if not run.orphans:
            break
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /proc: Linux")
def test_each_signal_drains_within_30_s_and_exits_with_no_child_left() -> None:
    """SIGTERM, SIGINT and SIGUSR2 (the spec's 30 s drain) each: ``/health`` answers 200
    before and 503 while draining, the 50 s request is cancelled at the drain's 30 s and
    answered 503 ``shutting_down``, the server exits with status 0 within 30 s + 2 s of
    the signal, and its fake upstream child is gone; a second SIGTERM cuts the drain
    short and the server exits at once; after SIGKILL the child still goes."""
    runs = {
        "TERM": Run((signal.SIGTERM,)),
        "INT": Run((signal.SIGINT,)),
        "USR2": Run((signal.SIGUSR2,), loop="asyncio"),
        "TERM twice": Run((signal.SIGTERM, signal.SIGTERM)),
        "KILL": Run((signal.SIGKILL,)),
    }
    threads = [threading.Thread(target=_serve, args=(run,)) for run in runs.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120.0)
    for name, run in runs.items():
        print(  # (shown with -s: the figures behind the report)
            f"{name}: status {run.exit_status}, exited {run.exited_after} s and answered "
            f"{run.answered_after} s after the signal, health {run.health_before} / "
            f"{run.health_draining} / {run.health_after}, orphans {run.orphans}"
        )
        assert run.error is None, f"{name}: {run.error}"
        assert run.children, name  # the fake AI upstream
        assert run.orphans == [], name
        assert run.health_before == 200, name
        assert run.health_after is None, name  # nothing listens any more
        assert run.exited_after is not None
        if name == "KILL":
            continue
        assert run.exit_status == 0, name
        assert run.health_draining == 503, name
        assert run.answer is not None
        assert run.answered_after is not None
        assert run.answer[0] == 503, name
        assert run.answer[1]["error"] == "shutting_down", name
        if name == "TERM twice":
            assert run.exited_after < 8.0, name  # cut short by the second signal at 1 s
        else:
            assert 29.0 < run.answered_after < 32.0, name
            assert run.exited_after < 32.0, name
