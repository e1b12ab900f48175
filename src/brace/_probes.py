"""Memory probes: how much memory the process (or its container) uses, and its limit.

A probe is any zero-argument callable returning a :class:`MemorySample` (or a plain
``int`` of bytes used). :class:`ProcessMemoryProbe` reads the resident set size: on
Linux from ``/proc/self/statm`` through a descriptor kept open (one ``os.pread``, about
1.5 µs), else through ``psutil`` when it is installed, else the peak RSS from
``resource.getrusage`` (an upper bound: it never goes down). :class:`CgroupMemoryProbe`
reads the container's usage and limit from cgroup v2 (``memory.current`` /
``memory.max``) or v1 (``memory.usage_in_bytes`` / ``memory.limit_in_bytes``). Both can
add the memory pressure-stall share (``/proc/pressure/memory``, "some avg10").
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

__all__ = (
    "CgroupMemoryProbe",
    "MemoryProbe",
    "MemorySample",
    "ProcessMemoryProbe",
    "container_memory_limit",
    "parse_cgroup_v1",
    "parse_cgroup_v2",
    "parse_pressure",
    "physical_memory",
)

# cgroup v1 reports "no limit" as a huge page-aligned number close to 2**63.
_UNLIMITED_V1 = 2**62


@dataclass(frozen=True, slots=True)
class MemorySample:
    """One reading: bytes in use, the limit they count against (``None``: unknown),
    and the memory pressure-stall share in percent (``None``: not measured)."""

    usage: int
    limit: int | None = None
    pressure: float | None = None


class MemoryProbe(Protocol):
    """Anything called with no argument that returns a sample (or bytes in use)."""

    def __call__(self) -> MemorySample | int: ...


def parse_cgroup_v2(current: str, maximum: str) -> tuple[int, int | None]:
    """``(usage, limit)`` from the text of cgroup v2 ``memory.current`` and ``memory.max``.

    ``memory.max`` holds ``max`` when there is no limit (``limit`` is then ``None``).
    """
    usage = int(current.strip())
    text = maximum.strip()
    return usage, (None if text == "max" else int(text))


def parse_cgroup_v1(usage_in_bytes: str, limit_in_bytes: str) -> tuple[int, int | None]:
    """``(usage, limit)`` from cgroup v1 ``memory.usage_in_bytes`` / ``limit_in_bytes``.

    v1 has no "max": an unlimited group reports a number near 2**63 (``limit`` ``None``).
    """
    usage = int(usage_in_bytes.strip())
    limit = int(limit_in_bytes.strip())
    return usage, (None if limit >= _UNLIMITED_V1 else limit)


def parse_pressure(text: str) -> float:
    """The "some avg10" share (percent) from the text of ``/proc/pressure/memory``."""
    for line in text.splitlines():
        kind, _, fields = line.partition(" ")
        if kind == "some":
            for field in fields.split():
                key, _, value = field.partition("=")
                if key == "avg10":
                    return float(value)
    raise ValueError(f"no 'some avg10=' field in pressure text {text[:80]!r}")


def physical_memory() -> int | None:
    """The machine's physical memory in bytes, or ``None`` where it is not known."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_files(root: Path) -> tuple[Path, Path, Literal[1, 2]] | None:
    if (root / "memory.current").exists():
        return root / "memory.current", root / "memory.max", 2
    v1 = root / "memory"
    if not (v1 / "memory.usage_in_bytes").exists() and (root / "memory.usage_in_bytes").exists():
        v1 = root
    if (v1 / "memory.usage_in_bytes").exists():
        return v1 / "memory.usage_in_bytes", v1 / "memory.limit_in_bytes", 1
    return None


def container_memory_limit(root: str | os.PathLike[str] = "/sys/fs/cgroup") -> int | None:
    """The container's memory limit in bytes from cgroup v2 or v1, ``None`` if unlimited."""
    files = _cgroup_files(Path(root))
    if files is None:
        return None
    usage_file, limit_file, version = files
    try:
        _, limit = (parse_cgroup_v2 if version == 2 else parse_cgroup_v1)(
            usage_file.read_text(), limit_file.read_text()
        )
    except (OSError, ValueError):
        return None
    return limit


class _PressureReader:
    __slots__ = ("_fd",)

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY)

    def read(self) -> float:
        return parse_pressure(os.pread(self._fd, 256, 0).decode("ascii"))

    def close(self) -> None:
        os.close(self._fd)


class ProcessMemoryProbe:
    """The resident set size of this process, against the container's (or machine's) memory.

    ``source``: ``"auto"`` (statm, then psutil, then resource), or one of ``"statm"``,
    ``"psutil"``, ``"resource"``. ``limit``: bytes, or ``None`` to use the container's
    cgroup limit when there is one, else the physical memory. ``pressure=True`` adds the
    "some avg10" pressure share from ``/proc/pressure/memory`` (where the kernel has it).
    """

    __slots__ = ("_fd", "_page_size", "_pressure", "_psutil_process", "limit", "source")

    def __init__(
        self,
        *,
        source: Literal["auto", "statm", "psutil", "resource"] = "auto",
        limit: int | None = None,
        pressure: bool = False,
        statm: str = "/proc/self/statm",
        pressure_file: str = "/proc/pressure/memory",
    ) -> None:
        if source not in ("auto", "statm", "psutil", "resource"):
            raise ValueError(
                f"source must be 'auto', 'statm', 'psutil' or 'resource', got {source!r}"
            )
        self._fd: int | None = None
        self._psutil_process: object = None
        self._page_size = 4096
        if source in ("auto", "statm"):
            try:
                self._fd = os.open(statm, os.O_RDONLY)
                self._page_size = os.sysconf("SC_PAGE_SIZE")
                source = "statm"
            except (OSError, AttributeError, ValueError):
                if source == "statm":
                    raise
                source = "auto"
        if source in ("auto", "psutil"):
            try:
                import psutil  # type: ignore[import-untyped,unused-ignore]

                self._psutil_process = psutil.Process()
                source = "psutil"
            except ImportError:
                if source == "psutil":
                    raise
                source = "resource"
        self.source: str = source
        self.limit = limit if limit is not None else container_memory_limit() or physical_memory()
        self._pressure = _PressureReader(pressure_file) if pressure else None

    def rss(self) -> int:
        """The resident set size in bytes, from the chosen source."""
        if self._fd is not None:
            fields = os.pread(self._fd, 128, 0).split()
            return int(fields[1]) * self._page_size
        if self._psutil_process is not None:
            return int(self._psutil_process.memory_info().rss)  # type: ignore[attr-defined]
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB

    def __call__(self) -> MemorySample:
        pressure = None if self._pressure is None else self._pressure.read()
        return MemorySample(self.rss(), self.limit, pressure)

    def close(self) -> None:
        """Close the kept-open descriptors (the probe is unusable afterwards)."""
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
            self._fd = None
        pressure = getattr(self, "_pressure", None)
        if pressure is not None:
            pressure.close()
            self._pressure = None

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProcessMemoryProbe(source={self.source!r}, limit={self.limit!r})"


class CgroupMemoryProbe:
    """The memory usage and limit of the process's cgroup (v2, else v1).

    ``root`` is the cgroup directory (``/sys/fs/cgroup`` inside a container). A group
    with no limit reports the physical memory as its limit, so fractions still resolve.
    Raises ``FileNotFoundError`` at construction when ``root`` has no cgroup memory files.
    """

    __slots__ = ("_limit_fd", "_pressure", "_usage_fd", "fallback_limit", "root", "version")

    def __init__(
        self,
        root: str | os.PathLike[str] = "/sys/fs/cgroup",
        *,
        pressure: bool = False,
        pressure_file: str = "/proc/pressure/memory",
    ) -> None:
        self.root = Path(root)
        files = _cgroup_files(self.root)
        if files is None:
            raise FileNotFoundError(f"no cgroup v1 or v2 memory files under {self.root}")
        usage_file, limit_file, version = files
        self.version: Literal[1, 2] = version
        self._usage_fd: int | None = os.open(usage_file, os.O_RDONLY)
        self._limit_fd: int | None = os.open(limit_file, os.O_RDONLY)
        self.fallback_limit = physical_memory()
        self._pressure = _PressureReader(pressure_file) if pressure else None

    def __call__(self) -> MemorySample:
        if self._usage_fd is None or self._limit_fd is None:
            raise ValueError("the probe is closed")
        parse = parse_cgroup_v2 if self.version == 2 else parse_cgroup_v1
        usage, limit = parse(
            os.pread(self._usage_fd, 64, 0).decode("ascii"),
            os.pread(self._limit_fd, 64, 0).decode("ascii"),
        )
        pressure = None if self._pressure is None else self._pressure.read()
        return MemorySample(usage, self.fallback_limit if limit is None else limit, pressure)

    def close(self) -> None:
        """Close the kept-open descriptors (the probe is unusable afterwards)."""
        for name in ("_usage_fd", "_limit_fd"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)
        pressure = getattr(self, "_pressure", None)
        if pressure is not None:
            pressure.close()
            self._pressure = None

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CgroupMemoryProbe(root={str(self.root)!r}, version={self.version})"
