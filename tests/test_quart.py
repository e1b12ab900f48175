"""BraceMiddleware around a Quart app, through httpx (Quart runs on asyncio only)."""

from __future__ import annotations

import asyncio
import time
from importlib.metadata import version
from typing import Any

import anyio
import httpx
import pytest
from quart import Quart

from asgi_scopes import http_scope
from brace.asgi import BraceMiddleware, Rule
from brace_demo.rules import DEMO_RULES


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


#: Quart 0.23 (Python 3.13+) runs a request's handler in a task group inside the ASGI
#: call, which a timeout cancels; before, the handler ran in a task of its own
QUART_CANCELS = tuple(int(part) for part in version("quart").split(".")[:2]) >= (0, 23)


async def test_quart_timeout_sends_one_response() -> None:
    """brace answers 504 on time, and nothing the handler sends afterwards reaches the
    server (no second response, no "Unexpected ASGI message"). Before Quart 0.23 the
    handler runs in a task of its own, which the timeout cannot cancel: it runs to its
    end; from 0.23 it is cut at the timeout, as on the other frameworks. The documented
    behaviour."""
    app = Quart(__name__)
    finished: list[str] = []

    @app.get("/slow")
    async def slow() -> str:
        await asyncio.sleep(0.4)
        finished.append("slow")
        return "late"

    app.asgi_app = BraceMiddleware(app.asgi_app, default=Rule(timeout=0.1))  # type: ignore[method-assign]
    sent: list[dict[str, Any]] = []
    disconnect = asyncio.Event()
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = http_scope("/slow", headers=[(b"host", b"test")])
    started = time.monotonic()
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert time.monotonic() - started < 0.35  # answered at the timeout, not after 0.4 s
    await asyncio.sleep(0.6)  # an uncancelled handler finishes in its own task meanwhile
    disconnect.set()
    starts = [message["status"] for message in sent if message["type"] == "http.response.start"]
    assert starts == [504]
    assert finished == ([] if QUART_CANCELS else ["slow"])
