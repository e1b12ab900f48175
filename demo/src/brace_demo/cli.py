"""``brace-demo``: run the demo server, or push it and its unprotected twin past capacity.

``brace-demo serve`` runs the protected server on 127.0.0.1:8000 (and the fake AI upstream
beside it). ``brace-demo overload --factor 5 --seconds 30`` starts the protected server
and the unprotected twin one after the other, each in its own uvicorn process on a free
loopback port, measures each one's capacity with a closed-loop ramp, drives it at
``factor`` x that capacity with an open-loop load for ``seconds`` (one progress line a
second), and prints the report (`brace_demo.report`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from .loadgen import DEFAULT_MIX, CapacityStep, LoadGenerator, Recorder, percentile
from .report import (
    MB,
    Machine,
    PlotUnavailable,
    ServerRun,
    format_report,
    plot,
    require_matplotlib,
    summarize,
    summarize_reports,
)
from .service import DemoSettings

__all__ = ("main",)

T = TypeVar("T")

_LISTENING = re.compile(rb"listening on http://([0-9.]+):(\d+)")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def main(argv: Sequence[str] | None = None) -> int:
    """The ``brace-demo`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "upstream":
        return _upstream(args)
    if args.command == "summarize":
        texts = {Path(path).name: Path(path).read_text(errors="replace") for path in args.reports}
        print(summarize_reports(texts), end="")
        return 0
    if args.command == "overload":
        if args.plot:
            try:
                require_matplotlib()  # before a two-minute run, not after it
            except PlotUnavailable as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
        thresholds = gc.get_threshold()
        _quiet_collector()  # the load generator's process too, for the run only
        try:
            return _loop_runner(args.loop)(_overload(args))
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("interrupted: every child process stopped", file=sys.stderr)
            return 130
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)
    parser.print_help()
    return 2


def _bounded(
    low: float, high: float, kind: type[float] | type[int] = float
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}], got {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brace-demo", description="brace's reference server and its overload demo."
    )
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="run the demo server (protected by default)")
    serve.add_argument("--app", choices=("protected", "twin"), default="protected")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_bounded(0, 65535, int), default=8000)
    serve.add_argument(
        "--upstream-url",
        help="the AI upstream's base URL (default: start the fake one on a free port)",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--loop", **_LOOP_OPTION)
    serve.add_argument(
        "--drain-timeout",
        type=_bounded(0.1, 600),
        default=30.0,
        help="seconds in-flight requests get after SIGTERM / SIGINT / SIGUSR2 (default 30)",
    )
    serve.add_argument(
        "--upstream-latency",
        type=_bounded(0, 600),
        default=0.5,
        help="seconds the fake AI upstream takes per answer (without --upstream-url)",
    )

    upstream = commands.add_parser("upstream", help="run the fake AI upstream")
    upstream.add_argument("--host", default="127.0.0.1")
    upstream.add_argument("--port", type=_bounded(0, 65535, int), default=0)
    upstream.add_argument("--latency", type=_bounded(0, 60), default=0.5)
    upstream.add_argument("--failure-rate", type=_bounded(0, 1), default=0.0)
    upstream.add_argument("--loop", **_LOOP_OPTION)

    stored = commands.add_parser(
        "summarize", help="tabulate stored overload reports: each run, medians and ranges"
    )
    stored.add_argument("reports", nargs="+", metavar="REPORT", help="saved overload output")

    overload = commands.add_parser(
        "overload", help="push the protected server and its twin past capacity, then report"
    )
    overload.add_argument("--factor", type=_bounded(0.1, 20), default=5.0)
    overload.add_argument("--seconds", type=_bounded(1, 600), default=30.0)
    overload.add_argument("--plot", metavar="PNG", help="also write a PNG (needs matplotlib)")
    overload.add_argument(
        "--only", choices=("protected", "twin", "both"), default="both", help="which servers"
    )
    overload.add_argument(
        "--timeout", type=_bounded(0.1, 120), default=10.0, help="client timeout (s)"
    )
    overload.add_argument("--max-connections", type=_bounded(16, 20000, int), default=4096)
    overload.add_argument("--users", type=_bounded(1, 10**6, int), default=20_000)
    overload.add_argument("--ramp-step", type=_bounded(0.2, 10), default=1.0)
    overload.add_argument("--ramp-max-clients", type=_bounded(1, 4096, int), default=256)
    overload.add_argument(
        "--nice",
        type=_bounded(-20, 19, int),
        default=-10,
        help="the nice value of the servers and the load generator, ahead of the noise and "
        "the machine's other work, as a deployment runs a server ahead of batch jobs and "
        "as clients run on other machines (below the current value needs root or "
        "CAP_SYS_NICE; otherwise they keep the current one, and the report says so)",
    )
    overload.add_argument(
        "--noise",
        action="store_true",
        help="run a CPU hog (a process spinning on one core) beside the servers throughout",
    )
    overload.add_argument("--loop", **_LOOP_OPTION)
    return parser


# -- the servers, in this process ------------------------------------------------------


def _quiet_collector() -> None:
    """Keep the cyclic garbage collector's pauses short under load, the same for both
    servers: what exists at startup (modules, the app) lives as long as the process, so
    freeze it out of the collector's passes, and collect young objects less often (a
    server's requests make few reference cycles)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


_LOOP_OPTION: dict[str, Any] = {
    "choices": ("auto", "asyncio", "uvloop"),
    "default": "auto",
    "help": "the servers' event loop (auto: uvloop when installed, as uvicorn[standard] runs)",
}


def _loop_runner(loop: str) -> Callable[[Coroutine[Any, Any, T]], T]:
    """``asyncio.run``, or ``uvloop.run`` for ``uvloop`` (and for ``auto`` when installed)."""
    if loop == "asyncio":
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        if loop == "uvloop":
            raise SystemExit("--loop uvloop needs uvloop: pip install uvloop") from None
        return asyncio.run
    return uvloop.run


def _run_uvicorn(
    app: object,
    host: str,
    port: int,
    log_level: str,
    loop: str = "auto",
    *,
    graceful: float | None = None,
) -> list[int]:
    """Run ``app`` under uvicorn on ``loop`` and print ``listening on http://host:port
    (loop)`` once it listens (port 0 picks a free port); return the signals that stopped it.

    SIGTERM, SIGINT and SIGUSR2 all stop the server the same way. uvicorn re-raises the
    signals it caught once it has stopped; the handlers installed here (which uvicorn
    restores before re-raising) only record them, so the caller can stop its children
    and return instead of being killed on the spot. ``graceful``: uvicorn's own limit on
    the requests still open once it starts closing (brace's drain comes before it).
    """
    import uvicorn

    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=None if graceful is None else math.ceil(graceful),
    )
    server = uvicorn.Server(config)
    received: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        server.handle_exit(signum, frame)  # (a no-op once the server has stopped)

    previous = {number: signal.signal(number, stop) for number in _STOP_SIGNALS}
    _quiet_collector()

    async def run() -> None:
        task = asyncio.ensure_future(server.serve())
        while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn has a flag)
            await asyncio.sleep(0.01)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()
            running = type(asyncio.get_running_loop()).__module__.split(".")[0]
            name = "uvloop" if running == "uvloop" else "asyncio"
            print(f"listening on http://{bound[0]}:{bound[1]} ({name})", flush=True)
        await task

    try:
        _loop_runner(loop)(run())
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return received


#: the signals that stop ``serve`` and ``upstream`` (SEED.md's three)
_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR2") if hasattr(signal, name)
)


def _upstream(args: argparse.Namespace) -> int:
    from .upstream import UpstreamApp

    app = UpstreamApp(latency=args.latency, failure_rate=args.failure_rate)
    # a stand-in for a remote service: on SIGTERM it waits at most 1 s for open requests
    _run_uvicorn(app, args.host, args.port, "warning", args.loop, graceful=1.0)
    return 0


def _serve(args: argparse.Namespace) -> int:
    upstream: subprocess.Popen[bytes] | None = None
    url = args.upstream_url
    if url is None:
        upstream = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "brace_demo",
                "upstream",
                "--port",
                "0",
                "--loop",
                args.loop,
                "--latency",
                str(args.upstream_latency),
            ],
            stdout=subprocess.PIPE,
            # its own session: a Ctrl-C in the terminal reaches the server alone, which
            # still needs the upstream while it drains; and it dies with the server
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),  # (no threads yet)
        )
        assert upstream.stdout is not None
        found = _LISTENING.search(upstream.stdout.readline())
        if found is None:
            _stop_child(upstream)
            print("the fake AI upstream did not start", file=sys.stderr)
            return 1
        url = f"http://{found[1].decode()}:{found[2].decode()}"
    settings = DemoSettings(
        upstream_url=url,
        drain_timeout=args.drain_timeout,
        upstream_latency=args.upstream_latency,
    )
    try:
        if args.app == "twin":
            from .twin import create_twin

            _run_uvicorn(create_twin(settings), args.host, args.port, args.log_level, args.loop)
        else:
            from .app import create_app

            _run_uvicorn(
                create_app(settings),
                args.host,
                args.port,
                args.log_level,
                args.loop,
                graceful=5.0,  # after brace's drain: anything brace does not see
            )
    finally:
        if upstream is not None:
            _stop_child(upstream)
    return 0


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM, up to 10 s to exit, then SIGKILL; reap it either way."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if child.stdout is not None:
        child.stdout.close()


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when ``parent`` dies, however
    it dies (``PR_SET_PDEATHSIG``); ``None`` elsewhere."""
    if not sys.platform.startswith("linux"):
        return None

    def arrange() -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call
            os._exit(1)

    return arrange


# -- the overload demo -----------------------------------------------------------------


class _Process:
    """A child process (server or upstream) announcing its address on stdout."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.host = ""
        self.port = 0
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, arguments: list[str], log: Path) -> _Process:
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "brace_demo",
                *arguments,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        child = cls(process, log)
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
        except asyncio.TimeoutError:
            line = b""
        found = _LISTENING.search(line)
        if found is None:
            await child.stop(1.0)
            raise RuntimeError(f"{' '.join(arguments)} did not start; see {log}")
        child.host, child.port = found[1].decode(), int(found[2])

        child._drain = asyncio.ensure_future(child._discard(process.stdout))
        return child

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        while await stream.read(65536):
            pass

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def rss(self) -> int | None:
        """Resident set size in bytes, from ``/proc/<pid>/statm``."""
        try:
            with open(f"/proc/{self.process.pid}/statm", "rb") as statm:
                return int(statm.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return None

    async def stop(self, patience: float) -> str:
        """SIGTERM, then SIGKILL after ``patience`` seconds; says which ended it."""
        process = self.process
        began = time.monotonic()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), patience)
                ending = f"stopped on SIGTERM in {time.monotonic() - began:.1f} s"
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
                ending = f"did not stop on SIGTERM within {patience:g} s: killed"
        else:
            ending = f"had exited (status {process.returncode})"
        if self._drain is not None:
            self._drain.cancel()
        return ending


#: the noise: a process spinning on one core; it stops when its parent (the overload run)
#: is gone, even after a SIGKILL that leaves no chance to stop it
_HOG = """
import os, sys
parent, core = int(sys.argv[1]), int(sys.argv[2])
try:
    os.sched_setaffinity(0, {core})
except (AttributeError, OSError):
    pass
while os.getppid() == parent:
    for _ in range(100_000):
        pass
"""


class _Noise:
    """A CPU hog on one core (the last one this process may run on), beside the servers."""

    def __init__(self) -> None:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
        self.core = cores[-1]
        self.process = subprocess.Popen(
            [sys.executable, "-c", _HOG, str(os.getpid()), str(self.core)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )

    def cpu_seconds(self) -> float | None:
        return _cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid``, from ``/proc/<pid>/stat``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, ValueError, IndexError):
        return None


async def _health(host: str, port: int, timeout: float) -> int | None:
    """The status of ``GET /health``, or ``None`` without an answer within ``timeout``."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return None
    try:
        writer.write(b"GET /health HTTP/1.1\r\nhost: demo\r\nconnection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), timeout)
        return int(line[9:12])
    except (OSError, ValueError, asyncio.TimeoutError):
        return None
    finally:
        writer.close()


def _mix_text() -> str:
    total = sum(kind.weight for kind in DEFAULT_MIX)
    parts = [
        f"{kind.priority} {kind.weight / total:.0%} {kind.method} {kind.path}"
        for kind in DEFAULT_MIX
    ]
    return " / ".join(parts)


async def _measure(
    label: str, arguments: list[str], args: argparse.Namespace, workdir: Path
) -> tuple[ServerRun, str]:
    log = workdir / f"{label.split()[0]}.log"
    server = await _Process.start(arguments, log)
    priority = _set_nice(server.process.pid, args.nice)
    print(f"\n== {label}: pid {server.process.pid} on {server.url}, {priority}", flush=True)
    generator = LoadGenerator(
        server.host,
        server.port,
        users=args.users,
        max_connections=args.max_connections,
        timeout=args.timeout,
    )
    try:

        def on_step(step: CapacityStep) -> None:
            print(
                f"   capacity ramp: {step.clients:4d} clients -> {step.rate:7.1f} 2xx/s "
                f"(p50 {step.p50 * 1000:.0f} ms, p99 {step.p99 * 1000:.0f} ms, "
                f"{step.errors} not 2xx)",
                flush=True,
            )

        capacity = await generator.measure_capacity(
            step=args.ramp_step, max_clients=args.ramp_max_clients, on_step=on_step
        )
        await asyncio.sleep(1.0)  # let the ramp's last requests and queues settle
        rate = args.factor * capacity.capacity
        print(
            f"   capacity {capacity.capacity:.0f} req/s; now {args.factor:g} x = {rate:.0f} "
            f"req/s for {args.seconds:g} s",
            flush=True,
        )
        loop = asyncio.get_running_loop()
        recorder = Recorder(loop.time())
        rss: list[tuple[float, int]] = []
        first = server.rss()
        if first is not None:
            rss.append((0.0, first))
        reporter = asyncio.ensure_future(_progress(server, generator, recorder, rss))
        server_cpu = _cpu_seconds(server.process.pid)
        client_cpu = time.process_time()
        began = loop.time()
        try:
            await generator.open_loop(rate, args.seconds, recorder=recorder)
        finally:
            reporter.cancel()
            generator.close()
        wall = loop.time() - began
        after = _cpu_seconds(server.process.pid)
        cpu = (
            None
            if after is None or server_cpu is None
            else ((after - server_cpu) / wall, (time.process_time() - client_cpu) / wall)
        )
        last = server.rss()
        if last is not None:
            rss.append((loop.time() - recorder.start, last))
        alive = server.alive
        status = await _health(server.host, server.port, 5.0) if alive else None
        survived = alive and status == 200
        print(
            f"   after the run: process {'alive' if alive else 'DEAD'}, "
            f"GET /health -> {status if status is not None else 'no answer'}",
            flush=True,
        )
    finally:
        generator.close()
        ending = await server.stop(15.0)
    text = log.read_text(errors="replace") if log.exists() else ""
    run = ServerRun(
        label=label,
        capacity=capacity,
        rate=rate,
        seconds=args.seconds,
        timeout=args.timeout,
        recorder=recorder,
        rss=tuple(rss),
        survived=survived,
        ending=ending,
        slow_logged=text.count("slow request"),
        errors_logged=text.count("Traceback"),
        log=str(log),
        cpu=cpu,
    )
    return run, priority


async def _progress(
    server: _Process, generator: LoadGenerator, recorder: Recorder, rss: list[tuple[float, int]]
) -> None:
    """One line a second: what was sent and answered in the last second."""
    loop = asyncio.get_running_loop()
    previous = list(recorder.totals)
    pid = server.process.pid
    cpu_before = _cpu_seconds(pid) or 0.0
    own_before = time.process_time()
    tick = 0
    while True:
        tick += 1
        await asyncio.sleep(max(0.0, recorder.start + tick - loop.time()))
        totals = list(recorder.totals)
        delta = [now - before for now, before in zip(totals, previous, strict=True)]
        previous = totals
        high = recorder.recent_high
        recorder.recent_high = []
        high_p99 = percentile(high, 0.99) * 1000 if high else None
        cpu = _cpu_seconds(pid) or 0.0
        own = time.process_time()
        cpu_text = f"CPU server {cpu - cpu_before:4.0%} client {own - own_before:4.0%}"
        cpu_before, own_before = cpu, own
        size = server.rss()
        if size is not None:
            rss.append((loop.time() - recorder.start, size))
        print(
            f"   t={tick:3d} s  answered {delta[7]:5d}  2xx {delta[0]:5d}  429 {delta[1]:4d}  "
            f"503 {delta[2]:5d}  5xx {delta[3]:3d}  timeouts {delta[4]:4d}  "
            f"not sent {delta[6]:5d}  in flight {generator.in_flight:5d}  "
            f"HIGH p99 {'-' if high_p99 is None else f'{high_p99:.1f}':>6} ms  "
            f"RSS {(size or 0) / MB:5.0f} MB  {cpu_text}",
            flush=True,
        )


def _set_nice(pid: int, nice: int) -> str:
    """Set process ``pid``'s nice value; say what it runs at (raising a priority above
    the parent's needs root or CAP_SYS_NICE)."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError:
        current = os.getpriority(os.PRIO_PROCESS, pid)
        return f"nice {current} (nice {nice} not permitted)"
    return f"nice {nice}"


async def _overload(args: argparse.Namespace) -> int:
    """The whole overload demo; SIGTERM or SIGINT stop it, and every child with it."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await _overload_run(args)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def _overload_run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="brace-demo-"))
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    print(
        f"brace-demo overload: {args.factor:g} x capacity for {args.seconds:g} s; "
        f"request mix {_mix_text()}; {args.users} users (X-User), "
        f"client timeout {args.timeout:g} s, at most {args.max_connections} connections",
        flush=True,
    )
    noise = _Noise() if args.noise else None  # before renicing: at the usual priority
    if noise is not None:
        print(f"noise: a CPU hog spinning on core {noise.core} (pid {noise.process.pid})")
    usual = os.getpriority(os.PRIO_PROCESS, 0)
    generator_priority = _set_nice(0, args.nice)
    runs: list[ServerRun] = []
    priority = ""
    noise_cpu = None
    try:
        upstream = await _Process.start(
            ["upstream", "--port", "0", "--loop", args.loop], workdir / "upstream.log"
        )
        try:
            _set_nice(upstream.process.pid, args.nice)
            servers = [
                ("protected (brace)", "protected"),
                ("unprotected twin", "twin"),
            ]
            for label, app in servers:
                if args.only not in ("both", app):
                    continue
                arguments = [
                    "serve",
                    "--app",
                    app,
                    "--port",
                    "0",
                    "--upstream-url",
                    upstream.url,
                    "--log-level",
                    "warning",
                    "--loop",
                    args.loop,
                ]
                run, priority = await _measure(label, arguments, args, workdir)
                runs.append(run)
        finally:
            await upstream.stop(5.0)
    finally:
        if noise is not None:
            noise_cpu = noise.cpu_seconds()
            noise.stop()
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, usual)  # back to the usual (always allowed)
    machine = Machine(
        cores=len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1,
        load_before=load_before,
        noise=None if noise is None else f"a CPU hog spinning on core {noise.core}",
        noise_cpu=noise_cpu,
        priority=f"servers {priority}, load generator {generator_priority}"
        + ("" if noise is None else f", noise nice {usual}"),
        logs=str(workdir),
    )
    summaries = [summarize(run) for run in runs]
    print()
    print(
        format_report(
            summaries, factor=args.factor, seconds=args.seconds, mix=_mix_text(), machine=machine
        )
    )
    status = 0
    if args.plot:
        try:
            plot(summaries, runs, args.plot, factor=args.factor, machine=machine)
            print(f"plot written to {args.plot}")
        except PlotUnavailable as error:
            print(f"error: {error}", file=sys.stderr)
            status = 1
    return status
