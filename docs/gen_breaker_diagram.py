"""Redraw the circuit breaker's state diagram in docs/circuit-breaker.md from the table.

The diagram is generated from ``brace._core.breaker.TRANSITIONS`` (the same table the
breaker runs on) by ``state_diagram()``; this script writes it into the page's single
```mermaid block. ``--check`` only reports whether the page is up to date (exit 1 if not).
tests/test_core_breaker.py fails when the page and the table disagree.

    python docs/gen_breaker_diagram.py [--check]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from brace._core.breaker import state_diagram

PAGE = Path(__file__).resolve().parent / "circuit-breaker.md"
BLOCK = re.compile(r"^```mermaid\n.*?^```$", flags=re.MULTILINE | re.DOTALL)


def main(argv: list[str]) -> int:
    text = PAGE.read_text(encoding="utf-8")
    blocks = BLOCK.findall(text)
    if len(blocks) != 1:
        print(f"{PAGE.name}: expected one mermaid block, found {len(blocks)}", file=sys.stderr)
        return 2
    updated = BLOCK.sub(lambda _: f"```mermaid\n{state_diagram()}```", text)
    if updated == text:
        print(f"{PAGE.name}: diagram up to date")
        return 0
    if "--check" in argv:
        print(f"{PAGE.name}: diagram out of date; run {Path(__file__).name}", file=sys.stderr)
        return 1
    PAGE.write_text(updated, encoding="utf-8")
    print(f"{PAGE.name}: diagram redrawn")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
