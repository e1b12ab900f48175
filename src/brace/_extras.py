"""The error an adapter raises when its optional dependency is not installed."""

from __future__ import annotations

__all__ = ("missing_extra",)


def missing_extra(module: str, extra: str, error: ImportError) -> ImportError:
    """An `ImportError` saying which package ``brace.<module>`` lacks and which extra
    installs it: ``raise missing_extra("fastapi", "fastapi", error) from error``."""
    package = (error.name or extra).split(".")[0]
    return ImportError(
        f"brace.{module} needs the {package!r} package, which is not installed: "
        f"pip install 'brace[{extra}]'",
        name=error.name,
    )
