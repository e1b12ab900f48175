"""The public API is exactly what ``__all__`` says, and all of it lives in brace."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest

import brace
import brace.testing

# The public adapter modules and the third-party package each needs; each is tested when
# that package is installed.
OPTIONAL_MODULES = {
    "brace.asgi": "anyio",
    "brace.fastapi": "fastapi",
    "brace.litestar": "litestar",
    "brace.aiohttp": "aiohttp",
    "brace.httpx": "httpx",
    "brace.redis": "anyio",
    "brace.prometheus": "prometheus_client",
    "brace.otel": "opentelemetry",
    "brace.chaos": "anyio",
    "brace.events": "anyio",
}

PUBLIC_MODULES = [brace, brace.testing] + [
    importlib.import_module(name)
    for name, dependency in OPTIONAL_MODULES.items()
    if importlib.util.find_spec(dependency) is not None
]

# Names a module may hold that are not part of its API.
NOT_EXPORTED = {"annotations", "TYPE_CHECKING"}


def _from_brace(value: object) -> bool:
    """True for objects defined in brace (or with no ``__module__``, like constants)."""
    owner = getattr(value, "__module__", None)
    return not isinstance(owner, str) or owner == "brace" or owner.startswith("brace.")


def _public_names(module: types.ModuleType) -> set[str]:
    """The non-underscore names that must be exported, submodules excluded.

    The package ``brace`` is nothing but re-exports, so all of its public names count. A
    public submodule (``brace.testing``, an adapter) has code of its own and imports
    helpers for it (``contextmanager``, ``brace.Registry``): there only the names it
    defines itself count.
    """
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in NOT_EXPORTED
        and (module is brace or getattr(value, "__module__", None) == module.__name__)
    }


def _ids(module: types.ModuleType) -> str:
    return module.__name__


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=_ids)
def test_all_is_a_tuple_of_unique_strings(module: types.ModuleType) -> None:
    """``__all__`` is a tuple of strings naming each export once."""
    exported = module.__all__
    assert isinstance(exported, tuple)
    assert all(isinstance(name, str) for name in exported)
    duplicates = sorted({name for name in exported if exported.count(name) > 1})
    assert not duplicates, f"{module.__name__}.__all__ lists twice: {duplicates}"


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=_ids)
def test_all_matches_the_public_namespace(module: types.ModuleType) -> None:
    """``__all__`` names every public name of the module, and only names it has."""
    public = _public_names(module)
    exported = set(module.__all__)
    assert not public - exported, (
        f"public in {module.__name__} but missing from __all__: {sorted(public - exported)}"
    )
    missing = sorted(name for name in exported if not hasattr(module, name))
    assert not missing, f"in {module.__name__}.__all__ but not defined there: {missing}"
    if module is brace:
        assert exported == public, f"not public in brace: {sorted(exported - public)}"


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=_ids)
def test_every_export_resolves_and_lives_in_brace(module: types.ModuleType) -> None:
    """Every name in ``__all__`` resolves to an object defined in a brace module."""
    for name in module.__all__:
        value = getattr(module, name)
        assert _from_brace(value), (
            f"{module.__name__}.{name} comes from {value.__module__!r}, not from brace"
        )


def test_star_import_gives_exactly_all() -> None:
    """``from brace import *`` brings in exactly ``brace.__all__``."""
    namespace: dict[str, object] = {}
    exec("from brace import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(brace.__all__)


def test_version_is_a_string() -> None:
    """``brace.__version__`` is a dotted version string."""
    assert isinstance(brace.__version__, str)
    assert brace.__version__.count(".") >= 1


def test_import_brace_needs_only_its_runtime_dependencies() -> None:
    """``import brace`` loads no third-party package but anyio and typing-extensions."""
    script = (
        "import sys; before = set(sys.modules); import brace; "
        "print(' '.join(sorted({name.split('.')[0] for name in set(sys.modules) - before})))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(completed.stdout.split())
    third_party = loaded - set(sys.stdlib_module_names) - {"brace"}
    # anyio's own dependencies come with it.
    allowed = {"anyio", "typing_extensions", "sniffio", "idna", "exceptiongroup"}
    assert third_party <= allowed, f"import brace loads {sorted(third_party - allowed)}"


def test_every_public_module_is_checked() -> None:
    """Every public module of brace (no leading underscore) is covered by these tests."""
    package = Path(brace.__file__).resolve().parent
    public = {
        f"brace.{path.stem}"
        for path in package.iterdir()
        if not path.name.startswith("_")
        and (path.suffix == ".py" or (path / "__init__.py").is_file())
    }
    known = {"brace.testing", *OPTIONAL_MODULES}
    assert public <= known, f"add to OPTIONAL_MODULES: {sorted(public - known)}"


def test_no_unguarded_import_of_undeclared_packages() -> None:
    """brace's modules import sniffio only inside ``try/except ImportError``: anyio no longer
    installs it, so a plain ``pip install brace`` may not have it."""
    import ast

    unguarded: list[str] = []
    for path in sorted(Path(brace.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                isinstance(handler.type, ast.Name) and handler.type.id == "ImportError"
                for handler in node.handlers
            ):
                for inner in node.body:
                    guarded.update(id(sub) for sub in ast.walk(inner))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            if any(name.split(".")[0] == "sniffio" for name in names) and id(node) not in guarded:
                unguarded.append(f"{path.name}:{node.lineno}")
    assert unguarded == []


def test_the_library_wheel_holds_the_library_alone(tmp_path: Path) -> None:
    """The demo is its own distribution (``demo/``): brace's wheel ships no demo modules
    and no ``brace-demo`` command."""
    import zipfile

    root = Path(__file__).resolve().parents[1]
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("brace-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = [n for n in names if n.endswith("entry_points.txt")]
        scripts = "".join(archive.read(n).decode() for n in entry_points)
    assert names, "empty wheel"
    assert all(n.startswith(("brace/", "brace-")) for n in names), sorted(names)
    assert not any("demo" in n for n in names), [n for n in names if "demo" in n]
    assert "brace-demo" not in scripts


def test_version_comes_from_the_package_metadata() -> None:
    """``brace.__version__`` is the installed distribution's version, not a second copy."""
    import importlib.metadata

    assert brace.__version__ == importlib.metadata.version("brace")


def test_every_exception_lives_in_one_module() -> None:
    """Every public exception class is defined in ``brace._exceptions``; ``Decision`` in
    the cores."""
    for name in brace.__all__:
        value = getattr(brace, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert value.__module__ == "brace._exceptions", name
    assert brace.Decision.__module__ == "brace._core.decision"
