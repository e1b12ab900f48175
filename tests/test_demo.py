"""The reference server (`brace_demo`): its routes, its protections, the report, and a
very short real overload run (two uvicorn subprocesses on 127.0.0.1, about 25 s)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

import brace
from brace_demo.app import create_app
from brace_demo.cli import main
from brace_demo.loadgen import ERROR, NOT_SENT, TIMEOUT, CapacityResult, CapacityStep, Recorder
from brace_demo.report import PlotUnavailable, ServerRun, format_report, plot, summarize
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
    assert (await protected.get("/health")).json() == {"status": "ok"}
    assert (await protected.get("/api/health")).json() == {"status": "ok"}
    full = await protected.get("/api/health/full")
    assert full.status_code == 200
    assert {"database", "ai_upstream", "memory", "shutdown"} <= set(full.json()["checks"])
    queue = (await protected.get("/api/health/queue")).json()
    assert queue["queue"]["default"]["stats"]["concurrency"] == 10
    assert queue["circuit_breakers"]["ai_upstream"]["state"] == "closed"
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
    settings = DemoSettings(concurrency=1, max_queue=1, read_latency=10.0)
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
    assert text.count("[PASS]") == 4  # all but the 5xx


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
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "capacity ramp" in out
    assert "t=  1 s" in out  # a progress line a second
    report = out[out.index("brace-demo overload: 2 x capacity") :]
    assert "protected (brace)" in report
    assert "unprotected twin" in report
    assert "[PASS] survived" in report
    assert "[PASS] other 5xx 0 == 0" in report
    survived = next(line for line in report.splitlines() if line.startswith("survived the run"))
    assert survived.split()[3:] == ["yes", "yes"]


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
