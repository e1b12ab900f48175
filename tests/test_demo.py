"""The reference server (`brace_demo`): its routes, its protections, the report, and a
very short real overload run (two uvicorn subprocesses on 127.0.0.1, about 25 s)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

import brace
from brace_demo.app import create_app
from brace_demo.cli import _Noise, main
from brace_demo.loadgen import (
    ERROR,
    NO_RETRY_AFTER,
    NOT_SENT,
    TIMEOUT,
    CapacityResult,
    CapacityStep,
    Recorder,
)
from brace_demo.report import (
    Machine,
    PlotUnavailable,
    ServerRun,
    format_report,
    plot,
    plot_data,
    summarize,
)
from brace_demo.service import DemoSettings
from brace_demo.twin import create_twin

MB = 2**20


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://demo")


@pytest.fixture
async def protected() -> AsyncIterator[httpx.AsyncClient]:
    """The protected app with a quick in-process AI upstream."""
    async with client(create_app(DemoSettings(upstream_latency=0.2))) as http:
        yield http


async def test_protected_routes_answer(protected: httpx.AsyncClient) -> None:
    """Every route of the protected server answers, the health ones with brace's figures."""
    user = {"x-user": "alice"}
    assert (await protected.get("/health")).json() == {"schemaVersion": 1, "status": "ok"}
    assert (await protected.get("/api/health")).json() == {"schemaVersion": 1, "status": "ok"}
    full = await protected.get("/api/health/full")
    assert full.status_code == 200
    assert {"database", "ai_upstream", "memory", "shutdown"} <= set(full.json()["checks"])
    queue = (await protected.get("/api/health/queue")).json()
    assert queue["executors"]["default"]["concurrency"] == 10
    assert queue["circuitBreakers"]["ai_upstream"]["state"] == "CLOSED"
    assert "rss" in (await protected.get("/api/health/metrics")).json()["memory"]
    assert (await protected.get("/api/items", headers=user)).json() == {"items": []}
    created = await protected.post("/api/items", json={"name": "lamp"}, headers=user)
    assert created.status_code == 201
    assert (await protected.get("/api/items", headers=user)).json()["items"][0]["name"] == "lamp"
    login = await protected.post("/api/auth", json={"password": "x"}, headers=user)
    assert login.json()["user"] == "alice"
    assert (await protected.post("/api/upload", content=b"x" * 1000, headers=user)).json() == {
        "stored": 1000
    }
    answer = await protected.post("/api/ai", json={"prompt": "why brace"}, headers=user)
    assert answer.status_code == 200
    assert "why brace" in answer.json()["completion"]


async def test_limits_count_per_user(protected: httpx.AsyncClient) -> None:
    """The sixth upload of a minute from one user is refused (429 ``rate_limited``);
    another user behind the same address is not."""
    codes = [
        (await protected.post("/api/upload", content=b"x", headers={"x-user": "bob"})).status_code
        for _ in range(6)
    ]
    assert codes == [201] * 5 + [429]
    refused = await protected.post("/api/upload", content=b"x", headers={"x-user": "bob"})
    assert refused.json()["error"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    other = await protected.post("/api/upload", content=b"x", headers={"x-user": "carol"})
    assert other.status_code == 201


async def test_full_queue_refuses_with_503_and_high_jumps_it() -> None:
    """With one slot and one queue place taken, a read is refused (503 ``queue_full``)
    while a health check (HIGH) still gets in by dropping the waiting read."""
    settings = DemoSettings(concurrency=1, reserved=0, max_queue=1, read_latency=10.0)
    async with client(create_app(settings)) as http:
        answers: dict[str, httpx.Response] = {}

        async def get(name: str, path: str) -> None:
            answers[name] = await http.get(path, headers={"x-user": name})

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(get, "running", "/api/items")
            await anyio.sleep(1)
            tasks.start_soon(get, "waiting", "/api/items")
            await anyio.sleep(1)
            tasks.start_soon(get, "refused", "/api/items")
            await anyio.sleep(1)
            tasks.start_soon(get, "health", "/health")
    assert answers["running"].status_code == 200
    assert answers["refused"].status_code == 503
    assert answers["refused"].json()["error"] == "queue_full"
    assert answers["waiting"].status_code == 503  # dropped for the more important check
    assert answers["health"].status_code == 200


async def test_two_slots_are_kept_for_high() -> None:
    """The demo keeps 2 of its 10 slots for HIGH: with 8 reads running a 9th waits, while
    a login (HIGH) starts at once and answers in its own query's time."""
    app = create_app(DemoSettings(read_latency=10.0))
    executor = app.executor
    assert executor is not None
    async with client(app) as http, anyio.create_task_group() as tasks:

        async def read(user: str) -> None:
            await http.get("/api/items", headers={"x-user": user})

        for number in range(9):
            tasks.start_soon(read, f"r{number}")
        await anyio.sleep(1)
        stats = executor.statistics()
        assert (stats.running, stats.pending) == (8, 1)
        began = anyio.current_time()
        login = await http.post("/api/auth", json={}, headers={"x-user": "alice"})
        assert login.status_code == 200
        assert anyio.current_time() - began == pytest.approx(0.01, abs=0.005)
        tasks.cancel_scope.cancel()


async def test_ai_breaker_opens_after_failures() -> None:
    """When the upstream keeps failing, each request ends in 502 after its retries until
    the /api/ai breaker has seen 15 failed requests; then /api/ai answers 503
    ``circuit_open`` at once, before queueing, without calling the upstream."""
    settings = DemoSettings(upstream_latency=0.01, upstream_failure_rate=1.0)
    app = create_app(settings)
    breaker = app.app.state.breaker  # type: ignore[attr-defined]
    async with client(app) as http:
        codes = []
        for number in range(16):
            answer = await http.post("/api/ai", json={}, headers={"x-user": f"u{number}"})
            codes.append(answer.status_code)
        assert breaker.state is brace.CircuitState.OPEN
        assert codes == [502] * 15 + [503]
        assert answer.json()["error"] == "circuit_open"
        assert int(answer.headers["retry-after"]) >= 1
        admitted = app.executor.statistics().admitted  # type: ignore[union-attr]
        assert admitted == 15  # the refused request took no slot


async def test_twin_answers_the_same_routes() -> None:
    """The unprotected twin serves the same paths, with no limits at all."""
    async with client(create_twin(DemoSettings(upstream_latency=0.2))) as http:
        for path in ("/health", "/api/health", "/api/health/full", "/api/health/queue"):
            assert (await http.get(path)).status_code == 200
        assert (await http.get("/api/health/metrics")).json()["process"]["pid"] > 0
        codes = [(await http.post("/api/upload", content=b"x")).status_code for _ in range(8)]
        assert codes == [201] * 8
        assert (await http.post("/api/ai", json={"prompt": "hi"})).status_code == 200
        assert (await http.get("/api/items")).status_code == 200


def fake_run(label: str, *, high_latency: float, survived: bool = True) -> ServerRun:
    """A run of 10 s: 100 2xx a second, some 503s and 429s, one 500, a timeout."""
    recorder = Recorder(0.0)
    for index in range(1000):
        due = index / 100
        recorder.record(
            due,
            due + (high_latency if index % 10 == 0 else 0.5),
            200,
            0 if index % 10 == 0 else 1,
            None,
        )
    for index in range(300):
        recorder.record(index / 30, index / 30 + 0.001, 503, 2, "queue_full")
    recorder.record(1.0, 1.001, 429, 1, "rate_limited")
    recorder.record(2.0, 2.001, 500, 1, "other")
    recorder.record(3.0, 13.0, TIMEOUT, 1, None)
    recorder.record(4.0, 4.0, NOT_SENT, 1, None)
    recorder.record(5.0, 5.0, ERROR, 1, "ConnectionResetError")
    capacity = CapacityResult(100.0, (CapacityStep(1, 20.0, 0.05, 0.06, 0),))
    rss = tuple((float(second), (50 + second) * MB) for second in range(11))
    return ServerRun(label, capacity, 500.0, 10.0, 10.0, recorder, rss, survived, "stopped")


def test_report_figures_and_targets() -> None:
    """The report shows goodput, rejections by reason, latencies per priority, RSS, and
    judges the first server against the targets."""
    good = summarize(fake_run("protected", high_latency=0.02))
    bad = summarize(fake_run("twin", high_latency=0.2, survived=False))
    assert good.goodput == pytest.approx(95.5)  # the 2xx answered within the 10 s
    assert good.rejections == {"503 queue_full": 300, "429 rate_limited": 1}
    assert (good.other_5xx, good.timeouts, good.not_sent, good.errors) == (1, 1, 1, 1)
    assert good.latency["HIGH"][1] == pytest.approx(0.02)
    assert good.latency["LOW"][2] == 0
    assert good.rss_growth == 10 * MB
    text = format_report([good, bad], factor=5, seconds=10)
    assert "503 queue_full 300" in text
    assert "20 / 20 ms" in text  # HIGH p50 / p99 of the protected server
    assert "[PASS] HIGH p99 20 ms <= 50 ms" in text
    assert "[FAIL] other 5xx 1 == 0" in text
    assert "1 (ConnectionResetError 1)" in text
    assert "NO" in text  # the twin did not survive
    assert text.count("[PASS]") == 5  # all but the 5xx


def test_report_explains_its_numbers() -> None:
    """Every refusal reason is explained, refusals are split by priority, the slow
    requests are explained as queue waits (not errors), the machine and the noise are
    named, and the log directory is named only as kept."""
    run = fake_run("protected", high_latency=0.02)
    summary = summarize(run)
    assert summary.rejections_by_priority == {
        "503 queue_full": {"LOW": 300},
        "429 rate_limited": {"MEDIUM": 1},
    }
    machine = Machine(
        cores=2,
        load_before=(3.5, 2.0, 1.0),
        noise="a CPU hog spinning on core 1",
        priority="servers nice -10, load generator nice 0, noise nice 0",
        logs="/tmp/brace-demo-x",
    )
    text = format_report([summary], factor=5, seconds=10, machine=machine)
    assert "machine: 2 cores, load average 3.5 before the run, noise: a CPU hog" in text
    assert "CPU priority: servers nice -10" in text
    assert "503 queue_full 300" in text
    assert "  of which LOW 300" in text
    explained = " ".join(text[text.index("what the figures mean") :].split())
    assert "503 queue_full: the executor's queue (1000 places) was full" in explained
    assert "429 rate_limited: a user went over the route's rate limit" in explained
    assert "not errors" in explained
    assert "3 s slow threshold" in explained
    assert "the servers' logs are kept in /tmp/brace-demo-x" in text


def test_a_503_without_retry_after_fails_the_target() -> None:
    """The load generator marks 503s answered without Retry-After; the report counts them
    and fails the protected server on them."""
    run = fake_run("protected", high_latency=0.02)
    run.recorder.record(6.0, 6.001, 503, 1, "queue_full" + NO_RETRY_AFTER)
    summary = summarize(run)
    assert summary.missing_retry_after == 1
    assert summary.rejections["503 queue_full"] == 301
    assert "[FAIL] 503s without Retry-After 1 == 0" in format_report(
        [summary], factor=5, seconds=10
    )


def test_stored_reports_are_summarized_with_medians_and_ranges(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``brace-demo summarize`` reads stored reports back: each run's HIGH p99, goodput and
    verdict, then the median and range of each figure."""
    machine = Machine(cores=2, load_before=(6.0, 5.0, 4.0))
    for number, latency in ((1, 0.02), (2, 0.04), (3, 0.2)):
        summary = summarize(fake_run("protected", high_latency=latency))
        text = format_report([summary], factor=5, seconds=10, machine=machine)
        (tmp_path / f"run-{number}.txt").write_text(
            text.replace("stopped", "stopped on SIGTERM in 0.1 s")
        )
    assert main(["summarize", *(str(tmp_path / f"run-{n}.txt") for n in (1, 2, 3))]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["run-1.txt"][1] == "20"  # HIGH p99 in ms
    assert rows["run-3.txt"][1] == "200"
    assert rows["median"][1] == "40"
    assert rows["range"][1] == "20-200"
    assert rows["range"][-1] == "6-6"  # the load average before each run
    assert "target(s) missed" in out  # the fake runs have a 500


def test_plot_data_holds_only_measured_points() -> None:
    """The ramp's line holds the ramp's steps only and the overload run is a lone marker;
    each server keeps one colour in every panel; capacity lines, the HIGH target, the
    refusals by reason and a title with factor, duration and machine are there."""
    runs = [
        fake_run("protected", high_latency=0.02),
        fake_run("twin", high_latency=0.2, survived=False),
    ]
    summaries = [summarize(run) for run in runs]
    machine = Machine(cores=2, load_before=(4.0, 3.0, 2.0), noise="a CPU hog on core 1")
    data = plot_data(summaries, runs, factor=5, machine=machine)
    assert data.title.startswith("brace-demo overload: 5 x capacity for 10 s; 2 cores")
    assert "load average 4.0" in data.title
    assert "CPU hog" in data.title
    ramp = next(s for s in data.series if s.label == "protected: capacity ramp")
    assert ramp.xs == (20.0,)
    assert ramp.style == "o-"
    lone = next(s for s in data.series if s.label == "protected: overload (5 x)")
    assert (lone.xs, lone.ys, lone.style) == ((500.0,), (summaries[0].goodput,), "*")
    for label in ("protected", "twin"):
        colors = {
            s.color for s in data.series if s.label == label or s.label.startswith(label + ":")
        }
        assert len(colors) == 1
    assert {s.color for s in data.series if s.label.startswith("protected")} != {
        s.color for s in data.series if s.label.startswith("twin")
    }
    latency = [s.label for s in data.series if s.panel == "load_latency"]
    assert "protected: capacity ramp, p99 of all requests" in latency
    assert "protected: overload, p99 of MEDIUM requests" in latency
    assert "protected: overload, p99 of HIGH requests" in latency
    assert ("load_goodput", 100.0, "protected: capacity", ramp.color) in data.lines
    assert ("time_high", 50.0, "target for HIGH p99", "gray") in data.lines
    assert data.refusals[0][2] == {"503 queue_full": 300, "429 rate_limited": 1}
    high = next(s for s in data.series if s.panel == "time_high" and s.label == "protected")
    assert len(high.xs) == 10
    assert max(high.ys) == pytest.approx(20.0)


def test_plot_writes_a_png(tmp_path: Any) -> None:
    """With matplotlib, the plot renders to a PNG file."""
    pytest.importorskip("matplotlib")
    runs = [fake_run("protected", high_latency=0.02)]
    plot([summarize(runs[0])], runs, tmp_path / "out.png", factor=5)
    assert (tmp_path / "out.png").read_bytes()[:4] == b"\x89PNG"


def test_noise_spins_on_one_core_and_never_outlives_its_parent() -> None:
    """The noise process is pinned to one core and stops when asked; when the overload
    run dies without stopping it (SIGKILL), it stops by itself."""
    noise = _Noise()
    try:
        assert noise.process.poll() is None
        deadline = time.monotonic() + 5
        while (noise.cpu_seconds() or 0.0) < 0.05 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (noise.cpu_seconds() or 0.0) >= 0.05  # it spins
        assert os.sched_getaffinity(noise.process.pid) == {noise.core}
    finally:
        noise.stop()
    assert noise.process.poll() is not None
    code = (
        "import os, sys; from brace_demo.cli import _Noise; n = _Noise(); "
        "print(n.process.pid, flush=True); os._exit(0)"
    )
    parent = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    orphan = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 5
    while _alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(orphan)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_plot_needs_matplotlib(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without matplotlib, --plot fails at once, before any run, saying how to install it."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    run = fake_run("protected", high_latency=0.02)
    with pytest.raises(PlotUnavailable, match="pip install matplotlib"):
        plot([summarize(run)], [run], tmp_path / "out.png")
    assert main(["overload", "--plot", str(tmp_path / "out.png")]) == 2
    assert "pip install matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_short_real_overload(capsys: pytest.CaptureFixture[str]) -> None:
    """A real, very short run (2 x capacity for 3 s) against both servers ends with a
    report in which both processes survived and nothing but 503s were server errors."""
    status = main(
        [
            "overload",
            "--factor",
            "2",
            "--seconds",
            "3",
            "--timeout",
            "5",
            "--ramp-step",
            "0.3",
            "--ramp-max-clients",
            "32",
            "--users",
            "2000",
            "--noise",
        ]
    )
    out = capsys.readouterr().out
    hog = int(out.split("noise: a CPU hog spinning on core ")[1].split("(pid ")[1].split(")")[0])
    assert not _alive(hog)  # stopped with the run
    assert status == 0
    assert "capacity ramp" in out
    assert "t=  1 s" in out  # a progress line a second
    report = out[out.index("brace-demo overload: 2 x capacity") :]
    assert "protected (brace)" in report
    assert "unprotected twin" in report
    assert "[PASS] survived" in report
    assert "[PASS] other 5xx 0 == 0" in report
    assert "[PASS] 503s without Retry-After 0 == 0" in report
    assert "noise: a CPU hog spinning on core" in report
    logs = report.split("the servers' logs are kept in ")[1].split()[0]
    assert os.path.exists(os.path.join(logs, "protected.log"))  # kept, as the report says
    survived = next(line for line in report.splitlines() if line.startswith("survived the run"))
    assert survived.split()[3:] == ["yes", "yes"]


def test_sigterm_stops_the_overload_run_and_every_process_it_started() -> None:
    """SIGTERM during the capacity ramp ends ``brace-demo overload`` within seconds, and
    the noise and the server it had started are gone with it."""
    with subprocess.Popen(
        [sys.executable, "-m", "brace_demo", "overload", "--seconds", "30", "--noise"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "capacity ramp" in line:
                break
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 130
    children = [
        int(line.split("pid ")[1].split()[0].rstrip(")")) for line in lines if "pid " in line
    ]
    assert len(children) == 2  # the noise and the protected server
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children)


def test_overload_arguments_are_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    """The load is bounded: a factor, a duration or a connection count out of range is
    refused before anything starts."""
    for arguments in (["--factor", "50"], ["--seconds", "3600"], ["--max-connections", "1000000"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["overload", *arguments])
        assert exit_info.value.code == 2
    assert "must be in" in capsys.readouterr().err


def test_percentile_is_nearest_rank() -> None:
    """p50 / p99 are the nearest-rank quantiles; no values give NaN."""
    from brace_demo.loadgen import percentile

    values = [float(number) for number in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) != percentile([], 0.5)  # NaN


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_serve_runs_on_each_loop(loop: str) -> None:
    """`brace-demo serve --loop L` listens on that loop (uvloop is what uvicorn[standard]
    runs by default), answers its health check and its API, and stops on SIGTERM."""
    import re
    import signal
    import subprocess

    command = [sys.executable, "-m", "brace_demo", "serve", "--port", "0", "--loop", loop]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline().decode()
            found = re.search(r"listening on (http://[0-9.]+:\d+) \((\w+)\)", line)
            assert found is not None, line
            assert found[2] == loop
            with httpx.Client(base_url=found[1], timeout=10) as http:
                assert http.get("/health").status_code == 200
                answer = http.get("/api/items")
                assert answer.status_code == 200
                assert "ratelimit" in answer.headers
            server.send_signal(signal.SIGTERM)
            assert server.wait(20) is not None
        finally:
            if server.poll() is None:
                server.kill()
