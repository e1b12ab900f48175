"""Developer sessions: ``nox -s tests``, ``typecheck``, ``lint``, ``docs``, ``bench``.

Put every supported Python on PATH first, e.g.
``PYENV_VERSION=3.11.7:3.12.1:3.13.0:3.10.13 nox``.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "examples", "typecheck", "lint", "docs"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole test suite, every async test on asyncio and trio."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHONS)
def examples(session: nox.Session) -> None:
    """The quickstart example on asyncio and trio, on every supported Python."""
    session.install("-e", ".", "trio")
    session.run("python", "examples/quickstart.py", "asyncio")
    session.run("python", "examples/quickstart.py", "trio")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and the tests; pyright on the package (standard mode)
    and on the public API's type tests (strict mode), as pyproject's [tool.pyright] says.

    pyright reads the project's ``.venv`` where there is one (``venv`` in that table), else
    this session's Python.
    """
    session.install("-e", ".[lint]")
    session.run("mypy", "--strict", "src", "tests", "examples")
    session.run("pyright")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples", "noxfile.py")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the documentation site, failing on any warning."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks: the main suite (posargs go to it), then the standalone ones.

    The Redis benchmark starts its own redis-server, which must be on the PATH.
    """
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
    session.run("python", "benchmarks/asgi_bench.py")
    session.run("python", "benchmarks/redis_bench.py")
    session.run("python", "benchmarks/executor_jobs.py")
    session.run("python", "benchmarks/guard_bench.py")
