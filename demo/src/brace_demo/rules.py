"""The demo server's route table (SEED.md), as `brace.asgi.Rule` objects.

These are the demo's settings, not part of brace's API: copy them into your own code and
change what differs.
"""

from __future__ import annotations

from brace import Priority
from brace.asgi import Rule

__all__ = ("DEMO_DEFAULT", "DEMO_RULES")

#: The demo server's table (SEED.md): AI 10/minute (60 s timeout), auth 20 per 15 minutes
#: (HIGH priority), uploads 5/minute (LOW priority, 120 s timeout); the default rule
#: (`DEMO_DEFAULT`) allows 60/minute with a 30 s timeout.
DEMO_RULES: tuple[Rule, ...] = (
    Rule("/api/ai", limits=("10/minute",), priority=Priority.MEDIUM, timeout=60.0, name="ai"),
    Rule("/api/auth", limits=("20/15 minutes",), priority=Priority.HIGH, name="auth"),
    Rule("/api/upload", limits=("5/minute",), priority=Priority.LOW, timeout=120.0, name="upload"),
)
DEMO_DEFAULT = Rule(limits=("60/minute",), timeout=30.0, name="default")
