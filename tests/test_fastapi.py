"""brace.fastapi: the RateLimit and Concurrency dependencies on a real FastAPI app."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

import brace
from asgi_scopes import client
from brace import Priority
from brace.fastapi import Concurrency, RateLimit


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


@pytest.mark.parametrize("rate", ["3/minute", brace.TokenBucket(rate=1, per=10, burst=3)])
async def test_rate_limit_dependency_returns_the_limiters_decision(rate: Any) -> None:
    """The Decision the dependency returns (rebuilt from the fields the pipeline keeps) is
    the one a twin limiter's ``try_hit`` gives, for a window and for a bucket."""
    limit = RateLimit(rate, clock=anyio.current_time)
    twin = brace.RateLimiter(
        rate if isinstance(rate, str) else brace.TokenBucket(rate=1, per=10, burst=3),
        clock=anyio.current_time,
    )
    app = FastAPI()
    seen: list[brace.Decision | None] = []

    @app.get("/d")
    async def d(decision: brace.Decision | None = Depends(limit)) -> None:  # noqa: B008
        seen.append(decision)

    async with client(app) as http:
        for _ in range(2):
            assert (await http.get("/d")).status_code == 200
    assert seen == [twin.try_hit("ip:203.0.113.7") for _ in range(2)]


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


# -- the drain bounds a request holding a Concurrency slot ----------------------------


def _slow_app(executor: brace.PriorityExecutor) -> FastAPI:
    """``/slow``: answers after 50 s; ``/stream``: one chunk, then the rest after 50 s;
    both in a slot of ``executor``."""
    app = FastAPI()
    slot = Concurrency(executor)

    @app.get("/slow", dependencies=[Depends(slot)])
    async def slow() -> dict[str, bool]:
        await anyio.sleep(50)
        return {"late": True}

    @app.get("/stream", dependencies=[Depends(slot)])
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            await anyio.sleep(50)
            yield b"late"

        return StreamingResponse(chunks())

    return app


async def test_a_request_in_a_slot_is_cut_at_the_drain_timeout() -> None:
    """As under BraceMiddleware: at the drain's timeout a request running in a
    Concurrency slot, and one waiting for a slot, are cancelled and answered 503
    ``shutting_down`` with ``Retry-After`` and ``Connection: close``; nothing is left."""
    executor = brace.PriorityExecutor(2, 10, clock=anyio.current_time)
    answers: list[tuple[httpx.Response, float]] = []
    start = anyio.current_time()
    async with client(_slow_app(executor)) as http:

        async def get() -> None:
            answer = await http.get("/slow")
            answers.append((answer, anyio.current_time() - start))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(get)
            tasks.start_soon(get)
            await anyio.sleep(1)
            tasks.start_soon(get)  # waits: both slots are taken
            await anyio.sleep(1)
            report = await executor.drain(30.0)
    assert len(answers) == 3
    for answer, at in answers:
        assert answer.status_code == 503
        assert answer.json()["detail"]["error"] == "shutting_down"
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.headers["connection"] == "close"
        assert at == pytest.approx(32.0)
    assert report.timed_out
    assert report.cancelled_running == 2
    assert report.cancelled_queued == 1
    assert report.still_running == 0
    assert report.duration == pytest.approx(30.0)
    statistics = executor.statistics()
    assert (statistics.running, statistics.pending) == (0, 0)


async def test_a_started_response_in_a_slot_is_cut_at_the_drain_timeout() -> None:
    """A streaming response already started at the drain's timeout is cut short: a
    dependency cannot end a started response quietly, so the request ends with
    `brace.ShuttingDown` saying so (the server logs it and closes the connection)."""
    executor = brace.PriorityExecutor(2, 10, clock=anyio.current_time)
    start = anyio.current_time()
    ended: list[float] = []
    async with client(_slow_app(executor)) as http, anyio.create_task_group() as tasks:

        async def get() -> None:
            with pytest.raises(brace.ShuttingDown, match="cut short"):
                await http.get("/stream")
            ended.append(anyio.current_time() - start)

        tasks.start_soon(get)
        await anyio.sleep(1)
        report = await executor.drain(30.0)
    assert ended == [pytest.approx(31.0)]
    assert report.cancelled_running == 1
    assert report.still_running == 0
    assert executor.statistics().running == 0


async def test_a_request_in_a_slot_that_ends_in_time_is_not_cut() -> None:
    """A drain whose timeout is not reached lets the request answer."""
    executor = brace.PriorityExecutor(2, 10, clock=anyio.current_time)
    async with client(_slow_app(executor)) as http, anyio.create_task_group() as tasks:
        answers: list[httpx.Response] = []

        async def get() -> None:
            answers.append(await http.get("/slow"))

        tasks.start_soon(get)
        await anyio.sleep(1)
        report = await executor.drain(60.0)
    assert [answer.json() for answer in answers] == [{"late": True}]
    assert not report.timed_out
    assert report.finished == 1
