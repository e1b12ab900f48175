"""brace's reference server and overload demo (extra ``demo``).

- `brace.demo.app.create_app`: SEED.md's server rebuilt with brace (Starlette + uvicorn);
- `brace.demo.twin.create_twin`: the same server without brace;
- `brace.demo.upstream.UpstreamApp`: the slow fake AI service ``/api/ai`` calls;
- `brace.demo.loadgen.LoadGenerator`: the bounded load generator;
- ``brace-demo serve`` / ``brace-demo overload`` (`brace.demo.cli`).
"""

from __future__ import annotations

from .service import DemoSettings as DemoSettings

__all__ = ("DemoSettings",)
