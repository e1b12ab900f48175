"""An adapter imported without its optional dependency says which extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

# module of brace -> (a package it imports, the extra that installs it)
ADAPTERS = {
    "fastapi": ("fastapi", "fastapi"),
    "litestar": ("litestar", "litestar"),
    "aiohttp": ("aiohttp", "aiohttp"),
    "prometheus": ("prometheus_client", "prometheus"),
    "otel": ("opentelemetry", "otel"),
}


@pytest.mark.parametrize("module", sorted(ADAPTERS))
def test_missing_extra_names_the_pip_command(module: str) -> None:
    """``import brace.<module>`` with its package hidden raises ImportError naming the
    package and ``pip install 'brace[<extra>]'``."""
    package, extra = ADAPTERS[module]
    script = (
        "import sys\n"
        f"sys.modules[{package!r}] = None  # as if not installed\n"
        "try:\n"
        f"    import brace.{module}\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert completed.stdout.startswith("ImportError ")
    assert f"pip install 'brace[{extra}]'" in completed.stdout
    assert repr(package) in completed.stdout
