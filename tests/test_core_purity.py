"""The cores are sans-I/O: no event loop, no clock, no threads, no sockets, no OS.

``brace._core`` holds pure synchronous state machines that take ``now`` as an argument.
Two checks hold them to it: a static one reads each module's syntax tree for forbidden
imports and clock calls, and a dynamic one imports every core module in a fresh
interpreter where anyio, asyncio and trio cannot be imported at all.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import brace._core

CORE_DIR = Path(brace._core.__file__).resolve().parent
PACKAGE_DIR = CORE_DIR.parent

FORBIDDEN_IMPORTS = frozenset(
    {"anyio", "asyncio", "trio", "sniffio", "time", "datetime", "threading", "socket", "os"}
)

# Functions that read a clock, whatever module they are reached through.
CLOCK_CALLS = frozenset(
    {
        "monotonic",
        "monotonic_ns",
        "perf_counter",
        "perf_counter_ns",
        "process_time",
        "process_time_ns",
        "thread_time",
        "time",
        "time_ns",
        "clock_gettime",
        "clock_gettime_ns",
        "current_time",
        "now",
        "utcnow",
        "today",
    }
)

DYNAMIC_IMPORTS = frozenset({"__import__", "import_module"})


def core_modules() -> list[str]:
    """Every module of the ``brace._core`` package, subpackages included."""
    names = ["brace._core"]
    names += [
        info.name for info in pkgutil.walk_packages(brace._core.__path__, prefix="brace._core.")
    ]
    return sorted(names)


def module_path(name: str) -> Path:
    """The source file of a core module, found without importing it."""
    relative = Path(*name.split(".")[1:])
    package = PACKAGE_DIR / relative / "__init__.py"
    return package if package.exists() else (PACKAGE_DIR / relative).with_suffix(".py")


def violations(source: str) -> list[str]:
    """What a module's source does that a core must not: forbidden imports, clock calls."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] in FORBIDDEN_IMPORTS
            ]
        elif isinstance(node, ast.ImportFrom):
            module = node.module if node.level == 0 else None
            if module is not None and module.split(".")[0] in FORBIDDEN_IMPORTS:
                found.append(f"line {node.lineno}: from {module} import ...")
        elif isinstance(node, ast.Call):
            function = node.func
            name = (
                function.id
                if isinstance(function, ast.Name)
                else function.attr
                if isinstance(function, ast.Attribute)
                else None
            )
            if name in CLOCK_CALLS:
                found.append(f"line {node.lineno}: calls {name}() (a clock)")
            elif name in DYNAMIC_IMPORTS:
                found.append(f"line {node.lineno}: calls {name}() (a dynamic import)")
    return found


def test_core_modules_are_found() -> None:
    """The discovery finds the core package and the modules known to be in it."""
    modules = core_modules()
    assert "brace._core" in modules
    assert {"brace._core.gcra", "brace._core.window"} <= set(modules)
    for name in modules:
        assert module_path(name).is_file(), name


@pytest.mark.parametrize("name", core_modules())
def test_core_module_imports_no_io_and_reads_no_clock(name: str) -> None:
    """The core module imports no event loop, clock, thread, socket or OS module."""
    problems = violations(module_path(name).read_text(encoding="utf-8"))
    assert not problems, f"{name} is not pure:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import anyio", "import anyio"),
        ("import os.path", "import os.path"),
        ("from trio.lowlevel import checkpoint", "from trio.lowlevel import ..."),
        ("import time\nt = time.monotonic()", "calls monotonic()"),
        ("from time import perf_counter as pc", "from time import ..."),
        ("loop_time = clock.current_time()", "calls current_time()"),
        ("m = __import__('asyncio')", "calls __import__()"),
    ],
)
def test_checker_catches_impurity(source: str, expected: str) -> None:
    """The static check reports each kind of impurity it is meant to find."""
    assert any(expected in problem for problem in violations(source))


def test_checker_accepts_pure_code() -> None:
    """The static check accepts relative imports, math, and a ``now`` argument."""
    source = textwrap.dedent(
        """
        import math
        from collections import deque
        from .decision import Decision

        def decide(now: float, tat: float) -> bool:
            return math.isfinite(now) and tat <= now
        """
    )
    assert violations(source) == []


_IMPORT_WITHOUT_EVENT_LOOPS = textwrap.dedent(
    """
    import importlib
    import importlib.abc
    import json
    import sys
    import types

    BLOCKED = {"anyio", "asyncio", "trio", "sniffio", "threading", "socket", "datetime"}
    already = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname.split(".")[0] in BLOCKED:
                raise ImportError(f"{fullname} is blocked: a core must not import it")
            return None

    sys.meta_path.insert(0, Blocker())

    # A bare "brace" package: the real brace/__init__ pulls in the anyio shells, and the
    # point is that the cores do not need them.
    package = types.ModuleType("brace")
    package.__path__ = [sys.argv[1]]
    sys.modules["brace"] = package

    failures = {}
    for name in sys.argv[2:]:
        try:
            importlib.import_module(name)
        except BaseException as error:
            failures[name] = f"{type(error).__name__}: {error}"
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
    print(json.dumps({"already": already, "failures": failures, "loaded": loaded}))
    """
)


def test_cores_import_without_anyio() -> None:
    """Every core module imports in an interpreter where anyio, asyncio and trio cannot."""
    modules = core_modules()
    completed = subprocess.run(
        [sys.executable, "-c", _IMPORT_WITHOUT_EVENT_LOOPS, str(PACKAGE_DIR), *modules],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["already"] == [], f"loaded before the check could block: {report['already']}"
    assert report["failures"] == {}, f"core modules that need blocked imports: {report['failures']}"
    assert report["loaded"] == [], f"blocked modules loaded anyway: {report['loaded']}"
