"""Allocate memory in 4 MiB steps until a MemoryGuard reports CRITICAL; print each change.

Run by tests/test_memory_guard.py in a child process: the thresholds sit 32 MiB and
64 MiB above the resident set size at start, so the level must pass HIGH first.
"""

from __future__ import annotations

import sys

import brace

MIB = 2**20
probe = brace.ProcessMemoryProbe()
start = probe.rss()
guard = brace.MemoryGuard(
    high=start + 32 * MIB,
    critical=start + 64 * MIB,
    probe=probe,
    interval=1e-9,  # sample on every check
    on_change=lambda change: print(change.previous.name, "->", change.level.name, flush=True),
)
hoard: list[bytes] = []
while guard.level is not brace.MemoryLevel.CRITICAL:
    if len(hoard) > 64:  # 256 MiB without reaching CRITICAL: something is wrong
        sys.exit("never reached CRITICAL")
    hoard.append(b"\x01" * (4 * MIB))  # written, so resident
try:
    guard.check()
except brace.MemoryPressure as error:
    print("rejected", error.retry_after, flush=True)
