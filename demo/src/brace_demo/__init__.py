"""brace's reference server and overload demo (extra ``demo``).

- `brace_demo.app.create_app`: SEED.md's server rebuilt with brace (Starlette + uvicorn);
- `brace_demo.twin.create_twin`: the same server without brace;
- `brace_demo.upstream.UpstreamApp`: the slow fake AI service ``/api/ai`` calls;
- `brace_demo.loadgen.LoadGenerator`: the bounded load generator;
- ``brace-demo serve`` / ``brace-demo overload`` (`brace_demo.cli`).
"""

from __future__ import annotations

from .service import DemoSettings as DemoSettings

__all__ = ("DemoSettings",)
