"""The scripts in examples/ run to completion and say what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_quickstart_runs(backend: str) -> None:
    """The README's first command's script finishes, on both backends, in real time."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), backend],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("admitted at") == 10
    assert "alice: 429" in out
    assert "bob  : allowed" in out
    assert "CircuitOpen" in out
    assert "after recovery: 'pong'" in out
    assert out.rstrip().endswith("brace works.")
