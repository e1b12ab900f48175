"""Memory probes: the cgroup and pressure parsers on fixture files, and the RSS sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from brace._probes import (
    CgroupMemoryProbe,
    MemorySample,
    ProcessMemoryProbe,
    container_memory_limit,
    parse_cgroup_v1,
    parse_cgroup_v2,
    parse_pressure,
    physical_memory,
)

PRESSURE = (
    "some avg10=1.50 avg60=0.75 avg300=0.10 total=12345\n"
    "full avg10=0.50 avg60=0.25 avg300=0.00 total=678\n"
)


def test_parse_cgroup_v2() -> None:
    """v2: ``memory.max`` holds bytes, or ``max`` for no limit."""
    assert parse_cgroup_v2("1048576\n", "4194304\n") == (1048576, 4194304)
    assert parse_cgroup_v2("1048576\n", "max\n") == (1048576, None)


def test_parse_cgroup_v1() -> None:
    """v1: a limit near 2**63 means unlimited."""
    assert parse_cgroup_v1("2048\n", "536870912\n") == (2048, 536870912)
    assert parse_cgroup_v1("2048\n", "9223372036854771712\n") == (2048, None)


def test_parse_pressure() -> None:
    """The "some avg10" share is read; text without it is a ValueError."""
    assert parse_pressure(PRESSURE) == 1.5
    with pytest.raises(ValueError, match="avg10"):
        parse_pressure("full avg10=1.0\n")


def test_cgroup_v2_probe_reads_fixture_files(tmp_path: Path) -> None:
    """A v2 directory gives usage and limit, re-read on every call."""
    (tmp_path / "memory.current").write_text("1000\n")
    (tmp_path / "memory.max").write_text("4000\n")
    probe = CgroupMemoryProbe(tmp_path)
    assert probe.version == 2
    assert probe() == MemorySample(1000, 4000)
    (tmp_path / "memory.current").write_text("3000\n")  # rewritten in place
    assert probe().usage == 3000
    assert container_memory_limit(tmp_path) == 4000
    probe.close()


def test_cgroup_v2_without_limit_falls_back_to_physical_memory(tmp_path: Path) -> None:
    """``max`` reports the machine's memory as the limit, so fractions still resolve."""
    (tmp_path / "memory.current").write_text("1000\n")
    (tmp_path / "memory.max").write_text("max\n")
    with_limit = CgroupMemoryProbe(tmp_path)
    assert with_limit().limit == physical_memory()
    assert container_memory_limit(tmp_path) is None
    with_limit.close()


def test_cgroup_v1_probe_reads_fixture_files(tmp_path: Path) -> None:
    """A v1 hierarchy (``memory/memory.usage_in_bytes``) is found under the root."""
    memory = tmp_path / "memory"
    memory.mkdir()
    (memory / "memory.usage_in_bytes").write_text("5000\n")
    (memory / "memory.limit_in_bytes").write_text("20000\n")
    probe = CgroupMemoryProbe(tmp_path)
    assert probe.version == 1
    assert probe() == MemorySample(5000, 20000)
    probe.close()


def test_cgroup_probe_adds_pressure(tmp_path: Path) -> None:
    """With ``pressure=True`` the sample carries the "some avg10" share."""
    (tmp_path / "memory.current").write_text("1\n")
    (tmp_path / "memory.max").write_text("2\n")
    (tmp_path / "pressure").write_text(PRESSURE)
    probe = CgroupMemoryProbe(tmp_path, pressure=True, pressure_file=str(tmp_path / "pressure"))
    assert probe().pressure == 1.5
    probe.close()


def test_cgroup_probe_without_files_raises(tmp_path: Path) -> None:
    """A directory with no cgroup memory files is refused at construction."""
    with pytest.raises(FileNotFoundError):
        CgroupMemoryProbe(tmp_path)
    assert container_memory_limit(tmp_path) is None


@pytest.mark.parametrize("source", ["statm", "psutil"])
def test_process_probe_sources_agree(source: str) -> None:
    """statm and psutil report the same resident set size, give or take a few MB."""
    psutil = pytest.importorskip("psutil")
    if source == "statm" and not Path("/proc/self/statm").exists():
        pytest.skip("no /proc/self/statm")
    probe = ProcessMemoryProbe(source=source)  # type: ignore[arg-type]
    assert probe.source == source
    rss = psutil.Process().memory_info().rss
    assert abs(probe().usage - rss) < 8 * 2**20
    probe.close()


def test_resource_fallback_reports_the_peak() -> None:
    """The ``resource`` fallback reports at least the current resident set size."""
    probe = ProcessMemoryProbe(source="resource", limit=10**12)
    assert probe.source == "resource"
    sample = probe()
    assert sample.usage >= ProcessMemoryProbe(source="statm").rss() // 2
    assert sample.limit == 10**12


def test_process_probe_limit_defaults_to_container_or_machine() -> None:
    """With no ``limit`` given the probe reports the cgroup limit or the physical memory."""
    probe = ProcessMemoryProbe()
    assert probe.limit == (container_memory_limit() or physical_memory())
    probe.close()


def test_process_probe_rejects_unknown_source() -> None:
    """An unknown source name is a ValueError."""
    with pytest.raises(ValueError, match="source"):
        ProcessMemoryProbe(source="sbrk")  # type: ignore[arg-type]


def test_cgroup_probe_on_this_machine() -> None:
    """Where the machine exposes cgroup memory files, the probe reads sane numbers."""
    try:
        probe = CgroupMemoryProbe()
    except FileNotFoundError:
        pytest.skip("no cgroup memory files here")
    sample = probe()
    assert sample.usage > 0
    assert sample.limit is not None
    assert sample.limit > 0
    probe.close()
    with pytest.raises(ValueError, match="closed"):
        probe()
