"""benchmarks/client_bench.py still runs (a few requests, one round; nothing is timed here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks package lives beside src/, not inside it
    sys.path.insert(0, str(ROOT))

from benchmarks import client_bench  # noqa: E402


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_client_bench_runs(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every case of the client benchmark answers as expected and the tables are printed."""
    assert client_bench.main(requests=20, rounds=1, backend=backend) == 0
    printed = capsys.readouterr().out
    for case in (*client_bench.CASES, "503 + 128 KB hostile headers", "64 KB of digits"):
        assert case in printed
