"""brace.fastapi: the RateLimit and Concurrency dependencies on a real FastAPI app."""

from __future__ import annotations

import re
from typing import Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI, Request

import brace
from brace import Priority
from brace.fastapi import Concurrency, RateLimit


def client(app: Any, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_rate_limit_dependency() -> None:
    """The dependency admits 2 per minute per client, adds RateLimit fields, then answers 429."""
    limit = RateLimit("2/minute", name="ai", clock=anyio.current_time)
    app = FastAPI()

    @app.post("/api/ai", dependencies=[Depends(limit)])
    async def ai() -> dict[str, str]:
        return {"answer": "42"}

    @app.get("/free")
    async def free() -> dict[str, str]:
        return {"free": "yes"}

    async with client(app) as http:
        first = await http.post("/api/ai")
        assert first.json() == {"answer": "42"}
        assert first.headers["ratelimit-policy"] == '"ai";q=2;w=60'
        assert re.fullmatch(r'"ai";r=1;t=\d+', first.headers["ratelimit"])
        assert (await http.post("/api/ai")).status_code == 200
        refused = await http.post("/api/ai")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit"].startswith('"ai";r=0;t=')
        assert refused.json()["detail"]["limit"] == "ai"
        assert (await http.get("/free")).status_code == 200
    async with client(app, peer="203.0.113.8") as http:
        assert (await http.post("/api/ai")).status_code == 200


async def test_rate_limit_per_user_and_decision_value() -> None:
    """Counted per user when the user callable names one; the dependency returns the Decision."""

    def user_of(request: Request) -> str | None:
        return request.headers.get("x-user")

    limit = RateLimit("1/minute", user=user_of, clock=anyio.current_time)
    app = FastAPI()

    @app.get("/me")
    async def me(decision: brace.Decision | None = Depends(limit)) -> dict[str, Any]:  # noqa: B008
        assert decision is not None
        return {"remaining": decision.remaining}

    async with client(app) as http:
        assert (await http.get("/me", headers={"x-user": "ann"})).json() == {"remaining": 0}
        assert (await http.get("/me", headers={"x-user": "bob"})).status_code == 200
        assert (await http.get("/me", headers={"x-user": "ann"})).status_code == 429
        assert (await http.get("/me")).status_code == 200  # anonymous: per address


async def test_concurrency_dependency_queue_full_is_503() -> None:
    """With one slot and no queue, a concurrent call gets 503 queue_full with Retry-After."""
    executor = brace.PriorityExecutor(concurrency=1, max_queue=0, clock=anyio.current_time)
    app = FastAPI()

    @app.get("/work", dependencies=[Depends(Concurrency(executor, priority=Priority.LOW))])
    async def work() -> dict[str, bool]:
        await anyio.sleep(1)
        return {"done": True}

    results: list[httpx.Response] = []
    async with client(app) as http, anyio.create_task_group() as tg:

        async def call() -> None:
            results.append(await http.get("/work"))

        tg.start_soon(call)
        await anyio.sleep(0.1)
        tg.start_soon(call)
    statuses = sorted(response.status_code for response in results)
    assert statuses == [200, 503]
    refused = next(response for response in results if response.status_code == 503)
    assert refused.json()["detail"]["error"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1
    stats = executor.statistics()
    assert stats.running == 0
    assert stats.completed == 1


async def test_concurrency_releases_the_slot_on_errors() -> None:
    """A route raising still gives its slot back."""
    executor = brace.PriorityExecutor(concurrency=1, max_queue=0, clock=anyio.current_time)
    app = FastAPI()

    @app.get("/boom", dependencies=[Depends(Concurrency(executor))])
    async def boom() -> None:
        raise RuntimeError("boom")

    async with client(app) as http:
        for _ in range(2):
            with pytest.raises(RuntimeError):
                await http.get("/boom")
    assert executor.statistics().running == 0
    assert executor.statistics().failed == 2


def test_bad_configuration() -> None:
    """Bad rates, keys and costs fail at construction."""
    with pytest.raises(ValueError, match="invalid rate"):
        RateLimit("lots")
    with pytest.raises(ValueError, match="per"):
        RateLimit("1/s", per="everyone")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cost"):
        RateLimit("1/s", cost=0)
    with pytest.raises(TypeError, match="executor"):
        Concurrency(object())  # type: ignore[arg-type]


def _members(value: str) -> list[str]:
    return [member.split(";")[0] for member in value.split(", ")]


async def test_two_limits_merge_their_fields_on_every_response_type() -> None:
    """Two RateLimit dependencies on one route both appear in RateLimit and
    RateLimit-Policy (#13 item 3); with RateLimitHeaders, also on a returned JSONResponse
    or StreamingResponse, which FastAPI gives no dependency headers."""
    from fastapi.responses import JSONResponse, StreamingResponse

    from brace.fastapi import RateLimitHeaders

    minute = RateLimit("5/minute", name="minute", clock=anyio.current_time)
    hour = RateLimit("50/hour", name="hour", clock=anyio.current_time)
    app = FastAPI()

    @app.get("/model", dependencies=[Depends(minute), Depends(hour)])
    async def model() -> dict[str, str]:
        return {"kind": "model"}

    @app.get("/json", dependencies=[Depends(minute), Depends(hour)])
    async def json_response() -> JSONResponse:
        return JSONResponse({"kind": "json"})

    @app.get("/stream", dependencies=[Depends(minute), Depends(hour)])
    async def stream() -> StreamingResponse:
        async def chunks() -> Any:
            yield b"a"
            yield b"b"

        return StreamingResponse(chunks())

    async with client(app) as http:
        plain = await http.get("/model")
        assert _members(plain.headers["ratelimit-policy"]) == ['"minute"', '"hour"']
        assert _members(plain.headers["ratelimit"]) == ['"minute"', '"hour"']
    async with client(RateLimitHeaders(app), peer="203.0.113.9") as http:
        for path in ("/model", "/json", "/stream"):
            response = await http.get(path)
            assert response.status_code == 200
            assert _members(response.headers["ratelimit-policy"]) == ['"minute"', '"hour"']
            assert _members(response.headers["ratelimit"]) == ['"minute"', '"hour"']
            assert len(response.headers.get_list("ratelimit")) == 1
        last = await http.get("/json")
        assert '"minute";r=1;' in last.headers["ratelimit"]


async def test_a_refusal_by_the_second_limit_carries_the_first_limits_fields() -> None:
    """When the second RateLimit of a route refuses, its 429 also carries the first one's
    RateLimit and RateLimit-Policy members, once each, with or without RateLimitHeaders."""
    from brace.fastapi import RateLimitHeaders

    minute = RateLimit("50/minute", name="minute", clock=anyio.current_time)
    hour = RateLimit("2/hour", name="hour", clock=anyio.current_time)
    app = FastAPI()

    @app.get("/report", dependencies=[Depends(minute), Depends(hour)])
    async def report() -> dict[str, int]:
        return {"rows": 3}

    for served, peer in ((app, "203.0.113.7"), (RateLimitHeaders(app), "203.0.113.9")):
        async with client(served, peer=peer) as http:
            statuses = [(await http.get("/report")).status_code for _ in range(2)]
            refused = await http.get("/report")
        assert statuses == [200, 200]
        assert refused.status_code == 429
        assert refused.json()["detail"]["limit"] == "hour"
        assert refused.headers["retry-after"]
        for name in ("ratelimit-policy", "ratelimit"):
            assert len(refused.headers.get_list(name)) == 1, name
            assert _members(refused.headers[name]) == ['"minute"', '"hour"'], name
        assert '"minute";r=47;' in refused.headers["ratelimit"]
        assert '"hour";r=0;' in refused.headers["ratelimit"]
