"""BraceMiddleware around a Quart app, through httpx (Quart runs on asyncio only)."""

from __future__ import annotations

import anyio
import httpx
import pytest
from quart import Quart

from brace.asgi import BraceMiddleware, Rule
from brace.demo.rules import DEMO_RULES


@pytest.fixture
def anyio_backend() -> str:
    """Quart is built on asyncio: these tests run on asyncio only (real loop, short)."""
    return "asyncio"


def quart_app() -> Quart:
    app = Quart(__name__)

    @app.get("/api/items")
    async def items() -> dict[str, str]:
        return {"hello": "quart"}

    @app.post("/api/ai/chat")
    async def chat() -> dict[str, str]:
        return {"answer": "42"}

    return app


async def test_quart_asgi_app_is_limited() -> None:
    """Wrapping app.asgi_app limits Quart routes by the demo table and the default rule."""
    app = quart_app()
    app.asgi_app = BraceMiddleware(  # type: ignore[method-assign]
        app.asgi_app, rules=DEMO_RULES, default=Rule(limits=["2/minute"])
    )
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 1234))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        codes = [(await http.post("/api/ai/chat")).status_code for _ in range(11)]
        assert codes == [200] * 10 + [429]
        first = await http.get("/api/items")
        assert first.json() == {"hello": "quart"}
        assert first.headers["ratelimit-policy"] == '"default";q=2;w=60'
        await http.get("/api/items")
        refused = await http.get("/api/items")
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"] == "rate_limited"
    _ = anyio
