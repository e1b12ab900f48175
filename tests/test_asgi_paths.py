"""The ASGI middleware's short path (a plain rule with local limits) and the full pipeline
answer every request alike.

`BraceMiddleware` takes a short path, without an `Exchange` or `Pipeline.run`, for a plain
rule (no breaker, bound or timeout) while it has no executor, memory guard or load
monitor. Each scenario here runs once on that path and once through `Pipeline.run` (the
same rule with an executor of ample room), and the answers, headers, counters and logs
must be the same.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import brace
import brace.asgi
from asgi_scopes import client
from brace.asgi import BraceMiddleware, Limit, Rule


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok", headers={"x-app": "1"})


async def refuse_before(scope: Any, receive: Any, send: Any) -> None:
    """Raises a brace refusal before it responds: brace answers it as its own."""
    raise brace.CircuitOpen("downstream open", retry_after=7.0)


async def late(request: Request) -> PlainTextResponse:
    await anyio.sleep(4)
    return PlainTextResponse("late", status_code=201)


async def crash(request: Request) -> Response:
    raise RuntimeError("crash")


async def refuse_after(scope: Any, receive: Any, send: Any) -> None:
    """Starts its response, then raises a brace refusal: nothing left to answer with."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise brace.QueueFull("too late to answer")


def application() -> Any:
    starlette = Starlette(
        routes=[
            Route("/ok", ok),
            Route("/late", late),
            Route("/crash", crash),
        ]
    )

    bare = {"/refuse": refuse_before, "/after": refuse_after}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        # (Starlette answers 500 to an exception before re-raising it: these two are bare)
        await bare.get(scope.get("path", ""), starlette)(scope, receive, send)

    return app


def middleware(short: bool, **options: Any) -> BraceMiddleware:
    if not short:  # an executor sends every request through Pipeline.run
        options["executor"] = brace.PriorityExecutor(concurrency=100, max_queue=100)
    origin = anyio.current_time()  # each run starts its clock at 0: the same windows
    options.setdefault("clock", lambda: anyio.current_time() - origin)
    return BraceMiddleware(application(), **options)


RULES = {
    "no limits": Rule(),
    "one limit": Rule(limits=["5/minute"]),
    "two limits": Rule(limits=[Limit("5/minute", name="fast"), Limit("6/hour", name="slow")]),
    "per user": Rule(limits=[Limit("5/minute", per="user", name="user"), "6/minute"]),
    "key function": Rule(limits=[Limit("5/minute", per=lambda scope: scope["path"])]),
}
#: the ``user`` callables: none (a per-user limit skips the request), or one user for all
USERS = {"no user": None, "alice": lambda scope: "alice"}
#: what the application raises to the server, by path
RAISED = {"/crash": RuntimeError, "/after": brace.QueueFull}


@pytest.fixture
def exchanges(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The rule of each `Exchange` the middleware makes: one a request on the pipeline's
    path, none on the short path."""
    made: list[Any] = []
    original = brace.asgi.Exchange  # type: ignore[attr-defined]

    def counted(rule: Any) -> Any:
        made.append(rule)
        return original(rule)

    monkeypatch.setattr(brace.asgi, "Exchange", counted)
    return made


async def scenario(app: BraceMiddleware, caplog: pytest.LogCaptureFixture) -> list[Any]:
    """Everything a client and an operator see of a few requests."""
    seen: list[Any] = []
    async with client(app) as http:
        for path in ("/ok", "/refuse", "/crash", "/after", "/late", "/ok", "/ok"):
            if path in RAISED:
                with pytest.raises(RAISED[path]):
                    await http.get(path)
                seen.append((path, "raised"))
                continue
            response = await http.get(path)
            headers = {
                name: value
                for name, value in response.headers.items()
                if name.startswith(("ratelimit", "retry-after", "x-"))
            }
            seen.append((path, response.status_code, headers, response.text))
    seen.append(app.statistics())
    seen.append([record.getMessage() for record in caplog.records])
    return seen


@pytest.mark.parametrize("name", list(RULES))
@pytest.mark.parametrize("user", list(USERS))
@pytest.mark.parametrize("style", ["ietf", "legacy", "both", "none"])
async def test_the_short_path_answers_as_the_pipeline_does(
    name: str, user: str, style: Any, caplog: pytest.LogCaptureFixture, exchanges: list[Any]
) -> None:
    seen = {}
    for short in (True, False):
        caplog.clear()
        app = middleware(
            short,
            default=RULES[name],
            user=USERS[user],
            rate_limit_headers=style,
            slow_request=3.0,
        )
        with caplog.at_level(logging.WARNING, logger="brace.asgi"):
            seen[short] = await scenario(app, caplog)
        # the short path makes no exchange; the pipeline one per request
        assert len(exchanges) == (0 if short else 7)
        exchanges.clear()
    assert seen[True] == seen[False]
    statistics = seen[True][-2]
    assert statistics.requests == 7
    assert statistics.active == 0
    assert statistics.slow == 1
    assert statistics.errors == 1  # the crash; a refusal raised after the start is not one
    assert any("took 4.000 s (status 201" in message for message in seen[True][-1])
    assert seen[True][1][1:3] == (503, {"retry-after": "7"})


async def test_headers_on_success_off_leaves_admitted_responses_alone() -> None:
    for short in (True, False):
        app = middleware(short, default=Rule(limits=["1/minute"]), headers_on_success=False)
        async with client(app) as http:
            admitted = await http.get("/ok")
            refused = await http.get("/ok")
        assert admitted.status_code == 200
        assert "ratelimit" not in admitted.headers
        assert refused.status_code == 429
        assert refused.headers["ratelimit"].startswith('"default";r=0;t=')


@pytest.mark.parametrize("name", ["no limits", "one limit"])
async def test_the_short_path_refuses_once_the_shutdown_started(
    name: str, exchanges: list[Any]
) -> None:
    """With a `brace.GracefulShutdown` too, the short path still serves until the shutdown
    starts, then answers 503 ``shutting_down`` with ``Connection: close``, as the pipeline
    does."""
    seen = {}
    for short in (True, False):
        shutdown = brace.GracefulShutdown(timeout=1, clock=anyio.current_time)
        app = middleware(short, default=RULES[name], shutdown=shutdown)
        async with client(app) as http:
            served = await http.get("/ok")
            shutdown.trigger()
            refused = await http.get("/ok")
        assert len(exchanges) == (0 if short else 2)
        exchanges.clear()
        seen[short] = (
            served.status_code,
            refused.status_code,
            refused.json()["error"],
            refused.headers["connection"],
            app.statistics(),
        )
    assert seen[True] == seen[False]
    assert seen[True][:4] == (200, 503, "shutting_down", "close")
    assert seen[True][4].shutting_down == 1
