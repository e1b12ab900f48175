"""GracefulShutdown: readiness, delay, draining, chaining, and real signals in children."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import anyio
import httpx
import pytest

import brace
from brace import GracefulShutdown, PriorityExecutor

PROGRAMS = Path(__file__).resolve().parent / "programs"


class FakeDrainable:
    """Records the timeout it was given and takes ``takes`` seconds to drain."""

    def __init__(self, takes: float = 0.0, error: Exception | None = None) -> None:
        self.takes = takes
        self.error = error
        self.timeouts: list[float] = []
        self.drained_at: float | None = None

    async def drain(self, timeout: float) -> str:
        self.timeouts.append(timeout)
        await anyio.sleep(self.takes)
        if self.error is not None:
            raise self.error
        self.drained_at = anyio.current_time()
        return "drained"


async def test_trigger_flips_readiness_waits_the_delay_and_drains() -> None:
    """Readiness turns off at once; drains start after ``delay`` with the time left."""
    shutdown = GracefulShutdown(timeout=10.0, delay=2.0, clock=anyio.current_time)
    first, second = FakeDrainable(1.0), FakeDrainable(3.0)
    shutdown.register(first)
    shutdown.register(second)
    assert shutdown.ready
    start = anyio.current_time()

    async def stop() -> None:
        await anyio.sleep(1.0)
        shutdown.trigger()
        assert not shutdown.ready

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop)
        report = await shutdown.wait()
    assert first.timeouts == second.timeouts == [pytest.approx(8.0)]
    assert first.drained_at == pytest.approx(start + 4.0)  # concurrent drains
    assert second.drained_at == pytest.approx(start + 6.0)
    assert (report.signal, report.drained, report.timed_out) == (
        None,
        ("drained", "drained"),
        False,
    )
    assert report.duration == pytest.approx(5.0)
    assert shutdown.report is report
    assert await shutdown.wait() is report  # later calls get the same report
    assert await shutdown.wait_drained() is report


async def test_drain_that_overstays_is_cut_off() -> None:
    """A drainable ignoring its timeout is cancelled one second after it."""
    shutdown = GracefulShutdown(timeout=2.0, clock=anyio.current_time)
    shutdown.register(FakeDrainable(100.0))
    shutdown.trigger()
    report = await shutdown.wait()
    assert report.drained == (None,)
    assert report.duration == pytest.approx(3.0)


async def test_a_failing_drain_is_reported_not_raised() -> None:
    """An exception from a drain takes its place in the report."""
    error = RuntimeError("boom")
    shutdown = GracefulShutdown(timeout=2.0, clock=anyio.current_time)
    shutdown.register(FakeDrainable(0.1, error=error))
    shutdown.register(FakeDrainable(0.1))
    shutdown.trigger()
    report = await shutdown.wait()
    assert report.drained == (error, "drained")


async def test_executor_in_flight_work_completes_and_new_work_is_rejected() -> None:
    """A real PriorityExecutor: running and queued work finish, new calls get ShuttingDown."""
    shutdown = GracefulShutdown(timeout=30.0, clock=anyio.current_time)
    executor = shutdown.register(PriorityExecutor(concurrency=1, clock=anyio.current_time))
    finished: list[int] = []

    async def job(number: int) -> None:
        await anyio.sleep(1.0)
        finished.append(number)

    async with anyio.create_task_group() as tg:
        tg.start_soon(executor.run, job, 1)
        tg.start_soon(executor.run, job, 2)
        await anyio.sleep(0.5)
        shutdown.trigger(signal.SIGTERM)
        report = await shutdown.wait()
    with pytest.raises(brace.ShuttingDown):
        await executor.run(job, 3)
    assert sorted(finished) == [1, 2]  # trio may start the two in either order
    assert report.signal == signal.SIGTERM
    assert not report.timed_out
    (drain,) = report.drained
    assert isinstance(drain, brace.DrainReport)
    assert drain.finished == 2


async def test_executor_work_past_the_timeout_is_cancelled() -> None:
    """Work still running at the timeout is cancelled and the report says timed out."""
    shutdown = GracefulShutdown(timeout=1.0, clock=anyio.current_time)
    executor = shutdown.register(PriorityExecutor(clock=anyio.current_time))
    outcomes: list[str] = []

    async def submit() -> None:
        try:
            await executor.run(anyio.sleep, 60.0)
        except brace.ShuttingDown:
            outcomes.append("cancelled")

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit)
        await anyio.sleep(0.1)
        shutdown.trigger()
        report = await shutdown.wait()
    assert outcomes == ["cancelled"]
    assert report.timed_out
    assert report.duration == pytest.approx(1.0)


async def test_second_trigger_cuts_the_drain_short() -> None:
    """Asking twice cancels the drains and reports a timeout."""
    shutdown = GracefulShutdown(timeout=60.0, clock=anyio.current_time)
    shutdown.register(FakeDrainable(30.0))

    async def impatient() -> None:
        shutdown.trigger()
        await anyio.sleep(5.0)
        shutdown.trigger()

    async with anyio.create_task_group() as tg:
        tg.start_soon(impatient)
        report = await shutdown.wait()
    assert report.timed_out
    assert report.duration == pytest.approx(5.0)


async def test_chain_mode_calls_the_previous_handler_and_restores_it() -> None:
    """With ``chain=True`` the server's handler still runs, and is put back afterwards."""
    calls: list[int] = []

    def server_handler(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    old = signal.signal(signal.SIGUSR2, server_handler)
    try:
        shutdown = GracefulShutdown(timeout=5.0, signals=[signal.SIGUSR2], chain=True)
        drainable = shutdown.register(FakeDrainable(0.5))
        async with anyio.create_task_group() as tg:
            tg.start_soon(shutdown.wait)
            await anyio.sleep(0.1)
            assert signal.getsignal(signal.SIGUSR2) != server_handler
            signal.raise_signal(signal.SIGUSR2)
            await anyio.sleep(0.1)
            assert calls == [signal.SIGUSR2]  # chained at once (no delay)
            assert not shutdown.ready
        report = shutdown.report
        assert report is not None
        assert report.signal == signal.SIGUSR2
        assert drainable.timeouts
        assert signal.getsignal(signal.SIGUSR2) == server_handler
    finally:
        signal.signal(signal.SIGUSR2, old)


async def test_chain_mode_with_delay_calls_the_previous_handler_after_it() -> None:
    """With a delay, the server hears the signal only once the delay has passed."""
    heard_at: list[float] = []

    def server_handler(signum: int, frame: FrameType | None) -> None:
        heard_at.append(anyio.current_time())

    old = signal.signal(signal.SIGUSR2, server_handler)
    try:
        shutdown = GracefulShutdown(
            timeout=5.0,
            signals=[signal.SIGUSR2],
            chain=True,
            delay=2.0,
            clock=anyio.current_time,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(shutdown.wait)
            await anyio.sleep(0.1)
            sent = anyio.current_time()
            signal.raise_signal(signal.SIGUSR2)
            await anyio.sleep(0.1)
            assert not shutdown.ready
            assert heard_at == []
        assert heard_at == [pytest.approx(sent + 2.0)]
    finally:
        signal.signal(signal.SIGUSR2, old)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"timeout": 0}, ValueError),
        ({"delay": -1}, ValueError),
        ({"delay": "1"}, TypeError),
        ({"signals": ()}, ValueError),
        ({"signals": [9999]}, ValueError),
        ({"signals": ["SIGNOPE"]}, ValueError),
        ({"signals": ["TERM"]}, ValueError),
        ({"chain": 1}, TypeError),
        ({"clock": 3}, TypeError),
    ],
)
def test_bad_configuration_raises(kwargs: dict[str, object], error: type[Exception]) -> None:
    """Bad options fail at construction."""
    with pytest.raises(error):
        GracefulShutdown(**kwargs)  # type: ignore[arg-type]


def test_signals_by_name_and_the_defaults() -> None:
    """Signals may be named; the default is SIGTERM, SIGINT and SIGUSR2 (shown as names)."""
    assert GracefulShutdown().signals == (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
    named = GracefulShutdown(signals=["SIGUSR1", signal.SIGHUP])
    assert named.signals == (signal.SIGUSR1, signal.SIGHUP)
    assert GracefulShutdown(signals="SIGTERM").signals == (signal.SIGTERM,)


def test_register_refuses_objects_without_drain() -> None:
    """Only objects with a ``drain`` method can be registered."""
    shutdown = GracefulShutdown()
    with pytest.raises(TypeError, match="drain"):
        shutdown.register(object())  # type: ignore[type-var]
    drainable = shutdown.register(FakeDrainable())
    shutdown.unregister(drainable)
    with pytest.raises(ValueError):
        shutdown.unregister(drainable)


# -- real processes, real signals -----------------------------------------------------


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The child's next stdout line, failing the test if none comes within ``timeout``."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        process.kill()
        pytest.fail(f"no output from the child within {timeout} s")
    return process.stdout.readline().strip()


def _finish(
    process: subprocess.Popen[str], timeout: float, signum: int = signal.SIGTERM
) -> tuple[str, float]:
    """Wait for the child to exit (status 0, or ``signum`` re-raised after the drain);
    its remaining output and how long it took."""
    start = time.monotonic()
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"the child did not exit within {timeout} s")
    assert process.returncode in (0, -signum), err
    return out, time.monotonic() - start


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_drains_in_flight_work_in_a_real_process(backend: str) -> None:
    """On SIGTERM the running and queued jobs finish, a late job is refused, exit follows."""
    process = subprocess.Popen(
        [sys.executable, str(PROGRAMS / "drain_app.py"), backend, "0.5", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert _read_line(process, 10.0) == "ready"
    process.send_signal(signal.SIGTERM)
    out, elapsed = _finish(process, 10.0)
    assert out.splitlines() == ["rejected late job", "completed 3", "timed out False", "signal 15"]
    assert elapsed < 5.0  # well within the drain timeout: two rounds of 0.5 s work


def test_sigterm_past_the_drain_timeout_cancels_in_a_real_process() -> None:
    """Work longer than the drain timeout is cancelled and the process exits on time."""
    process = subprocess.Popen(
        [sys.executable, str(PROGRAMS / "drain_app.py"), "asyncio", "30", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert _read_line(process, 10.0) == "ready"
    process.send_signal(signal.SIGTERM)
    out, elapsed = _finish(process, 10.0)
    lines = out.splitlines()
    assert sorted(lines[:4]) == ["cancelled 0", "cancelled 1", "cancelled 2", "rejected late job"]
    assert lines[4:] == ["completed 0", "timed out True", "signal 15"]
    assert elapsed < 3.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGUSR2])
def test_sigint_and_sigusr2_drain_in_a_real_process(backend: str, signum: int) -> None:
    """SIGINT and SIGUSR2, the other two default signals, drain and exit as SIGTERM does."""
    process = subprocess.Popen(
        [sys.executable, str(PROGRAMS / "drain_app.py"), backend, "0.5", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert _read_line(process, 10.0) == "ready"
    process.send_signal(signum)
    out, elapsed = _finish(process, 10.0, signum)
    assert out.splitlines() == [
        "rejected late job",
        "completed 3",
        "timed out False",
        f"signal {int(signum)}",
    ]
    assert elapsed < 5.0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR2])
def test_each_signal_under_uvicorn_drains_and_the_server_exits(signum: int) -> None:
    """Under uvicorn, SIGTERM, SIGINT and SIGUSR2 (for which uvicorn has no handler) each
    stop the server after the drain, and the request in flight completes."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(PROGRAMS / "uvicorn_app.py"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _read_line(process, 15.0) == "serving"
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10.0
        while True:
            try:
                assert httpx.get(f"{base}/ready", timeout=1.0).status_code == 200
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        responses: list[httpx.Response] = []
        request = threading.Thread(
            target=lambda: responses.append(httpx.get(f"{base}/slow", timeout=10.0))
        )
        request.start()
        time.sleep(0.3)  # the request is in flight in brace's executor
        os.kill(process.pid, signum)
        request.join(10.0)
        out, elapsed = _finish(process, 10.0, signum)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert [r.status_code for r in responses] == [200]
    assert responses[0].text == "done"
    assert "drained 1 timed_out False" in out.splitlines()
    assert "executor running 0" in out.splitlines()
    assert elapsed < 5.0


async def test_cancelled_wait_restores_handlers_and_can_start_over() -> None:
    """Cancelling wait() puts the previous handler back; a new wait() works afterwards."""

    def server_handler(signum: int, frame: FrameType | None) -> None:
        """Stands in for a server's handler."""

    old = signal.signal(signal.SIGUSR2, server_handler)
    try:
        shutdown = GracefulShutdown(timeout=5.0, signals=[signal.SIGUSR2], chain=True)
        with anyio.move_on_after(1.0):
            await shutdown.wait()
        assert signal.getsignal(signal.SIGUSR2) == server_handler
        assert shutdown.ready
        shutdown.trigger()
        report = await shutdown.wait()
        assert report.signal is None
        assert signal.getsignal(signal.SIGUSR2) == server_handler
    finally:
        signal.signal(signal.SIGUSR2, old)
