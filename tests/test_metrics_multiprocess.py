"""End to end: ``uvicorn --workers 2`` on 127.0.0.1, metrics added up over the workers.

Real processes and real time (a few seconds): the app (tests/programs/metrics_app.py)
makes a `brace.prometheus.MultiProcessCollector` in every worker; a scrape answered by
either worker must count every request of both (counters summed), give histograms whose
buckets are the bucket-by-bucket sums of the workers' own, and keep gauges apart by pid.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

PROGRAMS = Path(__file__).resolve().parent / "programs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """uvicorn with two workers on a free loopback port, stopped with SIGTERM at the end."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    port = free_port()
    env = {**os.environ, "BRACE_METRICS_DIR": str(directory)}
    command = [sys.executable, "-m", "uvicorn", "metrics_app:app", "--workers", "2"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=PROGRAMS, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "uvicorn exited"
            assert time.monotonic() < deadline, "uvicorn did not start"
            try:
                httpx.get(url + "/metrics", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, directory
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def pick(found: list[tuple[str, dict[str, str], float]], metric: str, **labels: str) -> list[float]:
    """The values of the samples named ``metric`` that have these labels (among others)."""
    return [
        value
        for sample, got, value in found
        if sample == metric and all(got.get(k) == v for k, v in labels.items())
    ]


def test_two_workers_add_up(server: tuple[str, Path]) -> None:
    """Counters sum over both workers, histogram buckets are the sums of each worker's,
    gauges come one per worker (pid label)."""
    url, directory = server
    served_by: Counter[str] = Counter()
    total = 0
    # new connections spread over the workers; keep going until both answered some
    while (len(served_by) < 2 or total < 40) and total < 400:
        response = httpx.get(url + "/work", headers={"Connection": "close"}, timeout=5)
        assert response.status_code == 200
        served_by[response.text] += 1
        total += 1
    assert len(served_by) == 2, served_by

    deadline = time.monotonic() + 10
    while True:  # every worker writes its figures within 0.2 s
        found = samples(httpx.get(url + "/metrics", timeout=5).text)
        requests = pick(found, "brace_middleware_requests_total", name="http")
        processed = pick(found, "brace_queue_processed_total", name="jobs", outcome="completed")
        count = pick(found, "brace_circuit_breaker_call_duration_seconds_count", name="db")
        # each worker's file is rewritten as a whole, but the two files are not written
        # at the same moment: wait until both have written after their last request
        if requests == processed == count == [total] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert requests == [total]
    assert processed == [total]
    assert count == [total]
    buckets = [
        (labels["le"], value)
        for sample, labels, value in found
        if sample == "brace_circuit_breaker_call_duration_seconds_bucket"
    ]
    assert buckets[-1][0] == "+Inf"
    assert buckets[-1][1] == total
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))

    # the scraped buckets are the sums of the two workers' own (their files are current:
    # nothing has changed since the counts above agreed)
    time.sleep(0.5)
    per_worker: dict[str, list[int]] = {}
    for path in directory.glob("brace-*.json"):
        data = json.loads(path.read_text())
        for family in data["families"]:
            if family["name"] == "brace_circuit_breaker_call_duration_seconds":
                ((_, histogram),) = family["samples"]
                per_worker[str(data["pid"])] = histogram["counts"]
            if family["name"] == "brace_middleware_requests":
                ((_, value),) = family["samples"]
                assert value == served_by[str(data["pid"])]
    assert set(per_worker) == set(served_by)
    summed = [sum(counts) for counts in zip(*per_worker.values(), strict=True)]
    cumulative = [sum(summed[: i + 1]) for i in range(len(summed))]
    assert [value for _, value in buckets] == cumulative

    concurrency = pick(found, "brace_queue_concurrency", name="default")
    pids = {labels["pid"] for sample, labels, _ in found if sample == "brace_queue_concurrency"}
    assert concurrency == [8, 8]
    assert pids == set(served_by)
